"""Benchmark: how should the cascade's two stages be combined? Measured on the cross-validation folds.

The shipped cascade scores a window √(c · P): c the CNN's score, P YAMNet's P(Screaming), computed only where
c >= the gate (0.05); other windows score 0. This script scores each fold of `bench/cv_recipes.py` once per stage
(the fold's own CNN, `CV/<recipe>/fold<k>`, on every window; YAMNet on every window too) with the same protocol
(the held-out fold's screams at 0, 5, 10, 20 dB, `--repeats` times; `--free-hours` scream-free), caches the window
scores, and then re-runs only the smoothing for each combination and threshold:

- `geomean`: √(c · P) with gate 0.05 (v7);
- `a=X`: c^X · P^(1-X), gate 0.05 (X > 0.5 leans on the CNN, which holds up in noise; X < 0.5 on YAMNet's class,
  which separates the scream-like distractors better);
- `cnn`: the CNN alone (a = 1), its own score wherever it is >= the gate;
- `gate=G`: √(c · P) with another gate.

The best recall at <= 0.5, 2 and 5 false alarms/h is taken per fold (each fold its own threshold, as
`cv_recipes.py` does) and the events found are pooled over the folds. The TEST split is never touched.

    .venv/bin/python bench/combine_cv.py --cv runs/cv --recipe default --out runs/combine

Needs the folds' runs (`bench/cv_recipes.py configs/default.yaml --folds 4 --out runs/cv`) and the YAMNet package.
Writes OUT/combine.json and prints a table; the window scores are cached in OUT/<recipe>_fold<k>.npz.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_on_val import TARGETS, best_at, sweep_scores, validation_scenes

from screamdetect.detector import Detector

VARIANTS = {"geomean": (0.5, 0.05), "a=0.3": (0.3, 0.05), "a=0.4": (0.4, 0.05), "a=0.6": (0.6, 0.05),
            "a=0.7": (0.7, 0.05), "a=0.8": (0.8, 0.05), "a=0.9": (0.9, 0.05), "cnn": (1.0, 0.05),
            "gate=0.02": (0.5, 0.02), "gate=0.1": (0.5, 0.1), "gate=0.2": (0.5, 0.2)}


def stage_scores(run: Path, scenes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per scene: the CNN's score of every window, and YAMNet's P(Screaming) of every window."""
    cnn = Detector.load(run / "model.onnx", second_stage=False)
    card = json.loads((run / "model.json").read_text())
    card["second_stage"] = {**card["second_stage"], "gate": 0.0, "combine": "stage2"}
    yam = Detector(run / "model.onnx", card)
    return [cnn.score_windows(s.audio) for s in scenes], [yam.score_windows(s.audio) for s in scenes]


def combine(c: np.ndarray, p: np.ndarray, a: float, gate: float) -> np.ndarray:
    """Window scores c^a · p^(1-a) where the CNN's score c >= gate, else 0."""
    out = np.zeros_like(c)
    m = c >= gate
    out[m] = c[m] ** a * p[m] ** (1.0 - a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, default=Path("runs/cv"), help="the output folder of bench/cv_recipes.py")
    ap.add_argument("--recipe", default="default", help="which recipe's fold runs to use (a config's stem)")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--free-hours", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=Path("runs/combine"))
    args = ap.parse_args()
    folds = sorted((args.cv / args.recipe).glob("fold*"))
    if not folds:
        ap.error(f"{args.cv / args.recipe}: no fold runs (run bench/cv_recipes.py first)")
    args.out.mkdir(parents=True, exist_ok=True)
    per_fold = {name: [] for name in VARIANTS}
    for run in folds:
        k = run.name.removeprefix("fold")
        events, free, n_screams = validation_scenes(args.corpus, args.cv / f"fold{k}_split.csv", args.repeats,
                                                    args.free_hours)
        n_events = sum(len(s.events) for s in events)
        hours = sum(s.duration_s for s in free) / 3600
        cache = args.out / f"{args.recipe}_fold{k}.npz"
        t0 = time.perf_counter()
        z = np.load(cache) if cache.exists() else None
        if z is not None and len(z.files) == 2 * (len(events) + len(free)):  # else made with other scenes: redo
            c_all = [z[f"c{i}"] for i in range(len(events) + len(free))]
            p_all = [z[f"p{i}"] for i in range(len(events) + len(free))]
        else:
            c_all, p_all = stage_scores(run, [*events, *free])
            np.savez_compressed(cache, **{f"c{i}": x for i, x in enumerate(c_all)},
                                **{f"p{i}": x for i, x in enumerate(p_all)})
        n_ev = len(events)
        print(f"fold {k}: {n_screams} screams, {n_events} events, {hours:.1f} h scream-free "
              f"(stage scores {time.perf_counter() - t0:.0f} s)", flush=True)
        det = Detector.load(run / "model.onnx", second_stage=False)
        for name, (a, gate) in VARIANTS.items():
            sc = [combine(c, p, a, gate) for c, p in zip(c_all, p_all)]
            rows = sweep_scores(det, sc[:n_ev], sc[n_ev:], events, hours)
            best = {f"{t:g}": best_at(rows, t) for t in TARGETS}
            per_fold[name].append({"fold": int(k), "events": n_events,
                                   "found": {t: round(b["recall"] * n_events) for t, b in best.items()},
                                   "threshold": {t: b["threshold"] for t, b in best.items()}})
            print(f"  {name:10s} " + "  ".join(f"{t}/h: {b['recall']:.3f} (thr {b['threshold']})"
                                               for t, b in best.items()), flush=True)
    summary = {}
    print(f"\npooled over {len(folds)} folds: recall at <= {', '.join(f'{t:g}' for t in TARGETS)} false alarms/h")
    for name, rs in per_fold.items():
        total = sum(r["events"] for r in rs)
        pooled = {f"{t:g}": sum(r["found"][f"{t:g}"] for r in rs) / total for t in TARGETS}
        summary[name] = {"events": total, "recall": pooled}
        print(f"  {name:10s} " + " / ".join(f"{v:.3f}" for v in pooled.values()) + f"  ({total} events)")
    (args.out / "combine.json").write_text(json.dumps({"summary": summary, "per_fold": per_fold}, indent=1))


if __name__ == "__main__":
    main()
