"""`screamdetect bench`: the timing helpers measure the audio they were given, and the command reports them."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
from typer.testing import CliRunner

from _models import scene, write_band_energy_model
from screamdetect.audio import SAMPLE_RATE, AudioError, write_audio
from screamdetect.bench import SYNTHETIC, bench_audio, live_cpu, scan_speed, write_flac
from screamdetect.cli import app
from screamdetect.detector import Detector
from screamdetect.models import yamnet as Y


def test_bench_audio_is_the_length_asked_for_from_a_file_or_the_synthetic_scenes(tmp_path):
    x = scene(20.0, [(5.0, 1.5)])
    write_audio(tmp_path / "a.wav", x)
    a, what = bench_audio(tmp_path / "a.wav", 0.5)  # 30 s from a 20 s file: looped
    assert a.size == 30 * SAMPLE_RATE and "looped from 20.0 s" in what
    np.testing.assert_allclose(a[20 * SAMPLE_RATE:], a[: 10 * SAMPLE_RATE])
    a, what = bench_audio(tmp_path / "a.wav", 0.25)  # 15 s: the file's first 15 s, not looped
    assert a.size == 15 * SAMPLE_RATE and "looped" not in what
    a, what = bench_audio(None, 1.5)
    assert a.size == 90 * SAMPLE_RATE and what == SYNTHETIC and np.abs(a).max() > 0.01
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        bench_audio(tmp_path / "bad.wav", 1.0)
    with pytest.raises(ValueError, match="minutes"):
        bench_audio(None, 0)


def test_scan_and_live_timings_cover_all_the_audio_and_find_its_events(tmp_path):
    det = Detector.load(write_band_energy_model(tmp_path / "m"))
    x = scene(30.0, [(5.0, 1.5), (18.0, 1.5)])
    want = det.detect(x)
    assert len(want) == 2
    r = scan_speed(det, write_flac(x, tmp_path / "x.flac"), repeat=2)
    assert r["audio_s"] == 30.0 and r["windows"] == det.n_audio_windows(x.size) and r["events"] == 2
    assert r["x_realtime"] == pytest.approx(30.0 / r["wall_s"]) and r["cpu_s"] > 0
    seen = []
    lv = live_cpu(det, x, chunk_s=0.1, speed=200.0, on_update=seen.append)
    assert lv["events"] == 2 and [u.kind for u in seen] == ["start", "end", "start", "end"]
    assert lv["audio_s"] == 30.0 and lv["wall_s"] >= 30.0 / 200.0  # paced, not as fast as it can
    assert 0 < lv["cpu_percent_per_stream"] < 100 and lv["chunk_ms_p95"] >= lv["chunk_ms_median"]


def test_bench_command_reports_json_and_refuses_bad_input(tmp_path):
    model = write_band_energy_model(tmp_path / "m")
    write_audio(tmp_path / "a.wav", scene(12.0, [(4.0, 1.5)]))
    args = ["bench", "--model", str(model), "--minutes", "0.2", "--repeat", "1", "--live-seconds", "4",
            "--live-speed", "40"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "a.wav"), "-f", "json", "-j", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["scan"]["audio_s"] == 12.0 and out["scan"]["events"] == 1
    assert out["pool"]["files"] == 2 and out["pool"]["audio_s"] == 24.0
    assert out["live"]["audio_s"] == 4.0 and "looped" not in out["audio"]
    assert out["host"]["onnxruntime"] == onnxruntime.__version__ and out["host"]["cores"] == out["cores"]
    assert out["host"]["cpu"] and set(out["host"]["cpu_extensions"]) <= {"avx2", "avx512f", "avx512_vnni",
                                                                       "avx_vnni", "amx_int8"}
    assert out["host"]["yamnet_weights"] == Y.weight_type()
    res = CliRunner().invoke(app, [*args, "--live-seconds", "0", "-j", "1"])  # synthetic audio, table
    assert res.exit_code == 0 and "scan, one process" in res.output and "x real time" in res.output
    assert f"onnxruntime {onnxruntime.__version__}" in res.output  # which machine the figures are from
    assert "live, one stream" not in res.output and "scan, -j" not in res.output  # both skipped
    (tmp_path / "bad.wav").write_text("not audio")
    res = CliRunner().invoke(app, [*args, str(tmp_path / "bad.wav")])
    assert res.exit_code == 2 and "bad.wav" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, [*args, "-f", "xml"])
    assert res.exit_code == 2 and "--format must be table or json" in res.output
