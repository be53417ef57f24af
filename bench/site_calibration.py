"""Benchmark: what `screamdetect calibrate-site` buys at sites quieter (or busier) than the card's calibration.

For each kind of site, the threshold is set the way `calibrate-site` sets it, on `--site-hours` of scream-free
audio of that kind built from the VALIDATION split (its non-screams over its noise pieces), and then judged on
TEST scenes of the same kind (test screams at 0 / 5 / 10 / 20 dB, `--repeats` times each, and `--free-hours` of
scream-free test scenes): event recall per SNR, false alarms per hour and latency at the card's threshold and at
the site's. Kinds (`--kinds`):
  quiet    noise beds without animals or sound events: rain, wind, water, traffic, cafe murmur (a ward, a corridor,
           an office, a car park)
  indoor   the same beds plus 2 non-screams a minute from the whole corpus mix (speech, vocal bursts, music,
           alarms, animals, children at play, ...)
  outdoor  noise beds of every category, birds, crows and gulls included, no other sound events
  busy     every category plus 10 non-screams a minute (people, animals, games, street): the card's own calibration
           and evaluate-events scenes

    .venv/bin/python bench/site_calibration.py [--model PATH] [--kinds quiet,indoor,outdoor,busy] [--site-hours 4] [--free-hours 4]
        [--no-second-stage]

Writes runs/site_calibration/site_calibration.json and prints a markdown table, and for each threshold what was
playing under the false alarms (the category of the non-scream clip or noise piece: scenes.cause_of).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from screamdetect import Detector
from screamdetect import scenes as sc
from screamdetect.data import SplitSpec, discover, load_or_make_split
from screamdetect.evaluate import alerts_from_scores, event_metrics, match_events
from screamdetect.site import Timeline, false_alarm_sweep, lowest_within

KINDS = {  # noise categories (None: all), non-screams scattered per minute
    "quiet": (["rain", "wind", "water", "traffic", "cafe"], 0.0),
    "indoor": (["rain", "wind", "water", "traffic", "cafe"], 2.0),
    "outdoor": (None, 0.0),
    "busy": (None, 10.0),
}


def split_material(ds, splits, name: str, categories: list[str] | None):
    """Screams (path, audio), non-screams and noise pieces of one split, and the category of each non-scream and
    noise piece (to say what caused a false alarm)."""
    clips = splits[name]
    noise_named = sc.load_named(sc.noise_split(Path(ds.root) / "noise", seed=0, categories=categories)[name])
    screams = sc.load_named([c.path for c in clips if c.label == 1])
    cat = {c.path: c.category or "clip" for c in clips if c.label == 0}
    neg_named = sc.load_named(list(cat), max_s=15.0)
    noise_cat = sc.noise_categories(Path(ds.root) / "noise")
    names = {"clip": [cat[p] for p, _ in neg_named],
             "noise": [f"noise: {noise_cat[Path(p)]} ({Path(p).stem})" for p, _ in noise_named]}
    return screams, [a for _, a in neg_named], [a for _, a in noise_named], names


def false_alarm_causes(free, det: Detector, threshold: float, names) -> dict[str, int]:
    """Category of the background sound under each false alarm at `threshold` (scenes.cause_of), counted."""
    out: dict[str, int] = {}
    for s, scores in free:
        for a in alerts_from_scores(scores, det_tracker(det, threshold), s.duration_s):
            cause = sc.cause_of(s.sounds, a.start_s, a.end_s)
            key = "unknown" if cause is None else names[cause.kind][cause.index]
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default6/split.csv"))
    ap.add_argument("--kinds", default="quiet,indoor,outdoor,busy", help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--site-hours", type=float, default=4.0)
    ap.add_argument("--free-hours", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.5, help="false alarms per hour")
    ap.add_argument("--no-second-stage", action="store_true",
                    help="the CNN alone (as `calibrate-site --no-second-stage` and `detect --no-second-stage`)")
    ap.add_argument("--out", type=Path, default=Path("runs/site_calibration"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    det = Detector.load(args.model, second_stage=not args.no_second_stage)
    print(f"detector: {det.description}; card threshold {det.threshold:g}", flush=True)
    ds = discover(args.corpus)
    splits = load_or_make_split(ds, args.split_file, SplitSpec())
    results = []
    for kind in args.kinds.split(","):
        categories, cpm = KINDS[kind]
        _, val_neg, val_noise, val_names = split_material(ds, splits, "val", categories)
        test_screams, test_neg, test_noise, test_names = split_material(ds, splits, "test", categories)
        site_scenes = [(s, det.score_windows(s.audio)) for s in sc.scream_free_scenes(
            val_neg, val_noise, args.site_hours, sc.SceneSpec(duration_s=300.0, clips_per_minute=cpm, seed=2000))]
        site = [Timeline(s.name, scores, s.duration_s) for s, scores in site_scenes]
        rows = false_alarm_sweep(site, sorted({*[r[0] for r in det.calibration["sweep"]], det.threshold}),
                                 det.smoothing, det.window_s, det.hop_s)
        chosen = lowest_within(rows, args.target)
        spec = sc.SceneSpec(clips_per_minute=cpm, seed=0)
        events = [(s, det.score_windows(s.audio)) for s in
                  sc.event_scenes(test_screams, test_neg, test_noise, spec, repeats=args.repeats)]
        free = [(s, det.score_windows(s.audio)) for s in sc.scream_free_scenes(
            test_neg, test_noise, args.free_hours, sc.SceneSpec(duration_s=300.0, clips_per_minute=cpm, seed=101))]
        free_h = sum(s.duration_s for s, _ in free) / 3600
        for name, thr in (("card", det.threshold), ("site", None if chosen is None else chosen["threshold"])):
            if thr is None:
                results.append({"kind": kind, "threshold_from": name, "threshold": None})
                continue
            matches = []
            for s, scores in events:
                matches += match_events(s.events, alerts_from_scores(scores, det_tracker(det, thr), s.duration_s))[0]
            fa = sum(len(alerts_from_scores(scores, det_tracker(det, thr), s.duration_s)) for s, scores in free)
            m = event_metrics(matches, fa, free_h)
            site_row = next(r for r in rows if abs(r["threshold"] - thr) < 1e-9)
            causes = {"site": false_alarm_causes(site_scenes, det, thr, val_names),
                      "test": false_alarm_causes(free, det, thr, test_names)}
            results.append({"kind": kind, "clips_per_minute": cpm, "noise_pieces": [len(val_noise), len(test_noise)],
                            "threshold_from": name, "threshold": thr,
                            "site_false_alarms": site_row["false_alarms"], "site_hours": args.site_hours, **m,
                            "false_alarm_causes": causes})
            print(f"{kind}, {name} threshold {thr:g}: site (val) {site_row['false_alarms']} FA in "
                  f"{args.site_hours:g} h; test FA/h {m['false_alarms_per_hour']:.2f}, recall "
                  f"{' / '.join(f'{v:.2f}' for v in m['recall_by_snr'].values())} ({m['event_recall']:.3f}), "
                  f"latency {m['latency_median_s']:.2f} s  [{time.perf_counter() - t0:.0f} s]\n"
                  f"    false alarms under: site {causes['site'] or '-'}; test {causes['test'] or '-'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "site_calibration.json").write_text(json.dumps({"model": str(det.path), "args": {
        k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    print("\n| site | threshold | site FA (val) | test FA/h | recall 0 / 5 / 10 / 20 dB | all | "
          "latency |\n|---|---|---|---|---|---|---|")
    for r in results:
        if r["threshold"] is None:
            print(f"| {r['kind']} | site: target not met | | | | | |")
            continue
        print(f"| {r['kind']} | {r['threshold_from']} {r['threshold']:g} | {r['site_false_alarms']} | "
              f"{r['false_alarms_per_hour']:.2f} | {' / '.join(f'{v:.2f}' for v in r['recall_by_snr'].values())} | "
              f"{r['event_recall']:.3f} | {r['latency_median_s']:.2f} s |")


def det_tracker(det: Detector, threshold: float):
    from screamdetect.detector import EventTracker

    return EventTracker(threshold, det.smoothing, det.window_s, det.hop_s)


if __name__ == "__main__":
    main()
