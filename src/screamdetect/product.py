"""Training the shipped detector: short windows from labelled clips, robust augmentation, calibration, export.

`screamdetect train DATA --config configs/default.yaml --out runs/default` runs :func:`train_product`:

1. group-aware split (the same default split as the study), noise bank split by piece (scenes.noise_split);
2. training windows: each clip is placed at a random offset in a buffer at least one window long, augmented with
   the `robust` preset (noise of the TRAIN noise pieces at a random SNR, gain, shift, filtering — the same for
   both classes) over a faint noise floor, so neither padding, silence nor added noise can tell the label;
   a scream clip gives the windows that cover its active (loud) part, a non-scream clip up to `neg_windows`
   random windows;
3. fit the chosen model (models.make_model) with validation windows for checkpointing;
4. export ONNX + card, then calibrate the threshold with the real Detector on validation data: validation scream
   clips embedded in validation backgrounds, and `calib_hours` of scream-free audio built from validation
   negatives + validation noise pieces; the threshold that meets the false-alarm target with the best recall.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import scenes
from .audio import SAMPLE_RATE, AudioError, load_audio
from .data import (
    Clip,
    Dataset,
    DatasetError,
    SplitSpec,
    discover,
    load_or_make_split,
    read_noise_manifest,
    split_counts,
)
from .detector import CALIBRATION_THRESHOLDS, Smoothing  # the detector's own rule (validated); no torch there
from .evaluate import clip_metrics
from .features import FrontEnd, log_mel, whole_steps

SNR_RANGE_DB = (-30.0, 60.0)  # calibration SNRs a config may ask for (the event scenes use 0-20 dB)
NOISE_FLOOR_DBFS = (-85.0, -65.0)  # every training window gets at least this much white noise: no digital silence


@dataclass(frozen=True)
class ProductConfig:
    frontend: FrontEnd = field(default_factory=lambda: FrontEnd(n_mels=64, win_s=0.025, hop_s=0.010))
    window_s: float = 1.0
    hop_s: float = 0.25
    model: str = "cnn_reg"
    model_params: dict = field(default_factory=dict)
    pos_copies: int = 6
    neg_copies: int = 1
    neg_windows: int = 4
    snr_db: tuple[float, float] = (0.0, 30.0)
    clean_prob: float = 0.2  # share of copies without background noise (only the faint floor)
    # Speed perturbation (both classes alike): with probability p_speed a copy is resampled to play speed_range
    # times faster/slower (pitch and tempo together: another voice, as in speech recognition's 0.9/1.0/1.1)
    p_speed: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    # Band limiting (both classes alike, and the scream-free scenes): with probability p_band_limit a copy is
    # resampled to 8 kHz and back, as telephone lines and many IP cameras (G.711) deliver it: nothing above 4 kHz
    p_band_limit: float = 0.0
    # Scene mixing (both classes alike): with probability p_scene a copy's background is not a noise-bank piece but
    # a scene as the event benchmark builds them (a noise bed with other NON-scream clips of the same split
    # scattered over it, scenes.background), scaled to an SNR of snr_db over the clip's active part — so a
    # scream is also seen over speech, vocal bursts and children at play, as it is heard in a real scene.
    p_scene: float = 0.0
    level_dbfs: tuple[float, float] = (-40.0, -6.0)  # loudness of the clip's active part
    smoothing: Smoothing = field(default_factory=Smoothing)
    target_false_alarms_per_hour: float = 0.5
    calib_hours: float = 1.0
    # Calibration events: each validation scream inserted calib_repeats times at each SNR of calib_snr_db (each in
    # its own validation background). The default, once at 10 dB, is what every shipped card used; (0, 5, 10, 20)
    # twice, with calib_hours 4, is bench/select_on_val.py's larger protocol (more evidence per threshold).
    calib_snr_db: tuple[float, ...] = (10.0,)
    calib_repeats: int = 1
    background_minutes: float = 0.0  # scream-free train-split scenes (noise beds + scattered negatives) as negatives
    background_windows: int = 0  # how many windows to draw from them (0 = all)
    # Scream copies per source. False: pos_copies each. True: inversely proportional to the source's scream count
    # (so one large source does not define "scream"). "ratio": so that each source's screams-to-non-screams ratio
    # comes near the whole training set's (so that a source mostly of non-screams, e.g. EmoGator's vocal bursts,
    # does not teach "this kind of recording is not a scream", nor a source mostly of screams the reverse).
    balance_sources: bool | str = False
    # YAMNet second stage (cascade.fit_second_stage) after the CNN: {} = none; keys gate, min_pass, combine, norm_dbfs,
    # hard_negative_minutes, head ("trained" on our windows, or "screaming": YAMNet's own Screaming class)
    second_stage: dict = field(default_factory=dict)
    # Distillation from YAMNet before the supervised training (distill.py): {} = none; keys epochs, dims, lr,
    # batch_size
    distill: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("window_s", "hop_s", "clean_prob", "background_minutes", "calib_hours",
                     "target_false_alarms_per_hour"):
            if not number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("snr_db", "level_dbfs", "speed_range"):
            pair = getattr(self, name)
            if len(pair) != 2 or not all(number(v) for v in pair) or pair[0] > pair[1]:
                raise ValueError(f"{name} must be [low, high], two numbers with low <= high, got {list(pair)}")
        if self.level_dbfs[1] > 0:
            raise ValueError(f"level_dbfs must stay at or below 0 dBFS (full scale), got {list(self.level_dbfs)}")
        for name in ("pos_copies", "neg_copies", "neg_windows", "calib_repeats", "background_windows", "seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                # a ValueError like every other bad setting: the commands report config errors by catching it
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")  # noqa: TRY004
        if not 0.0 <= self.clean_prob <= 1.0:
            raise ValueError(f"clean_prob must be a probability in [0, 1], got {self.clean_prob}")
        if self.hop_s <= 0 or self.window_s <= 0 or self.hop_s > self.window_s:
            raise ValueError(f"need 0 < hop_s <= window_s, got window_s={self.window_s}, hop_s={self.hop_s}")
        # the CNN's windows are cut in front-end frames, YAMNet's (model yamnet_*) in samples
        step = 1.0 / SAMPLE_RATE if self.model.startswith("yamnet") else self.frontend.hop_s
        for name in ("window_s", "hop_s"):
            if not whole_steps(getattr(self, name), step):
                raise ValueError(f"{name} must be a whole number of {'samples' if step < 1e-3 else 'front-end hops'}"
                                 f" ({step:g} s), got {getattr(self, name)}: event times would drift")
        for name in ("pos_copies", "neg_copies", "neg_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("p_speed", "p_band_limit", "p_scene"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.balance_sources not in (False, True, "ratio"):
            raise ValueError(f"balance_sources must be false, true or 'ratio', got {self.balance_sources!r}")
        if not self.calib_snr_db or not all(np.isfinite(x) and SNR_RANGE_DB[0] <= x <= SNR_RANGE_DB[1]
                                            for x in self.calib_snr_db):
            raise ValueError(f"calib_snr_db must be a non-empty list of SNRs from {SNR_RANGE_DB[0]} to "
                             f"{SNR_RANGE_DB[1]} dB, got {list(self.calib_snr_db)}")
        if not (self.target_false_alarms_per_hour >= 0 and np.isfinite(self.target_false_alarms_per_hour)):
            raise ValueError(f"target_false_alarms_per_hour must be a number >= 0, got "
                             f"{self.target_false_alarms_per_hour}")
        if self.calib_repeats < 1:
            raise ValueError(f"calib_repeats must be >= 1, got {self.calib_repeats}")
        if not self.calib_hours > 0:
            raise ValueError(f"calib_hours must be > 0, got {self.calib_hours}")
        if not 0.5 <= self.speed_range[0] <= self.speed_range[1] <= 2.0:
            raise ValueError(f"speed_range must satisfy 0.5 <= low <= high <= 2, got {self.speed_range}")
        from .models import MODELS, TRANSFER_MODELS

        if self.model not in MODELS and self.model not in TRANSFER_MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join([*MODELS, *TRANSFER_MODELS])}")
        if self.model == "svm":
            raise ValueError("model 'svm' is a study baseline on clip statistics, not a window detector: choose one "
                             f"of {', '.join(m for m in [*MODELS, *TRANSFER_MODELS] if m != 'svm')}")
        if self.model in TRANSFER_MODELS:
            if self.second_stage:
                raise ValueError(f"model {self.model!r} is YAMNet already: second_stage applies to the CNN models only")
            if self.window_s < 0.975:
                raise ValueError(f"model {self.model!r} needs window_s >= 0.975 (one YAMNet patch), got {self.window_s}")
        if self.distill:
            from .distill import check_spec

            if self.model not in ("cnn", "cnn_reg", "cnn_f1"):
                raise ValueError(f"distill applies to the CNN models (cnn, cnn_reg, cnn_f1), not {self.model!r}")
            check_spec(self.distill)
        known = {"gate", "min_pass", "combine", "norm_dbfs", "hard_negative_minutes", "head"}
        unknown = set(self.second_stage or {}) - known
        if unknown:
            raise ValueError(f"unknown second_stage keys: {sorted(unknown)} (known: {', '.join(sorted(known))})")
        from .cascade import HEADS

        if (self.second_stage or {}).get("head", "trained") not in HEADS:
            raise ValueError(f"second_stage head must be one of {', '.join(HEADS)}, got {self.second_stage['head']!r}")

    @property
    def window_frames(self) -> int:
        return round(self.window_s / self.frontend.hop_s)

    @property
    def hop_frames(self) -> int:
        return round(self.hop_s / self.frontend.hop_s)

    @classmethod
    def from_dict(cls, d: dict) -> ProductConfig:
        d = dict(d)
        if "frontend" in d:
            d["frontend"] = FrontEnd.from_dict(d["frontend"])
        if "smoothing" in d:
            d["smoothing"] = Smoothing(**d["smoothing"])
        for k in ("snr_db", "level_dbfs", "speed_range", "calib_snr_db"):
            if k in d:
                d[k] = tuple(d[k])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)} (known: {sorted(cls.__dataclass_fields__)})")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frontend"] = self.frontend.to_dict()
        return d


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


def frame_windows(mel: np.ndarray, cfg: ProductConfig) -> np.ndarray:
    """All windows of a log-mel (n_mels, T) the detector would see: (n_windows, n_mels, window_frames).

    The same slicing as the detector: windows start every hop_frames frames; a log-mel shorter than one window is
    padded with its own floor value (the quietest frame), which only happens for very short inputs.
    """
    W, H = cfg.window_frames, cfg.hop_frames
    if mel.shape[1] < W:
        mel = np.pad(mel, ((0, 0), (0, W - mel.shape[1])), constant_values=float(mel.min()))
    starts = np.arange(0, mel.shape[1] - W + 1, H)
    view = np.lib.stride_tricks.sliding_window_view(mel, W, axis=1)  # (n_mels, T-W+1, W)
    return np.ascontiguousarray(view[:, starts].transpose(1, 0, 2))


def audio_windows(buf: np.ndarray, cfg: ProductConfig) -> np.ndarray:
    """The windows of :func:`frame_windows` as audio: (n_windows, window samples) float32, window w being samples
    [w·hop, w·hop + window) of `buf` (zero-padded past its end), as the detector cuts them for its second stage."""
    fe = cfg.frontend
    n_frames = 1 + buf.size // fe.hop_length  # centred frames, as log_mel
    W, H = cfg.window_frames, cfg.hop_frames
    n = 1 if n_frames <= W else 1 + (n_frames - W) // H
    win, hop = W * fe.hop_length, H * fe.hop_length
    need = (n - 1) * hop + win
    x = np.pad(buf, (0, max(0, need - buf.size))).astype(np.float32, copy=False)
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n])


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `audio` `factor` times faster (higher pitch, shorter) by resampling (soxr): float32 (≈ n / factor,)."""
    import soxr

    if factor == 1.0:
        return audio
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


BAND_LIMIT_RATE = 8000


def band_limit(audio: np.ndarray) -> np.ndarray:
    """`audio` as an 8 kHz capture chain delivers it: resampled to BAND_LIMIT_RATE and back (soxr), same length."""
    import soxr

    y = soxr.resample(soxr.resample(audio, SAMPLE_RATE, BAND_LIMIT_RATE), BAND_LIMIT_RATE, SAMPLE_RATE)
    y = y[: audio.size] if y.size >= audio.size else np.pad(y, (0, audio.size - y.size))
    return y.astype(np.float32)


def _place(audio: np.ndarray, n_min: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Put `audio` at a random offset in a zero buffer of at least n_min (+ up to 0.5 s) samples."""
    extra = int(rng.integers(0, SAMPLE_RATE // 2))
    n = max(audio.size, n_min) + extra
    off = int(rng.integers(0, n - audio.size + 1))
    buf = np.zeros(n, dtype=np.float32)
    buf[off: off + audio.size] = audio
    return buf, off


class WindowMaker:
    """Turns clips into (windows, labels, groups) for training, with the robust augmentation (augment.py)."""

    def __init__(self, cfg: ProductConfig, noise_bank):
        from .augment import ROBUST  # [train] extra

        self.cfg = cfg
        self.noise_bank = noise_bank
        self.spec = replace(ROBUST, min_snr_db=cfg.snr_db[0], max_snr_db=cfg.snr_db[1],
                            p_noise_scream=1 - cfg.clean_prob, p_noise_other=1 - cfg.clean_prob,
                            # the time shift is the random placement in _place (it must know where the clip is)
                            p_shift_scream=0.0, p_shift_other=0.0, drop_unchanged=False)
        self.scene_spec = replace(self.spec, p_noise_scream=0.0, p_noise_other=0.0)

    def _over_scene(self, buf: np.ndarray, a0: int, a1: int, negatives: list[np.ndarray],
                    rng: np.random.Generator) -> np.ndarray:
        """`buf` (a placed clip whose active part is samples a0:a1) over a scene background of its length: a bed of
        the train noise pieces with `negatives` scattered over it, scaled so that the clip's active part is at an
        SNR drawn from cfg.snr_db against the background under it (as scenes.insert_scream measures SNR)."""
        bg = scenes.background(self.noise_bank.pieces, negatives, buf.size / SAMPLE_RATE, rng)
        snr = rng.uniform(*self.cfg.snr_db)
        p_clip = np.mean(buf[a0:a1].astype(np.float64) ** 2) + 1e-20
        p_bg = np.mean(bg[a0:a1].astype(np.float64) ** 2) + 1e-20
        return (buf + bg * np.float32(np.sqrt(p_clip / p_bg / 10 ** (snr / 10)))).astype(np.float32)

    def clip_windows(self, audio: np.ndarray, label: int, rng: np.random.Generator, augment: bool,
                     as_audio: bool = False, scene_negatives: list[np.ndarray] | None = None) -> np.ndarray:
        """The windows of one (augmented) copy of a clip: log-mel (n, n_mels, window_frames), or with as_audio
        the same windows as audio (n, window samples) — for the second stage, which embeds audio.
        scene_negatives: the non-scream clips a scene background (p_scene) scatters over its noise bed."""
        cfg = self.cfg
        n_win = round(cfg.window_s * SAMPLE_RATE)
        if augment and cfg.p_speed > 0 and rng.random() < cfg.p_speed:  # no draw at all when off (reproducible)
            audio = speed_perturb(audio, float(rng.uniform(*cfg.speed_range)))
        a0, a1 = scenes.active_region(audio)
        # Level: the clip's active part at a random loudness (both classes alike).
        target = rng.uniform(*cfg.level_dbfs) if augment else -20.0
        audio = audio * np.float32(10 ** ((target - _rms_db(audio[a0:a1])) / 20))
        buf, off = _place(audio, n_win, rng)
        if augment:
            from .augment import augment_clip

            spec = self.spec
            if cfg.p_scene > 0 and rng.random() < cfg.p_scene:  # no draw when off (reproducible)
                buf = self._over_scene(buf, off + a0, off + a1, scene_negatives or [], rng)
                spec = self.scene_spec  # the scene is the background: no noise-bank noise on top
            buf, _ = augment_clip(buf, label, spec, self.noise_bank, rng)
        # A faint white floor for every window (both classes): real microphones never give digital silence.
        buf = buf + rng.standard_normal(buf.size).astype(np.float32) * np.float32(
            10 ** (rng.uniform(*NOISE_FLOOR_DBFS) / 20))
        if augment and cfg.p_band_limit > 0 and rng.random() < cfg.p_band_limit:  # no draw when off
            buf = band_limit(buf)
        scenes.fit_full_scale(buf)
        wins = audio_windows(buf, cfg) if as_audio else frame_windows(log_mel(buf, frontend=cfg.frontend), cfg)
        hop = cfg.hop_s
        starts = np.arange(len(wins)) * hop
        if label == 1:
            s0, s1 = (off + a0) / SAMPLE_RATE, (off + a1) / SAMPLE_RATE
            cover = np.clip(np.minimum(starts + cfg.window_s, s1) - np.maximum(starts, s0), 0, None)
            need = min(0.5 * (s1 - s0), 0.4 * cfg.window_s)
            keep = np.flatnonzero(cover >= need)
            if keep.size == 0:
                keep = np.array([int(np.argmax(cover))])
        else:
            keep = np.arange(len(wins))
            if keep.size > cfg.neg_windows:
                keep = rng.choice(keep, cfg.neg_windows, replace=False)
        return wins[keep]

    def scream_copies(self, clips: list[Clip]) -> dict[str, int]:
        """Augmented copies per scream clip, by source: pos_copies each, or with balance_sources inversely
        proportional to the source's number of screams (so one large source does not define "scream"),
        between 1 and 3·pos_copies; with balance_sources "ratio", pos_copies × (the set's screams per non-scream)
        / (the source's), between 1 and 4·pos_copies."""
        from collections import Counter

        n = Counter(c.source for c in clips if c.label == 1)
        if not self.cfg.balance_sources or not n:
            return {src: self.cfg.pos_copies for src in n}
        if self.cfg.balance_sources == "ratio":
            neg = Counter(c.source for c in clips if c.label == 0)
            overall = sum(n.values()) / max(1, sum(neg.values()))
            return {src: int(np.clip(round(self.cfg.pos_copies * overall * max(1, neg[src]) / k), 1,
                                     4 * self.cfg.pos_copies)) for src, k in n.items()}
        mean = sum(n.values()) / len(n)
        return {src: int(np.clip(round(self.cfg.pos_copies * mean / k), 1, 3 * self.cfg.pos_copies))
                for src, k in n.items()}

    def make(self, clips: list[Clip], audios: list[np.ndarray], augment: bool, seed: int,
             progress=None, as_audio: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        X, y, g = [], [], []
        per_source = self.scream_copies(clips)
        # Scene backgrounds scatter the non-screams of the same clips (the same split), at most 15 s of each.
        negs = [a[: 15 * SAMPLE_RATE] for c, a in zip(clips, audios) if c.label == 0] if cfg.p_scene > 0 else None
        for c, a in zip(clips, audios):
            copies = (per_source[c.source] if c.label == 1 else cfg.neg_copies) if augment else 1
            for _ in range(copies):
                w = self.clip_windows(a, c.label, rng, augment, as_audio=as_audio, scene_negatives=negs)
                X.append(w)
                y += [c.label] * len(w)
                g += [c.group] * len(w)
            if progress is not None:
                progress()
        return np.concatenate(X).astype(np.float32), np.array(y, dtype=np.int64), np.array(g)


# --------------------------------------------------------------------------------------------------------------
# the whole job

def _load_all(clips: list[Clip], what: str) -> tuple[list[Clip], list[np.ndarray]]:
    """Load clips (skipping and reporting the ones that fail), with a progress bar."""
    from rich.progress import track

    ok, audios = [], []
    for c in track(clips, description=f"loading {what}", transient=True):
        try:
            audios.append(load_audio(c.path))
            ok.append(c)
        except AudioError as e:
            print(f"skipped: {e}")
    return ok, audios


def background_windows(cfg: ProductConfig, noises: list[np.ndarray], negatives: list[np.ndarray],
                       as_audio: bool = False) -> np.ndarray:
    """Negative windows from `cfg.background_minutes` of scream-free scenes built from TRAIN-split material
    (noise beds of the train noise pieces with train non-screams scattered over them): the kind of audio the
    detector listens to for hours, and where false alarms come from."""
    rng = np.random.default_rng(cfg.seed + 3)
    spec = scenes.SceneSpec(duration_s=60.0, seed=cfg.seed + 3)
    wins = []
    for _ in range(int(np.ceil(cfg.background_minutes))):
        bg = scenes.background(noises, negatives, 60.0, rng, spec)
        bg += rng.standard_normal(bg.size).astype(np.float32) * np.float32(10 ** (rng.uniform(*NOISE_FLOOR_DBFS) / 20))
        if cfg.p_band_limit > 0 and rng.random() < cfg.p_band_limit:  # a whole minute through an 8 kHz chain
            bg = band_limit(bg)
        scenes.fit_full_scale(bg)
        wins.append(audio_windows(bg, cfg) if as_audio else frame_windows(log_mel(bg, frontend=cfg.frontend), cfg))
    X = np.concatenate(wins)
    if cfg.background_windows and len(X) > cfg.background_windows:
        X = X[np.sort(rng.choice(len(X), cfg.background_windows, replace=False))]
    return X.astype(np.float32)


def calibrate(detector, val_screams: list[np.ndarray], val_negatives: list[np.ndarray], val_noises: list[np.ndarray],
              cfg: ProductConfig, out_dir: Path | None = None) -> dict:
    """Pick the threshold meeting `cfg.target_false_alarms_per_hour` with the best recall, on validation data.

    Recall: validation scream clips, each placed at each SNR of `cfg.calib_snr_db` (default 10 dB),
    `cfg.calib_repeats` times, in a 10 s validation background of its own; detected when an event overlaps it.
    False alarms: `cfg.calib_hours` of scream-free validation scenes. Window scores are computed once; each candidate
    threshold re-runs only the smoothing.
    """
    from .detector import events_from_scores
    from .evaluate import covers_scream

    spec = scenes.SceneSpec(duration_s=max(10.0, 2 * 3.0 + 1), min_gap_s=3.0, seed=cfg.seed + 17)
    rng = np.random.default_rng(cfg.seed + 17)
    pos_scores, pos_spans, pos_snr = [], [], []
    for a in val_screams:
        for _ in range(cfg.calib_repeats):
            for snr in cfg.calib_snr_db:
                bg = scenes.background(val_noises, val_negatives, max(10.0, a.size / SAMPLE_RATE + 6.0), rng, spec)
                s0, s1 = scenes.insert_scream(bg, a, 3 * SAMPLE_RATE, float(snr))
                pos_scores.append(detector.score_windows(scenes.fit_full_scale(bg)))
                pos_spans.append((s0 / SAMPLE_RATE, s1 / SAMPLE_RATE))
                pos_snr.append(float(snr))
    free_scores, seconds = [], 0.0
    fspec = scenes.SceneSpec(duration_s=300.0, seed=cfg.seed + 29)
    for sc in scenes.scream_free_scenes(val_negatives, val_noises, cfg.calib_hours, fspec):
        free_scores.append(detector.score_windows(sc.audio))
        seconds += sc.audio.size / SAMPLE_RATE  # whole samples: 4 h is 4 h, not 4.000000000000003 (summed hours)
    hours = seconds / 3600
    w, h, sm = detector.window_s, detector.hop_s, detector.smoothing
    rows = []
    ok = []
    for thr in CALIBRATION_THRESHOLDS:
        fa = sum(len(events_from_scores(s, thr, sm, w, h)) for s in free_scores)
        hits = []
        for s, (s0, s1) in zip(pos_scores, pos_spans):
            ev = events_from_scores(s, thr, sm, w, h)
            hits.append(any(covers_scream(e.start_s, e.end_s, s0, s1) for e in ev))
        row = {"threshold": float(thr), "false_alarms_per_hour": fa / hours, "recall": sum(hits) / max(1, len(hits))}
        if fa <= cfg.target_false_alarms_per_hour * seconds / 3600 + 1e-9:  # counts, not a rounded rate, decide
            ok.append(row)
        if len(cfg.calib_snr_db) > 1:
            row["recall_by_snr"] = {f"{x:g}": float(np.mean([hh for hh, sn in zip(hits, pos_snr) if sn == x]))
                                    for x in sorted(set(pos_snr))}
        rows.append(row)
    best = max(ok, key=lambda r: (r["recall"], -r["threshold"])) if ok else rows[-1]
    result = {"threshold": best["threshold"], "val_recall": best["recall"],
              "val_false_alarms_per_hour": best["false_alarms_per_hour"], "scream_free_hours": hours,
              "val_screams": len(val_screams), "target_met": bool(ok), "sweep": rows}
    if len(pos_scores) != len(val_screams):  # the larger protocol: say what the recall was measured on
        result.update(val_events=len(pos_scores), snr_db=[float(x) for x in cfg.calib_snr_db],
                      repeats=cfg.calib_repeats)
        if "recall_by_snr" in best:
            result["val_recall_by_snr"] = best["recall_by_snr"]
    if out_dir is not None:
        (Path(out_dir) / "calibration.json").write_text(json.dumps(result, indent=1))
    return result


def train_product(data: str | Path, cfg: ProductConfig, out: str | Path, noise_dir: str | Path | None = None,
                  split_spec: SplitSpec | None = None) -> dict:
    """Train, export, calibrate and test the product detector. Writes model.onnx + model.json (the card),
    split.csv, config.json, calibration.json, metrics.json under `out`. Returns the card."""
    from .augment import NoiseBank
    from .export import check_onnx_matches, export_onnx, write_card
    from .models import TRANSFER_MODELS, make_model

    split_spec = split_spec or SplitSpec()
    transfer = cfg.model in TRANSFER_MODELS  # YAMNet models: trained on the windows' audio (their own front-end)
    uses = [what for what, on in ((cfg.model, transfer), ("distill", cfg.distill), ("second_stage", cfg.second_stage))
            if on]
    if uses:  # fail before the long part when YAMNet (or onnx, to read it) is missing
        from .models.yamnet import YamnetMissingError, yamnet_zip_path

        yamnet_zip_path()
        try:
            import onnx  # noqa: F401
        except ImportError as e:
            raise YamnetMissingError(f"YAMNet (for {' and '.join(uses)}) is read with the onnx package, which is "
                                     "not installed: pip install 'screamdetect[yamnet]'") from e
    if not transfer:  # model_params (unknown names, epochs 0, ...) fail here, not after the data are loaded
        try:
            make_model(cfg.model, (cfg.frontend.n_mels, cfg.window_frames), seed=cfg.seed, **cfg.model_params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model_params: {e}") from e
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ds: Dataset = discover(data)
    splits = load_or_make_split(ds, out / "split.csv", split_spec)
    counts = split_counts(splits)
    noise_dir = Path(noise_dir) if noise_dir else Path(ds.root) / "noise"
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    print(f"dataset {ds.root}: {counts}")
    nb_train = NoiseBank.from_dir(noise_dir, split="train", seed=split_spec.seed)
    nsplit = scenes.noise_split(noise_dir, seed=split_spec.seed)
    maker = WindowMaker(cfg, nb_train)

    tr_clips, tr_audio = _load_all(splits["train"], "train")
    va_clips, va_audio = _load_all(splits["val"], "val")
    for part, clips in (("train", tr_clips), ("val", va_clips)):
        need_both_classes(clips, part, out / "split.csv")
    need_both_classes(splits["test"], "test", out / "split.csv", readable=False)  # said now, not after training
    X, y, _ = maker.make(tr_clips, tr_audio, augment=True, seed=cfg.seed, as_audio=transfer)
    if cfg.background_minutes > 0:
        Xb = background_windows(cfg, nb_train.pieces, [a for c, a in zip(tr_clips, tr_audio) if c.label == 0],
                                as_audio=transfer)
        X = np.concatenate([X, Xb])
        y = np.concatenate([y, np.zeros(len(Xb), dtype=y.dtype)])
        del Xb
    if transfer:
        return _train_transfer(out, cfg, maker, X, y, (va_clips, va_audio), splits, nsplit, t0,
                               _card_data(ds, split_spec, counts, noise_dir, nsplit))
    Xv, yv, _ = maker.make(va_clips, va_audio, augment=False, seed=cfg.seed + 1)
    print(f"training windows: {len(y)} ({int(y.sum())} scream), validation windows: {len(yv)} ({int(yv.sum())} scream)")
    model = make_model(cfg.model, (cfg.frontend.n_mels, cfg.window_frames), seed=cfg.seed, **cfg.model_params)
    init, distilled = None, None
    if cfg.distill:
        init, distilled = _distill(cfg, model, maker, X, tr_clips, tr_audio, nb_train)
    model.fit(X, y, Xv, yv, init_state=init)
    del X, y, init

    import torch

    # The full architecture (registry defaults included), so the file rebuilds itself whatever defaults become.
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params()["arch"].items()}
    torch.save({"model": cfg.model, "input_shape": (cfg.frontend.n_mels, cfg.window_frames),
                "model_params": arch, "state_dict": model.module_.state_dict()}, out / "model.pt")
    onnx_path = export_onnx(model.module_, cfg.frontend.n_mels, cfg.window_frames, out / "model.onnx")
    onnx_err = check_onnx_matches(model.module_, onnx_path, Xv[:64])
    card = {
        "architecture": cfg.model, "model_params": arch, "n_params": int(getattr(model, "n_params_", 0)), "frontend": cfg.frontend.to_dict(),
        "window_s": cfg.window_s, "hop_s": cfg.hop_s, "threshold": 0.5,
        "target_false_alarms_per_hour": cfg.target_false_alarms_per_hour,
        "smoothing": asdict(cfg.smoothing),
        "training_data": _card_data(ds, split_spec, counts, noise_dir, nsplit),
        "onnx_max_abs_diff_vs_torch": onnx_err,
    }
    if distilled:
        card["distilled_from"] = distilled
    (out / "history.json").write_text(json.dumps(getattr(model, "history_", {}), indent=1))
    card["metrics"] = {"train_seconds": round(time.time() - t0, 1)}
    write_card(card, onnx_path)
    card = calibrate_and_test(out, cfg, splits, nsplit, va=(va_clips, va_audio))
    if cfg.second_stage:
        from .cascade import fit_second_stage

        card = fit_second_stage(out, data, noise_dir=noise_dir, **cfg.second_stage)
    return card


def _distill(cfg: ProductConfig, model, maker: WindowMaker, X: np.ndarray, clips: list[Clip],
             audios: list[np.ndarray], nb) -> tuple[dict, dict]:
    """The distilled initial weights of `model` (distill.py) and the card's record of it. The training windows
    are rebuilt as audio with the same seeds (the same windows, window for window) for YAMNet to embed."""
    from .distill import check_spec, distill_trunk, yamnet_targets
    from .models.yamnet import YAMNET_LICENSE, YAMNET_PACKAGE, YAMNET_PACKAGE_VERSION

    spec = check_spec(cfg.distill)
    t0 = time.time()
    Xa, _, _ = maker.make(clips, audios, augment=True, seed=cfg.seed, as_audio=True)
    if cfg.background_minutes > 0:
        negatives = [a for c, a in zip(clips, audios) if c.label == 0]
        Xa = np.concatenate([Xa, background_windows(cfg, nb.pieces, negatives, as_audio=True)])
    if len(Xa) != len(X):  # pragma: no cover - the two builds draw the same random numbers
        raise RuntimeError(f"distill: {len(Xa)} audio windows for {len(X)} log-mel windows")
    T, kept = yamnet_targets(Xa, spec["dims"], seed=cfg.seed, whiten=spec["whiten"])
    del Xa
    module = model.make_module()
    module.norm.set_stats(X)
    losses = distill_trunk(module, X, T, spec, seed=cfg.seed)
    print(f"distilled from YAMNet: {len(X)} windows, {T.shape[1]} components ({kept:.0%} of the embeddings' "
          f"variance), loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return module.state_dict(), {
        "teacher": f"YAMNet ({YAMNET_PACKAGE}=={YAMNET_PACKAGE_VERSION}, {YAMNET_LICENSE})", **spec,
        "windows": int(len(X)), "variance_kept": round(kept, 4), "loss": [round(v, 4) for v in losses],
        "seconds": round(time.time() - t0, 1)}


def _card_data(ds, split_spec: SplitSpec, counts: dict, noise_dir: Path, nsplit: dict) -> dict:
    """The card's "training_data": dataset, split, counts and licences (of the clips and the noise pieces)."""
    return {"dataset": _display_path(ds.root), "split": f"group-aware 80/10/10, seed {split_spec.seed} (split.csv)",
            "counts": counts, "licenses": ds.licenses,
            "noise_bank": f"{_display_path(noise_dir)} (train pieces only: {len(nsplit['train'])})",
            "noise_licenses": _noise_licenses(noise_dir, nsplit["train"]), "license_notes": LICENSE_NOTES}


def _train_transfer(out: Path, cfg: ProductConfig, maker: WindowMaker, X: np.ndarray, y: np.ndarray,
                    va: tuple[list[Clip], list[np.ndarray]], splits: dict, nsplit: dict, t0: float,
                    training_data: dict) -> dict:
    """`train` for the YAMNet transfer models: X are audio windows (n, samples); each window becomes one YAMNet
    log-mel patch (its first 0.975 s), the model trains on those, and its module (our float PyTorch YAMNet + the
    head) is exported as a patch model (card frontend kind "yamnet"). Then calibration and test as for the CNN."""
    from .export import check_onnx_matches, export_onnx, write_card
    from .models import make_model
    from .models.yamnet import (
        YAMNET_FRONTEND,
        YAMNET_LICENSE,
        YAMNET_PACKAGE,
        YAMNET_PACKAGE_VERSION,
    )

    fe = YAMNET_FRONTEND
    Xv, yv, _ = maker.make(*va, augment=False, seed=cfg.seed + 1, as_audio=True)
    print(f"training windows: {len(y)} ({int(y.sum())} scream), validation windows: {len(yv)} ({int(yv.sum())} "
          f"scream); {cfg.model} on one YAMNet patch per window")
    P, Pv = _patches_in_chunks(X), _patches_in_chunks(Xv)
    del X
    model = make_model(cfg.model, (fe.n_mels, fe.patch_frames), seed=cfg.seed, progress=True, **cfg.model_params)
    model.fit(P, y, Pv, yv)
    del P
    onnx_path = export_onnx(model.module_, fe.n_mels, fe.patch_frames, out / "model.onnx")
    onnx_err = check_onnx_matches(model.module_, onnx_path, Pv[:64])
    card = {
        "architecture": cfg.model, "model_params": model.get_params()["train"], "frontend": fe.to_dict(),
        "window_s": cfg.window_s, "hop_s": cfg.hop_s, "threshold": 0.5,
        "target_false_alarms_per_hour": cfg.target_false_alarms_per_hour, "smoothing": asdict(cfg.smoothing),
        "training_data": training_data,
        "yamnet": {"package": f"{YAMNET_PACKAGE}=={YAMNET_PACKAGE_VERSION}", "license": YAMNET_LICENSE,
                   "weights": "model.onnx holds YAMNet's weights (dequantised from the package's 8-bit graph; "
                              "fine-tuned blocks for yamnet_ft): Apache-2.0 upstream",
                   "input": "the first 0.975 s of each window as one YAMNet log-mel patch (natural log)"},
        "onnx_max_abs_diff_vs_torch": onnx_err,
    }
    (out / "history.json").write_text(json.dumps(getattr(model, "history_", {}), indent=1))
    card["metrics"] = {"train_seconds": round(time.time() - t0, 1)}
    write_card(card, onnx_path)
    return calibrate_and_test(out, cfg, splits, nsplit, va=va)


def _patches_in_chunks(windows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """models.yamnet.window_log_mels over many audio windows, with a progress bar: float32 (n, 64, 96)."""
    from rich.progress import track

    from .models.yamnet import YAMNET_FRONTEND as fe
    from .models.yamnet import window_log_mels

    out = np.empty((len(windows), fe.n_mels, fe.patch_frames), dtype=np.float32)
    for i in track(range(0, len(windows), chunk), description="YAMNet log-mel", transient=True):
        out[i: i + chunk] = window_log_mels(windows[i: i + chunk], fe)
    return out


def note_if_subset(ds_root: str, splits: dict, split_file: Path, parts: tuple[str, ...] = ("val", "test")) -> None:
    """Print a note when the dataset holds fewer clips of `parts` than the run's split file lists (a re-calibration
    on part of the data the run was trained on: its figures are then not comparable with the card's before)."""
    from .data import read_split

    listed = read_split(split_file, ds_root)
    for part in parts:
        n_file = sum(1 for v in listed.values() if v == part)
        if len(splits[part]) < n_file:
            print(f"note: {ds_root} holds {len(splits[part])} of the {n_file} {part} clips listed in {split_file}: "
                  f"the {part} figures are measured on those only")


def need_both_classes(clips: list[Clip], part: str, split_file: Path, readable: bool = True) -> None:
    """DatasetError unless `clips` (of split `part`) hold screams and non-screams: a threshold calibrated on no
    scream, or test metrics of one class (AP undefined), must not be written into a card."""
    n_pos = sum(c.label == 1 for c in clips)
    if n_pos == 0 or n_pos == len(clips):
        r = "readable " if readable else ""
        raise DatasetError(f"the {part} split ({split_file}) holds {n_pos} {r}screams and {len(clips) - n_pos} {r}"
                           "non-screams; training needs both in train, calibration both in val, and the test "
                           "metrics both in test (more groups of each class, or a split file of your own)")


def calibrate_and_test(out: str | Path, cfg: ProductConfig, splits: dict, noise_split: dict,
                       va: tuple[list[Clip], list[np.ndarray]] | None = None) -> dict:
    """Calibrate the threshold of the model in `out` (model.onnx + model.json) on VALIDATION data with the real
    Detector, then measure clip metrics on the TEST split; update the card, calibration.json and metrics.json."""
    from .detector import Detector
    from .export import write_card

    out = Path(out)
    onnx_path = out / "model.onnx"
    card = read_run_json(out, "model.json")
    for k in ("format", "onnx_input", "onnx_output"):
        card.pop(k, None)
    va_clips, va_audio = va if va is not None else _load_all(splits["val"], "val")
    need_both_classes(va_clips, "val", out / "split.csv")
    te_clips, te_audio = _load_all(splits["test"], "test")
    need_both_classes(te_clips, "test", out / "split.csv")
    det = Detector.load(onnx_path)
    val_screams = [a for c, a in zip(va_clips, va_audio) if c.label == 1]
    val_neg = [a for c, a in zip(va_clips, va_audio) if c.label == 0]
    val_noises = scenes.load_many(noise_split["val"])
    cal = calibrate(det, val_screams, val_neg, val_noises, cfg, out)
    card["threshold"] = cal["threshold"]
    card["target_false_alarms_per_hour"] = cfg.target_false_alarms_per_hour
    card["calibration"] = {k: v for k, v in cal.items() if k != "sweep"}
    # [threshold, false alarms/h, recall] on validation: lets `--max-false-alarms-per-hour` pick a threshold.
    card["calibration"]["sweep"] = [[r["threshold"], round(r["false_alarms_per_hour"], 3), round(r["recall"], 3)]
                                    for r in cal["sweep"]]
    print(f"calibrated threshold {cal['threshold']:g}: val recall {cal['val_recall']:.3f} at "
          f"{cal['val_false_alarms_per_hour']:.2f} false alarms/h over {cal['scream_free_hours']:.1f} h")

    # Clip metrics on the TEST split: a clip's score = max window score (the detector's view).
    det = Detector.load(onnx_path)
    p_test = np.array([float(det.score_windows(a).max()) for a in te_audio])
    p_val = np.array([float(det.score_windows(a).max()) for a in va_audio])
    m = clip_metrics(np.array([c.label for c in te_clips]), p_test, threshold=cal["threshold"])
    m_val = clip_metrics(np.array([c.label for c in va_clips]), p_val, threshold=cal["threshold"])
    card["metrics"] = {**card.get("metrics", {}), "split": "test (clips; score = max window score)",
                       "test": _brief(m), "val": _brief(m_val)}
    write_card(card, onnx_path)
    (out / "metrics.json").write_text(json.dumps(card["metrics"], indent=1))
    return card


def recalibrate(run: str | Path, data: str | Path, noise_dir: str | Path | None = None, **protocol) -> dict:
    """Re-run calibration and the test metrics of a trained run (its config.json and split.csv). `protocol`:
    new values of calib_hours, calib_snr_db, calib_repeats or target_false_alarms_per_hour, written into the run's
    config.json first (so a later re-calibration, e.g. by `second-stage`, uses the same protocol)."""
    run = Path(run)
    cfg = load_run_config(run)
    from .detector import Detector

    read_run_json(run, "model.json")  # a missing or damaged card or model: said before any work
    Detector.load(run / "model.onnx", second_stage=False)
    allowed = {"calib_hours", "calib_snr_db", "calib_repeats", "target_false_alarms_per_hour"}
    if set(protocol) - allowed:
        raise ValueError(f"recalibrate: unknown settings {sorted(set(protocol) - allowed)}")
    protocol = {k: v for k, v in protocol.items() if v is not None}
    if protocol:
        if "calib_snr_db" in protocol:
            protocol["calib_snr_db"] = tuple(float(x) for x in protocol["calib_snr_db"])
        cfg = ProductConfig.from_dict({**cfg.to_dict(), **protocol})  # validated before anything is done
    ds = discover(data)
    had_split = (run / "split.csv").is_file()
    splits = load_or_make_split(ds, run / "split.csv")
    if had_split:
        note_if_subset(ds.root, splits, run / "split.csv")
    noise_dir = Path(noise_dir) if noise_dir else Path(ds.root) / "noise"
    card = calibrate_and_test(run, cfg, splits, scenes.noise_split(noise_dir))
    if protocol:  # written only once the calibration has succeeded: a failed run leaves config.json as it was
        (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return card


def read_run_json(run: str | Path, name: str) -> dict:
    """A run folder's JSON file (config.json, model.json) as a dict; ValueError naming the file when it is missing,
    not JSON, or not a JSON object."""
    path = Path(run) / name
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (a run folder written by `screamdetect train` has it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")  # noqa: TRY004 - one error type for bad run files
    return d


def load_run_config(run: str | Path) -> ProductConfig:
    """The ProductConfig of a run folder (its config.json); ValueError naming the file when it is unusable."""
    d = read_run_json(run, "config.json")
    try:
        return ProductConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(run) / 'config.json'}: {e}") from e


def load_trained_module(path: str | Path):
    """Rebuild the torch module saved by train_product (model.pt: state dict + architecture, no pickled code)."""
    import torch

    from .models import make_model

    ck = torch.load(str(path), map_location="cpu", weights_only=True)
    m = make_model(ck["model"], tuple(ck["input_shape"]), **ck["model_params"])
    module = m.make_module()
    module.load_state_dict(ck["state_dict"])
    return module.eval(), tuple(ck["input_shape"])


LICENSE_NOTES = (
    "A model trained on this corpus inherits its terms: UrbanSound8K clips (and some librosa examples) are "
    "CC BY-NC 3.0 (non-commercial use only); CC-BY-SA clips are share-alike; GPL/GFDL game assets carry their "
    "licences; the 139 'student' clips have no stated licence (research use). See ../shared/corpus/README.md.")


def _display_path(p: str | Path) -> str:
    """A path relative to the working directory when it lies below its parent (no machine-specific prefix)."""
    import os

    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)


def _noise_licenses(noise_dir: Path, pieces: list[Path]) -> dict[str, int]:
    from collections import Counter

    man = Path(noise_dir) / "manifest.csv"
    if not man.is_file():
        return {}
    lic = {r["path"]: r.get("license", "") for r in read_noise_manifest(man)}
    return dict(Counter(lic.get(Path(p).name, "") for p in pieces))


def _brief(m: dict) -> dict:
    keys = ("ap", "roc_auc", "precision", "recall", "f1", "accuracy", "threshold", "n", "n_pos")
    return {k: m[k] for k in keys if k in m}
