"""Benchmark: the onset rule's trade between recall, false alarms and alert latency, on VALIDATION scenes.

The shipped card starts an event when 2 of the last 3 windows reach the threshold; its alert comes at the end of the
window that completes the rule, so the rule sets a floor under the latency (one more hop of 0.25 s per extra window
asked for). For each rule k/n given (hold and refractory as in the card), the window scores of the validation event
scenes (each validation scream at 0, 5, 10, 20 dB, `--repeats` times) and `--free-hours` of scream-free validation
scenes are computed once (bench/select_on_val.py's scenes, seed 1000), then every threshold of the calibration
sweep is run: best event recall within each false-alarm rate, and the latency (median, p95) of the events found
there.

    .venv/bin/python bench/onset_rule.py [--rules 2/3,1/1,2/2] [--split-file runs/default/split.csv]

Prints a markdown table and writes <out>/onset_rule.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from select_on_val import validation_scenes

from screamdetect.detector import CALIBRATION_THRESHOLDS, Detector, EventTracker, events_from_scores
from screamdetect.evaluate import alerts_from_scores, match_events

RATES = (0.5, 1.0, 2.0, 5.0)


def operating_points(det, smoothing, ev_scores, free_scores, events, hours):
    """Per threshold: events found, false alarms/h, latencies (alert time − onset, as evaluate-events) of the
    events found."""
    w, h = det.window_s, det.hop_s
    rows = []
    for thr in CALIBRATION_THRESHOLDS:
        fa = sum(len(events_from_scores(s, thr, smoothing, w, h)) for s in free_scores)
        found, lat = 0, []
        for scene, s in zip(events, ev_scores):
            dets = alerts_from_scores(s, EventTracker(thr, smoothing, w, h), scene.duration_s)  # with alert_s
            for m in match_events(scene.events, dets, 1.0)[0]:
                found += m.detected
                if m.detected and m.latency_s is not None:
                    lat.append(m.latency_s)
        rows.append({"threshold": thr, "false_alarms_per_hour": fa / hours, "found": found, "latencies": lat})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    ap.add_argument("--rules", default="2/3,1/1,2/2", help="onset rules k/n, comma-separated")
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default/split.csv"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--free-hours", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=Path("runs/onset_rule"))
    args = ap.parse_args()
    t0 = time.time()
    det = Detector.load(args.model)
    events, free, n_screams = validation_scenes(args.corpus, args.split_file, args.repeats, args.free_hours)
    hours = sum(s.duration_s for s in free) / 3600
    n_events = sum(len(s.events) for s in events)
    ev_scores = [det.score_windows(s.audio) for s in events]
    free_scores = [det.score_windows(s.audio) for s in free]
    print(f"{det.description}; {n_events} validation events ({n_screams} screams), {hours:.1f} h scream-free; "
          f"scored in {time.time() - t0:.0f} s")
    out = {"events": n_events, "hours": hours, "rules": {}}
    print("| rule | " + " | ".join(f"≤ {r:g} FA/h: found (thr), latency median / p95" for r in RATES) + " |")
    print("|---" * (len(RATES) + 1) + "|")
    for rule in args.rules.split(","):
        k, n = (int(v) for v in rule.split("/"))
        sm = replace(det.smoothing, k=k, n=n)
        rows = operating_points(det, sm, ev_scores, free_scores, events, hours)
        cells, res = [], {}
        for rate in RATES:
            ok = [r for r in rows if r["false_alarms_per_hour"] <= rate]
            best = max(ok, key=lambda r: (r["found"], -r["threshold"]))
            lat = np.array(best["latencies"])
            med = float(np.median(lat)) if lat.size else float("nan")
            p95 = float(np.percentile(lat, 95)) if lat.size else float("nan")
            res[f"{rate:g}"] = {"threshold": best["threshold"], "found": best["found"],
                                "false_alarms_per_hour": best["false_alarms_per_hour"],
                                "latency_median_s": med, "latency_p95_s": p95}
            cells.append(f"{best['found']} ({best['threshold']:.2f}), {med:.2f} / {p95:.2f} s")
        out["rules"][rule] = res
        print(f"| {k} of {n} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onset_rule.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
