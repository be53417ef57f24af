"""The fit loop shared by every torch model: class weights, checkpoints on val loss or val F1, early stopping.

Inputs everywhere are log-mel arrays in dB, float32, shape (n, n_mels, n_frames) (features.log_mel with the shared
front-end); labels are 0/1 (1 = scream). Models are scikit-learn style (`fit` returns self, `predict_proba` gives
P(scream), learned attributes end in `_`); :class:`TorchClassifier` is the base of the deep ones (models/fnn.py,
cnn.py, resnet.py). Training is deterministic for a seed on CPU: same seed and data → same weights, same scores.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

import numpy as np

CHECKPOINTS = ("loss", "f1")


@dataclass(frozen=True)
class TrainConfig:
    """How a torch model is trained.

    epochs: maximum passes over the training data. batch_size: examples per step. lr: Adam learning rate.
    weight_decay: L2 penalty (Adam's weight_decay). class_weight: weight the BCE loss by balanced class weights
    computed on the training data as fed (see :func:`class_weights`). checkpoint: keep the epoch with the lowest
    validation loss ("loss") or the highest validation F1 of the scream class at `threshold` ("f1"; equal F1s,
    such as 0 before the network predicts any scream, go to the lower validation loss). patience: stop after
    this many epochs without improvement of the checkpoint metric (None = never stop early). seed: initialisation, batch
    order, dropout, masking. threads: torch CPU threads. progress: rich progress bar. spec_augment: random
    frequency/time masks on training batches (off by default); freq_mask/time_mask: maximum mask widths in bins
    and frames. mixup: the alpha of mixup (0 = off): each training example is blended with another of its batch,
    x = λ·x_i + (1 − λ)·x_j on the log-mel (dB) input with soft target λ·y_i + (1 − λ)·y_j, λ ~ Beta(alpha, alpha)
    drawn per example. threshold: the probability above which a clip counts as a scream for accuracy and F1.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    class_weight: bool = False
    checkpoint: str = "loss"
    patience: int | None = 5
    seed: int = 0
    threads: int = 2
    progress: bool = True
    spec_augment: bool = False
    freq_mask: int = 8
    time_mask: int = 20
    mixup: float = 0.0
    threshold: float = 0.5

    def __post_init__(self):
        from .features import check_number

        check_number("epochs", self.epochs, integer=True, low=1)
        check_number("batch_size", self.batch_size, integer=True, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}")
        if self.patience is not None:
            check_number("patience (or null)", self.patience, integer=True, low=1)
        check_number("threads", self.threads, integer=True, low=1)
        check_number("freq_mask", self.freq_mask, integer=True, low=0)
        check_number("time_mask", self.time_mask, integer=True, low=0)
        check_number("mixup (0 = off)", self.mixup, low=0)
        check_number("threshold", self.threshold, low=0, low_open=True, high=1.0)
        if self.threshold == 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("class_weight", "progress", "spec_augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")  # noqa: TRY004
        for name in ("epochs", "batch_size", "threads", "freq_mask", "time_mask", "patience"):  # 6.0 -> 6
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))

    def to_dict(self) -> dict:
        return asdict(self)


TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


# --------------------------------------------------------------------------------------------------------------
# class weights and metrics

def class_weights(labels) -> dict[int, float]:
    """Balanced class weights {0: w0, 1: w1} with w_c = n / (2 · n_c) (scikit-learn's "balanced").

    labels: 0/1 array-like of the training data AS FED (after augmentation). Raises ValueError if a class is
    missing or a label is not 0/1.
    """
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise ValueError("labels is empty: class weights need training labels")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0/1, found {np.unique(y[bad])[:5].tolist()}")
    n = y.size
    counts = {c: int(np.sum(y == c)) for c in (0, 1)}
    missing = [c for c, k in counts.items() if k == 0]
    if missing:
        raise ValueError(f"labels hold no examples of class {missing[0]}: balanced class weights are undefined")
    return {c: n / (2.0 * k) for c, k in counts.items()}


def format_class_weights(w: dict[int, float]) -> str:
    """The study's printout, e.g. ``{0: 0.5183, 1: 14.1538}``."""
    return "{" + ", ".join(f"{c}: {w[c]:.4f}" for c in sorted(w)) + "}"


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive (scream) class; 0.0 when there are no true and no predicted positives."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    tp = int(np.sum(y_true & y_pred))
    fp = int(np.sum(~y_true & y_pred))
    fn = int(np.sum(y_true & ~y_pred))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


# --------------------------------------------------------------------------------------------------------------
# determinism

def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed torch and numpy's global RNG, ask torch for deterministic algorithms, and set CPU threads."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _check_xy(X, y=None, name: str = "X", input_shape: tuple[int, int] | None = None):
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"{name} must be log-mel windows of shape (n, n_mels, n_frames), got shape {X.shape}")
    if input_shape is not None and X.shape[1] != input_shape[0]:
        raise ValueError(f"{name} has {X.shape[1]} mel bands, the model was built for {input_shape[0]}")
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if y is None:
        return X
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{name} has {X.shape[0]} examples but its labels have {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels of {name} must be 0/1")
    return X, y.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# the loop

def _spec_augment(xb, cfg: TrainConfig, gen):
    """One frequency mask and one time mask per example, filled with the example's mean (dB)."""
    import torch

    n, n_mels, n_frames = xb.shape
    xb = xb.clone()
    fill = xb.mean(dim=(1, 2), keepdim=True)
    for dim, size, width in ((1, n_mels, cfg.freq_mask), (2, n_frames, cfg.time_mask)):
        if width == 0:
            continue
        w = torch.randint(0, min(width, size) + 1, (n,), generator=gen)
        s = (torch.rand(n, generator=gen) * (size - w + 1).float()).long()
        idx = torch.arange(size)
        mask = (idx[None, :] >= s[:, None]) & (idx[None, :] < (s + w)[:, None])  # (n, size)
        mask = mask[:, :, None] if dim == 1 else mask[:, None, :]
        xb = torch.where(mask, fill.expand_as(xb), xb)
    return xb


def _mixup(xb, yb, alpha: float, rng: np.random.Generator, gen):
    """Mixup (Zhang et al., 2018): each example blended with a random other of the batch, targets alike."""
    import torch

    lam = torch.from_numpy(rng.beta(alpha, alpha, size=xb.shape[0]).astype(np.float32))
    perm = torch.randperm(xb.shape[0], generator=gen)
    xb = lam[:, None, None] * xb + (1 - lam[:, None, None]) * xb[perm]
    return xb, lam * yb + (1 - lam) * yb[perm]


def predict_logits(module, X: np.ndarray, batch_size: int = 256):
    """Logits of `module` (eval mode, no grad) for X (n, n_mels, n_frames) float32 → float32 (n,)."""
    import torch

    module.eval()
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            out.append(module(torch.from_numpy(np.ascontiguousarray(X[i: i + batch_size]))).reshape(-1))
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def fit_module(module, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
               y_val: np.ndarray | None = None, config: TrainConfig = TrainConfig(),
               desc: str = "train", on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train `module` (logits out, shape (batch,)) with Adam and (weighted) BCE-with-logits; keep the best epoch.

    X: float32 (n, n_mels, n_frames) dB; y: 0/1 (n,). X_val/y_val: the validation split (needed for
    checkpoint="f1"; without it the last epoch is kept and the val_* entries are NaN).
    Returns the history: {"loss", "val_loss", "acc", "val_acc", "val_f1", "seconds", "cpu_seconds"} per-epoch
    lists (seconds = wall time, cpu_seconds = this process's CPU time, train + validation) plus
    "best_epoch" (0-based), "stopped_early" (bool) and "class_weights" ({0: w0, 1: w1} or None). The module
    ends in eval mode with the weights of the best epoch.
    """
    import torch

    X, y = _check_xy(X, y, "X")
    has_val = X_val is not None and y_val is not None and len(y_val) > 0
    if has_val:
        X_val, y_val = _check_xy(X_val, y_val, "X_val")
    if config.checkpoint == "f1" and not has_val:
        raise ValueError("checkpoint='f1' needs a validation split (X_val, y_val)")
    seed_everything(config.seed, config.threads)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    cw = class_weights(y) if config.class_weight else None

    def loss_fn(logits, target):
        # Weighted BCE: w1 on screams, w0 on the rest (pos_weight alone would only fix their ratio).
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if cw is not None:
            loss = loss * torch.where(target > 0.5, torch.tensor(cw[1]), torch.tensor(cw[0]))
        return loss.mean()

    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    hist: dict = {"loss": [], "val_loss": [], "acc": [], "val_acc": [], "val_f1": [], "seconds": [], "cpu_seconds": []}
    best_score, best_state, best_epoch, since_best = (-math.inf, -math.inf), None, -1, 0
    stopped_early = False
    thr_logit = math.log(config.threshold / (1 - config.threshold))
    n_batches = math.ceil(X.shape[0] / config.batch_size)

    progress = None
    if config.progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
        progress.start()
        task = progress.add_task(desc, total=config.epochs * n_batches, info="")
    try:
        for epoch in range(config.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            module.train()
            order = rng.permutation(X.shape[0])
            tot_loss, tot_correct = 0.0, 0
            for b in range(n_batches):
                idx = torch.from_numpy(order[b * config.batch_size: (b + 1) * config.batch_size])
                xb, yb = Xt[idx], yt[idx]
                if xb.shape[0] == 1 and n_batches > 1:
                    continue  # a lone last example breaks batch norm; it is seen again next epoch
                if config.spec_augment:
                    xb = _spec_augment(xb, config, gen)
                if config.mixup > 0:  # no draw at all when off (runs without it stay reproducible)
                    xb, yb = _mixup(xb, yb, config.mixup, rng, gen)
                logits = module(xb).reshape(-1)
                loss = loss_fn(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_loss += float(loss.detach()) * xb.shape[0]
                tot_correct += int(((logits.detach() > thr_logit) == (yb > 0.5)).sum())  # mixed: the larger share
                if progress is not None:
                    progress.advance(task)
            hist["loss"].append(tot_loss / X.shape[0])
            hist["acc"].append(tot_correct / X.shape[0])
            if has_val:
                vl = torch.from_numpy(predict_logits(module, X_val))
                vy = torch.from_numpy(y_val)
                hist["val_loss"].append(float(loss_fn(vl, vy)))
                pred = (vl > thr_logit).numpy()
                hist["val_acc"].append(float(np.mean(pred == (y_val > 0.5))))
                hist["val_f1"].append(binary_f1(y_val > 0.5, pred))
            else:
                for k in ("val_loss", "val_acc", "val_f1"):
                    hist[k].append(float("nan"))
            hist["seconds"].append(time.perf_counter() - t0)
            hist["cpu_seconds"].append(time.process_time() - c0)  # all threads; wall time suffers from other jobs

            if has_val:
                # F1 ties (F1 = 0 while the network predicts no scream at the threshold yet) go to the lower loss
                score = ((-hist["val_loss"][-1], 0.0) if config.checkpoint == "loss"
                         else (hist["val_f1"][-1], -hist["val_loss"][-1]))
            else:
                score = (float(epoch), 0.0)  # no validation: the last epoch is the best we know
            if score > best_score:
                best_score, best_epoch, since_best = score, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                since_best += 1
            if progress is not None:
                info = f"ep {epoch + 1} loss {hist['loss'][-1]:.3f}"
                if has_val:
                    info += f" val_loss {hist['val_loss'][-1]:.3f} val_f1 {hist['val_f1'][-1]:.3f}"
                progress.update(task, info=info)
            if on_epoch is not None:
                on_epoch(epoch, {k: v[-1] for k, v in hist.items()})
            if has_val and config.patience is not None and since_best >= config.patience:
                stopped_early = epoch < config.epochs - 1
                break
    finally:
        if progress is not None:
            progress.stop()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    hist["best_epoch"] = best_epoch
    hist["stopped_early"] = stopped_early
    hist["class_weights"] = cw
    return hist


# --------------------------------------------------------------------------------------------------------------
# the scikit-learn style base of the deep models

class InputNorm:
    """Namespace for the input normalisation layer (built lazily so that importing train.py needs no torch)."""

    @staticmethod
    def make(n_mels: int):
        import torch

        class _InputNorm(torch.nn.Module):
            """(x - mean) / std per mel band, with mean/std (dB) fitted on the training data and stored as buffers,
            so that an exported graph takes raw log-mel dB."""

            def __init__(self, n_mels: int):
                super().__init__()
                self.register_buffer("mean", torch.zeros(n_mels, 1))
                self.register_buffer("std", torch.ones(n_mels, 1))

            def set_stats(self, X: np.ndarray, chunk: int = 256) -> None:
                """Per-band mean and std (dB) of X (n, n_mels, n_frames), accumulated in float64 by chunks (no
                full-size float64 copy of a large training set)."""
                n_mels = X.shape[1]
                s1, s2, count = np.zeros(n_mels), np.zeros(n_mels), 0
                for i in range(0, X.shape[0], chunk):
                    c = X[i: i + chunk].astype(np.float64)
                    s1 += c.sum(axis=(0, 2))
                    count += c.shape[0] * c.shape[2]
                m = s1 / count
                for i in range(0, X.shape[0], chunk):
                    c = X[i: i + chunk].astype(np.float64) - m[None, :, None]
                    s2 += np.square(c).sum(axis=(0, 2))
                s = np.sqrt(s2 / count)
                self.mean.copy_(torch.from_numpy(m.astype(np.float32))[:, None])
                self.std.copy_(torch.from_numpy(np.maximum(s, 1e-3).astype(np.float32))[:, None])

            def forward(self, x):
                return (x - self.mean) / self.std

        return _InputNorm(n_mels)


class TorchClassifier:
    """Base of the deep models: scikit-learn style around a torch module built by `build_module()`.

    input_shape: (n_mels, n_frames) of the log-mel windows. seed: everything random. Keyword arguments that name
    a :class:`TrainConfig` field go to the trainer; the others are architecture hyperparameters, checked against
    the subclass's `ARCH_DEFAULTS` (an unknown name is a ValueError). After `fit`: `module_` (torch nn.Module taking
    (batch, n_mels, n_frames) dB and returning logits (batch,), input normalisation inside), `history_`,
    `best_epoch_`, `class_weights_`, `n_params_`, `fit_seconds_`.
    """

    name = "torch"
    ARCH_DEFAULTS: ClassVar[dict] = {}
    TRAIN_DEFAULTS: ClassVar[dict] = {}

    def __init__(self, input_shape: tuple[int, int] = (128, 100), seed: int = 0, **hparams):
        if len(input_shape) != 2 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be (n_mels, n_frames) of positive ints, got {input_shape}")
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.seed = int(seed)
        unknown = sorted(set(hparams) - TRAIN_FIELDS - set(self.ARCH_DEFAULTS))
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter {unknown[0]!r} (architecture: "
                             f"{sorted(self.ARCH_DEFAULTS)}; training: {sorted(TRAIN_FIELDS)})")
        train_kw = {**self.TRAIN_DEFAULTS, **{k: v for k, v in hparams.items() if k in TRAIN_FIELDS}}
        self.config = TrainConfig(**{**train_kw, "seed": self.seed})
        self.arch = {**self.ARCH_DEFAULTS, **{k: v for k, v in hparams.items() if k in self.ARCH_DEFAULTS}}
        self._validate_arch()

    def _validate_arch(self) -> None:
        """Subclasses raise ValueError naming a bad architecture hyperparameter."""

    def build_module(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_params(self) -> dict:
        """Everything needed to rebuild the model: name, input_shape, seed, architecture and training settings."""
        return {"name": self.name, "input_shape": list(self.input_shape), "seed": self.seed,
                "arch": dict(self.arch), "train": self.config.to_dict()}

    def make_module(self):
        """A freshly initialised module (seeded), input normalisation at identity."""
        import torch

        torch.manual_seed(self.seed)
        return self.build_module()

    def fit(self, X, y, X_val=None, y_val=None, init_state: dict | None = None) -> TorchClassifier:
        """Train on X (n, n_mels, n_frames) float32 dB, y (n,) 0/1; checkpoint/early-stop on X_val, y_val.
        init_state: start from these weights (a state dict of this model's module) instead of random ones."""
        X, y = _check_xy(X, y, "X", self.input_shape)
        if X_val is not None and y_val is not None:
            X_val, y_val = _check_xy(X_val, y_val, "X_val", self.input_shape)
        seed_everything(self.seed, self.config.threads)
        t0 = time.perf_counter()
        module = self.make_module()
        module.norm.set_stats(X)
        if init_state is not None:
            module.load_state_dict(init_state)
        hist = fit_module(module, X, y, X_val, y_val, self.config, desc=self.name)
        self.module_ = module
        self.best_epoch_ = hist.pop("best_epoch")
        self.stopped_early_ = hist.pop("stopped_early")
        self.class_weights_ = hist.pop("class_weights")
        self.history_ = hist
        self.n_params_ = sum(p.numel() for p in module.parameters())
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, X) -> np.ndarray:
        """P(scream) for X (n, n_mels, n_frames) float32 dB → float32 (n,)."""
        if not hasattr(self, "module_"):
            raise RuntimeError(f"{self.name}: call fit() before predict_proba()")
        X = _check_xy(X, None, "X", self.input_shape)
        z = predict_logits(self.module_, X)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    def with_config(self, **changes) -> TorchClassifier:
        """A copy with some TrainConfig fields changed (unfitted)."""
        new = copy.copy(self)
        new.config = replace(self.config, **changes)
        for k in ("module_", "history_", "best_epoch_", "class_weights_"):
            new.__dict__.pop(k, None)
        return new
