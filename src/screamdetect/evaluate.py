"""Evaluation: clip metrics (the study's tables) and event metrics (how deployments are judged). Computes, never plots.

Clip metrics take the true labels and the scores of one split:

* ``y_true``: int 0/1 array, shape (n,), 1 = scream;
* ``p``: float array, shape (n,), the model's P(scream) (``predict_proba``), in [0, 1].

A decision threshold is chosen on the VALIDATION split only (:func:`choose_threshold`) and then applied unchanged
to the test split (:func:`clip_metrics`), so test data never tunes anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .audio import SAMPLE_RATE

THRESHOLD_RULES = ("f1", "youden", "fixed")
CLASS_NAMES = ("not_scream", "scream")


def _check(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} labels but p has {s.shape[0]} scores")
    if y.size == 0:
        raise ValueError("y_true is empty: nothing to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1, found {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("p contains NaN or infinite scores")
    return y.astype(np.int64), s


def confusion(y_true, y_pred) -> np.ndarray:
    """2×2 confusion matrix, int64: rows = true class, columns = predicted class, order (not_scream, scream).

    [[tn, fp], [fn, tp]].
    """
    y = np.asarray(y_true).reshape(-1).astype(bool)
    q = np.asarray(y_pred).reshape(-1).astype(bool)
    if y.shape != q.shape:
        raise ValueError(f"y_true has {y.size} labels but y_pred has {q.size}")
    return np.array([[np.sum(~y & ~q), np.sum(~y & q)], [np.sum(y & ~q), np.sum(y & q)]], dtype=np.int64)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1


def classification_report(y_true, y_pred, digits: int = 3) -> str:
    """scikit-learn's text classification report for the two classes (names not_scream, scream)."""
    from sklearn.metrics import classification_report as skl_report

    return skl_report(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), labels=[0, 1],
                      target_names=list(CLASS_NAMES), digits=digits, zero_division=0)


def pr_curve(y_true, p) -> dict:
    """Precision-recall curve points of the scream class: {"precision": [...], "recall": [...], "thresholds": [...]}
    (lists of floats; precision/recall have one more point than thresholds, as scikit-learn). Empty lists when
    y_true holds no scream."""
    from sklearn.metrics import precision_recall_curve

    y, s = _check(y_true, p)
    if y.sum() == 0:
        return {"precision": [], "recall": [], "thresholds": []}
    prec, rec, thr = precision_recall_curve(y, s)
    return {"precision": prec.tolist(), "recall": rec.tolist(), "thresholds": thr.tolist()}


def roc_curve(y_true, p) -> dict:
    """ROC curve points: {"fpr": [...], "tpr": [...], "thresholds": [...]}; empty lists when one class is absent."""
    from sklearn.metrics import roc_curve as skl_roc

    y, s = _check(y_true, p)
    if y.sum() == 0 or y.sum() == y.size:
        return {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thr = skl_roc(y, s)
    thr = np.where(np.isfinite(thr), thr, 1.0)  # scikit-learn's first threshold is +inf (not JSON)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def clip_metrics(y_true, p, threshold: float = 0.5, curves: bool = False) -> dict:
    """Metrics of one split at a given decision threshold (a clip is a scream when p >= threshold).

    Returns a JSON-ready dict: n, n_pos (screams), threshold, accuracy, precision / recall / f1 of the scream class,
    ap (average precision, threshold-free), roc_auc, tn/fp/fn/tp, confusion [[tn, fp], [fn, tp]], report (the
    classification report text); with curves=True also "pr" and "roc" (see :func:`pr_curve`, :func:`roc_curve`).
    ap is NaN without screams, roc_auc NaN when one class is absent (they are undefined there).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    y, s = _check(y_true, p)
    pred = (s >= threshold).astype(np.int64)
    cm = confusion(y, pred)
    (tn, fp), (fn, tp) = cm.tolist()
    precision, recall, f1 = _prf(tp, fp, fn)
    n_pos = int(y.sum())
    ap = float(average_precision_score(y, s)) if n_pos else math.nan
    auc = float(roc_auc_score(y, s)) if 0 < n_pos < y.size else math.nan
    out = {"n": int(y.size), "n_pos": n_pos, "threshold": float(threshold), "accuracy": float((tn + tp) / y.size),
           "precision": precision, "recall": recall, "f1": f1, "ap": ap, "roc_auc": auc,
           "tn": tn, "fp": fp, "fn": fn, "tp": tp, "confusion": cm.tolist(),
           "report": classification_report(y, pred)}
    if curves:
        out["pr"] = pr_curve(y, s)
        out["roc"] = roc_curve(y, s)
    return out


def choose_threshold(y_val, p_val, rule: str = "f1", default: float = 0.5) -> float:
    """The decision threshold, chosen on the VALIDATION split (never on test).

    rule "f1": the threshold maximising the scream-class F1 on validation; "youden": the one maximising
    TPR − FPR; "fixed": `default`. The candidates are the cuts between distinct validation scores (a clip is a
    scream when p >= threshold); the chosen cut lies midway between the lowest validation score it accepts and the
    next lower one (or at the lowest score when it accepts all). Ties go to the highest cut (fewest alarms). When validation has no scream (or, for
    "youden", no non-scream) the rule is undefined and `default` is returned.
    Returns a float in [0, 1].
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    if not 0.0 <= default <= 1.0:
        raise ValueError(f"default must be in [0, 1], got {default}")
    y, s = _check(y_val, p_val)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if rule == "fixed" or n_pos == 0 or (rule == "youden" and n_neg == 0):
        return float(default)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cumulative counts at each distinct score: predicting positive for every score >= that value.
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    fn = n_pos - tp
    if rule == "f1":
        score = 2 * tp / (2 * tp + fp + fn)
    else:  # Youden's J = tp/n_pos - fp/n_neg, in integers (n_pos * n_neg * J): equal J are equal, not 1 ulp apart
        score = tp.astype(np.int64) * n_neg - fp.astype(np.int64) * n_pos
    best = int(np.argmax(score))  # first maximum = highest threshold
    lo = s_sorted[last[best]]
    # Midway to the next lower validation score: the same validation decisions, with a margin on both sides.
    thr = (lo + s_sorted[last[best + 1]]) / 2 if best + 1 < last.size else lo
    return float(np.clip(thr, 0.0, 1.0))


def summary_row(m: dict) -> dict:
    """The headline numbers of :func:`clip_metrics` (for summary tables)."""
    keys = ("precision", "recall", "f1", "ap", "roc_auc", "accuracy", "threshold", "n", "n_pos", "tp", "fp", "fn")
    return {k: m[k] for k in keys if k in m}


# ---- event-level metrics (lead)
#
# A scene's ground truth (scenes.GroundTruth: start_s, end_s, snr_db) is matched against detected events; false
# alarms per hour are counted on scream-free scenes only; latency is the time from a scream's onset to the moment
# a streaming detector would raise its alert.


def jsonable(o):
    """Metrics as plain JSON: numpy numbers to Python ones, arrays to lists, NaN / inf (e.g. AP with no scream among
    the clips) to null, so that what is written is valid JSON."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    return o

@dataclass(frozen=True)
class EventMatch:
    """One ground-truth scream and what the detector made of it. latency_s: alert time − onset (None if missed)."""

    gt_start_s: float
    gt_end_s: float
    snr_db: float
    detected: bool
    latency_s: float | None


def covers_scream(start_s: float, end_s: float, gt_start_s: float, gt_end_s: float, tolerance_s: float = 1.0
                  ) -> bool:
    """Whether a detection over [start_s, end_s] can be the scream's over [gt_start_s, gt_end_s]: it is still on
    after the onset and starts before the scream's end + tolerance_s (a scream's tail can outlast its loud part).
    No tolerance before the onset: a detection over by then was raised by something else."""
    return end_s > gt_start_s and start_s <= gt_end_s + tolerance_s


def match_events(truth: Sequence, detections: Sequence, tolerance_s: float = 1.0) -> tuple[list[EventMatch], int]:
    """Match detections to ground-truth screams of one scene.

    truth: objects with start_s, end_s, snr_db. detections: objects with start_s, end_s and optionally alert_s
    (when the alert was raised; defaults to start_s). A detection matches a scream when :func:`covers_scream`;
    each detection matches at most one scream. Of the detections that match a scream, the first whose alert
    comes at or after its onset gives the latency (else the first one). Returns (one EventMatch per scream,
    number of detections that matched no scream = false alarms).
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")

    def alert_of(d) -> float:
        a = getattr(d, "alert_s", None)
        return float(d.start_s if a is None else a)

    used = [False] * len(detections)
    out = []
    for gt in sorted(truth, key=lambda g: g.start_s):
        cands = [j for j, d in enumerate(detections)
                 if not used[j] and covers_scream(d.start_s, d.end_s, gt.start_s, gt.end_s, tolerance_s)]
        if not cands:
            out.append(EventMatch(gt.start_s, gt.end_s, gt.snr_db, False, None))
            continue
        hit = next((j for j in cands if alert_of(detections[j]) >= gt.start_s), cands[0])
        used[hit] = True
        out.append(EventMatch(gt.start_s, gt.end_s, gt.snr_db, True, alert_of(detections[hit]) - gt.start_s))
    # Detections overlapping an already matched scream (a split event) are not false alarms.
    spurious = 0
    for j, d in enumerate(detections):
        if used[j]:
            continue
        if not any(covers_scream(d.start_s, d.end_s, g.start_s, g.end_s, tolerance_s) for g in truth):
            spurious += 1
    return out, spurious


def event_metrics(matches: Sequence[EventMatch], false_alarms: int, scream_free_hours: float) -> dict:
    """Event recall per SNR, false alarms per hour (on scream-free audio), alert latency (median, p95) in s."""
    by_snr: dict[float, list[EventMatch]] = {}
    for m in matches:
        by_snr.setdefault(m.snr_db, []).append(m)
    lat = np.array([m.latency_s for m in matches if m.detected], dtype=float)
    return {
        "events": len(matches),
        "event_recall": float(np.mean([m.detected for m in matches])) if matches else float("nan"),
        "recall_by_snr": {f"{snr:g}": float(np.mean([m.detected for m in ms])) for snr, ms in sorted(by_snr.items())},
        "events_by_snr": {f"{snr:g}": len(ms) for snr, ms in sorted(by_snr.items())},
        "false_alarms": int(false_alarms),
        "scream_free_hours": float(scream_free_hours),
        "false_alarms_per_hour": float(false_alarms / scream_free_hours) if scream_free_hours > 0 else float("nan"),
        "latency_median_s": float(np.median(lat)) if lat.size else float("nan"),
        "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else float("nan"),
    }


def detect_with_alerts(detector, audio: np.ndarray) -> list:
    """Events of a whole signal with the time each alert would be raised when streaming (`alert_s`).

    Replays the detector's own smoothing (EventTracker) over its window scores: the "start" update's at_s is
    the stream time at which the alert fires.
    """
    return alerts_from_scores(detector.score_windows(audio), detector.tracker(), audio.size / SAMPLE_RATE)


def alerts_from_scores(scores: np.ndarray, tr, duration_s: float) -> list:
    """:func:`detect_with_alerts` on window scores already computed, with a fresh EventTracker `tr` (any threshold)."""
    from types import SimpleNamespace

    starts: dict[float, float] = {}
    for s in scores:
        for u in tr.update(float(s)):
            if u.kind == "start":
                starts[u.start_s] = u.at_s
    tr.finish(duration_s)
    return [SimpleNamespace(start_s=e.start_s, end_s=e.end_s, peak_score=e.peak_score,
                            alert_s=starts.get(e.start_s, e.start_s)) for e in tr.events]


@dataclass
class SceneScores:
    """The window scores of one evaluation scene, kept to re-run the smoothing at other thresholds."""

    scores: np.ndarray
    duration_s: float
    truth: Sequence = ()  # the scene's screams (start_s, end_s, snr_db); empty for a scream-free scene


def operating_curve(event_scenes: Sequence[SceneScores], free_scenes: Sequence[SceneScores], detector,
                    thresholds: Sequence[float], tolerance_s: float = 1.0) -> list[dict]:
    """What :func:`evaluate_events` measures at the detector's threshold, at every threshold of `thresholds`: event
    recall (overall and per SNR) and false alarms per hour on the scream-free scenes (with its 95 % upper bound).
    Window scores are computed once; only the smoothing (the detector's own) is re-run per threshold."""
    from .detector import events_from_scores
    from .site import Timeline, false_alarm_sweep

    sm, w, h = detector.smoothing, detector.window_s, detector.hop_s
    free = false_alarm_sweep([Timeline("", f.scores, f.duration_s) for f in free_scenes], thresholds, sm, w, h)
    peaks = [float(e.scores.max()) if e.scores.size else 0.0 for e in event_scenes]
    rows = []
    for fa in free:
        thr = fa["threshold"]
        matches: list[EventMatch] = []
        for e, peak in zip(event_scenes, peaks):
            found = events_from_scores(e.scores, thr, sm, w, h, e.duration_s) if peak >= thr else []
            matches += match_events(e.truth, found, tolerance_s)[0]
        m = event_metrics(matches, fa["false_alarms"], sum(f.duration_s for f in free_scenes) / 3600)
        rows.append({"threshold": thr, "false_alarms_per_hour": m["false_alarms_per_hour"],
                     "false_alarms_per_hour_upper95": fa["upper95_per_hour"], "event_recall": m["event_recall"],
                     "recall_by_snr": m["recall_by_snr"]})
    return rows


def best_within(curve: Sequence[dict], max_false_alarms_per_hour: float) -> dict | None:
    """The curve's row with the highest event recall among those within the false-alarm rate (lowest threshold on
    ties); None if none is."""
    ok = [r for r in curve if r["false_alarms_per_hour"] <= max_false_alarms_per_hour]
    return max(ok, key=lambda r: (r["event_recall"], -r["threshold"])) if ok else None


def write_operating_curve(curve: Sequence[dict], path) -> None:
    """The operating curve as CSV: threshold, false alarms/h (and its 95 % bound), recall, recall at each SNR."""
    import csv

    snrs = list(curve[0]["recall_by_snr"]) if curve else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["threshold", "false_alarms_per_hour", "false_alarms_per_hour_upper95", "event_recall",
                    *[f"recall_{x}dB" for x in snrs]])
        for r in curve:
            w.writerow([r["threshold"], round(r["false_alarms_per_hour"], 4),
                        round(r["false_alarms_per_hour_upper95"], 4), round(r["event_recall"], 4),
                        *[round(r["recall_by_snr"][x], 4) for x in snrs]])


def evaluate_events(detector, data, out_dir=None, noise_dir=None, split_file=None, split_spec=None,
                    scene_spec=None, repeats: int = 3, free_hours: float = 1.0, tolerance_s: float = 1.0,
                    write_scenes: bool = True, noise_categories=None) -> dict:
    """Event-level evaluation of a detector on long scenes built from the TEST split only.

    Scenes: test-split screams inserted at every SNR of `scene_spec.snrs_db` (`repeats` times each, in different
    backgrounds) over noise beds of the TEST noise pieces with test-split non-screams scattered over them; plus
    `free_hours` of scream-free scenes for false alarms per hour (the same `scene_spec`: levels, non-screams per
    minute). noise_categories: only the test noise pieces of these categories (a kind of site: e.g. no birds).
    Scenes and their ground truth (JSON beside each FLAC) are written to out_dir/scenes when `write_scenes`. `detector` needs score_windows() and tracker()
    (screamdetect.Detector) or a detect_with_alerts-compatible object. Returns the metrics dict.
    """
    from pathlib import Path

    from rich.progress import track

    from . import scenes as sc
    from .data import SplitSpec, discover, load_or_make_split

    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats (--repeats) must be a whole number >= 1, got {repeats!r}")
    if not 0 < free_hours < float("inf"):  # NaN too
        raise ValueError(f"free_hours (--free-hours) must be a finite number of hours > 0, got {free_hours!r}")
    ds = discover(data)
    split_spec = split_spec or SplitSpec()
    out_dir = Path(out_dir) if out_dir else None
    split_file = Path(split_file) if split_file else (out_dir / "split.csv" if out_dir else Path("runs/split.csv"))
    splits = load_or_make_split(ds, split_file, split_spec)
    noise_dir = Path(noise_dir) if noise_dir else Path(ds.root) / "noise"
    unreadable: list[dict] = []
    noise_named = sc.load_named(sc.noise_split(noise_dir, seed=split_spec.seed, categories=noise_categories)["test"],
                                failed=unreadable)
    test_noise = [a for _, a in noise_named]
    if not test_noise:
        which = f" of the categories {', '.join(sorted(noise_categories))}" if noise_categories else ""
        raise ValueError(f"{noise_dir}: no readable noise piece{which} in the test part of the noise bank")
    test = splits["test"]
    screams = sc.load_named([c.path for c in test if c.label == 1], failed=unreadable)
    neg_clips = {c.path: c for c in test if c.label == 0}
    neg_named = sc.load_named(list(neg_clips), max_s=15.0, failed=unreadable)
    negatives = [a for _, a in neg_named]
    n_pos = sum(c.label == 1 for c in test)
    if not screams or not negatives:
        raise ValueError(f"the test split of {ds.root} ({split_file}) holds {len(screams)} readable screams of "
                         f"{n_pos} and {len(negatives)} readable non-screams of {len(neg_clips)}: event scenes need "
                         "both (a dataset with more groups, or another --split-file)")
    noise_cat = sc.noise_categories(noise_dir)

    def describe(sound) -> dict:  # a background sound as a row: its file, and its category (and source)
        if sound is None:
            return {"cause_kind": "", "cause": "", "category": "unknown"}
        if sound.kind == "clip":
            c = neg_clips[neg_named[sound.index][0]]
            return {"cause_kind": "clip", "cause": c.path, "category": c.category or "clip", "source": c.source}
        path = noise_named[sound.index][0]
        return {"cause_kind": "noise", "cause": str(path), "category": f"noise: {noise_cat.get(Path(path), 'noise')}"}

    spec = scene_spec or sc.SceneSpec()
    # A Detector's window scores are kept (a few floats per second) for the operating curve; an object with only
    # detect_with_alerts gives events and no curve.
    keep = getattr(detector, "detect_with_alerts", None) is None
    kept: dict[str, list[SceneScores]] = {"event": [], "free": []}

    def run(audio: np.ndarray, kind: str, truth=()) -> list:
        if not keep:
            return detector.detect_with_alerts(audio)
        scores = detector.score_windows(audio)
        kept[kind].append(SceneScores(scores, audio.size / SAMPLE_RATE, truth))
        return alerts_from_scores(scores, detector.tracker(), audio.size / SAMPLE_RATE)

    matches: list[EventMatch] = []
    spurious_in_event_scenes = 0
    event_scene_s = 0.0
    gains: dict[str, list[float]] = {"event": [], "free": []}
    scene_list = list(sc.event_scenes(screams, negatives, test_noise, spec, repeats=repeats))
    for scene in track(scene_list, description="event scenes", transient=True):
        det = run(scene.audio, "event", scene.events)
        m, fa = match_events(scene.events, det, tolerance_s)
        matches += m
        spurious_in_event_scenes += fa
        event_scene_s += scene.duration_s
        gains["event"].append(scene.gain_db)
        if out_dir is not None and write_scenes:
            scene.sounds = [replace(x, name=describe(x)["cause"]) for x in scene.sounds]  # files, in the JSON
            sc.write_scene(scene, out_dir / "scenes")
    free = 0
    free_s = 0.0
    fspec = replace(spec, duration_s=300.0, seed=spec.seed + 101)
    n_free = max(1, int(np.ceil(free_hours * 3600 / fspec.duration_s)))
    false_alarms: list[dict] = []
    for scene in track(sc.scream_free_scenes(negatives, test_noise, free_hours, fspec), total=n_free,
                       description="scream-free scenes", transient=True):
        found = run(scene.audio, "free")
        free += len(found)
        free_s += scene.duration_s
        gains["free"].append(scene.gain_db)
        for d in found:
            false_alarms.append({"scene": scene.name, "start_s": round(float(d.start_s), 3),
                                 "end_s": round(float(d.end_s), 3),
                                 "peak_score": round(float(getattr(d, "peak_score", float("nan"))), 4),
                                 **describe(sc.cause_of(scene.sounds, d.start_s, d.end_s))})
    result = event_metrics(matches, free, free_s / 3600)
    causes: dict[str, int] = {}
    for fa in false_alarms:
        causes[fa["category"]] = causes.get(fa["category"], 0) + 1
    result.update({
        # what was playing under each false alarm of the scream-free scenes (scenes.cause_of), by category
        "false_alarm_causes": dict(sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "false_alarms_in_event_scenes": spurious_in_event_scenes,
        "event_scene_hours": event_scene_s / 3600,
        # how far each scene was turned down so its loudest peak fits under full scale (scenes.fit_full_scale; a
        # 20 dB scream over a loud bed turns its whole scene down, SNRs kept): median and lowest, in dB
        "scene_gain_db": {k: {"median": round(float(np.median(v)), 2), "min": round(float(np.min(v)), 2)}
                          for k, v in gains.items() if v},
        "test_screams": len(screams), "test_negatives": len(negatives), "test_noise_pieces": len(test_noise),
        "unreadable": unreadable,  # test files (and noise pieces) that could not be decoded: left out above
        "repeats": repeats, "tolerance_s": tolerance_s, "snrs_db": list(spec.snrs_db),
        "clips_per_minute": spec.clips_per_minute,
        "noise_categories": None if noise_categories is None else sorted(noise_categories),
        "threshold": float(getattr(detector, "threshold", float("nan"))),
        "split": f"test split of {ds.root} ({split_file})",
    })
    if keep and kept["free"]:
        from .detector import CALIBRATION_THRESHOLDS, grid_with

        thresholds = grid_with(CALIBRATION_THRESHOLDS, detector.threshold)
        # For reporting what other operating points would give on this test: thresholds to deploy are chosen on
        # validation data (the card) or on the site's own audio (calibrate-site), never here.
        result["operating_curve"] = operating_curve(kept["event"], kept["free"], detector, thresholds, tolerance_s)
    if out_dir is not None:
        import json

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "event_metrics.json").write_text(json.dumps(jsonable(result), indent=1))
        write_false_alarms(false_alarms, out_dir / "false_alarms.csv")
        if result.get("operating_curve"):
            write_operating_curve(result["operating_curve"], out_dir / "operating_curve.csv")
    return result


FALSE_ALARM_FIELDS = ("scene", "start_s", "end_s", "peak_score", "category", "source", "cause_kind", "cause")


def write_false_alarms(rows: Sequence[dict], path) -> None:
    """The false alarms of the scream-free scenes, one row each, with the background sound under it (a clip of
    the test split or a noise piece: listen to it) and its category."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FALSE_ALARM_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def evaluate_clips(detector, clips: Sequence, progress: bool = True) -> dict:
    """Clip-level metrics of a detector on labelled clips (data.Clip: path, label), e.g. a dataset of your own.

    Each clip is scored whole: its score is its highest window score, and the detector's decision is whether it
    raises an event in the clip (the smoothing included: what `screamdetect detect` reports). A clip that cannot be
    read gets an "error" row and is left out of the metrics.
    Returns {"rows": [{"path", "label", "score", "events"} | {"path", "label", "error"}], "n_failed",
    "by_event": n, n_pos, accuracy, precision, recall, f1, confusion [[tn, fp], [fn, tp]], report,
    "by_score": :func:`clip_metrics` of the scores at the detector's threshold (with PR/ROC curves; needs
    scikit-learn, else None)}.
    """
    from .audio import AudioError, load_audio
    from .detector import events_from_scores

    rows: list[dict] = []
    it = clips
    if progress:
        from rich.progress import track

        it = track(clips, description="clips", transient=True)
    for c in it:
        try:
            a = load_audio(c.path)
            s = detector.score_windows(a)
            ev = events_from_scores(s, detector.threshold, detector.smoothing, detector.window_s, detector.hop_s,
                                    a.size / SAMPLE_RATE)
            rows.append({"path": c.path, "label": int(c.label), "score": float(s.max()), "events": len(ev)})
        except AudioError as e:
            rows.append({"path": c.path, "label": int(c.label), "error": e.cause})
        except (OSError, RuntimeError, ValueError, MemoryError) as e:
            rows.append({"path": c.path, "label": int(c.label), "error": f"{type(e).__name__}: {e}"})
    ok = [r for r in rows if "error" not in r]
    out: dict = {"rows": rows, "n_failed": len(rows) - len(ok), "threshold": float(detector.threshold),
                 "by_event": None, "by_score": None}
    if not ok:
        return out
    y = np.array([r["label"] for r in ok], dtype=np.int64)
    pred = np.array([r["events"] > 0 for r in ok], dtype=np.int64)
    cm = confusion(y, pred)
    (tn, fp), (fn, tp) = cm.tolist()
    precision, recall, f1 = _prf(tp, fp, fn)
    out["by_event"] = {"n": int(y.size), "n_pos": int(y.sum()), "accuracy": float((tn + tp) / y.size),
                       "precision": precision, "recall": recall, "f1": f1, "confusion": cm.tolist()}
    try:  # scikit-learn is in the [train] extra
        out["by_event"]["report"] = classification_report(y, pred)
        out["by_score"] = clip_metrics(y, np.array([r["score"] for r in ok]), detector.threshold, curves=True)
    except ImportError:
        pass
    return out
