"""Export a trained torch model to ONNX with its model card (JSON beside it, same stem).

The ONNX graph takes "logmel" float32 [batch, n_mels, n_frames] (dB, from features.log_mel with the card's
front-end) and returns "scream_prob" float32 [batch]. The card carries everything the detector needs to rebuild
the exact front-end and decision rule, plus the training data's licences and the measured metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CARD_FORMAT = "screamdetect-card/1"
INPUT_NAME = "logmel"
OUTPUT_NAME = "scream_prob"
OPSET = 17


def export_onnx(module, n_mels: int, n_frames: int, path: str | Path) -> Path:
    """Write `module` (logits out) followed by a sigmoid as ONNX with a dynamic batch axis. Returns the path."""
    import torch

    class _WithSigmoid(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return torch.sigmoid(self.m(x).reshape(-1))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _WithSigmoid(module).eval()
    dummy = torch.zeros(2, n_mels, n_frames, dtype=torch.float32)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constant folding: not actionable here
        torch.onnx.export(wrapped, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return path


def check_onnx_matches(module, onnx_path: str | Path, x: np.ndarray, atol: float = 1e-4) -> float:
    """Max |ONNX − torch| of the scream probability on `x` (n, n_mels, n_frames); raises if above `atol`."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]
    with torch.no_grad():
        want = torch.sigmoid(module.eval()(torch.from_numpy(x.astype(np.float32))).reshape(-1)).numpy()
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if err > atol:
        raise RuntimeError(f"ONNX export of {onnx_path} differs from torch by {err:.2e} (> {atol:.0e})")
    return err


def write_card(card: dict, onnx_path: str | Path) -> Path:
    """Write the model card JSON beside the ONNX file (same stem, .json)."""
    card = {"format": CARD_FORMAT, "onnx_input": INPUT_NAME, "onnx_output": OUTPUT_NAME, **card}
    path = Path(onnx_path).with_suffix(".json")
    path.write_text(json.dumps(card, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
