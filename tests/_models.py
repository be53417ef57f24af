"""Test models with KNOWN answers, exported to ONNX following the shipped-model contract, for everybody's tests.

The "band energy" model scores a log-mel window (n_mels, n_frames) in dB as

    p = sigmoid(a · (mean over frames of (max over the mel bands centred above 2 kHz) − b))

so a loud high tone or chirp (a scream stand-in) scores high, silence and low-frequency noise score low, and a
window half-filled with a burst scores in between. :func:`reference_scores` computes the same in numpy.

    onnx_path = write_band_energy_model(tmp_path)           # + card beside it (same stem, .json)
    det = screamdetect.detector.Detector.load(onnx_path)

:func:`scene` builds signals with bursts at known times. Built with onnx.helper (no torch needed);
:func:`band_energy_module` gives the same function as a torch nn.Module returning logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from screamdetect.audio import SAMPLE_RATE
from screamdetect.features import FrontEnd, hz_to_mel, mel_to_hz

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg not installed (make setup installs it, or apt-get install -y ffmpeg)")

CARD_FORMAT = "screamdetect-card/1"
HIGH_HZ = 2000.0  # bands centred above this count as "scream" energy
A = 0.5  # slope per dB
B_DB = -10.0  # dB level of probability 0.5
TEST_FRONTEND = FrontEnd(n_mels=64, win_s=0.025, hop_s=0.010)
WINDOW_S = 1.0
HOP_S = 0.25
SMOOTHING = {"k": 2, "n": 3, "hold_s": 0.5, "refractory_s": 1.0}


def high_band(fe: FrontEnd = TEST_FRONTEND) -> int:
    """Index of the first mel band whose centre is above HIGH_HZ."""
    fmax = fe.fmax or fe.sample_rate / 2
    centres = mel_to_hz(np.linspace(hz_to_mel(fe.fmin), hz_to_mel(fmax), fe.n_mels + 2))[1:-1]
    return int(np.argmax(centres > HIGH_HZ))


def reference_scores(windows: np.ndarray, fe: FrontEnd = TEST_FRONTEND, a: float = A, b: float = B_DB) -> np.ndarray:
    """numpy reference of the model: windows (n, n_mels, n_frames) dB → float32 (n,) probabilities."""
    x = windows[:, high_band(fe):, :].max(axis=1).mean(axis=1).astype(np.float64)
    return (1.0 / (1.0 + np.exp(-a * (x - b)))).astype(np.float32)


def write_band_energy_model(folder: str | Path, stem: str = "band_energy", fe: FrontEnd = TEST_FRONTEND,
                            window_s: float = WINDOW_S, hop_s: float = HOP_S, threshold: float = 0.5,
                            smoothing: dict | None = None, a: float = A, b: float = B_DB) -> Path:
    """Write <folder>/<stem>.onnx and its card <stem>.json; returns the ONNX path."""
    import onnx
    from onnx import TensorProto, helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_frames = round(window_s / fe.hop_s)
    lo = high_band(fe)
    init = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [lo]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [fe.n_mels]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("b", TensorProto.FLOAT, [], [b]),
        helper.make_tensor("a", TensorProto.FLOAT, [], [a]),
    ]
    nodes = [
        helper.make_node("Slice", ["logmel", "starts", "ends", "axes"], ["high"]),
        helper.make_node("ReduceMax", ["high"], ["peak"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["peak"], ["level"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["level", "b"], ["centred"]),
        helper.make_node("Mul", ["centred", "a"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["scream_prob"]),
    ]
    graph = helper.make_graph(
        nodes, "band_energy",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", fe.n_mels, n_frames])],
        [helper.make_tensor_value_info("scream_prob", TensorProto.FLOAT, ["batch"])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = folder / f"{stem}.onnx"
    onnx.save(model, str(path))
    card = {
        "format": CARD_FORMAT, "architecture": f"band_energy(a={a}, b={b}, high_hz={HIGH_HZ}) [test model]",
        "frontend": fe.to_dict(), "window_s": window_s, "hop_s": hop_s, "threshold": threshold,
        "target_false_alarms_per_hour": 0.5, "smoothing": dict(smoothing or SMOOTHING),
        "training_data": {"dataset": "none (hand-set test model)", "split": "none", "licenses": {}},
        "metrics": {"split": "none"},
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return path


def band_energy_module(fe: FrontEnd = TEST_FRONTEND, a: float = A, b: float = B_DB):
    """The same model as a torch nn.Module: (batch, n_mels, n_frames) dB → logits (batch,). Imports torch."""
    import torch

    lo = high_band(fe)

    class BandEnergy(torch.nn.Module):
        def forward(self, x):
            return a * (x[:, lo:, :].amax(dim=1).mean(dim=1) - b)

    return BandEnergy()


# ---- signals with known answers -------------------------------------------------------------------------------
def background(dur_s: float, seed: int = 0, level: float = 0.003) -> np.ndarray:
    """Quiet background: a 200 Hz hum plus faint white noise, float32. Scores low."""
    rng = np.random.default_rng(seed)
    n = round(dur_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = 0.02 * np.sin(2 * np.pi * 200 * t) + level * rng.standard_normal(n)
    return x.astype(np.float32)


def burst(dur_s: float, amp: float = 0.3, f0: float = 2500.0, f1: float = 5000.0) -> np.ndarray:
    """A linear chirp from f0 to f1 Hz (a scream stand-in) with 10 ms fades, float32."""
    n = round(dur_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * max(dur_s, 1e-9)))
    x = amp * np.sin(phase)
    fade = min(n // 2, int(0.01 * SAMPLE_RATE))
    if fade:
        ramp = np.linspace(0, 1, fade)
        x[:fade] *= ramp
        x[n - fade:] *= ramp[::-1]
    return x.astype(np.float32)


def scene(dur_s: float, bursts: list[tuple[float, float]], seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """Background of dur_s seconds with chirp bursts added at (start_s, length_s), float32."""
    x = background(dur_s, seed)
    for start, length in bursts:
        i = round(start * SAMPLE_RATE)
        b = burst(length, amp)
        x[i: i + b.size] += b[: x.size - i]
    return x
