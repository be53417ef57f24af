"""Convolutional networks on the log-mel: `cnn` (plain), `cnn_reg` (weight decay, dropout, batch norm),
`cnn_f1` (cnn_reg with its checkpoint and early stopping chosen by validation F1 of the scream class).

`floor_channel: true` adds a second input channel: each band's level above the window's own floor in that band
(the lowest of its 7-frame moving averages, in dB, divided by 20), so a steady background counts for little
whatever its level and colour. It is computed inside the graph from the same dB input, and depends on nothing
outside the window.

The conv stack halves both axes after each block; the time axis is then pooled away (mean and max), so the same
weights score any window length, and the frequency axis is kept (where a scream sits in frequency matters).
"""

from __future__ import annotations

from typing import ClassVar

from ..train import InputNorm, TorchClassifier

FLOOR_FRAMES = 7  # the moving average over which a band's floor is taken (7 frames = 87.5 ms at the 12.5 ms hop)


def above_floor(x):
    """(batch, n_mels, n_frames) dB → the same shape: each band's level above its floor in the window (the lowest
    of its FLOOR_FRAMES-frame moving averages), divided by 20 dB. Torch ops only, so it exports to ONNX."""
    import torch

    floor = torch.nn.functional.avg_pool1d(x, FLOOR_FRAMES, stride=1).amin(dim=2, keepdim=True)  # (b, f, 1)
    return (x - floor) / 20.0


def build_cnn(n_mels: int, n_frames: int, channels: tuple[int, ...] = (8, 16, 32, 64), dense: int = 64,
              dropout: float = 0.0, batch_norm: bool = False, floor_channel: bool = False):
    """nn.Module: (batch, n_mels, n_frames) dB → logits (batch,).

    Blocks: Conv3×3 → [BatchNorm] → ReLU → MaxPool2×2, one per entry of `channels`; then mean+max over time,
    flatten (channels[-1] · n_mels / 2^len(channels) · 2), [Dropout] → Linear(dense) → ReLU → [Dropout] → Linear(1).
    floor_channel: a second input channel, (x − the band's floor in the window) / 20 dB (see the module's docstring).
    """
    import torch
    from torch import nn

    n_blocks = len(channels)
    f_out = n_mels
    for _ in range(n_blocks):
        f_out //= 2
    if f_out < 1:
        raise ValueError(f"cnn: {n_blocks} pooling blocks need n_mels >= {2 ** n_blocks}, got {n_mels}")
    t_out = n_frames
    for _ in range(n_blocks):
        t_out //= 2
    if t_out < 1:
        raise ValueError(f"cnn: {n_blocks} pooling blocks need n_frames >= {2 ** n_blocks}, got {n_frames}")

    if floor_channel and n_frames < FLOOR_FRAMES:
        raise ValueError(f"cnn: floor_channel needs n_frames >= {FLOOR_FRAMES}, got {n_frames}")

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = InputNorm.make(n_mels)
            layers: list[nn.Module] = []
            c_in = 2 if floor_channel else 1
            for c in channels:
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm)]
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c))
                layers += [nn.ReLU(), nn.MaxPool2d(2)]
                c_in = c
            self.features = nn.Sequential(*layers)
            head: list[nn.Module] = []
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head += [nn.Linear(2 * c_in * f_out, dense), nn.ReLU()]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head.append(nn.Linear(dense, 1))
            self.head = nn.Sequential(*head)

        def forward(self, x):
            z = self.norm(x).unsqueeze(1)  # (b, 1, f, t)
            if floor_channel:
                z = torch.cat([z, above_floor(x).unsqueeze(1)], dim=1)
            h = self.features(z)  # (b, c, f, t)
            h = torch.cat([h.mean(dim=3), h.amax(dim=3)], dim=1).flatten(1)
            return self.head(h).reshape(-1)

    return CNN()


class CNNClassifier(TorchClassifier):
    """make_model("cnn"): plain conv net (no batch norm, no dropout, no weight decay)."""

    name = "cnn"
    ARCH_DEFAULTS: ClassVar[dict] = {"channels": (8, 16, 32, 64), "dense": 64, "dropout": 0.0, "batch_norm": False,
                                     "floor_channel": False}
    TRAIN_DEFAULTS: ClassVar[dict] = {"epochs": 20, "lr": 1e-3}

    def _validate_arch(self) -> None:
        a = self.arch
        a["channels"] = tuple(int(c) for c in a["channels"])
        if not a["channels"] or min(a["channels"]) < 1:
            raise ValueError(f"{self.name}: channels must be a non-empty list of positive ints, got {a['channels']}")
        if not 0 <= a["dropout"] < 1:
            raise ValueError(f"{self.name}: dropout must be in [0, 1), got {a['dropout']}")
        if int(a["dense"]) < 1:
            raise ValueError(f"{self.name}: dense must be >= 1, got {a['dense']}")
        n = len(a["channels"])
        if self.input_shape[0] < 2 ** n or self.input_shape[1] < 2 ** n:
            raise ValueError(f"{self.name}: input_shape {self.input_shape} is too small for {n} pooling blocks "
                             f"(need >= {2 ** n} mel bands and frames)")

    def build_module(self):
        a = self.arch
        return build_cnn(*self.input_shape, channels=a["channels"], dense=int(a["dense"]), dropout=a["dropout"],
                         batch_norm=bool(a["batch_norm"]), floor_channel=bool(a["floor_channel"]))


class CNNRegClassifier(CNNClassifier):
    """make_model("cnn_reg"): the CNN with batch norm, dropout 0.3 and weight decay (L2) 1e-4."""

    name = "cnn_reg"
    ARCH_DEFAULTS: ClassVar[dict] = {**CNNClassifier.ARCH_DEFAULTS, "dropout": 0.3, "batch_norm": True}
    TRAIN_DEFAULTS: ClassVar[dict] = {**CNNClassifier.TRAIN_DEFAULTS, "weight_decay": 1e-4}


class CNNF1Classifier(CNNRegClassifier):
    """make_model("cnn_f1"): cnn_reg, checkpoint and early stopping by validation F1 of the scream class."""

    name = "cnn_f1"
    TRAIN_DEFAULTS: ClassVar[dict] = {**CNNRegClassifier.TRAIN_DEFAULTS, "checkpoint": "f1"}
