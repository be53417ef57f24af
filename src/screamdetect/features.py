"""Features: the one log-mel front-end (numpy, shared by training and inference) and the 17 EDA features.

`log_mel` imports only numpy, so the detector can run without librosa. `eda_features` uses librosa (the
`[train]` extra), imported lazily.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .audio import SAMPLE_RATE

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db


def check_number(name: str, v, *, integer: bool = False, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float | int:
    """`v` if it is a finite number (a whole one if `integer`) within [low, high] ((low, high] if `low_open`);
    else ValueError naming `name`. Booleans and strings are not numbers."""
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v) and (not integer or float(v).is_integer())
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        kind = "a whole number" if integer else "a finite number"
        bounds = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
        bounds += [f"<= {high:g}"] if high is not None else []
        raise ValueError(f"{name} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, got {v!r}")
    return int(v) if integer else float(v)


class Framing:
    """Window and hop in samples, for a front-end dataclass with `win_s`, `hop_s` (seconds) and `sample_rate`."""

    win_s: float
    hop_s: float
    sample_rate: int
    n_fft: int | None

    @property
    def win_length(self) -> int:
        return round(self.win_s * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.hop_s * self.sample_rate)

    def _set_int(self, name: str, **bounds) -> None:
        """Check a whole-number field and store it as an int (64.0 from a JSON card becomes 64)."""
        object.__setattr__(self, name, check_number(name, getattr(self, name), integer=True, **bounds))

    def _check_framing(self) -> None:
        """Check sample_rate, win_s, hop_s and n_fft (None allowed where the class has a default rule)."""
        self._set_int("sample_rate", low=0, low_open=True)
        check_number("win_s", self.win_s, low=0, low_open=True, high=1.0)
        check_number("hop_s", self.hop_s, low=0, low_open=True, high=1.0)
        if self.hop_length < 1:
            raise ValueError(f"hop_s must be at least one sample, got {self.hop_s}")
        if self.n_fft is not None:
            self._set_int("n_fft", low=1)
            if self.n_fft < self.win_length:
                raise ValueError(f"n_fft ({self.n_fft}) must be >= the window length in samples ({self.win_length})")


@dataclass(frozen=True)
class FrontEnd(Framing):
    """Log-mel front-end settings. Stored in every model card so a model never sees other features.

    win_s/hop_s: analysis window and hop in seconds; n_fft: FFT size in samples (None = next power of two
    >= the window); fmin/fmax in Hz (fmax None = Nyquist); top_db: dynamic-range clip below the per-input
    maximum (None = no clip; the detector uses None so that scores do not depend on the rest of the signal).
    """

    n_mels: int = 128
    win_s: float = 0.025
    hop_s: float = 0.010
    n_fft: int | None = None
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = None
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        self._set_int("n_mels", low=1)
        self._check_framing()
        check_number("fmin", self.fmin, low=0, high=self.sample_rate / 2)
        if self.fmax is not None:
            check_number("fmax", self.fmax, low=self.fmin, low_open=True, high=self.sample_rate / 2)
        if self.top_db is not None:
            check_number("top_db", self.top_db, low=0, low_open=True)

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.win_length - 1).bit_length()

    def n_frames(self, n_samples: int) -> int:
        """Frames `log_mel` gives for `n_samples` samples (centred frames)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrontEnd:
        if not isinstance(d, dict):
            raise TypeError(f"frontend must be a mapping of settings, got {type(d).__name__}")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def key(self) -> str:
        """A short stable hash of the settings (for caches)."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, log above), as librosa's default (htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32 (= librosa.filters.mel)."""
    fmax = sr / 2 if fmax is None else fmax
    fftfreqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=16)
def _window(win_length: int) -> np.ndarray:
    """Periodic Hann window of `win_length` samples (scipy/librosa 'hann', fftbins=True), float32."""
    n = np.arange(win_length)
    w = (0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)).astype(np.float32)
    w.setflags(write=False)
    return w


CHUNK_FRAMES = 128  # frames per FFT batch: the working buffers (~0.6 MB at n_fft 512) stay in the L2 cache


def _frames(audio: np.ndarray, fe: FrontEnd, center: bool) -> np.ndarray:
    """Read-only view (n_frames, win_length) of the zero-padded signal, one row per hop (librosa's framing)."""
    n_fft, hop, win = fe.fft_size, fe.hop_length, fe.win_length
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D (n_samples,), got shape {x.shape}")
    pad = n_fft // 2 if center else 0
    n = max(x.shape[-1] + 2 * pad, n_fft)
    xp = np.empty(n, dtype=np.float32)  # one copy with the zero margins (np.pad is slower for 1-D float32)
    xp[:pad] = 0.0
    xp[pad: pad + x.shape[-1]] = x
    xp[pad + x.shape[-1]:] = 0.0
    n_frames = 1 + (n - n_fft) // hop
    left = (n_fft - win) // 2  # librosa centres the win_length window inside n_fft
    return np.lib.stride_tricks.sliding_window_view(xp[left: left + (n_frames - 1) * hop + win], win)[::hop]


def _power_chunks(frames: np.ndarray, fe: FrontEnd):
    """Yield (start, power) with power float32 (m, n_fft // 2 + 1) = |rFFT(window · frame)|² for CHUNK_FRAMES rows.

    Only the win_length non-zero part of the window is framed; the FFT buffer's zero tail makes it n_fft long, a
    circular shift of librosa's centred window that leaves the power spectrum unchanged. The buffer is reused.
    """
    win = fe.win_length
    w = _window(win)
    buf = np.zeros((min(CHUNK_FRAMES, len(frames)), fe.fft_size), dtype=np.float32)
    for s in range(0, len(frames), CHUNK_FRAMES):
        b = buf[: min(CHUNK_FRAMES, len(frames) - s)]
        np.multiply(frames[s: s + len(b)], w, out=b[:, :win])
        power = np.abs(_rfft(b, axis=-1))
        yield s, np.square(power, out=power)


def power_spectrogram(audio: np.ndarray, fe: FrontEnd, center: bool = True) -> np.ndarray:
    """|STFT|² of float32 mono audio, shape (n_frames, n_fft // 2 + 1), float32.

    Frames are centred (zero padding of n_fft // 2 on both sides, librosa's center=True, pad_mode='constant')
    with a periodic Hann window of win_length centred in n_fft, as librosa.
    """
    frames = _frames(audio, fe, center)
    out = np.empty((len(frames), fe.fft_size // 2 + 1), dtype=np.float32)
    for s, power in _power_chunks(frames, fe):
        out[s: s + len(power)] = power
    return out


try:  # scipy's pocketfft is ~5x faster than numpy's on float32 frames (numpy computes in float64)
    from scipy.fft import rfft as _rfft
except ImportError:  # pragma: no cover - scipy is a core dependency
    def _rfft(x, axis=-1):
        return np.fft.rfft(x, axis=axis).astype(np.complex64)


@functools.lru_cache(maxsize=16)
def _sparse_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """The mel filterbank as a scipy CSR matrix (each FFT bin feeds at most two filters: ~1% non-zero).

    A sparse product is ~20x less arithmetic than the dense one and, unlike BLAS sgemm, runs on one thread, so
    its time does not collapse when the cores are busy (OpenBLAS threads spin-waiting on a loaded machine).
    """
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filterbank(sr, n_fft, n_mels, fmin, fmax))


def log_mel(audio: np.ndarray, n_mels: int = 128, win_s: float = 0.025, hop_s: float = 0.010,
            n_fft: int | None = None, fmin: float = 0.0, fmax: float | None = None, top_db: float | None = None,
            sr: int = SAMPLE_RATE, *, frontend: FrontEnd | None = None) -> np.ndarray:
    """Log-mel spectrogram in dB (10·log10 of mel power, floored at 1e-10), shape (n_mels, n_frames), float32.

    audio: float32 mono at `sr` Hz, shape (n_samples,). Equals
    `librosa.power_to_db(librosa.feature.melspectrogram(y, sr, n_fft, hop_length, win_length, n_mels, fmin, fmax),
    ref=1.0, top_db=top_db)` with centred frames and a periodic Hann window. Pass `frontend=` to use stored settings.
    """
    fe = frontend or FrontEnd(n_mels=n_mels, win_s=win_s, hop_s=hop_s, n_fft=n_fft, fmin=fmin, fmax=fmax,
                              top_db=top_db, sample_rate=sr)
    frames = _frames(audio, fe, center=True)
    basis = _sparse_filterbank(fe.sample_rate, fe.fft_size, fe.n_mels, fe.fmin, fe.fmax)
    mel = np.empty((fe.n_mels, len(frames)), dtype=np.float32)
    for s, power in _power_chunks(frames, fe):  # chunked: the FFT and mel buffers stay in cache
        mel[:, s: s + len(power)] = basis @ power.T
    np.maximum(mel, AMIN, out=mel)
    np.log10(mel, out=mel)
    out = np.multiply(mel, 10.0, out=mel)
    if fe.top_db is not None:
        out = np.maximum(out, out.max() - fe.top_db)
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------------
# EDA features (the study's 17)

EDA_SCALARS = (
    "duration_s", "max_amplitude", "sample_rate", "zcr", "mfcc", "chroma", "mel_spectrogram", "spectral_centroid",
    "spectral_bandwidth", "spectral_rolloff", "spectral_flux", "spectral_contrast", "spectral_flatness", "rms",
    "energy",
)
N_MFCC = 13


EDA_MIN_SAMPLES = 512  # shortest clip the EDA features describe: spectral contrast's lowest band needs the bins


def too_short_for_eda(n_samples: int, sr: int = SAMPLE_RATE) -> str:
    return (f"too short to describe: {n_samples} samples ({1000 * n_samples / sr:.1f} ms); the EDA features need at "
            f"least {EDA_MIN_SAMPLES} ({1000 * EDA_MIN_SAMPLES / sr:.0f} ms at {sr} Hz)")


def eda_features(audio: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, float]:
    """The study's descriptive features of one clip, as a flat dict of floats.

    duration_s, max_amplitude, sample_rate, zcr (mean zero-crossing rate, crossings per sample),
    mfcc_1..13 (+ `mfcc` their mean), chroma_1..12 (+ `chroma`), mel_spectrogram (mean mel power, dB),
    spectral_centroid / bandwidth / rolloff (Hz), spectral_flux (mean onset strength), spectral_contrast
    (mean over bands, dB), spectral_flatness (0..1), rms (mean frame RMS), energy (sum of squared samples).
    Vectors over time are reduced to their means. A clip needs at least EDA_MIN_SAMPLES samples (ValueError).
    """
    import librosa  # lazy: the [train] extra

    y = np.asarray(audio, dtype=np.float32)
    if y.size < EDA_MIN_SAMPLES:
        raise ValueError(too_short_for_eda(y.size, sr))
    n_fft = min(2048, 1 << (y.size.bit_length() - 1))  # the largest power of two the clip holds, at most 2048
    hop = n_fft // 4
    S = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) ** 2
    out: dict[str, float] = {
        "duration_s": y.size / sr,
        "max_amplitude": float(np.max(np.abs(y))),
        "sample_rate": float(sr),
        "zcr": float(librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop).mean()),
    }
    mel = librosa.feature.melspectrogram(S=S, sr=sr, n_mels=128)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), sr=sr, n_mfcc=N_MFCC)
    for i, v in enumerate(mfcc.mean(axis=1), 1):
        out[f"mfcc_{i}"] = float(v)
    out["mfcc"] = float(mfcc.mean())
    with warnings.catch_warnings():  # silent clips: "Trying to estimate tuning from empty frequency set"
        warnings.simplefilter("ignore", UserWarning)
        chroma = librosa.feature.chroma_stft(S=S, sr=sr, n_fft=n_fft)
    for i, v in enumerate(chroma.mean(axis=1), 1):
        out[f"chroma_{i}"] = float(v)
    out["chroma"] = float(chroma.mean())
    out["mel_spectrogram"] = float(librosa.power_to_db(mel.mean(), ref=1.0))
    mag = np.sqrt(S)
    out["spectral_centroid"] = float(librosa.feature.spectral_centroid(S=mag, sr=sr, n_fft=n_fft).mean())
    out["spectral_bandwidth"] = float(librosa.feature.spectral_bandwidth(S=mag, sr=sr, n_fft=n_fft).mean())
    out["spectral_rolloff"] = float(librosa.feature.spectral_rolloff(S=mag, sr=sr, n_fft=n_fft).mean())
    out["spectral_flux"] = float(librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=sr).mean())
    fmin = min(200.0, sr / 2 / 2 ** 7)
    out["spectral_contrast"] = float(librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=n_fft, fmin=fmin).mean())
    out["spectral_flatness"] = float(librosa.feature.spectral_flatness(S=mag).mean())
    out["rms"] = float(librosa.feature.rms(S=mag, frame_length=n_fft).mean())
    out["energy"] = float(np.sum(y.astype(np.float64) ** 2))
    return out


def whole_steps(seconds: float, step_s: float) -> bool:
    """Whether `seconds` is a whole number (>= 1) of steps of `step_s` (to 1e-6 of a step): a window hop that is
    not would be rounded to whole steps when scored but not when timed, and event times would drift."""
    n = seconds / step_s
    return round(n) >= 1 and abs(n - round(n)) < 1e-6

