"""Clip metrics with hand-computed answers, and the threshold chosen on validation only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from screamdetect.evaluate import (
    choose_threshold,
    classification_report,
    clip_metrics,
    confusion,
    pr_curve,
    roc_curve,
)

# 10 clips, 4 screams. At threshold 0.5: predicted positive = scores >= 0.5 → indices 0,1,2,5,6
# truth:  1    1    0    1    0    0    1    0    0    0
Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
P = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.6, 0.55, 0.2, 0.1, 0.05])


def test_confusion_counts():
    cm = confusion(Y, P >= 0.5)
    # tp: 0,1,6 = 3; fp: 2,5 = 2; fn: 3 = 1; tn: 4,7,8,9 = 4
    assert cm.tolist() == [[4, 2], [1, 3]]
    assert cm.dtype == np.int64


def test_clip_metrics_known_answers():
    m = clip_metrics(Y, P, threshold=0.5, curves=True)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 4)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["accuracy"] == pytest.approx(7 / 10)
    # ROC AUC = share of (scream, non-scream) pairs ranked correctly: screams 0.9, 0.8, 0.55, 0.4 vs 6 negatives
    # 0.9, 0.8 beat all 6; 0.55 beats 4 (0.3 0.2 0.1 0.05); 0.4 beats 4 → (6+6+4+4)/24
    assert m["roc_auc"] == pytest.approx(20 / 24)
    # AP = sum over screams of precision at its rank: ranks 1, 2, 5 (0.55 after 0.7, 0.6), 6 (0.4)
    assert m["ap"] == pytest.approx((1 / 1 + 2 / 2 + 3 / 5 + 4 / 6) / 4)
    assert m["n"] == 10 and m["n_pos"] == 4
    assert "scream" in m["report"] and "not_scream" in m["report"]
    assert m["pr"]["recall"][0] == pytest.approx(1.0) and m["roc"]["tpr"][-1] == pytest.approx(1.0)


def test_perfect_and_inverted_scores():
    y = np.array([0, 0, 1, 1])
    good = clip_metrics(y, [0.1, 0.2, 0.8, 0.9])
    bad = clip_metrics(y, [0.9, 0.8, 0.2, 0.1])
    assert good["f1"] == 1.0 and good["roc_auc"] == 1.0 and good["ap"] == 1.0
    assert bad["f1"] == 0.0 and bad["roc_auc"] == 0.0 and bad["recall"] == 0.0


def test_undefined_metrics_are_nan_not_errors():
    m = clip_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(m["ap"]) and math.isnan(m["roc_auc"])
    assert m["fp"] == 1 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert pr_curve([0, 0], [0.1, 0.2])["precision"] == [] and roc_curve([1, 1], [0.1, 0.2])["fpr"] == []


def test_choose_threshold_f1_known_answer():
    # Sorted: 0.9+ 0.8+ 0.7- 0.6- 0.55+ 0.4+ 0.3- ... Predicting the top 2 gives F1 = 4/6; the top 5 6/9;
    # the top 6 (all 4 screams, 2 false alarms) 8/10, the maximum; the top 7 8/11.
    thr = choose_threshold(Y, P, "f1")
    assert thr == pytest.approx(0.35)  # midway between 0.4 (the lowest accepted) and 0.3
    assert clip_metrics(Y, P, thr)["f1"] == pytest.approx(0.8)


def test_choose_threshold_youden_and_fixed():
    # Youden J = TPR - FPR: top 2 → 0.5; top 6 (t=0.4) → 1 - 2/6, the maximum.
    assert choose_threshold(Y, P, "youden") == pytest.approx(0.35)
    # Ties go to the higher threshold: J = 0.5 for the top 1 and for the top 3; F1 prefers the top 3 (0.8 > 0.667).
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert choose_threshold(y, p, "youden") == pytest.approx(0.85)
    assert choose_threshold(y, p, "f1") == pytest.approx(0.4)
    # Equal J computed in floats differ by an ulp (1/7 - 0/7 vs 6/7 - 5/7): the tie must still go to the top cut
    y = np.array([1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1])
    p = np.array([0.6, 0.6, 0.7, 0.1, 0.7, 0.5, 0.9, 0.8, 0.5, 0.6, 0.5, 0.6, 0.3, 0.5])
    assert choose_threshold(y, p, "youden") == pytest.approx(0.85)
    assert choose_threshold([1, 1], [0.3, 0.6]) == pytest.approx(0.3)  # accepting all: the lowest score
    assert choose_threshold(Y, P, "fixed", default=0.3) == 0.3
    assert choose_threshold([0, 0, 0], [0.2, 0.9, 0.1], "f1") == 0.5  # no scream in val: undefined → default


def test_threshold_chosen_on_validation_is_applied_to_test():
    """Validation puts the cut at 0.6; the test metrics use exactly that, not the test's own optimum."""
    y_val, p_val = np.array([0, 0, 1, 1]), np.array([0.2, 0.5, 0.7, 0.95])
    thr = choose_threshold(y_val, p_val)
    assert thr == pytest.approx(0.6)
    y_test, p_test = np.array([0, 1, 1]), np.array([0.1, 0.55, 0.9])  # the test optimum would be <= 0.55
    m = clip_metrics(y_test, p_test, thr)
    assert m["threshold"] == pytest.approx(0.6) and m["recall"] == pytest.approx(0.5)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="rule"):
        choose_threshold(Y, P, "accuracy")
    with pytest.raises(ValueError, match="0/1"):
        clip_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels but p"):
        clip_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="threshold"):
        clip_metrics([0, 1], [0.1, 0.2], threshold=1.5)
    assert "support" in classification_report([0, 1], [0, 1])
