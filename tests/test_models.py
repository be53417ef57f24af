"""models/: every family builds, runs forward/backward on tiny inputs, learns a separable toy task in one epoch,
exports to ONNX (dynamic batch, same output as torch) and rejects bad hyperparameters."""

from __future__ import annotations

import io

import numpy as np
import pytest

from conftest import sine
from screamdetect.features import FrontEnd, log_mel
from screamdetect.models import DEEP_MODELS, MODEL_NAMES, make_model
from screamdetect.models.svm import mel_stats

SHAPE = (32, 40)  # (n_mels, n_frames): tiny, fast
FAST = {"resnet": {"width": 0.25}}
FE = FrontEnd(n_mels=SHAPE[0], win_s=0.025, hop_s=0.010)


def tone_vs_noise(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel windows (n, 32, 40) float32 dB: a 3 kHz tone in noise (label 1) vs noise alone (label 0)."""
    r = np.random.default_rng(seed)
    dur = (SHAPE[1] - 1) * FE.hop_s
    X, y = [], []
    for i in range(n):
        lab = i % 2
        a = (0.05 * r.uniform(0.3, 1.5) * r.standard_normal(round(dur * FE.sample_rate))).astype(np.float32)
        if lab:
            a = a + sine(float(r.uniform(2800, 3200)), dur, amp=0.3)[: a.size]
        X.append(log_mel(a, frontend=FE)[:, : SHAPE[1]])
        y.append(lab)
    return np.stack(X).astype(np.float32), np.array(y)


@pytest.mark.parametrize("name", DEEP_MODELS)
def test_forward_backward_shapes(name):
    import torch

    m = make_model(name, SHAPE, seed=0, **FAST.get(name, {}))
    mod = m.make_module()
    x = torch.randn(3, *SHAPE) * 10 - 50
    out = mod(x)
    assert out.shape == (3,) and out.dtype == torch.float32
    out.sum().backward()
    grads = [p.grad for p in mod.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # Any window length (time is pooled away; the FNN uses per-band statistics).
    assert mod.eval()(torch.randn(2, SHAPE[0], SHAPE[1] + 24) - 50).shape == (2,)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_epoch_on_tone_vs_noise_beats_chance(name):
    X, y = tone_vs_noise(160, seed=1)
    Xv, yv = tone_vs_noise(40, seed=2)
    kw = {} if name == "svm" else {"epochs": 1, "batch_size": 8, "lr": 3e-3, "progress": False, "threads": 1,
                                   **FAST.get(name, {})}
    m = make_model(name, SHAPE, seed=0, **kw).fit(X, y, Xv, yv)
    p = m.predict_proba(Xv)
    assert p.shape == (40,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    acc = np.mean((p > 0.5) == yv)
    assert acc >= 0.75, f"{name}: accuracy {acc:.2f} after one epoch on a separable task"
    if name != "svm":
        assert set(m.history_) >= {"loss", "val_loss", "acc", "val_acc", "val_f1"}
        assert all(len(v) == 1 for k, v in m.history_.items())


@pytest.mark.parametrize("name", DEEP_MODELS)
def test_input_normalisation_lives_inside_the_module(name):
    """The module takes raw dB: its stored mean/std are those of the training data."""
    X, y = tone_vs_noise(32, seed=3)
    m = make_model(name, SHAPE, seed=0, epochs=1, batch_size=16, progress=False, threads=1, **FAST.get(name, {}))
    m.fit(X, y, X[:8], y[:8])
    mean = m.module_.norm.mean.numpy()[:, 0]
    np.testing.assert_allclose(mean, X.mean(axis=(0, 2)), rtol=1e-4, atol=1e-3)
    assert mean.mean() < -10  # dB, not already-normalised values


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's notes on its legacy (TorchScript) exporter
@pytest.mark.parametrize("name", DEEP_MODELS)
def test_onnx_export_matches_torch_with_a_dynamic_batch(name):
    import onnxruntime as ort
    import torch

    X, y = tone_vs_noise(32, seed=4)
    m = make_model(name, SHAPE, seed=0, epochs=1, batch_size=16, progress=False, threads=1, **FAST.get(name, {}))
    m.fit(X, y, X[:8], y[:8])
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(m.module_.eval(), (torch.from_numpy(X[:2]),), buf, input_names=["logmel"],
                          output_names=["logit"], dynamic_axes={"logmel": {0: "batch"}, "logit": {0: "batch"}},
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"logmel": X[:7]})[0]  # batch 7, exported with batch 2
    assert logits.shape == (7,)
    prob = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(prob, m.predict_proba(X[:7]), atol=1e-4)


def test_resnet_has_the_study_layout():
    import torch

    m = make_model("resnet", (64, 64), seed=0)
    mod = m.make_module()
    convs = [c for c in mod.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)]
    assert mod.stem[0].kernel_size == (7, 7) and mod.stem[0].in_channels == 1
    assert [b.conv1.out_channels for b in mod.blocks] == [64, 64, 128, 128, 256, 256]
    assert len(convs) == 12
    assert mod.head[0].out_features == 64 and mod.head[2].p == 0.5
    small = make_model("resnet", (64, 64), seed=0, width=0.25).make_module()
    assert [b.conv1.out_channels for b in small.blocks] == [16, 16, 32, 32, 64, 64]


def test_cnn_variants_differ_as_documented():
    import torch

    plain = make_model("cnn", SHAPE)
    reg = make_model("cnn_reg", SHAPE)
    f1 = make_model("cnn_f1", SHAPE)
    assert plain.config.weight_decay == 0 and reg.config.weight_decay > 0
    assert plain.config.checkpoint == "loss" and reg.config.checkpoint == "loss" and f1.config.checkpoint == "f1"
    has = lambda m, t: any(isinstance(x, t) for x in m.make_module().modules())
    assert not has(plain, torch.nn.BatchNorm2d) and not has(plain, torch.nn.Dropout)
    assert has(reg, torch.nn.BatchNorm2d) and has(reg, torch.nn.Dropout) and has(f1, torch.nn.BatchNorm2d)


def test_mel_stats_of_the_svm():
    X = np.zeros((2, 4, 10), np.float32)
    X[0, 1] = np.arange(10)
    F = mel_stats(X)
    assert F.shape == (2, 12) and F.dtype == np.float32
    assert F[0, 1] == pytest.approx(4.5) and F[0, 5] == pytest.approx(np.arange(10).std())
    assert F[0, 9] == pytest.approx(0.0) and F[1].sum() == 0  # constant slope: its first difference has no spread


def test_svm_platt_folds_keep_each_group_on_one_side():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(12)], 4)  # 12 groups of 4 near-copies (a clip + its copies)
    y = np.repeat(np.arange(12) % 2, 4)
    X = (np.repeat(rng.normal(size=(12, 8, 6)), 4, 0) + rng.normal(size=(48, 8, 6)) * 0.05).astype(np.float32)
    m = make_model("svm", (8, 6)).fit(X, y, groups=groups)
    assert m.calibration_folds_ == "group"
    folds = m.pipeline_.named_steps["svc"].cv
    assert len(folds) == 3
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])  # no group (no clip's copy) on both sides of a fold
        assert set(y[tr]) == set(y[te]) == {0, 1}
    assert sorted(np.concatenate([te for _, te in folds])) == list(range(48))
    p = m.predict_proba(X)
    assert p.shape == (48,) and np.all((p >= 0) & (p <= 1))
    # without groups, or with screams from only 2 groups, the folds are stratified by row
    assert make_model("svm", (8, 6)).fit(X, y).calibration_folds_ == "row"
    y2 = np.zeros(48, np.int64)
    y2[:8] = 1  # the 4 rows of g0 and g1
    assert make_model("svm", (8, 6)).fit(X, y2, groups=groups).calibration_folds_ == "row"
    with pytest.raises(ValueError, match="groups has 47 entries for 48 rows"):
        make_model("svm", (8, 6)).fit(X, y, groups=groups[:-1])


def test_bad_names_and_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        make_model("vgg", SHAPE)
    with pytest.raises(ValueError, match="'depth'"):
        make_model("cnn", SHAPE, depth=5)
    with pytest.raises(ValueError, match="dropout"):
        make_model("fnn", SHAPE, dropout=1.5)
    with pytest.raises(ValueError, match="width"):
        make_model("resnet", SHAPE, width=0)
    with pytest.raises(ValueError, match="epochs"):
        make_model("cnn", SHAPE, epochs=0)
    with pytest.raises(ValueError, match="too small"):
        make_model("cnn", (4, 40))
    with pytest.raises(ValueError, match="'epochs'"):
        make_model("svm", SHAPE, epochs=3)
    m = make_model("cnn", SHAPE, progress=False, epochs=1)
    with pytest.raises(ValueError, match="mel bands"):
        m.fit(np.zeros((4, 16, 40), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="labels"):
        m.fit(np.zeros((4, *SHAPE), np.float32), np.array([0, 1, 0]))
    with pytest.raises(RuntimeError, match="fit"):
        m.predict_proba(np.zeros((1, *SHAPE), np.float32))


def test_the_floor_channel_ignores_a_steady_background_and_keeps_a_burst():
    import torch

    from screamdetect.models.cnn import FLOOR_FRAMES, above_floor

    r = np.random.default_rng(0)
    bed = torch.from_numpy((r.normal(0, 1, (1, 8, 40)) - 60).astype(np.float32))
    colour = torch.linspace(-20, 20, 8).reshape(1, 8, 1)  # a different level in every band
    np.testing.assert_allclose(above_floor(bed + colour).numpy(), above_floor(bed).numpy(), atol=1e-5)
    assert float(above_floor(bed).max()) < 0.3  # a steady bed stays within a few dB of its floor
    burst = bed.clone()
    burst[:, 2:5, 10:20] += 30.0  # 30 dB louder in three bands for 10 frames
    a = above_floor(burst)
    assert float(a[:, 2:5, 10:20].min()) > 1.2 and float(a[:, 5:, :].max()) < 0.3
    assert a.shape == burst.shape and FLOOR_FRAMES < 10


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_cnn_with_the_floor_channel_trains_and_exports_like_the_others():
    import onnxruntime as ort
    import torch

    X, y = tone_vs_noise(160, seed=1)
    Xv, yv = tone_vs_noise(40, seed=2)
    m = make_model("cnn_reg", SHAPE, seed=0, floor_channel=True, epochs=1, batch_size=8, lr=3e-3, progress=False,
                   threads=1).fit(X, y, Xv, yv)
    assert m.module_.features[0].in_channels == 2
    assert np.mean((m.predict_proba(Xv) > 0.5) == yv) >= 0.75
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(m.module_.eval(), (torch.from_numpy(X[:2]),), buf, input_names=["logmel"],
                          output_names=["logit"], dynamic_axes={"logmel": {0: "batch"}, "logit": {0: "batch"}},
                          opset_version=17, dynamo=False)
    logits = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"logmel": X[:7]})[0]
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), m.predict_proba(X[:7]), atol=1e-4)
    with pytest.raises(ValueError, match="floor_channel needs n_frames"):
        make_model("cnn_reg", (32, 6), floor_channel=True, channels=(4,)).make_module()
