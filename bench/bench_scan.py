"""Benchmark: end-to-end file scanning speed (decode + log-mel + model) and peak memory on long files.

Run: .venv/bin/python bench/bench_scan.py [--model PATH] [--minutes 10] [--copies 4] [--hours 8] [--skip-memory]

1. Speed: a FLAC of --minutes minutes is built from corpus clips (../shared/corpus, or $SCREAMDETECT_CORPUS;
   a synthetic scene if the corpus is absent) and scanned (a) in one process, block by block, as
   `screamdetect detect` does, and (b) as --copies files over a process pool using every core. Reported in
   × real time (seconds of audio per second of wall-clock time); the target is >= 1000x on a 2-core machine.
2. Memory: a synthetic --hours-hour FLAC and a 1-minute one are scanned, each in a fresh subprocess, and the
   peak resident memory (ru_maxrss) of each is reported: the long file should need no more than the short one.

--model: an ONNX model with its card (default: the shipped model; if it is not built yet, the band-energy test
model of tests/_models.py, which is nearly free to run, so the numbers then measure decode + features only).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from screamdetect.audio import SAMPLE_RATE, load_audio
from screamdetect.bench import host, host_line, pool_speed, scan_speed
from screamdetect.detector import DEFAULT_MODEL, Detector

CORPUS = Path(os.environ.get("SCREAMDETECT_CORPUS", REPO.parent / "shared" / "corpus"))


def resolve_model(model: str | None, tmp: Path) -> tuple[Path, str]:
    if model:
        return Path(model), f"{model}"
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, "shipped default model"
    sys.path.insert(0, str(REPO / "tests"))
    from _models import write_band_energy_model

    return write_band_energy_model(tmp / "model"), "band-energy TEST model (shipped model not built yet)"


def corpus_flac(path: Path, seconds: float, seed: int = 0) -> str:
    """Concatenate random corpus clips (screams included) into one FLAC of `seconds` seconds."""
    if not (CORPUS / "manifest.csv").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from _models import scene

        rng = np.random.default_rng(seed)
        bursts = [(float(t), 1.5) for t in rng.uniform(0, seconds - 2, int(seconds / 30))]
        sf.write(path, scene(seconds, bursts, seed=seed), SAMPLE_RATE, subtype="PCM_16")
        return "synthetic scene (corpus not found)"
    with open(CORPUS / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rnd = random.Random(seed)
    need = int(seconds * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        n = 0
        while n < need:
            clip = load_audio(CORPUS / rnd.choice(rows)["path"])[: need - n]
            f.write(clip)
            n += clip.size
    return f"corpus clips ({CORPUS})"


def synthetic_flac(path: Path, seconds: float, seed: int = 0) -> None:
    """Quiet noise with a loud chirp every 10 minutes, written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    block = 60 * SAMPLE_RATE
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    chirp = (0.3 * np.sin(2 * np.pi * (2500 * t + 1250 * t ** 2))).astype(np.float32)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        total = int(seconds * SAMPLE_RATE)
        for i, start in enumerate(range(0, total, block)):
            x = (0.003 * rng.standard_normal(min(block, total - start))).astype(np.float32)
            if i % 10 == 5 and x.size > 2 * SAMPLE_RATE:
                x[SAMPLE_RATE: 2 * SAMPLE_RATE] += chirp
            f.write(x)


MEM_CHILD = """
import json, sys, time, tracemalloc
sys.path.insert(0, {src!r})
from screamdetect.detector import Detector


def hwm_kb():  # peak resident set of this process image (ru_maxrss would include the parent's before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


det = Detector.load({model!r}, intra_op_threads=1, second_stage={second_stage!r})
det.score_windows(__import__("numpy").zeros(16000 * 5, "float32"))  # warm-up: first-call allocations
base = hwm_kb()
tracemalloc.start()
t0 = time.perf_counter()
res = det.scan_file({path!r})
dt = time.perf_counter() - t0
peak_py = tracemalloc.get_traced_memory()[1]
print(json.dumps({{"hwm_kb": hwm_kb(), "after_load_kb": base, "traced_peak_b": peak_py,
                  "seconds": dt, "duration_s": res.duration_s, "events": len(res.events)}}))
"""


def peak_memory(model: Path, path: Path, second_stage: bool = True) -> dict:
    code = MEM_CHILD.format(src=str(REPO / "src"), model=str(model), path=str(path), second_stage=second_stage)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args, det: Detector, model: Path, tmp: Path) -> None:
    flac = tmp / "scan.flac"
    src = corpus_flac(flac, args.minutes * 60)
    dur = sf.info(str(flac)).duration
    print(f"\n1. speed: {dur / 60:.1f} min FLAC of {src}")
    r = scan_speed(det, flac, args.repeat)
    print(f"  one process (decode + features + model, block by block): {r['wall_s']:.2f} s  "
          f"= {r['x_realtime']:,.0f}x real time  ({r['windows']} windows, {r['events']} events)")
    print(f"  CPU time {r['cpu_s']:.2f} s = {r['x_realtime_per_cpu_s']:,.0f}x real time per busy core (independent of "
          f"other load on the machine; load average now {os.getloadavg()[0]:.1f})")
    p = pool_speed(model, flac, args.jobs, args.copies, args.second_stage)
    print(f"  process pool, {args.copies} files, {args.jobs} jobs (incl. worker start-up): {p['wall_s']:.2f} s "
          f"= {p['x_realtime']:,.0f}x real time")


def memory(args, model: Path, tmp: Path) -> None:
    print("\n2. peak memory (VmHWM of a fresh process scanning the file block by block; tracemalloc peak)")
    short, long_ = tmp / "short.flac", tmp / "long.flac"
    synthetic_flac(short, 60.0)
    t0 = time.perf_counter()
    synthetic_flac(long_, args.hours * 3600)
    print(f"  built a {args.hours:g} h synthetic FLAC ({long_.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t0:.0f} s")
    for name, path in (("1 minute", short), (f"{args.hours:g} hours", long_)):
        m = peak_memory(model, path, args.second_stage)
        print(f"  {name:>9}: peak RSS {m['hwm_kb'] / 1024:6.1f} MB (after loading the model and a warm-up "
              f"{m['after_load_kb'] / 1024:.1f} MB); peak of numpy/Python allocations during the scan "
              f"{m['traced_peak_b'] / 1e6:.1f} MB; {m['seconds']:.1f} s = "
              f"{m['duration_s'] / m['seconds']:,.0f}x real time; {m['events']} events")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ONNX model (card beside it); default: the shipped model")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the speed-test file")
    ap.add_argument("--copies", type=int, default=4, help="files scanned in parallel for the pool test")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for the pool test")
    ap.add_argument("--repeat", type=int, default=3, help="timed single-process runs (best reported)")
    ap.add_argument("--hours", type=float, default=8.0, help="length of the long file of the memory test")
    ap.add_argument("--no-second-stage", dest="second_stage", action="store_false",
                    help="the CNN alone, without the card's YAMNet second stage")
    ap.add_argument("--skip-speed", action="store_true", help="skip the speed test")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory test")
    ap.add_argument("--tmp", help="folder for the generated audio (default: a temporary folder, deleted)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmpdir:
        tmp = Path(tmpdir)
        model, model_desc = resolve_model(args.model, tmp)
        det = Detector.load(model, second_stage=args.second_stage)
        print(f"model: {model_desc}: {model}; {det.description}")
        print(f"  window {det.window_s} s, hop {det.hop_s} s, {det.frontend.n_mels} mels")
        print(f"  {host_line(host())}")
        if not args.skip_speed:
            speed(args, det, model, tmp)
        if not args.skip_memory:
            memory(args, model, tmp)


if __name__ == "__main__":
    main()
