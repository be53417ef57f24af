"""Site calibration: set the threshold from scream-free audio recorded where the detector will run.

The shipped threshold is calibrated on validation scenes built from the corpus (noise beds with people, animals,
traffic and game sounds scattered over them). A real site is quieter or busier than that: a hospital ward at night
holds none of the children at play and animal calls that the card's threshold has to stay above, a playground holds
more. Given hours of the site's own audio known to hold no scream, :func:`calibrate_site` scores it once, counts the
events that the detector's smoothing would raise at every threshold of a sweep, and picks the lowest threshold
whose false-alarm rate on that audio is within the target: lower than the card's at a quiet site (more screams
found), higher at a busy one (fewer false alarms).

How much audio is enough: with k false alarms in H hours the rate is known only up to its one-sided 95 % Poisson
bound; with none, that bound is 3.0 / H per hour, so showing <= 0.5/h needs at least 6 h of site audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .audio import AudioError
from .detector import Detector, EventTracker, Smoothing, events_from_scores


def count_events(scores: np.ndarray, threshold: float, smoothing: Smoothing, window_s: float, hop_s: float) -> int:
    """len(events_from_scores(scores, ...)), fast: the smoothing runs only around the windows >= threshold.

    Away from them the state machine is idle: once no window has reached the threshold for the last n windows, the
    hold has ended any event and the refractory time has passed, a new run starts as a fresh tracker would. So the
    timeline is cut into islands of windows >= threshold separated by more than that, and each island is run alone.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size < smoothing.n:  # the short-signal rule of EventTracker.finish needs the whole signal
        return len(events_from_scores(s, threshold, smoothing, window_s, hop_s))
    above = np.flatnonzero(s >= threshold)
    if above.size == 0:
        return 0
    hold = max(1, math.ceil(smoothing.hold_s / hop_s - 1e-9))
    refractory = math.ceil(smoothing.refractory_s / hop_s - 1e-9)
    gap = smoothing.n + hold + refractory + 1
    cuts = np.flatnonzero(np.diff(above) > gap)
    starts = np.r_[above[0], above[cuts + 1]]
    ends = np.r_[above[cuts], above[-1]]
    n = 0
    for a, b in zip(starts, ends):
        tr = EventTracker(threshold, smoothing, window_s, hop_s)
        for x in s[a: b + hold + 1]:
            tr.update(float(x))
        n += len(tr.events) + tr.active  # an event still open at the end of the signal counts too
    return n


def poisson_upper(k: int, hours: float, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a rate per hour, after k events in `hours` (exact Poisson)."""
    from scipy.stats import chi2

    if hours <= 0:
        return math.inf
    return float(chi2.ppf(confidence, 2 * (k + 1)) / 2 / hours)


@dataclass(frozen=True)
class Timeline:
    """The window scores of one scream-free file."""

    path: str
    scores: np.ndarray
    duration_s: float


def false_alarm_sweep(timelines: Sequence[Timeline], thresholds: Sequence[float], smoothing: Smoothing,
                      window_s: float, hop_s: float) -> list[dict]:
    """Per threshold: false alarms (events) over all timelines, their rate per hour and its 95 % upper bound."""
    hours = sum(t.duration_s for t in timelines) / 3600
    peaks = [float(t.scores.max()) if t.scores.size else 0.0 for t in timelines]
    rows = []
    for thr in sorted(thresholds):
        k = sum(count_events(t.scores, thr, smoothing, window_s, hop_s) for t, peak in zip(timelines, peaks)
                if peak >= thr)
        rows.append({"threshold": float(thr), "false_alarms": int(k),
                     "per_hour": k / hours if hours > 0 else math.inf,
                     "upper95_per_hour": poisson_upper(k, hours)})
    return rows


def lowest_within(rows: Sequence[dict], target: float, conservative: bool = False) -> dict | None:
    """The row of the lowest threshold whose false-alarm rate is <= target (None if no threshold meets it).
    conservative: whose 95 % upper bound on the rate is <= target instead."""
    key = "upper95_per_hour" if conservative else "per_hour"
    ok = [r for r in rows if r[key] <= target]
    return min(ok, key=lambda r: r["threshold"]) if ok else None


def card_recall(det: Detector) -> dict[float, float]:
    """Validation recall per threshold from the card's calibration sweep (for the detector's mode), if any."""
    sweep = (det.calibration or {}).get("sweep") or []
    return {round(float(r[0]), 6): float(r[2]) for r in sweep}


def _false_alarms(timelines: Sequence[Timeline], threshold: float, det: Detector) -> list[dict]:
    out = []
    for t in timelines:
        for e in events_from_scores(t.scores, threshold, det.smoothing, det.window_s, det.hop_s, t.duration_s):
            out.append({"path": t.path, **e.to_dict()})
    return sorted(out, key=lambda e: -e["peak_score"])


def calibrate_site(det: Detector, paths: Sequence[str | os.PathLike], max_false_alarms_per_hour: float = 0.5,
                   on_audio: Callable[[float], None] | None = None,
                   on_error: Callable[[str, str], None] | None = None, conservative: bool = False) -> dict:
    """Score scream-free site audio and pick the threshold that meets the false-alarm target on it.

    conservative: the lowest threshold whose 95 % upper bound on the rate meets the target (needs at least
    -ln(0.05) / target hours of audio: 6 h for 0.5/h), instead of the measured rate.

    paths: audio files (folders expanded by the caller). A file that cannot be read is reported through
    on_error(path, why) and left out. Returns a JSON-ready dict: hours scanned, the card's threshold and what it
    gives here, the recommended threshold (None when even the highest swept one gives too many), the sweep (with
    the card's validation recall at each threshold), the false alarms at both thresholds, and the failed files.
    """
    if not (isinstance(max_false_alarms_per_hour, (int, float)) and max_false_alarms_per_hour >= 0):
        raise ValueError(f"max_false_alarms_per_hour must be a number >= 0, got {max_false_alarms_per_hour!r}")
    timelines: list[Timeline] = []
    failed: list[dict] = []
    for p in paths:
        try:
            res = det.scan_file(p, keep_scores=True, on_block=on_audio)
        except AudioError as e:
            why = e.cause
        except (OSError, RuntimeError, ValueError, MemoryError) as e:
            why = f"{type(e).__name__}: {e}"
        else:
            timelines.append(Timeline(str(p), res.scores, res.duration_s))
            continue
        failed.append({"path": str(p), "error": why})
        if on_error is not None:
            on_error(str(p), why)
    hours = sum(t.duration_s for t in timelines) / 3600
    recall = card_recall(det)
    if recall:
        grid = list(recall)
    else:  # no sweep in the card: the grid `train` calibrates on
        from .product import CALIBRATION_THRESHOLDS as grid
    thresholds = sorted(set(grid) | {round(det.threshold, 6)})
    rows = false_alarm_sweep(timelines, thresholds, det.smoothing, det.window_s, det.hop_s) if timelines else []
    for r in rows:
        r["card_val_recall"] = recall.get(round(r["threshold"], 6))
    chosen = lowest_within(rows, max_false_alarms_per_hour, conservative)
    at_card = next((r for r in rows if abs(r["threshold"] - det.threshold) < 1e-9), None)
    return {
        "model": str(det.path), "detector": det.description, "files": len(timelines), "hours": hours,
        "target_false_alarms_per_hour": max_false_alarms_per_hour, "conservative": conservative,
        "card_threshold": det.threshold, "at_card_threshold": at_card,
        "recommended_threshold": None if chosen is None else chosen["threshold"], "at_recommended": chosen,
        "false_alarms_at_card_threshold": _false_alarms(timelines, det.threshold, det) if timelines else [],
        "false_alarms_at_recommended": (_false_alarms(timelines, chosen["threshold"], det)
                                        if chosen is not None else []),
        "sweep": rows, "failed": failed,
    }


def plot_site(result: dict):
    """False alarms per hour on the site audio against the threshold, with the card's validation recall."""
    from .report import plt

    p = plt()
    rows = result["sweep"]
    thr = [r["threshold"] for r in rows]
    fig, ax = p.subplots(figsize=(7.5, 4.2))
    ax.step(thr, [max(r["per_hour"], 1e-2) for r in rows], where="post", color="tab:red",
            label="false alarms / h on this site's audio")
    ax.step(thr, [max(r["upper95_per_hour"], 1e-2) for r in rows], where="post", color="tab:red", alpha=0.35,
            linestyle=":", label="its 95 % upper bound")
    ax.axhline(result["target_false_alarms_per_hour"], color="grey", linestyle="--", linewidth=1, label="target")
    ax.axvline(result["card_threshold"], color="black", linewidth=1, label=f"card threshold {result['card_threshold']:g}")
    if result["recommended_threshold"] is not None:
        ax.axvline(result["recommended_threshold"], color="tab:green", linewidth=1.5,
                   label=f"for this site {result['recommended_threshold']:g}")
    ax.set_yscale("log")
    ax.set_xlabel("threshold")
    ax.set_ylabel("false alarms per hour (log; 0 drawn at 0.01)")
    ax.set_title(f"site calibration: {result['hours']:.2f} h of scream-free audio, {result['files']} file(s)")
    if any(r["card_val_recall"] is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot([r["threshold"] for r in rows if r["card_val_recall"] is not None],
                 [r["card_val_recall"] for r in rows if r["card_val_recall"] is not None], color="tab:blue")
        ax2.set_ylabel("screams found on the card's validation scenes", color="tab:blue")
        ax2.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
