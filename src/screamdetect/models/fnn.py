"""Fully connected network on log-mel windows: per-band statistics (or the flattened window), batch norm, dropout."""

from __future__ import annotations

from typing import ClassVar

from ..train import InputNorm, TorchClassifier

INPUTS = ("stats", "flatten")


def build_fnn(n_mels: int, n_frames: int, hidden: tuple[int, ...] = (256, 128), dropout: float = 0.3,
              inputs: str = "stats"):
    """nn.Module: (batch, n_mels, n_frames) dB → logits (batch,).

    inputs="stats": per-band mean, std and max over time (3·n_mels features, any n_frames);
    inputs="flatten": the whole normalised window (n_mels·n_frames features, as the study's FNN).
    Each hidden layer is Linear → BatchNorm1d → ReLU → Dropout.
    """
    import torch
    from torch import nn

    class FNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = InputNorm.make(n_mels)
            self.inputs = inputs
            width = 3 * n_mels if inputs == "stats" else n_mels * n_frames
            layers: list[nn.Module] = []
            for h in hidden:
                layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
                width = h
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            x = self.norm(x)
            if self.inputs == "stats":
                x = torch.cat([x.mean(dim=2), x.std(dim=2), x.amax(dim=2)], dim=1)
            else:
                x = x.flatten(1)
            return self.net(x).reshape(-1)

    return FNN()


class FNNClassifier(TorchClassifier):
    """make_model("fnn"): hidden sizes, dropout, inputs ("stats" | "flatten"), plus any TrainConfig field."""

    name = "fnn"
    ARCH_DEFAULTS: ClassVar[dict] = {"hidden": (256, 128), "dropout": 0.3, "inputs": "stats"}
    TRAIN_DEFAULTS: ClassVar[dict] = {"epochs": 30, "lr": 1e-3}

    def _validate_arch(self) -> None:
        a = self.arch
        if a["inputs"] not in INPUTS:
            raise ValueError(f"fnn: inputs must be one of {INPUTS}, got {a['inputs']!r}")
        if not 0 <= a["dropout"] < 1:
            raise ValueError(f"fnn: dropout must be in [0, 1), got {a['dropout']}")
        a["hidden"] = tuple(int(h) for h in a["hidden"])
        if not a["hidden"] or min(a["hidden"]) < 1:
            raise ValueError(f"fnn: hidden must be a non-empty list of positive sizes, got {a['hidden']}")

    def build_module(self):
        return build_fnn(*self.input_shape, hidden=self.arch["hidden"], dropout=self.arch["dropout"],
                         inputs=self.arch["inputs"])
