"""Benchmark: the shipped detector on degraded capture chains — what other microphones, phones and IP cameras deliver.

The same test scenes as `screamdetect evaluate-events` (TEST split only: screams at 0/5/10/20 dB SNR over held-out
noise and non-screams, plus scream-free scenes for false alarms per hour), each passed through one capture chain
before the detector hears it; the threshold stays the card's (calibrated on clean validation audio), as it would
in a deployment nobody recalibrated.

    .venv/bin/python bench/robustness.py [--model PATH] [--conditions clean,tel8k,g711,mp3_32k,quiet20,room,hall] [--repeats 2]

Conditions:
  clean     the scenes as they are (= evaluate-events)
  tel8k     resampled to 8 kHz and back (nothing above 4 kHz: telephone / many IP cameras)
  g711      tel8k plus 8-bit mu-law companding (G.711, what RTSP cameras commonly stream)
  mp3_32k   MP3 at 32 kbit/s mono through ffmpeg (libmp3lame), decoded back
  quiet20   the whole scene 20 dB quieter (a distant or low-gain microphone; SNRs unchanged)
  room      the whole scene through a live room (synthetic impulse response: RT60 0.6 s, direct-to-reverberant
            ratio 0 dB, one fixed response), at the same RMS
  hall      the same through a large hall, far from the microphone (RT60 1.2 s, direct-to-reverberant -6 dB)

Writes runs/robustness/robustness.json (one row per condition) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import soxr

from screamdetect import Detector
from screamdetect.audio import SAMPLE_RATE
from screamdetect.evaluate import evaluate_events
from screamdetect.product import band_limit
from screamdetect.scenes import reverberate, room_impulse_response

tel8k = band_limit  # resampled to 8 kHz and back: the same chain training's p_band_limit uses


def g711(x: np.ndarray) -> np.ndarray:
    """8 kHz + mu-law 8-bit quantisation (ITU-T G.711's mu = 255), back to linear at 16 kHz."""
    y = soxr.resample(x, SAMPLE_RATE, 8000)
    mu = 255.0
    c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
    c = np.round(c * 127) / 127
    y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    return _same_length(soxr.resample(y.astype(np.float32), 8000, SAMPLE_RATE).astype(np.float32), x.size)


def mp3_32k(x: np.ndarray) -> np.ndarray:
    """Encode to MP3 at 32 kbit/s and decode back with ffmpeg (pipes; no files)."""
    ff = shutil.which("ffmpeg")
    if ff is None:
        raise SystemExit("error: mp3_32k needs ffmpeg on PATH (make setup installs it)")
    enc = subprocess.run([ff, "-v", "error", "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0",
                          "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3", "pipe:1"],
                         input=x.astype(np.float32).tobytes(), capture_output=True, check=True).stdout
    dec = subprocess.run([ff, "-v", "error", "-f", "mp3", "-i", "pipe:0", "-f", "f32le", "-ar", str(SAMPLE_RATE),
                          "-ac", "1", "pipe:1"], input=enc, capture_output=True, check=True).stdout
    # ffmpeg's decoder does not trim LAME's encoder delay here: 576 + 529 samples (measured by cross-correlation).
    return _same_length(np.frombuffer(dec, dtype=np.float32)[MP3_DELAY:].copy(), x.size)


MP3_DELAY = 1105


def quiet20(x: np.ndarray) -> np.ndarray:
    return (x * np.float32(0.1)).astype(np.float32)


ROOM_RIR = room_impulse_response(0.6, 0.0, np.random.default_rng(7))


HALL_RIR = room_impulse_response(1.2, -6.0, np.random.default_rng(8))


def room(x: np.ndarray) -> np.ndarray:
    return reverberate(x, ROOM_RIR)


def hall(x: np.ndarray) -> np.ndarray:
    return reverberate(x, HALL_RIR)


def _same_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


CONDITIONS = {"clean": lambda x: x, "tel8k": tel8k, "g711": g711, "mp3_32k": mp3_32k, "quiet20": quiet20, "room": room, "hall": hall}


class Degraded:
    """The detector hearing audio through a capture chain (score_windows + tracker: what evaluate_events needs)."""

    def __init__(self, det: Detector, chain):
        self.det, self.chain, self.threshold = det, chain, det.threshold
        self.seconds = 0.0  # time spent in the chain itself (not the detector)

    def score_windows(self, audio: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        y = self.chain(audio)
        self.seconds += time.perf_counter() - t
        return self.det.score_windows(y)

    def tracker(self):
        return self.det.tracker()

    def __getattr__(self, name):  # smoothing, window_s, hop_s, ... (evaluate_events' operating curve needs them)
        return getattr(self.det, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--model", type=Path, default=None, help="ONNX model with its card (default: the shipped one)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated, of: {', '.join(CONDITIONS)}")
    ap.add_argument("--repeats", type=int, default=2, help="each test scream at each SNR this many times")
    ap.add_argument("--free-hours", type=float, default=1.0, help="hours of scream-free scenes (false alarms/h)")
    ap.add_argument("--split-file", type=Path, default=Path("runs/default2/split.csv"),
                    help="split CSV (the shipped model's; made with the default seed if absent)")
    ap.add_argument("--auto-gain", action="store_true", help="the detector with Detector.load(auto_gain=True)")
    ap.add_argument("--no-second-stage", action="store_true",
                    help="the CNN alone, with its own threshold from the card (as `detect --no-second-stage`)")
    ap.add_argument("--out", type=Path, default=Path("runs/robustness"))
    args = ap.parse_args()
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown:
        raise SystemExit(f"error: unknown condition(s) {unknown}; choose from {', '.join(CONDITIONS)}")
    det = Detector.load(args.model, auto_gain=args.auto_gain, second_stage=not args.no_second_stage)
    print(f"model: {det.path} ({det.description}); threshold {det.threshold:g}")
    rows = []
    for name in names:
        wrapped = Degraded(det, CONDITIONS[name])
        t = time.perf_counter()
        m = evaluate_events(wrapped, args.corpus, out_dir=args.out / name, split_file=args.split_file,
                            repeats=args.repeats, free_hours=args.free_hours, write_scenes=False)
        row = {"condition": name, "false_alarms_per_hour": m["false_alarms_per_hour"],
               **{f"recall_{k}dB": v for k, v in m["recall_by_snr"].items()},
               "latency_median_s": m["latency_median_s"], "events": m["events"],
               "scream_free_hours": m["scream_free_hours"], "seconds": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps({"model": str(det.path), "threshold": det.threshold,
                                                          "rows": rows}, indent=1))
    from screamdetect.report import table_markdown

    print(table_markdown(rows, floatfmt="{:.2f}"))


if __name__ == "__main__":
    main()
