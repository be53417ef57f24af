"""Evaluation: clip metrics (the study's tables) and event metrics (how deployments are judged). Computes, never plots.

Clip metrics take the true labels and the scores of one split:

* ``y_true``: int 0/1 array, shape (n,), 1 = scream;
* ``p``: float array, shape (n,), the model's P(scream) (``predict_proba``), in [0, 1].

A decision threshold is chosen on the VALIDATION split only (:func:`choose_threshold`) and then applied unchanged
to the test split (:func:`clip_metrics`), so test data never tunes anything.
"""

from __future__ import annotations

import math

import numpy as np

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
    else:
        score = tp / n_pos - fp / n_neg
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
