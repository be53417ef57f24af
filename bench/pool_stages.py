"""Benchmark: pool the cascade's stages over neighbouring windows before combining them (validation only).

YAMNet's 8-bit P(Screaming) jitters from window to window, so the 2-of-3 onset rule can miss a scream that one
window finds. Each variant replaces the shipped combination √(CNN · P) (CNN >= gate, else 0) with one on pooled
scores; every variant is judged on `select_on_val.py`'s validation scenes (112 events, 4 h scream-free) at
<= 0.5 / 2 / 5 false alarms/h. Measured 2026-12-03 and rejected (docs/detector.md, "What has been tried").

    .venv/bin/python bench/pool_stages.py [--model PATH.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from select_on_val import best_at, sweep_scores, validation_scenes

from screamdetect.cascade import head_proba
from screamdetect.detector import Detector
from screamdetect.features import log_mel


def stage_scores(det: Detector, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CNN score, P of the second stage) of every window of `audio` (the second stage on all windows, no gate)."""
    st = det.second_stage
    s1 = det.score_mel(log_mel(audio, frontend=det.frontend)).astype(np.float32)
    p = st.candidate_patches(np.arange(s1.size), lambda i: det.window_audio(audio, i), det.hop_samples)
    return s1, head_proba(st.embed_patches(p), st.coef, st.intercept).astype(np.float32)


def variants(gate: float) -> dict:
    def combined(f1, f2):
        return lambda s1, p2: np.where(f1(s1) >= gate, np.sqrt(np.clip(f1(s1) * f2(p2), 0, None)), 0.0)

    same = lambda x: x
    return {"as shipped": combined(same, same),
            "max of P over 3 windows": combined(same, lambda p: maximum_filter1d(p, 3)),
            "max of P over 5 windows": combined(same, lambda p: maximum_filter1d(p, 5)),
            "max of both over 3 windows": combined(lambda s: maximum_filter1d(s, 3), lambda p: maximum_filter1d(p, 3)),
            "mean of P over 3 windows": combined(same, lambda p: uniform_filter1d(p, 3))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a cascade's ONNX (default: the shipped model)")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default6/split.csv"))
    args = ap.parse_args()
    det = Detector.load(args.model)
    if det.second_stage is None:
        raise SystemExit("the model has no second stage (or its YAMNet package is missing)")
    events, free, _ = validation_scenes(args.corpus, args.split_file, repeats=2, free_hours=4.0)
    ev = [stage_scores(det, s.audio) for s in events]
    fr = [stage_scores(det, s.audio) for s in free]
    hours = sum(s.duration_s for s in free) / 3600
    n_events = sum(len(s.events) for s in events)
    for name, fn in variants(det.second_stage.gate).items():
        rows = sweep_scores(det, [fn(*x) for x in ev], [fn(*x) for x in fr], events, hours)
        cells = "  ".join(f"<= {t:g}/h: {round(best_at(rows, t)['recall'] * n_events)} of {n_events} "
                          f"(threshold {best_at(rows, t)['threshold']})" for t in (0.5, 2.0, 5.0))
        print(f"{name:28s} {cells}", flush=True)


if __name__ == "__main__":
    main()
