"""Benchmark: compare trained detectors on more validation evidence than `train`'s calibration uses.

`train` calibrates (and the docs' rule selects) on the 14 validation screams, each inserted once at 10 dB, and 1 h of
scream-free validation scenes: at 0.5 false alarms/h that hour allows none, so one scene decides the threshold and
one or two screams decide between models. Here every model is scored on the same, larger validation set: the
validation screams at 0, 5, 10 and 20 dB, `--repeats` times each in different backgrounds (112 events for 2
repeats), and `--free-hours` of scream-free validation scenes (4 h: 0.5/h allows 2 false alarms). Window scores are
computed once per model; each threshold of the calibration sweep then re-runs only the smoothing. VALIDATION split
only (the test split stays for the final figures).

    .venv/bin/python bench/select_on_val.py runs/default6 runs/distill2 ... [--cnn-too] [--free-hours 4]

Prints, per model, the best event recall at <= 0.5, 2 and 5 false alarms/h (and the threshold), and writes
runs/select_on_val/select.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from screamdetect import scenes as sc
from screamdetect.data import SplitSpec, discover, load_or_make_split
from screamdetect.detector import CALIBRATION_THRESHOLDS, Detector, events_from_scores
from screamdetect.evaluate import match_events

TARGETS = (0.5, 2.0, 5.0)


def validation_scenes(corpus: Path, split_file: Path, repeats: int, free_hours: float, seed: int = 1000):
    """Event scenes and scream-free scenes of the VALIDATION split (its clips and noise pieces), fixed by `seed`."""
    ds = discover(corpus)
    splits = load_or_make_split(ds, split_file, SplitSpec())
    val = splits["val"]
    noise = sc.load_many(sc.noise_split(Path(ds.root) / "noise", seed=0)["val"])
    screams = sc.load_named([c.path for c in val if c.label == 1])
    negatives = sc.load_many([c.path for c in val if c.label == 0], max_s=15.0)
    spec = sc.SceneSpec(seed=seed)
    events = list(sc.event_scenes(screams, negatives, noise, spec, repeats=repeats))
    free = list(sc.scream_free_scenes(negatives, noise, free_hours, sc.SceneSpec(duration_s=300.0, seed=seed + 1)))
    return events, free, len(screams)


def sweep(det: Detector, events, free) -> list[dict]:
    """Per threshold: event recall (overall and per SNR) and false alarms per hour."""
    return sweep_scores(det, [det.score_windows(s.audio) for s in events], [det.score_windows(s.audio) for s in free],
                        events, sum(s.duration_s for s in free) / 3600)


def sweep_scores(det: Detector, ev_scores, free_scores, events, hours: float) -> list[dict]:
    """`sweep` from window scores already computed (the event scenes', the scream-free scenes'), with `det`'s
    window, hop and smoothing."""
    w, h, sm = det.window_s, det.hop_s, det.smoothing
    rows = []
    for thr in CALIBRATION_THRESHOLDS:
        fa = sum(len(events_from_scores(s, thr, sm, w, h)) for s in free_scores)
        hits: dict[float, list[bool]] = {}
        for scene, s in zip(events, ev_scores):
            found = events_from_scores(s, thr, sm, w, h, duration_s=scene.duration_s)
            for m in match_events(scene.events, found, 1.0)[0]:
                hits.setdefault(m.snr_db, []).append(m.detected)
        allhits = [x for v in hits.values() for x in v]
        rows.append({"threshold": thr, "false_alarms_per_hour": fa / hours, "recall": float(np.mean(allhits)),
                     "recall_by_snr": {f"{k:g}": float(np.mean(v)) for k, v in sorted(hits.items())}})
    return rows


def best_at(rows: list[dict], target: float) -> dict:
    ok = [r for r in rows if r["false_alarms_per_hour"] <= target]
    return max(ok, key=lambda r: (r["recall"], -r["threshold"])) if ok else {"threshold": None, "recall": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (model.onnx + model.json)")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default6/split.csv"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--free-hours", type=float, default=4.0)
    ap.add_argument("--cnn-too", action="store_true", help="also each cascade's CNN alone (--no-second-stage)")
    ap.add_argument("--out", type=Path, default=Path("runs/select_on_val"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    events, free, n_screams = validation_scenes(args.corpus, args.split_file, args.repeats, args.free_hours)
    n_events = sum(len(s.events) for s in events)
    print(f"validation: {n_screams} screams -> {n_events} events in {len(events)} scenes; "
          f"{sum(s.duration_s for s in free) / 3600:.1f} h scream-free ({time.perf_counter() - t0:.0f} s to build)")
    results = []
    for run in args.runs:
        for second in ([True, False] if args.cnn_too else [True]):
            if not second and "second_stage" not in json.loads((run / "model.json").read_text()):
                continue  # a CNN-only run: already scored as itself
            det = Detector.load(run / "model.onnx", second_stage=second)
            name = f"{run}{'' if second else ' (CNN alone)'}"
            rows = sweep(det, events, free)
            best = {f"{t:g}": best_at(rows, t) for t in TARGETS}
            results.append({"model": name, "best": best, "sweep": rows})
            cells = "  ".join(f"{t}/h: {b['recall']:.2f} (thr {b['threshold']})" for t, b in best.items())
            snr = best["0.5"].get("recall_by_snr", {})
            print(f"{name:40s} {cells}   at 0.5/h by SNR {snr}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select.json").write_text(json.dumps({"events": n_events, "free_hours": args.free_hours,
                                                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
