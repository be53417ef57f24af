"""Site calibration: set the threshold from scream-free audio recorded where the detector will run.

The shipped threshold is calibrated on validation scenes built from the corpus (noise beds with people, animals,
traffic and game sounds scattered over them). A real site is quieter or busier than that: a hospital ward at night
holds none of the children at play and animal calls that the card's threshold has to stay above, a playground holds
more. Given hours of the site's own audio known to hold no scream, :func:`calibrate_site` scores it once, counts the
events that the detector's smoothing would raise at every threshold of a sweep, and picks the lowest threshold
whose false-alarm rate on that audio is within the target: lower than the card's at a quiet site (more screams
found), higher at a busy one (fewer false alarms).

With `screams` (scream clips of the user's own), it also measures what each threshold finds AT THE SITE: every
clip is inserted at 0, 5, 10 and 20 dB SNR into excerpts of the site audio (blocks drawn at random during the
scan, weighted by length), and the excerpts are scored; recall per threshold and SNR goes beside the false alarms.

How much audio is enough: with k false alarms in H hours the rate is known only up to its one-sided 95 % Poisson
bound; with none, that bound is 3.0 / H per hour, so showing <= 0.5/h needs at least 6 h of site audio.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio
from .detector import CALIBRATION_THRESHOLDS, Detector, EventTracker, Smoothing, events_from_scores, grid_with

SNRS_DB = (0.0, 5.0, 10.0, 20.0)
MAX_EXCERPTS = 64  # site excerpts kept for inserting screams (at most 64 × 20 s of float32: 82 MB)
MIN_EXCERPT_S = 5.0
MARGIN_S = 1.0  # an inserted scream starts and ends at least this far inside its excerpt


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


class ExcerptSampler:
    """Keeps `k` blocks of a stream of audio blocks, drawn at random with probability growing with their length
    (one pass, weighted reservoir sampling: key u^(1/seconds), the k largest kept); blocks under `min_s` are
    passed over. Deterministic for a seed."""

    def __init__(self, k: int, seed: int = 0, min_s: float = MIN_EXCERPT_S):
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.min_samples = int(min_s * SAMPLE_RATE)
        self._heap: list[tuple[float, int, np.ndarray]] = []
        self._seen = 0

    def offer(self, block: np.ndarray) -> None:
        if self.k <= 0 or block.size < self.min_samples:
            return
        self._seen += 1
        key = float(self.rng.random()) ** (SAMPLE_RATE / block.size)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (key, self._seen, block.copy()))
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, (key, self._seen, block.copy()))

    def excerpts(self) -> list[np.ndarray]:
        """The kept blocks, in the order they were seen."""
        return [b for _, _, b in sorted(self._heap, key=lambda t: t[1])]


@dataclass(frozen=True)
class Trial:
    """One scream inserted into one site excerpt: the excerpt's window scores and where the scream is."""

    clip: str
    snr_db: float
    scores: np.ndarray
    start_s: float
    end_s: float
    duration_s: float


def insertion_trials(det: Detector, excerpts: Sequence[np.ndarray], screams: Sequence[tuple[str, np.ndarray]],
                     snrs_db: Sequence[float] = SNRS_DB, seed: int = 0) -> tuple[list[Trial], int]:
    """Insert every scream at every SNR into a site excerpt (each excerpt as often, in a random order) at a random
    place, and score it.

    Returns (trials, skipped): a trial is skipped where the excerpt is digitally silent under the scream (an SNR
    against silence means nothing). A clip longer than its excerpt less 2 · MARGIN_S is cut to fit. Each excerpt
    is scored on its own (with the detector's auto gain, if on, starting afresh).
    """
    from .scenes import active_region, fit_full_scale, insert_scream

    rng = np.random.default_rng(seed)
    margin = int(MARGIN_S * SAMPLE_RATE)
    trials: list[Trial] = []
    skipped = 0
    # Each excerpt serves as many trials as the others, in a random order. A fixed turn (trial j on excerpt j % E)
    # gave each SNR its own excerpts whenever E is a multiple of the number of SNRs (4 excerpts: 0 dB always on the
    # first), so recall per SNR measured excerpts, not SNRs.
    turn = rng.permutation(len(screams) * len(snrs_db)) % len(excerpts)
    j = 0
    for name, scream in screams:
        for snr in snrs_db:
            bg = excerpts[int(turn[j])].copy()
            j += 1
            clip = scream[: bg.size - 2 * margin]
            at = int(rng.integers(margin, bg.size - margin - clip.size + 1))
            a0, a1 = active_region(clip)
            if np.mean(bg[at + a0: at + a1].astype(np.float64) ** 2) < 1e-10:  # under -100 dBFS
                skipped += 1
                continue
            s0, s1 = insert_scream(bg, clip, at, snr)
            bg = fit_full_scale(bg)
            trials.append(Trial(name, float(snr), det.score_windows(bg), s0 / SAMPLE_RATE, s1 / SAMPLE_RATE,
                                bg.size / SAMPLE_RATE))
    return trials, skipped


def recall_at(trials: Sequence[Trial], threshold: float, det: Detector, tolerance_s: float = 1.0) -> dict:
    """Recall (overall and per SNR) of the inserted screams at one threshold: an event overlapping the scream
    (evaluate.covers_scream) finds it, as evaluate-events matches them."""
    from . import evaluate

    hits: dict[float, list[bool]] = {}
    for t in trials:
        found = events_from_scores(t.scores, threshold, det.smoothing, det.window_s, det.hop_s, t.duration_s)
        hit = any(evaluate.covers_scream(e.start_s, e.end_s, t.start_s, t.end_s, tolerance_s) for e in found)
        hits.setdefault(t.snr_db, []).append(hit)
    every = [h for v in hits.values() for h in v]
    return {"recall": float(np.mean(every)) if every else None,
            "by_snr": {f"{k:g}": float(np.mean(v)) for k, v in sorted(hits.items())}}


def load_screams(paths: Sequence[str | os.PathLike], on_error: Callable[[str, str], None] | None = None
                 ) -> list[tuple[str, np.ndarray]]:
    """Scream clips (any format load_audio reads); unreadable or silent ones are reported and left out."""
    out = []
    for p in paths:
        try:
            a = load_audio(p)
            if a.size < SAMPLE_RATE // 4 or not np.any(a):
                raise AudioError(str(p), "shorter than 0.25 s or silent: not a scream clip")
        except AudioError as e:
            if on_error is not None:
                on_error(str(p), e.cause)
            continue
        out.append((str(p), a))
    return out


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
                   on_error: Callable[[str, str], None] | None = None, conservative: bool = False,
                   screams: Sequence[tuple[str, np.ndarray]] = (), seed: int = 0) -> dict:
    """Score scream-free site audio and pick the threshold that meets the false-alarm target on it.

    conservative: the lowest threshold whose 95 % upper bound on the rate meets the target (needs at least
    -ln(0.05) / target hours of audio: 6 h for 0.5/h), instead of the measured rate. screams: (name, audio)
    clips (:func:`load_screams`) to insert into excerpts of the site audio at each SNR of SNRS_DB; each sweep row
    then holds the site recall ("site_recall", "site_recall_by_snr").

    paths: audio files (folders expanded by the caller). A file that cannot be read is reported through
    on_error(path, why) and left out. Returns a JSON-ready dict: hours scanned, the card's threshold and what it
    gives here, the recommended threshold (None when even the highest swept one gives too many), the sweep (with
    the card's validation recall at each threshold), the false alarms at both thresholds, and the failed files.
    """
    if not (isinstance(max_false_alarms_per_hour, (int, float)) and max_false_alarms_per_hour >= 0):
        raise ValueError(f"max_false_alarms_per_hour must be a number >= 0, got {max_false_alarms_per_hour!r}")
    timelines: list[Timeline] = []
    failed: list[dict] = []
    sampler = ExcerptSampler(min(MAX_EXCERPTS, len(screams) * len(SNRS_DB)), seed)
    for p in paths:
        try:
            res = det.scan_file(p, keep_scores=True, on_block=on_audio, tap=sampler.offer if screams else None)
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
        grid = CALIBRATION_THRESHOLDS
    thresholds = grid_with(grid, det.threshold)
    rows = false_alarm_sweep(timelines, thresholds, det.smoothing, det.window_s, det.hop_s) if timelines else []
    for r in rows:
        r["card_val_recall"] = recall.get(round(r["threshold"], 6))
    inserted = None
    if screams:
        excerpts = sampler.excerpts()
        trials, skipped = insertion_trials(det, excerpts, screams, seed=seed) if excerpts else ([], 0)
        for r in rows:
            at = recall_at(trials, r["threshold"], det)
            r["site_recall"], r["site_recall_by_snr"] = at["recall"], at["by_snr"]
        inserted = {"screams": len(screams), "snrs_db": list(SNRS_DB), "excerpts": len(excerpts),
                    "trials": len(trials), "skipped_silent": skipped,
                    "note": None if excerpts else f"no block of the site audio is {MIN_EXCERPT_S:g} s or longer"}
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
        "inserted_screams": inserted, "sweep": rows, "failed": failed,
    }


def plot_site(result: dict):
    """False alarms per hour on the site audio against the threshold, with the site recall (inserted screams) and
    the card's validation recall where known."""
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
    handles, _ = ax.get_legend_handles_labels()
    curves = [(key, label, style) for key, label, style in (
        ("site_recall", "screams found here (inserted, all SNRs)", "-"),
        ("card_val_recall", "screams found on the card's validation scenes", "--"))
        if any(r.get(key) is not None for r in rows)]
    if curves:
        ax2 = ax.twinx()
        for key, label, style in curves:
            ok = [r for r in rows if r.get(key) is not None]
            handles += ax2.plot([r["threshold"] for r in ok], [r[key] for r in ok], style, color="tab:blue",
                                label=label)
        ax2.set_ylabel("recall", color="tab:blue")
        ax2.set_ylim(0, 1.02)
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
