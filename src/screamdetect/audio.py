"""Audio I/O: decoding, resampling, mono mix-down, padding and block reading.

The one audio contract of the package: after :func:`load_audio` every signal is a float32 mono numpy array in
[-1, 1] at :data:`SAMPLE_RATE`. Only this module decodes and resamples.
"""

from __future__ import annotations

import collections
import io
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000  # Hz, everywhere after load_audio
MAX_CHANNELS = 8  # more than this is almost surely not a recording (or a mis-parsed raw file)
MIN_SAMPLE_RATE = 4000  # below this nothing of a voice is left (telephone audio is 8 kHz); likely a broken header
# Float audio is in [-1, 1]. Real float recordings can go somewhat over full scale, but a peak 24 dB over it is a
# mis-scaled file (typically integer PCM values stored as float): its scores would be silently meaningless.
MAX_PEAK = 16.0
BLOCK_S = 60.0  # default block length of iter_audio_blocks, seconds
BLOCK_SAMPLES = int(BLOCK_S * SAMPLE_RATE)
assert BLOCK_SAMPLES == BLOCK_S * SAMPLE_RATE

# Containers libsndfile decodes natively; anything else goes through ffmpeg.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus"})
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | frozenset(
    {".m4a", ".aac", ".webm", ".mp4", ".mkv", ".mov", ".avi", ".wma", ".amr", ".3gp", ".mka", ".caf"}
)

AudioSource = str | os.PathLike | bytes | bytearray | BinaryIO


class AudioError(ValueError):
    """A file or buffer that cannot be used as audio. The message names the input and the cause."""

    def __init__(self, name: str, cause: str):
        self.name = name
        self.cause = cause
        super().__init__(f"{name}: {cause}")


def _name_of(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return getattr(source, "name", None) or "<stream>"


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def _check_samples(audio: np.ndarray, name: str) -> None:
    if audio.size == 0:
        raise AudioError(name, "zero-length audio (the file holds no samples)")
    check_values(audio, name)


def check_values(audio: np.ndarray, name: str) -> None:
    """Raise AudioError for NaN/inf samples or a peak far above full scale (> MAX_PEAK, i.e. +24 dBFS)."""
    if not audio.size:
        return
    peak = float(np.max(np.abs(audio)))
    if not np.isfinite(peak):
        raise AudioError(name, "audio contains NaN or infinite samples")
    if peak > MAX_PEAK:
        hint = (" (integer PCM stored as float? divide by 32768)" if 256 < peak <= 32768
                else " (integer values stored as float?)" if peak > 32768 else "")
        raise AudioError(name, f"samples reach {peak:.4g} ({20 * np.log10(peak):+.0f} dBFS), far above full scale: "
                               f"float audio must lie in [-1, 1]{hint}")


def to_mono(audio: np.ndarray, name: str = "<array>") -> np.ndarray:
    """(n,) or (n, channels) → (n,) float32, the mean of the channels."""
    if audio.ndim == 1:
        return audio.astype(np.float32, copy=False)
    channels = audio.shape[1]
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioError(name, f"unsupported channel count {channels} (1 to {MAX_CHANNELS} are accepted)")
    if channels == 1:
        return np.ascontiguousarray(audio[:, 0], dtype=np.float32)
    return audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a float32 mono array with soxr (HQ). No-op when the rates agree."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    if sr_in <= 0:
        raise ValueError(f"sr_in must be positive, got {sr_in}")
    return soxr.resample(audio, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def _ffmpeg_decode(source: AudioSource, name: str, sr: int) -> np.ndarray:
    if not ffmpeg_available():
        raise AudioError(name, "cannot decode this format without ffmpeg, which is not installed "
                               "(install it: apt-get install ffmpeg)")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", "pipe:0", "-vn",
           "-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"]
    if isinstance(source, (str, os.PathLike)):
        cmd[cmd.index("pipe:0")] = str(source)
        data_in = None
    elif isinstance(source, (bytes, bytearray)):
        data_in = bytes(source)
    else:
        source.seek(0)
        data_in = source.read()
    try:
        proc = subprocess.run(cmd, input=data_in, capture_output=True, check=False)
    except OSError as e:
        raise AudioError(name, f"ffmpeg failed to start: {e}") from e
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = msg[-1] if msg else f"exit status {proc.returncode}"
        raise AudioError(name, f"cannot decode: not an audio file or corrupt ({detail})")
    audio = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    if audio.size == 0:
        raise AudioError(name, "cannot decode: no audio stream found (not an audio file, or zero-length)")
    return audio


def _check_path(path: Path) -> None:
    name = str(path)
    if not path.exists():
        raise AudioError(name, "file not found")
    if path.is_dir():
        raise AudioError(name, "is a directory, not an audio file")
    if not path.is_file():  # a pipe (<(cat a.flac)), a FIFO or a device: no size, no seeking back
        raise AudioError(name, "not a regular file (a pipe or a device): give `-` and pipe the audio in instead")
    if path.stat().st_size == 0:
        raise AudioError(name, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(name, "permission denied (this user may not read the file)")


def _sf_path(path: Path) -> str | bytes:
    """The path as soundfile opens it: the str, or its bytes when the name is not valid UTF-8 (a file copied from
    another system), which soundfile cannot encode ("surrogates not allowed")."""
    name = str(path)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(path)


def _wav_data_chunk(path: Path) -> tuple[int, int, int] | None:
    """(offset of the data chunk's samples, the length its header gives, file size) of a RIFF/WAVE file, or None
    (another format, or no data chunk)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                hdr = f.read(8)
                cid, clen = hdr[:4], int.from_bytes(hdr[4:8], "little")
                if cid == b"data":
                    return pos + 8, clen, size
                pos += 8 + clen + (clen & 1)
    except OSError:
        return None
    return None


def _wav_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE header promises more data than the file holds.

    libsndfile silently returns the frames that are there; a recording cut off mid-write should be reported.
    """
    d = _wav_data_chunk(path)
    # 0 and 0xFFFFFFFF mark streaming writers that never filled in the length.
    return d is not None and d[1] not in (0, 0xFFFFFFFF) and d[0] + d[1] > d[2]


def _wav_unsized(path: Path) -> bool:
    """True for a WAV whose data chunk says 0 bytes but is followed by data: a streaming writer (a recorder
    stopped hard, a pipe written to a file) never filled in the length. libsndfile reads 0 samples of it; ffmpeg
    reads the data to the end of the file."""
    d = _wav_data_chunk(path)
    return d is not None and d[1] == 0 and d[2] > d[0]


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file path, bytes or file-like object to float32 mono at `sr` Hz.

    wav/flac/ogg/mp3 are read with soundfile; other containers (m4a, aac, webm, video files) through an ffmpeg
    subprocess. Stereo and multichannel audio is averaged to mono; other rates are resampled with soxr.

    Returns: float32 array of shape (n_samples,).
    Raises: AudioError naming the input and the cause (missing, empty, zero-length, truncated or corrupt,
    not audio, NaN/inf samples, unsupported channel count).
    """
    if not isinstance(source, (str, os.PathLike, bytes, bytearray)) and not hasattr(source, "read"):
        raise TypeError(f"load_audio needs a file path, bytes or a file-like object, got {type(source).__name__}")
    if not (isinstance(sr, int) and sr >= MIN_SAMPLE_RATE):
        raise ValueError(f"sr must be a whole number of Hz >= {MIN_SAMPLE_RATE}, got {sr!r}")
    name = _name_of(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_path(path)
        if _wav_truncated(path):
            raise AudioError(name, "truncated file: the WAV header promises more data than the file holds")
        sf_source: object = _sf_path(path)
        use_sf = (path.suffix.lower() in SOUNDFILE_EXTENSIONS or path.suffix == "") \
            and not (_wav_unsized(path) and ffmpeg_available())
    else:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise AudioError(name, "empty input (0 bytes)")
            sf_source = io.BytesIO(bytes(source))
        else:
            sf_source = source
        use_sf = True

    audio = None
    sf_error: Exception | None = None
    if use_sf:
        try:
            with sf.SoundFile(sf_source) as f:
                if f.channels > MAX_CHANNELS:  # checked before decoding: a mis-parsed file can claim 1000s
                    raise AudioError(name, f"unsupported channel count {f.channels} "
                                           f"(1 to {MAX_CHANNELS} are accepted)")
                _check_rate(name, f.samplerate)
                expected, file_sr, fmt = f.frames, f.samplerate, f.format
                try:
                    data = f.read(dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    # The container was recognised but its stream breaks off: corrupt, not a format for
                    # ffmpeg (which would quietly return the part before the damage).
                    raise AudioError(name, f"truncated or corrupt {fmt} audio ({_short(e)})") from e
            # libsndfile returns what it could decode of a cut-off or damaged FLAC/OGG without an error; the
            # header's frame count tells us (MP3 headers only estimate it, so they are not checked).
            if fmt != "MP3" and 0 < expected and len(data) < expected:
                raise AudioError(name, f"truncated or corrupt: decoded {len(data) / file_sr:.2f} s of the "
                                       f"{expected / file_sr:.2f} s the header announces")
            audio = resample(to_mono(data, name), file_sr, sr)
        except AudioError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
            sf_error = e
    if audio is None:
        if sf_error is not None and not ffmpeg_available():
            raise AudioError(name, f"cannot decode: not an audio file or corrupt ({_short(sf_error)})")
        try:
            audio = _ffmpeg_decode(source if not hasattr(source, "read") else sf_source, name, sr)
        except AudioError as e:
            if sf_error is not None:
                raise AudioError(name, f"cannot decode: not an audio file or corrupt ({_short(sf_error)})") from e
            raise
    _check_samples(audio, name)
    return audio


def _short(e: Exception) -> str:
    """The last line of a decoder's message, without libsndfile's "Error opening <object repr>: " prefix."""
    text = str(e).strip().splitlines()
    line = text[-1] if text else type(e).__name__
    return re.sub(r"^Error opening .*?: ", "", line)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header when soundfile can read it (no decoding); NaN otherwise (also for a
    FIFO or a device, which opening would block on or consume)."""
    if not Path(path).is_file():
        return float("nan")
    try:
        info = sf.info(_sf_path(Path(path)))
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError):
        return float("nan")


def iter_audio_blocks(source: str | os.PathLike, block_s: float = BLOCK_S,
                      sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono blocks of `block_s` seconds (the last may be shorter).

    Memory stays bounded by one block whatever the file length: soundfile formats are read block by block and
    resampled with soxr's streaming resampler; other formats are piped through ffmpeg.
    Raises AudioError like :func:`load_audio` (possibly after some blocks were yielded, if the file is cut off).
    """
    if block_s <= 0:
        raise ValueError(f"block_s must be positive, got {block_s}")
    path = Path(source)
    name = str(path)
    _check_path(path)
    if _wav_truncated(path):
        raise AudioError(name, "truncated file: the WAV header promises more data than the file holds")
    block = round(block_s * sr)
    if (path.suffix.lower() in SOUNDFILE_EXTENSIONS or path.suffix == "") \
            and not (_wav_unsized(path) and ffmpeg_available()):
        try:
            f = sf.SoundFile(_sf_path(path))
        except (sf.LibsndfileError, RuntimeError) as e:
            if not ffmpeg_available():
                raise AudioError(name, f"cannot decode: not an audio file or corrupt ({_short(e)})") from e
            yield from _ffmpeg_blocks(path, block, sr)
            return
        with f:
            if f.channels > MAX_CHANNELS:
                raise AudioError(name, f"unsupported channel count {f.channels} (1 to {MAX_CHANNELS} are accepted)")
            _check_rate(name, f.samplerate)
            rs = soxr.ResampleStream(f.samplerate, sr, 1, dtype="float32", quality="HQ") \
                if f.samplerate != sr else None
            in_block = max(1, round(block * f.samplerate / sr))
            total = 0
            read_in = 0
            pending = np.zeros(0, dtype=np.float32)
            while True:
                try:
                    data = f.read(in_block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    good = read_in + _decodable_frames(f, read_in, in_block)
                    raise AudioError(name, f"corrupt or truncated audio after {good / f.samplerate:.1f} s "
                                           f"({_short(e)})") from e
                read_in += len(data)
                last = len(data) < in_block
                if last and f.format != "MP3" and 0 < read_in < f.frames:
                    raise AudioError(name, f"truncated or corrupt: decoded {read_in / f.samplerate:.2f} s of the "
                                           f"{f.frames / f.samplerate:.2f} s the header announces")
                mono = to_mono(data, name)
                if rs is not None:
                    # The streaming resampler's output per chunk varies (filter delay): re-cut into exact blocks.
                    out = rs.resample_chunk(mono, last=last)
                    check_values(out, name)
                    pending = np.concatenate([pending, out]) if pending.size else out
                    while pending.size >= block or (last and pending.size):
                        total += min(block, pending.size)
                        yield pending[:block]
                        pending = pending[block:]
                elif mono.size:
                    check_values(mono, name)
                    total += mono.size
                    yield mono
                if last:
                    break
            if total == 0:
                raise AudioError(name, "zero-length audio (the file holds no samples)")
    else:
        yield from _ffmpeg_blocks(path, block, sr)


def _check_rate(name: str, rate: int) -> None:
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(name, f"sample rate {rate} Hz is too low to hold a voice (at least {MIN_SAMPLE_RATE} Hz "
                               "is needed)")


def _decodable_frames(f, start: int, limit: int) -> int:
    """After a block read failed: how many frames from `start` (at most `limit`) do decode, read 0.1 s at a time,
    so that the error can say where the damage begins. 0 when the decoder cannot seek back."""
    step = max(1, f.samplerate // 10)
    n = 0
    try:
        f.seek(start)
        while n < limit:
            got = len(f.read(min(step, limit - n), dtype="float32", always_2d=True))
            n += got
            if got == 0:
                break
    except (sf.LibsndfileError, RuntimeError):
        pass
    return n


def drain_lines(pipe, tail: collections.deque) -> None:
    """Read a subprocess's stderr to the end, keeping its last non-empty lines in `tail` (a bounded deque). Run
    in a thread: a pipe nobody reads fills after ~64 KB of messages and stalls the subprocess, and with it our
    read of its stdout."""
    for line in iter(pipe.readline, b""):
        text = line.decode(errors="replace").strip()
        if text:
            tail.append(text)
    pipe.close()


def _ffmpeg_blocks(path: Path, block: int, sr: int) -> Iterator[np.ndarray]:
    name = str(path)
    if not ffmpeg_available():
        raise AudioError(name, "cannot decode this format without ffmpeg, which is not installed "
                               "(install it: apt-get install ffmpeg)")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-vn",
           "-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tail: collections.deque[str] = collections.deque(maxlen=5)
    drain = threading.Thread(target=drain_lines, args=(proc.stderr, tail), daemon=True)
    drain.start()
    total = 0
    try:
        assert proc.stdout is not None
        nbytes = block * 4
        while True:
            buf = proc.stdout.read(nbytes)
            if not buf:
                break
            audio = np.frombuffer(buf[: len(buf) // 4 * 4], dtype=np.float32).copy()
            check_values(audio, name)
            total += audio.size
            yield audio
        proc.wait()
        drain.join(timeout=5)
        if proc.returncode != 0 and total == 0:
            raise AudioError(name, f"cannot decode: not an audio file or corrupt ({tail[-1] if tail else proc.returncode})")
        if total == 0:
            raise AudioError(name, "cannot decode: no audio stream found (not an audio file, or zero-length)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


PAD_MODES = ("loop", "zeros")


def pad_or_trim(audio: np.ndarray, n_samples: int, mode: str = "zeros") -> np.ndarray:
    """Cut to exactly `n_samples`, or fill a shorter signal up to it at the end: with zeros (mode "zeros"), or by
    repeating it (mode "loop": no trailing silence whose length would tell how long the clip was). The same rule
    for every clip, whatever its label. An empty signal is filled with zeros in either mode."""
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    if audio.shape[-1] >= n_samples:
        return audio[..., :n_samples]
    if mode == "loop" and audio.shape[-1] > 0:
        reps = -(-n_samples // audio.shape[-1])
        return np.tile(audio, [1] * (audio.ndim - 1) + [reps])[..., :n_samples]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, n_samples - audio.shape[-1])]
    return np.pad(audio, pad)


def window_starts(n_samples: int, win: int, hop: int) -> np.ndarray:
    """Start indices of sliding windows of `win` samples every `hop` samples covering `n_samples`.

    A signal shorter than one window gets one window (to be zero-padded); the last window is placed so that the
    tail of the signal is covered.
    """
    if win <= 0 or hop <= 0:
        raise ValueError(f"win and hop must be positive, got win={win}, hop={hop}")
    if n_samples <= win:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - win + 1, hop, dtype=np.int64)
    if starts[-1] + win < n_samples:
        starts = np.append(starts, starts[-1] + hop)
    return starts


def write_audio(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write float32 mono audio as WAV/FLAC/OGG (by extension), 16-bit PCM for WAV/FLAC."""
    path = Path(path)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, subtype=subtype)
