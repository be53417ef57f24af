"""Waveform augmentation of the TRAINING split: a noise bank and two presets built on audiomentations.

Presets
-------
``seed``: the study's transformations without its flaw. Background noise from the bank at a fixed amplitude
factor (0.4 × the raw noise piece) on every augmented copy, and a circular time shift, uniform within ±20% of the
clip, on half of them, in BOTH classes alike. The study itself put noise on every scream copy but on only 20% of
the non-scream ones, and shifted screams only: "background noise present" (and "shifted") then predicts
"scream", a shortcut a model learns instead of the scream (it then fires on any noisy audio). We do not copy
that; an AugmentSpec with other per-class rates can still be built in code to show its effect.

``robust``: our default. Noise from the bank is mixed at a random SNR (uniform 0-30 dB, relative to the clip's RMS)
into both classes with the same probability, followed by gain, circular shift and filtering (low-pass, high-pass or
band-pass) with the same probabilities for both classes, so no transformation says anything about the label.

Every function works on float32 mono waveforms at SAMPLE_RATE, never modifies its inputs, keeps lengths, and is
deterministic for a seed (each augmented copy draws from its own RNG derived from (seed, copy, clip index), so a
clip's copy does not depend on the other clips). Augmented copies keep their source clip's label and group, so
they can never leak across splits. The caller must pass the training split only.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioError, load_audio

PRESETS = ("seed", "robust")
FILTER_KINDS = ("lowpass", "highpass", "bandpass")


# --------------------------------------------------------------------------------------------------------------
# noise bank

@dataclass
class NoiseBank:
    """Background-noise pieces in memory: float32 mono arrays at SAMPLE_RATE with a category and a name each."""

    pieces: list[np.ndarray]
    categories: list[str]
    names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.pieces:
            raise ValueError("pieces is empty: a noise bank needs at least one noise piece")
        if len(self.categories) != len(self.pieces):
            raise ValueError(f"categories has {len(self.categories)} entries for {len(self.pieces)} pieces")
        if not self.names:
            self.names = [f"piece{i}" for i in range(len(self.pieces))]
        if len(self.names) != len(self.pieces):
            raise ValueError(f"names has {len(self.names)} entries for {len(self.pieces)} pieces")
        clean = []
        for name, p in zip(self.names, self.pieces):
            p = np.asarray(p, dtype=np.float32).reshape(-1)
            if p.size == 0:
                raise ValueError(f"noise piece {name} is empty")
            if not np.isfinite(p).all():
                raise ValueError(f"noise piece {name} contains NaN or infinite samples")
            clean.append(p)
        self.pieces = clean

    def __len__(self) -> int:
        return len(self.pieces)

    @property
    def duration_s(self) -> float:
        return sum(p.size for p in self.pieces) / SAMPLE_RATE

    def summary(self) -> dict:
        """{"pieces": n, "duration_s": total, "categories": {category: n}}."""
        cats: dict[str, int] = {}
        for c in self.categories:
            cats[c] = cats.get(c, 0) + 1
        return {"pieces": len(self), "duration_s": round(self.duration_s, 1), "categories": cats}

    @classmethod
    def from_dir(cls, noise_dir: str | Path, split: str | None = "train", seed: int = 0,
                 categories: Sequence[str] | None = None) -> NoiseBank:
        """Load a noise folder: noise/manifest.csv (columns path, category) when present, else every audio file
        found recursively (category = its sub-folder, or "noise").

        split: "train" / "val" / "test" keeps only that share of the pieces as dealt by scenes.noise_split (60/20/20
        within each category, seeded), so that augmentation never uses the noise of evaluation scenes; None keeps
        all pieces. categories: keep only these categories. Raises ValueError when nothing usable is found;
        AudioError names a piece that cannot be decoded.
        """
        noise_dir = Path(noise_dir)
        if not noise_dir.is_dir():
            raise ValueError(f"noise_dir {noise_dir}: not a folder")
        man = noise_dir / "manifest.csv"
        if man.is_file():
            from .data import read_noise_manifest

            items = [(noise_dir / r["path"], r.get("category") or "noise") for r in read_noise_manifest(man)]
        else:
            files = sorted(p for p in noise_dir.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            items = [(p, p.parent.name if p.parent != noise_dir else "noise") for p in files]
        if not items:
            raise ValueError(f"noise_dir {noise_dir} holds no audio files")
        if split is not None:
            from .scenes import noise_split

            if split not in ("train", "val", "test"):
                raise ValueError(f"split must be 'train', 'val', 'test' or None, got {split!r}")
            keep = {Path(p).resolve() for p in noise_split(noise_dir, seed=seed)[split]}
            items = [(p, c) for p, c in items if p.resolve() in keep]
        if categories is not None:
            wanted = set(categories)
            items = [(p, c) for p, c in items if c in wanted]
        if not items:
            raise ValueError(f"noise_dir {noise_dir}: no pieces left for split={split!r}, categories={categories}")
        pieces = [load_audio(p) for p, _ in items]
        return cls(pieces, [c for _, c in items], [p.name for p, _ in items])

    def segment(self, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """A random noise segment of exactly `n_samples` samples (a piece shorter than that is looped).

        Returns (float32 (n_samples,), {"piece": index, "offset": start sample}). Never a view into the bank.
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        i = int(rng.integers(len(self.pieces)))
        p = self.pieces[i]
        off = int(rng.integers(0, max(1, p.size - n_samples + 1))) if p.size >= n_samples else int(rng.integers(p.size))
        if p.size >= n_samples:
            seg = p[off: off + n_samples].copy()
        else:
            seg = np.resize(np.roll(p, -off), n_samples).astype(np.float32)
        return seg, {"piece": i, "offset": off}


# --------------------------------------------------------------------------------------------------------------
# presets

@dataclass(frozen=True)
class AugmentSpec:
    """One augmentation scheme. Probabilities are per augmented copy, per class where the study made them so.

    noise_mode: "factor" (noise × noise_factor, the raw bank level: the study) or "snr" (noise scaled to a random
    SNR in [min_snr_db, max_snr_db] relative to the clip's RMS). p_noise_scream / p_noise_other: probability of
    adding noise to a scream / a non-scream copy. p_shift_scream / p_shift_other: circular roll, uniform within
    ±max_shift_fraction of the clip. p_gain: gain uniform in [min_gain_db, max_gain_db]. p_filter: one of
    low-pass / high-pass / band-pass (audiomentations, default frequency ranges). drop_unchanged: a copy to which
    nothing applied is not emitted (it would duplicate its source).
    """

    name: str
    noise_mode: str = "snr"
    noise_factor: float = 0.4
    min_snr_db: float = 0.0
    max_snr_db: float = 30.0
    p_noise_scream: float = 0.8
    p_noise_other: float = 0.8
    p_shift_scream: float = 0.5
    p_shift_other: float = 0.5
    max_shift_fraction: float = 0.2
    p_gain: float = 0.5
    min_gain_db: float = -12.0
    max_gain_db: float = 6.0
    p_filter: float = 0.3
    drop_unchanged: bool = True

    def __post_init__(self):
        if self.noise_mode not in ("factor", "snr"):
            raise ValueError(f"noise_mode must be 'factor' or 'snr', got {self.noise_mode!r}")
        for k in ("p_noise_scream", "p_noise_other", "p_shift_scream", "p_shift_other", "p_gain", "p_filter"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be a probability in [0, 1], got {v}")
        if not self.noise_factor > 0:
            raise ValueError(f"noise_factor must be positive, got {self.noise_factor}")
        if self.min_snr_db > self.max_snr_db:
            raise ValueError(f"min_snr_db ({self.min_snr_db}) must not exceed max_snr_db ({self.max_snr_db})")
        if not 0.0 < self.max_shift_fraction < 1.0:
            raise ValueError(f"max_shift_fraction must be in (0, 1), got {self.max_shift_fraction}")
        if self.min_gain_db > self.max_gain_db:
            raise ValueError(f"min_gain_db ({self.min_gain_db}) must not exceed max_gain_db ({self.max_gain_db})")

    def to_dict(self) -> dict:
        return asdict(self)


# The study's noise (x0.4) and shift (+-20%), at the same rate in both classes (it used 100% / 20% for noise and
# 50% / 0% for the shift: noise and shift told the label).
SEED = AugmentSpec(name="seed", noise_mode="factor", noise_factor=0.4, p_noise_scream=1.0, p_noise_other=1.0,
                   p_shift_scream=0.5, p_shift_other=0.5, max_shift_fraction=0.2, p_gain=0.0, p_filter=0.0)
ROBUST = AugmentSpec(name="robust")


def get_preset(preset: str | AugmentSpec) -> AugmentSpec:
    """"seed" / "robust" → its AugmentSpec; an AugmentSpec passes through."""
    if isinstance(preset, AugmentSpec):
        return preset
    if preset == "seed":
        return SEED
    if preset == "robust":
        return ROBUST
    raise ValueError(f"preset must be one of {PRESETS} (or an AugmentSpec), got {preset!r}")


@contextlib.contextmanager
def _global_rng(seed: int):
    """audiomentations draws from `random` and `np.random`: seed them per copy, restore the caller's state after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _filter(kind: str):
    from audiomentations import BandPassFilter, HighPassFilter, LowPassFilter

    if kind == "lowpass":
        return LowPassFilter(min_cutoff_freq=1500.0, max_cutoff_freq=7000.0, p=1.0)
    if kind == "highpass":
        return HighPassFilter(min_cutoff_freq=50.0, max_cutoff_freq=800.0, p=1.0)
    return BandPassFilter(min_center_freq=500.0, max_center_freq=3000.0, p=1.0)


def augment_clip(wave: np.ndarray, label: int, spec: AugmentSpec, noise_bank: NoiseBank | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Augment one clip. wave: float32 (n,) at SAMPLE_RATE (not modified). label: 0/1.

    Order: shift → noise → gain → filter. Returns (float32 (n,), info) with info = {"changed": bool, "shift":
    samples or None, "noise": {"piece", "offset", "scale", "snr_db"} or None, "gain_db", "filter"}.
    With noise, output − shifted input == scale × the bank segment (before gain/filter). If the result would
    exceed full scale it is scaled down as a whole (SNR kept) and info["peak_scale"] says by how much.
    """
    from audiomentations import Gain, Shift

    x = np.array(wave, dtype=np.float32, copy=True).reshape(-1)
    n = x.size
    scream = int(label) == 1
    info: dict = {"changed": False, "shift": None, "noise": None, "gain_db": None, "filter": None, "peak_scale": 1.0}
    # All decisions are drawn first, in a fixed order, so a probability of 0 never shifts the other draws.
    u = rng.random(4)
    do_shift = u[0] < (spec.p_shift_scream if scream else spec.p_shift_other)
    do_noise = noise_bank is not None and u[1] < (spec.p_noise_scream if scream else spec.p_noise_other)
    do_gain = u[2] < spec.p_gain
    do_filter = u[3] < spec.p_filter
    sub_seed = int(rng.integers(2**31))

    if do_shift and n > 1:
        max_shift = int(spec.max_shift_fraction * n)
        shift = int(rng.integers(-max_shift, max_shift + 1))
        with _global_rng(sub_seed):
            t = Shift(min_shift=shift, max_shift=shift, shift_unit="samples", rollover=True, fade_duration=0.0,
                      p=1.0)
            x = t(x, SAMPLE_RATE)
        info["shift"] = shift
        info["changed"] = True
    if do_noise:
        seg, where = noise_bank.segment(n, rng)
        if spec.noise_mode == "factor":
            scale = spec.noise_factor
            snr = None
        else:
            snr = float(rng.uniform(spec.min_snr_db, spec.max_snr_db))
            sig, nz = _rms(x), _rms(seg)
            # A silent clip has no level to be relative to: the noise then goes in at -30 dBFS RMS.
            ref = sig if sig > 1e-6 else 10 ** (-30 / 20) * 10 ** (snr / 20)
            scale = ref / max(nz, 1e-9) / 10 ** (snr / 20)
        x = (x + np.float32(scale) * seg).astype(np.float32)
        info["noise"] = {**where, "scale": float(scale), "snr_db": snr}
        info["changed"] = True
    if do_gain:
        g = float(rng.uniform(spec.min_gain_db, spec.max_gain_db))
        with _global_rng(sub_seed + 1):
            x = Gain(min_gain_db=g, max_gain_db=g, p=1.0)(x, SAMPLE_RATE)
        info["gain_db"] = g
        info["changed"] = True
    if do_filter:
        kind = FILTER_KINDS[int(rng.integers(len(FILTER_KINDS)))]
        with _global_rng(sub_seed + 2):
            x = _filter(kind)(x, SAMPLE_RATE)
        info["filter"] = kind
        info["changed"] = True
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > 1.0:
        x = x / np.float32(peak)
        info["peak_scale"] = 1.0 / peak
    return x.astype(np.float32, copy=False), info


def augment_dataset(waves, labels, groups, preset: str | AugmentSpec = "robust",
                    noise_bank: NoiseBank | None = None, copies: int = 1, seed: int = 0,
                    progress: bool = False, return_info: bool = False):
    """The training set plus `copies` augmented copies of each clip.

    waves: a list of float32 (n_i,) arrays or a float32 array (n_clips, n_samples), at SAMPLE_RATE; labels: 0/1
    (n_clips,); groups: (n_clips,) group names. preset: "seed", "robust" or an AugmentSpec. noise_bank: needed by
    both presets (they add noise). copies: augmented copies per clip (>= 0).

    Returns (waves, labels, groups, source_index): the originals first, in order, then the augmented copies
    (copy-major); waves has the input's container type (list or 2-D array), labels int64, groups an object array,
    source_index int64 = the index of each row's source clip (originals map to themselves). With return_info a
    fifth element lists each copy's info dict (see :func:`augment_clip`). Copies to which nothing applied are
    left out when the spec's drop_unchanged is set. The inputs are never modified.
    """
    spec = get_preset(preset)
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    as_array = isinstance(waves, np.ndarray) and waves.ndim == 2
    wave_list = list(waves)
    n = len(wave_list)
    labels = np.asarray(labels).reshape(-1)
    groups = np.asarray(groups, dtype=object).reshape(-1)
    if labels.shape[0] != n or groups.shape[0] != n:
        raise ValueError(f"waves, labels and groups must have the same length, got {n}, {labels.shape[0]}, "
                         f"{groups.shape[0]}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if noise_bank is None and copies > 0 and (spec.p_noise_scream > 0 or spec.p_noise_other > 0):
        raise ValueError(f"preset {spec.name!r} adds background noise: pass noise_bank (NoiseBank.from_dir)")
    for i, w in enumerate(wave_list):
        w = np.asarray(w)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"waves[{i}] must be a non-empty 1-D waveform, got shape {w.shape}")

    out_w: list[np.ndarray] = [np.array(w, dtype=np.float32, copy=True) for w in wave_list]
    out_y = [int(v) for v in labels]
    out_g = list(groups)
    src = list(range(n))
    infos: list[dict] = []
    jobs = [(c, i) for c in range(copies) for i in range(n)]
    bar = None
    if progress and jobs:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"augment ({spec.name})", total=len(jobs))
    try:
        for c, i in jobs:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), c, i]))
            x, info = augment_clip(wave_list[i], int(labels[i]), spec, noise_bank, rng)
            if bar is not None:
                bar.advance(task)
            if spec.drop_unchanged and not info["changed"]:
                continue
            out_w.append(x)
            out_y.append(int(labels[i]))
            out_g.append(groups[i])
            src.append(i)
            infos.append({**info, "source": i, "copy": c})
    finally:
        if bar is not None:
            bar.stop()
    w_out = np.stack(out_w) if as_array else out_w
    result = (w_out, np.asarray(out_y, dtype=np.int64), np.asarray(out_g, dtype=object), np.asarray(src, np.int64))
    return (*result, infos) if return_info else result


def augmentation_rates(labels, infos: list[dict], copies: int) -> dict:
    """Share of attempted copies that got noise / shift / gain / filter, per class.

    labels: the labels of the ORIGINAL clips (n_clips,); infos: from augment_dataset(return_info=True); copies: as
    passed to it. Denominators are copies × clips of the class, so copies dropped as unchanged count as "no".
    Returns {"scream": {"attempted": n, "emitted": n, "noise": r, "shift": r, "gain": r, "filter": r},
    "not_scream": {...}}.
    """
    labels = np.asarray(labels)
    out = {}
    for name, lab in (("scream", 1), ("not_scream", 0)):
        sel = [d for d in infos if labels[d["source"]] == lab]
        n_att = int(copies * np.sum(labels == lab))
        k = max(1, n_att)
        out[name] = {"attempted": n_att, "emitted": len(sel),
                     "noise": sum(d["noise"] is not None for d in sel) / k,
                     "shift": sum(d["shift"] is not None for d in sel) / k,
                     "gain": sum(d["gain_db"] is not None for d in sel) / k,
                     "filter": sum(d["filter"] is not None for d in sel) / k}
    return out


__all__ = [
    "PRESETS",
    "ROBUST",
    "SEED",
    "AudioError",
    "AugmentSpec",
    "NoiseBank",
    "augment_clip",
    "augment_dataset",
    "augmentation_rates",
    "get_preset",
]
