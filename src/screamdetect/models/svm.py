"""SVM baseline: scikit-learn Pipeline(StandardScaler, SVC) on compact log-mel statistics."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from ..train import _check_xy


def mel_stats(X: np.ndarray) -> np.ndarray:
    """Compact representation of log-mel windows: per-band mean, std, and std of the first time difference.

    X: float32 (n, n_mels, n_frames) dB → float32 (n, 3·n_mels).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, n_mels, n_frames), got {X.shape}")
    mean = X.mean(axis=2)
    std = X.std(axis=2)
    delta = np.diff(X, axis=2).std(axis=2) if X.shape[2] > 1 else np.zeros_like(mean)
    return np.concatenate([mean, std, delta], axis=1).astype(np.float32)


def _platt_folds(y: np.ndarray, groups) -> int | list[tuple[np.ndarray, np.ndarray]]:
    """3 folds for CalibratedClassifierCV: split by group (StratifiedGroupKFold) when groups are given and each
    class spans at least 3 groups, so every fold holds both classes; else 3 (stratified by row)."""
    if groups is None:
        return 3
    from sklearn.model_selection import StratifiedGroupKFold

    g = np.asarray([str(v) for v in groups])
    if len(g) != len(y):
        raise ValueError(f"svm: groups has {len(g)} entries for {len(y)} rows")
    if min(len(set(g[y == 0])), len(set(g[y == 1]))) < 3:
        return 3
    folds = list(StratifiedGroupKFold(n_splits=3).split(np.zeros(len(y)), y, g))
    if any(len(set(y[tr])) < 2 or len(set(y[te])) < 2 for tr, te in folds):
        return 3
    return folds


class SVMClassifier:
    """make_model("svm"): C, gamma, kernel, class_weight ("balanced" or None), calibration ("sigmoid": Platt
    scaling fitted by 3-fold cross-validation on the training data, CalibratedClassifierCV(ensemble=False), the
    folds split by group when fit() is given groups; None: a plain sigmoid of the decision function, uncalibrated
    but cheaper)."""

    name = "svm"
    DEFAULTS: ClassVar[dict] = {"C": 1.0, "gamma": "scale", "kernel": "rbf", "class_weight": "balanced",
                "calibration": "sigmoid"}

    def __init__(self, input_shape: tuple[int, int] = (128, 100), seed: int = 0, **hparams):
        unknown = sorted(set(hparams) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"svm: unknown hyperparameter {unknown[0]!r} (accepted: {sorted(self.DEFAULTS)})")
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.seed = int(seed)
        self.params = {**self.DEFAULTS, **hparams}
        if not float(self.params["C"]) > 0:
            raise ValueError(f"svm: C must be positive, got {self.params['C']}")
        if self.params["class_weight"] not in ("balanced", None):
            raise ValueError(f"svm: class_weight must be 'balanced' or None, got {self.params['class_weight']!r}")
        if self.params["calibration"] not in ("sigmoid", None):
            raise ValueError(f"svm: calibration must be 'sigmoid' or None, got {self.params['calibration']!r}")

    def get_params(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "seed": self.seed, "arch": dict(self.params)}

    def fit(self, X, y, X_val=None, y_val=None, groups=None) -> SVMClassifier:
        """Fit on X (n, n_mels, n_frames) float32 dB, y (n,) 0/1. X_val/y_val are accepted and unused.

        groups (n,), optional: the group of each row (a clip's speaker or recording; an augmented copy has its
        source clip's group). The Platt-scaling folds then keep each group on one side, so the sigmoid is fitted
        on decision values of groups the fold's SVM has not seen, as it will be used. Without groups, or with
        fewer than 3 groups holding each class, the folds are stratified by row."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        X, y = _check_xy(X, y, "X", self.input_shape)
        t0 = time.perf_counter()
        p = self.params
        svc = SVC(C=float(p["C"]), gamma=p["gamma"], kernel=p["kernel"], class_weight=p["class_weight"],
                  random_state=self.seed)
        n_min = int(min(np.sum(y == 0), np.sum(y == 1)))
        if p["calibration"] == "sigmoid" and n_min >= 3:
            svc = CalibratedClassifierCV(svc, method="sigmoid", cv=_platt_folds(y, groups), ensemble=False)
        self.calibrated_ = isinstance(svc, CalibratedClassifierCV)
        self.calibration_folds_ = ("group" if self.calibrated_ and not isinstance(svc.cv, int) else
                                   "row" if self.calibrated_ else None)
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("svc", svc)])
        self.pipeline_.fit(mel_stats(X), y.astype(np.int64))
        self.history_: dict = {}
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, X) -> np.ndarray:
        """P(scream) for X (n, n_mels, n_frames) → float32 (n,)."""
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("svm: call fit() before predict_proba()")
        F = mel_stats(_check_xy(X, None, "X", self.input_shape))
        if self.calibrated_:
            return self.pipeline_.predict_proba(F)[:, 1].astype(np.float32)
        d = self.pipeline_.decision_function(F)
        return (1.0 / (1.0 + np.exp(-d))).astype(np.float32)
