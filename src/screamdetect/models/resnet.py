"""The study's ResNet on the 1-channel log-mel, trained from scratch.

7×7 stride-2 stem (BatchNorm, ReLU, 3×3 stride-2 max pool), six basic residual blocks with 64-64-128-128-256-256
channels (stride 2 where the width grows, 1×1 projection shortcuts), global average pooling, Dense 64 + ReLU,
Dropout 0.5, one logit. `width` scales every channel count (0.25 → 16-16-32-32-64-64) for speed on CPU.
"""

from __future__ import annotations

from typing import ClassVar

from ..train import InputNorm, TorchClassifier

STUDY_CHANNELS = (64, 64, 128, 128, 256, 256)


def build_resnet(n_mels: int, n_frames: int, width: float = 1.0, dense: int = 64, dropout: float = 0.5):
    """nn.Module: (batch, n_mels, n_frames) dB → logits (batch,)."""
    from torch import nn

    chans = [max(1, round(c * width)) for c in STUDY_CHANNELS]

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU()
            self.short = None
            if stride != 1 or c_in != c_out:
                self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return self.relu(h + (x if self.short is None else self.short(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = InputNorm.make(n_mels)
            self.stem = nn.Sequential(nn.Conv2d(1, chans[0], 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(chans[0]), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
            blocks = []
            c_in = chans[0]
            for c in chans:
                blocks.append(Block(c_in, c, 2 if c != c_in else 1))
                c_in = c
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.Linear(c_in, dense), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dense, 1))

        def forward(self, x):
            h = self.blocks(self.stem(self.norm(x).unsqueeze(1)))
            return self.head(h.mean(dim=(2, 3))).reshape(-1)

    return ResNet()


class ResNetClassifier(TorchClassifier):
    """make_model("resnet"): width (channel scale), dense, dropout, plus any TrainConfig field."""

    name = "resnet"
    ARCH_DEFAULTS: ClassVar[dict] = {"width": 1.0, "dense": 64, "dropout": 0.5}
    TRAIN_DEFAULTS: ClassVar[dict] = {"epochs": 20, "lr": 1e-3}

    def _validate_arch(self) -> None:
        a = self.arch
        if not 0 < float(a["width"]) <= 4:
            raise ValueError(f"resnet: width must be in (0, 4], got {a['width']}")
        if not 0 <= a["dropout"] < 1:
            raise ValueError(f"resnet: dropout must be in [0, 1), got {a['dropout']}")
        if int(a["dense"]) < 1:
            raise ValueError(f"resnet: dense must be >= 1, got {a['dense']}")
        if min(self.input_shape) < 16:
            raise ValueError(f"resnet: input_shape {self.input_shape} is too small (need >= 16 mel bands and "
                             f"frames for the stem and three stride-2 stages)")

    def build_module(self):
        a = self.arch
        return build_resnet(*self.input_shape, width=float(a["width"]), dense=int(a["dense"]),
                            dropout=float(a["dropout"]))
