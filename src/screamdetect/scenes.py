"""Long synthetic scenes with known ground truth: for event-level evaluation, threshold calibration and the demo.

A scene is a noise bed (pieces of the noise bank at a random level) with non-scream clips scattered over it and,
for event scenes, scream clips inserted at known times at a chosen SNR. Everything comes from ONE split of the
dataset (test for evaluation, validation for calibration), and the noise bank is split by piece too, so a scene
never holds audio that training saw.

SNR: 10·log10 of the scream's power over its active part (frames within `ACTIVE_DB` of its loudest frame) to the
power of the background over the same interval.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio, write_audio

ACTIVE_DB = 20.0  # a scream's active part: 20 ms frames within this many dB of its loudest frame
ACTIVE_FRAME_S = 0.02
NOISE_SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}
PEAK_MAX = 0.98  # scenes are scaled down to this peak rather than clipped


@dataclass(frozen=True)
class GroundTruth:
    """One inserted scream: where (seconds, its active part), at what SNR (dB), from which clip."""

    start_s: float
    end_s: float
    snr_db: float
    clip: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sound:
    """One sound of a scene's background: a noise-bank piece of the bed ("noise") or a scattered non-scream clip
    ("clip"), where it plays (seconds), and which one (`index` into the noises / negatives the scene was built
    from; `name`, e.g. its file, filled in by a caller that knows the names)."""

    start_s: float
    end_s: float
    kind: str
    index: int
    level_dbfs: float = float("nan")  # RMS it was placed at (a clip: of its active part), before any scene scaling
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scene:
    name: str
    audio: np.ndarray  # float32 mono at SAMPLE_RATE
    events: list[GroundTruth] = field(default_factory=list)
    sounds: list[Sound] = field(default_factory=list)  # what its background is made of
    # the gain (dB, <= 0) that fitted the whole scene under full scale (fit_full_scale): its beds, clips and
    # screams all sit this much below the SceneSpec's levels (SNRs are kept)
    gain_db: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are built. Levels in dBFS (RMS), times in seconds."""

    duration_s: float = 60.0
    snrs_db: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)
    min_gap_s: float = 6.0  # silence-free spacing between inserted screams (and from the scene's edges)
    bed_level_dbfs: tuple[float, float] = (-45.0, -25.0)
    clip_level_dbfs: tuple[float, float] = (-35.0, -15.0)
    clips_per_minute: float = 10.0  # non-scream clips scattered over the bed
    seed: int = 0

    def __post_init__(self):
        if self.duration_s <= 2 * self.min_gap_s:
            raise ValueError(f"duration_s ({self.duration_s}) must exceed 2·min_gap_s ({2 * self.min_gap_s})")
        if not 0 <= self.clips_per_minute < float("inf"):  # NaN too
            raise ValueError(f"clips_per_minute (--clips-per-minute) must be a finite number >= 0, got "
                             f"{self.clips_per_minute}")


def noise_categories(noise_dir: str | Path) -> dict[Path, str]:
    """Each audio file of a noise bank and its category: noise/manifest.csv's `category` column when there is a
    manifest, else "noise" for every audio file under the folder."""
    noise_dir = Path(noise_dir)
    man = noise_dir / "manifest.csv"
    if man.is_file():
        from .data import read_noise_manifest

        return {noise_dir / r["path"]: r.get("category") or "noise" for r in read_noise_manifest(man)}
    from .audio import AUDIO_EXTENSIONS

    return {p: "noise" for p in sorted(noise_dir.rglob("*")) if p.suffix.lower() in AUDIO_EXTENSIONS}


def noise_split(noise_dir: str | Path, seed: int = 0, categories: Sequence[str] | None = None
                ) -> dict[str, list[Path]]:
    """Deal the noise bank's pieces to train/val/test (60/20/20 within each category, seeded).

    Reads noise/manifest.csv when present (its `category` column), else treats every audio file as one category
    ("noise"). categories: keep only the pieces of these categories (each piece stays in the split it has without
    the filter); an unknown category is a ValueError naming the known ones.
    """
    noise_dir = Path(noise_dir)
    items = list(noise_categories(noise_dir).items())
    if not items:
        raise ValueError(f"{noise_dir}: the noise bank holds no audio (a folder of noise recordings is needed, by "
                         "default DATA/noise)")
    by_cat: dict[str, list[Path]] = {}
    for p, cat in items:
        by_cat.setdefault(cat, []).append(p)
    out: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    rng = random.Random(seed)
    for cat in sorted(by_cat):
        paths = sorted(by_cat[cat])
        rng.shuffle(paths)
        n = len(paths)
        n_val = round(n * NOISE_SPLIT["val"])
        n_test = round(n * NOISE_SPLIT["test"])
        if n >= 3:  # every split gets each category it can
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        out["val"] += paths[:n_val]
        out["test"] += paths[n_val: n_val + n_test]
        out["train"] += paths[n_val + n_test:]
    if categories is not None:
        unknown = sorted(set(categories) - set(by_cat))
        if unknown:
            raise ValueError(f"noise categories {unknown} are not in {noise_dir} (it has: {', '.join(sorted(by_cat))})")
        keep = {p for c in categories for p in by_cat[c]}
        out = {k: [p for p in v if p in keep] for k, v in out.items()}
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def active_region(audio: np.ndarray, top_db: float = ACTIVE_DB) -> tuple[int, int]:
    """(start, end) sample indices of the part of a clip within `top_db` of its loudest 20 ms frame."""
    hop = int(ACTIVE_FRAME_S * SAMPLE_RATE)
    n = max(1, audio.size // hop)
    frames = audio[: n * hop].reshape(n, hop) if audio.size >= hop else audio[None, :]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(db >= db.max() - top_db)
    return int(loud[0] * hop), int(min(audio.size, (loud[-1] + 1) * hop))


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / _rms(x))).astype(np.float32)


def _level_clip(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale a clip so its ACTIVE part (not its silences) has RMS `dbfs`, its peak kept under PEAK_MAX.

    Levelling by the whole clip's RMS would blow sparse sounds (a gunshot, a bark) far past full scale.
    """
    a0, a1 = active_region(x)
    y = x * np.float32(10 ** (dbfs / 20) / _rms(x[a0:a1]))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return (y * np.float32(PEAK_MAX / peak) if peak > PEAK_MAX else y).astype(np.float32)


def fit_full_scale(audio: np.ndarray, gains: list[float] | None = None) -> np.ndarray:
    """Scale a whole scene down (in place) if it would exceed PEAK_MAX, instead of clipping it: SNRs are kept.
    The factor applied (1.0 when none) is appended to `gains` when given."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    g = PEAK_MAX / peak if peak > PEAK_MAX else 1.0
    if g < 1.0:
        audio *= np.float32(g)
    if gains is not None:
        gains.append(g)
    return audio


def _gain_db(gains: Sequence[float]) -> float:
    return float(20 * np.log10(np.prod(gains))) if gains else 0.0


def _bed(noises: Sequence[np.ndarray], n: int, rng: np.random.Generator, spec: SceneSpec,
         log: list[Sound] | None = None) -> np.ndarray:
    """A noise bed of n samples: noise pieces one after another (random offsets, 50 ms cross-fades). Each piece
    placed is appended to `log` when given."""
    out = np.zeros(n, dtype=np.float32)
    fade = int(0.05 * SAMPLE_RATE)
    pos = 0
    while pos < n:
        i = int(rng.integers(len(noises)))
        piece = noises[i]
        off = int(rng.integers(0, max(1, piece.size // 2)))
        seg = piece[off:][: n - pos].copy()
        last = pos + seg.size >= n  # this piece reaches the end of the bed
        if seg.size > 2 * fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            seg[:fade] *= ramp
            if not last:  # cross-faded into the next piece; the bed's last piece plays to the end
                seg[-fade:] *= ramp[::-1]
        if seg.size:  # (an empty piece draws no level: the random stream stays that of scenes built before the log)
            level = rng.uniform(*spec.bed_level_dbfs)
            out[pos: pos + seg.size] += _level(seg, level)
            if log is not None:
                log.append(Sound(pos / SAMPLE_RATE, (pos + seg.size) / SAMPLE_RATE, "noise", i, float(level)))
        if last:
            # Before, the loop stepped back by the fade and went on: ~800 ever-shorter pieces, each levelled to the
            # bed level, piled into the last 50 ms (a burst near full scale that turned the whole scene down ~8 dB)
            break
        pos += max(seg.size - fade, 1)
    return out


def _scatter(bed: np.ndarray, clips: Sequence[np.ndarray], rng: np.random.Generator, spec: SceneSpec,
             log: list[Sound] | None = None) -> None:
    """Add non-scream clips at random times and levels (in place); each one placed is appended to `log`."""
    if not clips:
        return
    k = rng.poisson(spec.clips_per_minute * bed.size / SAMPLE_RATE / 60)
    for _ in range(k):
        i = int(rng.integers(len(clips)))
        c = clips[i][: bed.size]
        start = int(rng.integers(0, bed.size - c.size + 1))
        level = rng.uniform(*spec.clip_level_dbfs)
        bed[start: start + c.size] += _level_clip(c, level)
        if log is not None:
            log.append(Sound(start / SAMPLE_RATE, (start + c.size) / SAMPLE_RATE, "clip", i, float(level)))


def background(noises: Sequence[np.ndarray], negatives: Sequence[np.ndarray], duration_s: float,
               rng: np.random.Generator, spec: SceneSpec = SceneSpec(), log: list[Sound] | None = None,
               gains: list[float] | None = None) -> np.ndarray:
    """Scream-free audio: a noise bed with non-scream clips scattered over it. float32 (n,). What was placed
    where is appended to `log` when given (noise pieces, then clips); the full-scale fit's factor to `gains`."""
    n = round(duration_s * SAMPLE_RATE)
    bed = _bed(noises, n, rng, spec, log)
    _scatter(bed, negatives, rng, spec, log)
    return fit_full_scale(bed, gains)


def cause_of(sounds: Sequence[Sound], start_s: float, end_s: float) -> Sound | None:
    """The background sound most likely behind a detection over [start_s, end_s] of a scream-free stretch: of the
    scattered clips under it, the one that puts the most energy into it (its level as power x how long it
    overlaps); with no clip there, the noise piece of the bed that does; None if nothing overlaps. A clip under a
    detection is preferred to the bed beneath it: the bed is there all the time, the detection is not. A guess
    where two clips overlap: the louder one need not be what the detector heard."""
    def overlap(s: Sound) -> float:
        return min(s.end_s, end_s) - max(s.start_s, start_s)

    def energy(s: Sound) -> float:
        return overlap(s) * (10 ** (s.level_dbfs / 10) if np.isfinite(s.level_dbfs) else 1.0)

    for kind in ("clip", "noise"):
        cands = [s for s in sounds if s.kind == kind and overlap(s) > 0]
        if cands:
            return max(cands, key=energy)
    return None


def insert_scream(bg: np.ndarray, scream: np.ndarray, at: int, snr_db: float) -> tuple[int, int]:
    """Add `scream` into `bg` (in place) starting at sample `at`, scaled to `snr_db` over its active part.

    Returns the (start, end) sample indices of the active part in the scene.
    """
    a0, a1 = active_region(scream)
    scream = scream[: bg.size - at]
    a1 = min(a1, scream.size)
    p_s = np.mean(scream[a0:a1].astype(np.float64) ** 2) + 1e-20
    p_b = np.mean(bg[at + a0: at + a1].astype(np.float64) ** 2) + 1e-20
    gain = np.sqrt(p_b / p_s * 10 ** (snr_db / 10))
    bg[at: at + scream.size] += (scream * gain).astype(np.float32)
    return at + a0, at + a1


def event_scenes(screams: Sequence[tuple[str, np.ndarray]], negatives: Sequence[np.ndarray],
                 noises: Sequence[np.ndarray], spec: SceneSpec = SceneSpec(), repeats: int = 1) -> Iterator[Scene]:
    """Scenes with screams at known times: every scream × every SNR × `repeats`, spread over scenes.

    screams: (name, audio) pairs. Each scene holds as many screams as fit with `spec.min_gap_s` between them.
    """
    rng = np.random.default_rng(spec.seed)
    jobs = [(name, a, snr) for _ in range(repeats) for snr in spec.snrs_db for name, a in screams]
    order = rng.permutation(len(jobs))
    jobs = [jobs[i] for i in order]
    n = round(spec.duration_s * SAMPLE_RATE)
    gap = int(spec.min_gap_s * SAMPLE_RATE)
    k = 0
    idx = 0
    while idx < len(jobs):
        log: list[Sound] = []
        gains: list[float] = []
        audio = background(noises, negatives, spec.duration_s, rng, spec, log, gains)
        events = []
        pos = gap
        while idx < len(jobs):
            name, a, snr = jobs[idx]
            if pos + a.size + gap > n:
                break
            s0, s1 = insert_scream(audio, a, pos, snr)
            events.append(GroundTruth(s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, float(snr), name))
            pos += a.size + gap + int(rng.integers(0, gap))
            idx += 1
        if not events:  # a scream longer than a scene: give it a scene of its own length
            name, a, snr = jobs[idx]
            log, gains = [], []
            audio = background(noises, negatives, (a.size + 2 * gap) / SAMPLE_RATE, rng, spec, log, gains)
            s0, s1 = insert_scream(audio, a, gap, snr)
            events.append(GroundTruth(s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, float(snr), name))
            idx += 1
        fit_full_scale(audio, gains)
        yield Scene(f"scene_{k:03d}", audio, events, log, _gain_db(gains))
        k += 1


def scream_free_scenes(negatives: Sequence[np.ndarray], noises: Sequence[np.ndarray], hours: float,
                       spec: SceneSpec = SceneSpec()) -> Iterator[Scene]:
    """`hours` of scream-free audio in scenes of spec.duration_s (for false alarms per hour)."""
    rng = np.random.default_rng(spec.seed + 1)
    n_scenes = max(1, int(np.ceil(hours * 3600 / spec.duration_s)))
    for k in range(n_scenes):
        log: list[Sound] = []
        gains: list[float] = []
        audio = background(noises, negatives, spec.duration_s, rng, spec, log, gains)
        yield Scene(f"free_{k:03d}", audio, sounds=log, gain_db=_gain_db(gains))


def load_named(paths: Sequence[str | Path], max_s: float | None = None,
               failed: list | None = None) -> list[tuple[str | Path, np.ndarray]]:
    """(path, audio) of each file that loads, skipping (and reporting) the ones that fail: keep the path with its
    audio rather than zipping paths with :func:`load_many`, which would shift every name after a failure. Optionally
    cut to `max_s` seconds; `failed` collects {"path", "error"} of the files skipped."""
    out = []
    for p in paths:
        try:
            a = load_audio(p)
        except AudioError as e:
            print(f"skipped: {e}")
            if failed is not None:
                failed.append({"path": str(p), "error": e.cause})
            continue
        out.append((p, a[: int(max_s * SAMPLE_RATE)] if max_s else a))
    return out


def load_many(paths: Sequence[str | Path], max_s: float | None = None) -> list[np.ndarray]:
    """Load audio files, skipping (and reporting) the ones that fail. Optionally cut to `max_s` seconds."""
    return [a for _, a in load_named(paths, max_s)]


def write_scene(scene: Scene, folder: str | Path) -> Path:
    """Write `<name>.flac` and its ground truth `<name>.json` (events with start_s, end_s, snr_db, clip; sounds: what
    the background is made of, with start_s, end_s, kind, index, name; gain_db: the full-scale fit, Scene.gain_db)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scene.name}.flac"
    write_audio(path, scene.audio)
    (folder / f"{scene.name}.json").write_text(json.dumps(
        {"audio": path.name, "duration_s": scene.duration_s, "gain_db": round(scene.gain_db, 2),
         "events": [e.to_dict() for e in scene.events], "sounds": [s.to_dict() for s in scene.sounds]},
        indent=1))
    return path


def room_impulse_response(rt60_s: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response at SAMPLE_RATE: a direct path (1 at t = 0) and a diffuse tail of white
    noise decaying 60 dB in rt60_s, scaled so the direct-to-reverberant energy ratio is drr_db (0 dB: a source
    a few metres away in a live room). float32 (rt60_s · SAMPLE_RATE,)."""
    if not rt60_s > 0:
        raise ValueError(f"rt60_s must be positive, got {rt60_s}")
    n = max(2, int(rt60_s * SAMPLE_RATE))
    t = np.arange(1, n) / SAMPLE_RATE
    tail = rng.standard_normal(n - 1) * np.exp(-3 * np.log(10) * t / rt60_s)  # amplitude -60 dB at rt60
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`audio` heard through room impulse response `rir`: same length, same RMS (the room changes the sound, not
    the level the detector's training saw)."""
    from scipy.signal import fftconvolve

    y = fftconvolve(audio.astype(np.float64), rir.astype(np.float64))[: audio.size]
    rms_in, rms_out = np.sqrt(np.mean(audio.astype(np.float64) ** 2)), np.sqrt(np.mean(y ** 2))
    return (y * (rms_in / rms_out if rms_out > 0 else 1.0)).astype(np.float32)
