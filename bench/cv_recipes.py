"""Benchmark: compare training recipes by group k-fold cross-validation over the train + validation screams.

`bench/select_on_val.py` decides between models on the 14 validation screams (112 events): one scream is 7 % of
recall there, and most of them come from one source. Here the train and validation groups of the split are dealt
into `--folds` folds by `screamdetect.data.group_folds` (no group in two folds; the groups that hold screams are
dealt first, largest first, to the fold with the fewest screams; then the other groups to the fold with the fewest
clips). Each recipe (a config YAML) is trained once per fold on the other folds, and scored on its held-out fold
with `select_on_val.py`'s protocol: each held-out scream at 0, 5, 10 and 20 dB, `--repeats` times, and `--free-hours`
of scream-free scenes from the held-out non-screams over the validation noise pieces. The best recall at <= 0.5, 2
and 5 false alarms/h is taken per fold (each fold's model its own threshold), and the events found are pooled over
the folds. The TEST split is never touched (its rows of the split file are kept as they are).

    .venv/bin/python bench/cv_recipes.py configs/default.yaml configs/ratio.yaml --folds 4 --out runs/cv

Training is the product's own (`train_product`), with its calibration cut to the minimum (the folds are scored
here); runs are kept under OUT/<config>/fold<k>/ and reused when present, so an interrupted run resumes.
Writes OUT/cv.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_on_val import TARGETS, best_at, sweep, validation_scenes

from screamdetect.data import discover, group_folds, load_or_make_split, write_split
from screamdetect.detector import Detector
from screamdetect.product import ProductConfig, train_product


def fold_splits(corpus: Path, base_split: Path, folds: int, seed: int = 0) -> list[dict[str, str]]:
    """One {clip path: split} per fold: that fold's clips are 'val', the other folds' 'train', test unchanged."""
    ds = discover(corpus)
    assign = {c.path: name for name, clips in load_or_make_split(ds, base_split).items() for c in clips}
    fold_of = group_folds([c for c in ds.clips if assign[c.path] != "test"], folds, seed)
    return [{p: (s if p not in fold_of else "val" if fold_of[p] == k else "train") for p, s in assign.items()}
            for k in range(folds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path, help="recipe YAMLs (as for `screamdetect train --config`)")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default7/split.csv"),
                    help="the split whose train + val groups are dealt into folds (its test rows are kept); "
                         "made with the default seed if absent")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--free-hours", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=Path("runs/cv"))
    args = ap.parse_args()
    if args.folds < 2:
        ap.error("--folds must be >= 2")
    for c in args.configs:
        if not c.is_file():
            ap.error(f"{c}: no such config file")
    ds = discover(args.corpus)
    splits = fold_splits(args.corpus, args.split_file, args.folds)
    results: dict[str, list[dict]] = {c.stem: [] for c in args.configs}
    for k, assign in enumerate(splits):
        fold_file = args.out / f"fold{k}_split.csv"
        if not fold_file.exists():
            write_split(assign, fold_file, ds.root)
        t0 = time.perf_counter()
        events, free, n_screams = validation_scenes(args.corpus, fold_file, args.repeats, args.free_hours)
        n_events = sum(len(s.events) for s in events)
        print(f"fold {k}: {n_screams} held-out screams -> {n_events} events; "
              f"{sum(s.duration_s for s in free) / 3600:.1f} h scream-free ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        for c in args.configs:
            run = args.out / c.stem / f"fold{k}"
            if not (run / "model.json").exists():
                d = yaml.safe_load(c.read_text()) or {}
                d.update(calib_snr_db=[10.0], calib_repeats=1, calib_hours=0.25)  # scored below instead
                run.mkdir(parents=True, exist_ok=True)
                (run / "split.csv").write_bytes(fold_file.read_bytes())
                train_product(args.corpus, ProductConfig.from_dict(d), run)
            rows = sweep(Detector.load(run / "model.onnx"), events, free)
            best = {f"{t:g}": best_at(rows, t) for t in TARGETS}
            results[c.stem].append({"fold": k, "screams": n_screams, "events": n_events,
                                    "found": {t: round(b["recall"] * n_events) for t, b in best.items()},
                                    "best": best})
            cells = "  ".join(f"{t}/h: {b['recall']:.3f} (thr {b['threshold']})" for t, b in best.items())
            print(f"  {c.stem:20s} {cells}", flush=True)
    summary = {}
    print(f"\npooled over {args.folds} folds: events found / events at <= {', '.join(f'{t:g}' for t in TARGETS)} "
          "false alarms/h")
    for name, rs in results.items():
        total = sum(r["events"] for r in rs)
        pooled = {f"{t:g}": sum(r["found"][f"{t:g}"] for r in rs) / total for t in TARGETS}
        summary[name] = {"events": total, "recall": pooled}
        print(f"  {name:20s} " + " / ".join(f"{v:.3f}" for v in pooled.values()) + f"  ({total} events)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cv.json").write_text(json.dumps({"folds": args.folds, "free_hours": args.free_hours,
                                                  "summary": summary, "per_fold": results}, indent=1))


if __name__ == "__main__":
    main()
