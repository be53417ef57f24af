"""Benchmark: CPU cost of live detection per stream, feeding 0.1 s chunks at a simulated real-time rate.

Run: .venv/bin/python bench/bench_live.py [--model PATH] [--seconds 60] [--chunk-s 0.1] [--streams 1] [--speed 1]
     [--threads [--metrics]]
     .venv/bin/python bench/bench_live.py --memory-hours 8    # peak memory of `listen` over 1 min and 8 h of audio

Each of --streams StreamDetectors (one shared onnxruntime session, one thread) gets a chunk every --chunk-s
seconds of wall-clock time (divided by --speed; 1 = real time), from corpus audio (../shared/corpus, or a
synthetic scene), and its alerts go through the live loop's JSON-lines sink (to /dev/null). Reported: process
CPU time (user + system, all threads) per second of audio per stream, as % of one core (target <= 2 %), and the
time to process one chunk (median, p95, max). --threads: each stream in its own thread through
`alerts.run_many`, as `screamdetect listen -s A -s B ...` runs them (no per-chunk times then); --metrics adds
`listen --metrics`'s Prometheus sink, scraped every 15 s. --model: as bench_scan.py (default: the shipped model, else the
band-energy test model, whose inference is nearly free).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_scan import corpus_flac, resolve_model

from screamdetect.alerts import JsonlSink, LiveStream, alert_message, run_many
from screamdetect.audio import SAMPLE_RATE, load_audio
from screamdetect.bench import cpu_s, host, host_line, live_cpu
from screamdetect.detector import Detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ONNX model (card beside it); default: the shipped model")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per stream")
    ap.add_argument("--chunk-s", type=float, default=0.1, help="chunk length in seconds")
    ap.add_argument("--streams", type=int, default=1, help="streams processed side by side in this process")
    ap.add_argument("--speed", type=float, default=1.0, help="pace: 1 = real time, 10 = ten times faster")
    ap.add_argument("--threads", action="store_true", help="one thread per stream, through alerts.run_many")
    ap.add_argument("--memory-hours", type=float, default=0.0,
                    help="instead: peak memory of `screamdetect listen` (in a fresh process, as fast as it can read) "
                         "on a 1-minute and on a synthetic file of this many hours, with --metrics on")
    ap.add_argument("--metrics", action="store_true",
                    help="with --threads: also the Prometheus metrics sink of `listen --metrics` (port 0, scraped "
                         "every 15 s as Prometheus would), to see what it costs")
    args = ap.parse_args()
    if args.seconds <= 0 or args.chunk_s <= 0 or args.streams < 1 or args.speed <= 0:
        ap.error("--seconds, --chunk-s, --speed must be positive and --streams >= 1")
    if args.metrics and not args.threads:
        ap.error("--metrics needs --threads (the listen path, where the metrics sink runs)")

    if args.memory_hours > 0:
        return listen_memory(args)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model, desc = resolve_model(args.model, tmp)
        det = Detector.load(model, intra_op_threads=1)
        src = corpus_flac(tmp / "live.flac", args.seconds)
        audio = load_audio(tmp / "live.flac")
    print(f"model: {desc}: {model}\naudio: {args.seconds:g} s of {src}; chunks of {args.chunk_s} s; "
          f"{args.streams} stream(s); pace {args.speed:g}x real time")
    print(host_line(host()))

    chunk = round(args.chunk_s * SAMPLE_RATE)
    sink = JsonlSink(os.devnull)
    if args.threads:
        return threaded(det, audio, chunk, args, sink)
    r = live_cpu(det, audio, args.chunk_s, args.speed, args.streams,
                 on_update=lambda u: sink.handle(alert_message(u, "bench")))
    sink.close()
    print(f"wall {r['wall_s']:.1f} s, process CPU {r['cpu_s']:.2f} s for {args.streams} x {r['audio_s']:.0f} s of "
          f"audio ({r['events']} events)")
    print(f"CPU per stream: {r['cpu_percent_per_stream']:.2f} % of one core "
          f"(target <= 2 %; load average {os.getloadavg()[0]:.1f})")
    print(f"time per {args.chunk_s} s chunk: median {r['chunk_ms_median']:.2f} ms, p95 {r['chunk_ms_p95']:.2f} ms, "
          f"max {r['chunk_ms_max']:.2f} ms")


def threaded(det: Detector, audio: np.ndarray, chunk: int, args, sink: JsonlSink) -> None:
    """The `listen -s A -s B ...` path: one paced generator per stream, run_many's threads, one shared sink."""
    n_chunks = -(-audio.size // chunk)
    det.score_windows(audio[: 2 * SAMPLE_RATE])  # warm-up
    t0 = time.perf_counter()

    def paced():
        for i in range(n_chunks):
            wait = t0 + i * args.chunk_s / args.speed - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            yield audio[i * chunk: (i + 1) * chunk]

    sinks = [sink]
    scraper = None
    if args.metrics:
        import threading
        import urllib.request

        from screamdetect.metrics import MetricsSink

        meter = MetricsSink("127.0.0.1", 0, sources=[f"s{k}" for k in range(args.streams)])
        sinks.append(meter)
        halt = threading.Event()

        def scrape():
            while not halt.wait(15.0 / args.speed):
                with urllib.request.urlopen(meter.url, timeout=5) as r:
                    r.read()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
    c0 = cpu_s()
    summaries = run_many([LiveStream(paced(), f"s{k}") for k in range(args.streams)], det, sinks)
    if scraper is not None:
        halt.set()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    audio_s = audio.size / SAMPLE_RATE
    events = sum(len(sm.events) for sm in summaries)
    print(f"wall {wall:.1f} s, process CPU {cpu:.2f} s for {args.streams} x {audio_s:.0f} s of audio in "
          f"{args.streams} thread(s) ({events} events)")
    print(f"CPU per stream: {100 * cpu / (audio_s * args.streams):.2f} % of one core "
          f"(target <= 2 %; load average {os.getloadavg()[0]:.1f}); peak RSS of the process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")


LISTEN_CHILD = """
import sys
sys.argv = ["screamdetect", "listen", "-s", {path!r}, "--jsonl", {out!r}, "--metrics", "127.0.0.1:0"] + {model!r}
from screamdetect.cli import main
status = 0
try:
    main()
except SystemExit as e:
    status = e.code or 0
print("EXIT", status, file=sys.stderr)
for line in open("/proc/self/status"):  # peak resident set of this process
    if line.startswith("VmHWM:"):
        print("VmHWM", int(line.split()[1]), file=sys.stderr)
"""


def listen_memory(args) -> None:
    """Peak RSS of `listen` on a 1-minute file and on an --memory-hours file (bench_scan.py's synthetic audio: quiet
    noise with a loud chirp every 10 minutes), each in a fresh process reading as fast as it can: a live run's memory
    must not grow with the hours it has run, beyond its list of events."""
    import json
    import subprocess

    from bench_scan import synthetic_flac

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model, desc = resolve_model(args.model, tmp)
        print(f"model: {desc}: {model}")
        print(host_line(host()))
        for name, seconds in (("1 minute", 60.0), (f"{args.memory_hours:g} hours", args.memory_hours * 3600)):
            path = tmp / f"{seconds:.0f}.flac"
            synthetic_flac(path, seconds)
            out = tmp / f"{seconds:.0f}.jsonl"
            code = LISTEN_CHILD.format(path=str(path), out=str(out), model=["--model", str(model)])
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            wall = time.perf_counter() - t0
            hwm = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("VmHWM")]
            if r.returncode or not hwm or "EXIT 0" not in r.stderr:
                raise SystemExit(f"listen failed on {name}: {r.stderr[-2000:]}")
            alerts = [json.loads(line) for line in out.read_text().splitlines()]
            print(f"  {name:>9}: peak RSS {hwm[0] / 1024:6.1f} MB, {wall:.1f} s in all "
                  f"({seconds / wall:,.0f}x real time with start-up), "
                  f"{sum(a['type'] == 'start' for a in alerts)} events")


if __name__ == "__main__":
    main()
