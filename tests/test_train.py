"""train.py: class weights, the fit loop (checkpoint by loss or F1, early stopping, class weighting), determinism."""

from __future__ import annotations

import numpy as np
import pytest

from screamdetect.models import make_model
from screamdetect.train import (
    TrainConfig,
    _mixup,
    _spec_augment,
    binary_f1,
    class_weights,
    fit_module,
    format_class_weights,
)
from test_models import SHAPE, tone_vs_noise

FAST = {"progress": False, "threads": 1, "batch_size": 16}


@pytest.fixture(scope="module")
def toy():
    X, y = tone_vs_noise(96, seed=11)
    Xv, yv = tone_vs_noise(32, seed=12)
    return X, y, Xv, yv


def test_class_weights_balanced_formula_and_printout():
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    w = class_weights(y)
    assert w[0] == pytest.approx(100 / 180) and w[1] == pytest.approx(100 / 20)
    # Balanced: each class carries half of the total weight.
    assert w[0] * 90 == pytest.approx(w[1] * 10) == pytest.approx(50)
    assert format_class_weights(w) == "{0: 0.5556, 1: 5.0000}"
    assert class_weights([0, 1]) == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="class 1"):
        class_weights([0, 0, 0])
    with pytest.raises(ValueError, match="0/1"):
        class_weights([0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        class_weights([])


def test_binary_f1_known_answers():
    assert binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert binary_f1([1, 1, 0], [1, 1, 0]) == 1.0
    assert binary_f1([0, 0], [0, 0]) == 0.0


def test_bad_train_config_rejected():
    for kw, word in (({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"checkpoint": "auc"}, "checkpoint"),
                     ({"patience": 0}, "patience"), ({"batch_size": 0}, "batch_size"),
                     ({"weight_decay": -1e-3}, "weight_decay"), ({"threshold": 1.0}, "threshold"),
                     ({"mixup": -0.1}, "mixup"), ({"mixup": float("nan")}, "mixup")):
        with pytest.raises(ValueError, match=word):
            TrainConfig(**kw)


def test_same_seed_same_predictions_other_seed_differs(toy):
    X, y, Xv, yv = toy
    runs = [make_model("cnn_reg", SHAPE, seed=s, epochs=2, **FAST).fit(X, y, Xv, yv).predict_proba(Xv)
            for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_history_and_checkpoint_by_loss_and_by_f1(toy):
    X, y, Xv, yv = toy
    by_loss = make_model("cnn_reg", SHAPE, seed=0, epochs=5, patience=None, **FAST).fit(X, y, Xv, yv)
    by_f1 = make_model("cnn_f1", SHAPE, seed=0, epochs=5, patience=None, **FAST).fit(X, y, Xv, yv)
    for m in (by_loss, by_f1):
        assert all(len(m.history_[k]) == 5 for k in ("loss", "val_loss", "acc", "val_acc", "val_f1"))
    assert by_loss.best_epoch_ == int(np.argmin(by_loss.history_["val_loss"]))
    f1, vl = np.array(by_f1.history_["val_f1"]), np.array(by_f1.history_["val_loss"])
    best = np.flatnonzero(f1 == f1.max())
    assert by_f1.best_epoch_ == best[np.argmin(vl[best])]  # the best F1; of equal ones, the lowest loss
    # The kept weights are those of the best epoch: re-scoring the validation set gives its F1.
    pred = by_f1.predict_proba(Xv) > 0.5
    assert binary_f1(yv, pred) == pytest.approx(by_f1.history_["val_f1"][by_f1.best_epoch_])
    # Identical training (same seed, same settings): the two differ only in which epoch they keep.
    assert by_f1.history_["val_loss"] == pytest.approx(by_loss.history_["val_loss"])


def test_f1_checkpoint_while_no_scream_is_predicted_follows_the_loss(toy):
    """Before a network predicts any scream at the threshold its validation F1 is 0 every epoch (imbalanced data,
    no class weights): the checkpoint then goes to the lowest validation loss, and improving loss keeps training
    going, instead of keeping the first epoch and stopping after `patience`."""
    X, y, Xv, yv = toy
    m = make_model("cnn_f1", SHAPE, seed=0, epochs=6, patience=2, threshold=0.9999999, **FAST).fit(X, y, Xv, yv)
    h = m.history_
    assert max(h["val_f1"]) == 0.0  # nothing reaches the threshold
    assert m.best_epoch_ == int(np.argmin(h["val_loss"])) and m.best_epoch_ > 0
    assert len(h["val_loss"]) - 1 - m.best_epoch_ <= 2  # stopped only after 2 epochs without a lower loss


def test_f1_checkpoint_needs_validation_data(toy):
    X, y, _, _ = toy
    with pytest.raises(ValueError, match="validation"):
        make_model("cnn_f1", SHAPE, epochs=1, **FAST).fit(X, y)


def test_early_stopping_when_validation_gets_worse(toy):
    """Validation labels flipped: the better the fit, the worse the val loss, so epoch 0 stays best."""
    X, y, _, _ = toy
    m = make_model("fnn", SHAPE, seed=0, epochs=20, patience=2, lr=3e-3, **FAST).fit(X, y, X, 1 - y)
    assert m.stopped_early_
    assert len(m.history_["loss"]) == m.best_epoch_ + 3 < 20
    assert m.history_["val_loss"][-1] > m.history_["val_loss"][m.best_epoch_]


def test_class_weights_are_computed_on_the_data_as_fed_and_change_the_loss(toy):
    import torch

    X, y, Xv, yv = toy
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:8]]  # 48 negatives, 8 positives
    Xi, yi = X[keep], y[keep]
    m = make_model("fnn", SHAPE, seed=0, epochs=1, class_weight=True, **FAST).fit(Xi, yi, Xv, yv)
    assert m.class_weights_ == class_weights(yi)
    assert m.class_weights_[1] == pytest.approx(56 / 16)
    # Same module, same data: the weighted loss of a constant predictor equals the balanced mean.
    mod = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SHAPE[0] * SHAPE[1], 1))
    torch.nn.init.zeros_(mod[1].weight)
    torch.nn.init.zeros_(mod[1].bias)  # p = 0.5 for every example: BCE = log 2 each
    cfg = TrainConfig(epochs=1, lr=1e-12, progress=False, threads=1, class_weight=True, batch_size=len(yi))
    hist = fit_module(mod, Xi, yi, Xi, yi, cfg)
    assert hist["val_loss"][0] == pytest.approx(np.log(2) * (48 * class_weights(yi)[0] + 8 * class_weights(yi)[1]) / 56,
                                                rel=1e-4)
    assert hist["class_weights"] == class_weights(yi)


def test_no_validation_keeps_the_last_epoch(toy):
    X, y, _, _ = toy
    m = make_model("cnn", SHAPE, seed=0, epochs=2, **FAST).fit(X, y)
    assert m.best_epoch_ == 1 and np.isnan(m.history_["val_loss"]).all()


def test_spec_augment_masks_bands_and_frames():
    import torch

    x = torch.arange(2 * 16 * 30, dtype=torch.float32).reshape(2, 16, 30)
    cfg = TrainConfig(spec_augment=True, freq_mask=4, time_mask=6)
    out = _spec_augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    changed = (out != x)
    # Masked cells hold the example's mean; whole bands / whole frames are masked.
    for i in range(2):
        rows = changed[i].all(dim=1).sum()
        cols = changed[i].all(dim=0).sum()
        assert rows <= 4 and cols <= 6
    assert torch.equal(x, torch.arange(2 * 16 * 30, dtype=torch.float32).reshape(2, 16, 30))  # input untouched
    X, y = tone_vs_noise(32, seed=5)
    m = make_model("cnn", SHAPE, seed=0, epochs=1, spec_augment=True, **FAST).fit(X, y)
    assert np.isfinite(m.predict_proba(X)).all()


def test_mixup_blends_inputs_and_targets_alike(toy):
    import torch

    # Each example is a constant: a blend of two constants is a constant, so λ can be read back from x and checked
    # against the target.
    levels = torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    x = levels[:, None, None].expand(6, 4, 5).clone()
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    xm, ym = _mixup(x, y, 0.4, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert xm.shape == x.shape and ym.shape == y.shape
    assert torch.allclose(xm, xm[:, :1, :1].expand_as(xm))
    assert not torch.equal(xm, x) and ((ym > 0) & (ym < 1)).any()
    for i in range(6):  # x_i' = λ x_i + (1 − λ) x_j and y_i' = λ y_i + (1 − λ) y_j for one j and the same λ
        fits = [j for j in range(6) if j != i and abs(float(levels[i] - levels[j])) > 0
                and abs(float((xm[i, 0, 0] - levels[j]) / (levels[i] - levels[j]) * (y[i] - y[j]) + y[j] - ym[i]))
                < 1e-5]
        same = abs(float(xm[i, 0, 0] - levels[i])) < 1e-4 and abs(float(ym[i] - y[i])) < 1e-6
        assert fits or same
    assert torch.equal(x, levels[:, None, None].expand(6, 4, 5))  # input untouched
    X, y, Xv, yv = toy
    on = make_model("cnn", SHAPE, seed=0, epochs=2, mixup=0.4, **FAST).fit(X, y, Xv, yv)
    off = make_model("cnn", SHAPE, seed=0, epochs=2, **FAST).fit(X, y, Xv, yv)
    assert np.isfinite(on.predict_proba(Xv)).all()
    assert not np.allclose(on.predict_proba(Xv), off.predict_proba(Xv))  # it does change training
    again = make_model("cnn", SHAPE, seed=0, epochs=2, mixup=0.4, **FAST).fit(X, y, Xv, yv)
    assert np.array_equal(on.predict_proba(Xv), again.predict_proba(Xv))  # and stays deterministic for a seed
