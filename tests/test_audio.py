"""audio.py: every AudioError case, mono mix-down, resampling, bytes/file-like input, ffmpeg formats, block reading."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from _models import needs_ffmpeg
from conftest import sine
from screamdetect.audio import (
    SAMPLE_RATE,
    AudioError,
    iter_audio_blocks,
    load_audio,
    pad_or_trim,
    resample,
    window_starts,
    write_audio,
)


def _peak_hz(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spec)])


def _flac_bytes(seconds: float = 2.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, sine(440.0, seconds), SAMPLE_RATE, format="FLAC")
    return buf.getvalue()


# ---- errors: one test per cause, each names the file --------------------------------------------------------

def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="file not found") as e:
        load_audio(p)
    assert str(p) in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)") as e:
        load_audio(p)
    assert e.value.name == str(p)
    with pytest.raises(AudioError, match="empty input"):
        load_audio(b"")


def test_a_pipe_is_named_as_such_not_called_empty(tmp_path):
    """A FIFO (as `<(cat a.flac)` gives) has no size and no seeking back: said so, with what to do instead."""
    import os

    p = tmp_path / "fifo.wav"
    os.mkfifo(p)
    for read in (load_audio, lambda x: list(iter_audio_blocks(x))):
        with pytest.raises(AudioError, match=r"not a regular file \(a pipe or a device\): give `-`"):
            read(p)


def test_a_name_that_is_not_utf8_is_read(tmp_path):
    """A file name with bytes that are not UTF-8 (copied from another system): read like any other. Before,
    soundfile failed to encode it ("surrogates not allowed")."""
    import os

    from screamdetect.audio import audio_duration

    good = tmp_path / "a.wav"
    write_audio(good, sine(440.0, 1.0))
    odd = tmp_path / os.fsdecode(b"caf\xe9.wav")  # Latin-1 e-acute
    shutil.copy(good, odd)
    np.testing.assert_array_equal(load_audio(odd), load_audio(good))
    np.testing.assert_array_equal(np.concatenate(list(iter_audio_blocks(odd))), load_audio(good))
    assert audio_duration(odd) == pytest.approx(1.0)


def test_zero_length_wav(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), SAMPLE_RATE)
    assert p.stat().st_size > 0  # a valid header, no samples
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(p)
    with pytest.raises(AudioError, match="zero-length"):
        list(iter_audio_blocks(p))


def test_truncated_wav(tmp_path):
    p = tmp_path / "cut.wav"
    sf.write(p, sine(440.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(p)
    with pytest.raises(AudioError, match="truncated"):
        list(iter_audio_blocks(p))


@needs_ffmpeg
def test_a_wav_whose_writer_never_filled_in_its_length_is_read_whole(tmp_path):
    """A streaming writer leaves the data chunk's length at 0; libsndfile then reads no sample and the file was
    reported as "zero-length audio". Its samples are read to the end of the file (through ffmpeg)."""
    p = tmp_path / "streamed.wav"
    x = sine(440.0, 1.5)
    sf.write(p, x, SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    at = data.index(b"data")
    data[at + 4: at + 8] = (0).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    y = load_audio(p)
    assert y.size == x.size and np.max(np.abs(y - x)) < 1e-3
    blocks = np.concatenate(list(iter_audio_blocks(p, block_s=0.4)))
    np.testing.assert_allclose(blocks, y, atol=1e-6)


def test_truncated_flac(tmp_path):
    data = _flac_bytes()
    p = tmp_path / "cut.flac"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated or corrupt") as e:
        load_audio(p)
    assert str(p) in str(e.value)
    with pytest.raises(AudioError, match="corrupt"):
        list(iter_audio_blocks(p, block_s=0.25))
    with pytest.raises(AudioError, match="truncated or corrupt"):
        load_audio(data[: len(data) // 2])  # the same bytes in memory


def test_a_cut_flac_says_where_the_damage_begins(tmp_path):
    """Read in long blocks, a FLAC cut in the middle names the time up to which it decodes, not the block start."""
    import re

    from screamdetect.audio import write_audio

    rng = np.random.default_rng(1)
    p = tmp_path / "long.flac"
    write_audio(p, (0.1 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="corrupt or truncated audio after") as e:
        list(iter_audio_blocks(p, block_s=60.0))
    at = float(re.search(r"after ([0-9.]+) s", str(e.value)).group(1))
    assert 8.0 <= at <= 10.5  # half of the 20 s of noise (the cut falls inside a frame)


def test_corrupt_flac(tmp_path):
    data = bytearray(_flac_bytes())
    k = len(data) // 3
    data[k: k + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    p = tmp_path / "bad.flac"
    p.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="truncated or corrupt"):
        load_audio(p)


def test_text_file_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("these are my meeting notes, not a recording\n" * 20)
    with pytest.raises(AudioError, match="not an audio file") as e:
        load_audio(p)
    assert str(p) in str(e.value)
    with pytest.raises(AudioError, match="not an audio file"):
        list(iter_audio_blocks(p))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_float_wav(tmp_path, bad):
    y = sine(440.0, 0.5)
    y[1000] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, y, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(p)
    with pytest.raises(AudioError, match="NaN or infinite"):
        list(iter_audio_blocks(p))


def test_float_audio_far_above_full_scale_is_refused_not_scored(tmp_path):
    """Integer PCM values written as float (peak 16000) would be scored as meaningless noise: refused, with the cause.
    A float file a few dB over full scale (a real clipped recording) is still read, values unchanged."""
    y = sine(440.0, 2.0, amp=0.5)
    loud, hot = tmp_path / "int_as_float.wav", tmp_path / "hot.wav"
    sf.write(loud, y * 32767, SAMPLE_RATE, subtype="FLOAT")
    sf.write(hot, y * 4, SAMPLE_RATE, subtype="FLOAT")  # peak 2.0: +6 dBFS
    for read in (load_audio, lambda p: np.concatenate(list(iter_audio_blocks(p, block_s=0.5)))):
        with pytest.raises(AudioError, match=r"far above full scale.*divide by 32768") as e:
            read(loud)
        assert str(loud) in str(e.value) and "+84 dBFS" in str(e.value)
        np.testing.assert_allclose(read(hot), y * 4, atol=1e-6)


def test_load_audio_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="file path, bytes or a file-like object, got NoneType"):
        load_audio(None)
    p = tmp_path / "a.wav"
    write_audio(p, sine(440.0, 0.2))
    for sr in (0, -1, 8000.5):  # 0 used to return 16 kHz audio silently, -1 blamed the file
        with pytest.raises(ValueError, match="sr must be a whole number"):
            load_audio(p, sr=sr)


def test_unsupported_channel_count(tmp_path):
    p = tmp_path / "many.wav"
    sf.write(p, np.zeros((1000, 12), np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioError, match="unsupported channel count 12"):
        load_audio(p)
    with pytest.raises(AudioError, match="unsupported channel count 12"):
        load_audio(p.read_bytes())
    with pytest.raises(AudioError, match="unsupported channel count 12"):
        list(iter_audio_blocks(p))


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


# ---- decoding -----------------------------------------------------------------------------------------------

def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = sine(440.0, 0.5, amp=0.4), sine(1000.0, 0.5, amp=0.2)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr_in", [44100, 8000])
def test_resampled_to_16k_keeps_frequency(tmp_path, sr_in):
    p = tmp_path / f"tone_{sr_in}.wav"
    sf.write(p, sine(1000.0, 2.0, amp=0.5, sr=sr_in), sr_in, subtype="FLOAT")
    y = load_audio(p)
    assert y.dtype == np.float32
    assert y.size == 2 * SAMPLE_RATE
    assert _peak_hz(y) == pytest.approx(1000.0, abs=1.0)
    assert np.max(np.abs(y[SAMPLE_RATE // 2: -SAMPLE_RATE // 2])) == pytest.approx(0.5, rel=0.01)


def test_resample_rejects_bad_rate():
    with pytest.raises(ValueError, match="sr_in"):
        resample(np.zeros(10, np.float32), 0)


def test_bytes_and_file_like_input(tmp_path):
    data = _flac_bytes(1.0)
    p = tmp_path / "a.flac"
    p.write_bytes(data)
    from_path = load_audio(p)
    np.testing.assert_array_equal(load_audio(data), from_path)
    np.testing.assert_array_equal(load_audio(bytearray(data)), from_path)
    with open(p, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_path)
    assert from_path.size == SAMPLE_RATE and _peak_hz(from_path) == pytest.approx(440.0, abs=1.0)


def test_write_then_load_round_trip(tmp_path):
    y = sine(300.0, 0.3, amp=0.9)
    write_audio(tmp_path / "r.wav", y)
    np.testing.assert_allclose(load_audio(tmp_path / "r.wav"), y, atol=1 / 2 ** 15)


def _ffmpeg_encode(src, dst, *args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)


@needs_ffmpeg
@pytest.mark.parametrize("ext,args", [(".m4a", ["-c:a", "aac", "-b:a", "96k"]),
                                      (".webm", ["-c:a", "libopus", "-b:a", "64k"])])
def test_ffmpeg_formats(tmp_path, ext, args):
    src = tmp_path / "src.wav"
    sf.write(src, sine(1000.0, 2.0, amp=0.5, sr=44100), 44100)
    dst = tmp_path / f"enc{ext}"
    try:
        _ffmpeg_encode(src, dst, *args)
    except subprocess.CalledProcessError:
        pytest.skip(f"this ffmpeg cannot encode {ext} ({' '.join(args)})")
    y = load_audio(dst)
    assert y.dtype == np.float32
    assert abs(y.size - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codec priming/padding
    assert _peak_hz(y) == pytest.approx(1000.0, abs=2.0)
    blocks = list(iter_audio_blocks(dst, block_s=0.5))
    assert max(b.size for b in blocks) <= SAMPLE_RATE // 2
    np.testing.assert_allclose(np.concatenate(blocks), y, atol=1e-6)


@needs_ffmpeg
def test_ffmpeg_reports_garbage_with_video_extension(tmp_path):
    p = tmp_path / "clip.m4a"
    p.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(AudioError, match="cannot decode") as e:
        load_audio(p)
    assert str(p) in str(e.value)


# ---- block reading ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sr_in,fmt", [(SAMPLE_RATE, "wav"), (44100, "wav"), (SAMPLE_RATE, "flac")])
def test_iter_audio_blocks_equals_load_audio(tmp_path, rng, sr_in, fmt):
    n = int(7.3 * sr_in)
    y = (0.2 * rng.standard_normal(n)).astype(np.float32)
    p = tmp_path / f"long.{fmt}"
    sf.write(p, y, sr_in, subtype="PCM_16")
    whole = load_audio(p)
    blocks = list(iter_audio_blocks(p, block_s=1.0))
    assert all(b.dtype == np.float32 for b in blocks)
    assert all(b.size == SAMPLE_RATE for b in blocks[:-1])
    joined = np.concatenate(blocks)
    assert joined.size == whole.size
    # 16 kHz: bit-identical; 44.1 kHz: soxr's streaming resampler equals the one-shot one within float error.
    np.testing.assert_allclose(joined, whole, atol=1e-6 if sr_in == SAMPLE_RATE else 1e-4)


def test_iter_audio_blocks_bounded_memory(tmp_path):
    """A 5-minute file is scanned in 2 s blocks: peak Python/numpy memory stays near one block, not the file."""
    minutes = 5
    p = tmp_path / "long.wav"
    with sf.SoundFile(p, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        for _ in range(minutes * 6):
            f.write(sine(300.0, 10.0, amp=0.3))
    whole_bytes = minutes * 60 * SAMPLE_RATE * 4  # float32, ~19 MB
    tracemalloc.start()
    n = 0
    for block in iter_audio_blocks(p, block_s=2.0):
        n += block.size
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == minutes * 60 * SAMPLE_RATE
    assert peak < whole_bytes / 10, f"peak {peak / 1e6:.1f} MB for a {whole_bytes / 1e6:.0f} MB signal"


def test_iter_audio_blocks_rejects_bad_block():
    with pytest.raises(ValueError, match="block_s"):
        next(iter_audio_blocks("x.wav", block_s=0))


# ---- helpers ------------------------------------------------------------------------------------------------

def test_pad_or_trim():
    y = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(y, 3), [0, 1, 2])
    np.testing.assert_array_equal(pad_or_trim(y, 7), [0, 1, 2, 3, 4, 0, 0])
    with pytest.raises(ValueError, match="n_samples"):
        pad_or_trim(y, 0)
    # loop: the clip repeated, cut at n_samples; a long clip is cut the same way in both modes
    np.testing.assert_array_equal(pad_or_trim(y, 12, "loop"), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(pad_or_trim(y, 3, "loop"), [0, 1, 2])
    np.testing.assert_array_equal(pad_or_trim(np.zeros(0, np.float32), 4, "loop"), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="mode"):
        pad_or_trim(y, 7, "mirror")


def test_window_starts_cover_the_signal():
    s = window_starts(1000, 300, 200)
    assert s[0] == 0 and s[-1] + 300 >= 1000 and np.all(np.diff(s) == 200)
    np.testing.assert_array_equal(window_starts(100, 300, 200), [0])
    with pytest.raises(ValueError, match="win"):
        window_starts(100, 0, 1)


def test_an_ffmpeg_that_prints_a_flood_of_errors_does_not_stall_the_read(tmp_path, monkeypatch):
    """A damaged AAC/MP4 makes ffmpeg print hundreds of KB of decode errors while it goes on decoding: if nobody
    reads its stderr the pipe fills, ffmpeg blocks, and so did our read of its audio (`detect` hung for ever).
    A stand-in ffmpeg on PATH prints 1 MB of errors before 2 s of audio."""
    import os
    import sys

    from screamdetect.audio import iter_audio_blocks

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys, numpy as np\n"
                    "for i in range(20000): sys.stderr.write(f'[aac] Invalid data found when processing input {i}\\n')\n"
                    "sys.stdout.buffer.write(np.full(32000, 0.25, dtype=np.float32).tobytes())\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    src = tmp_path / "damaged.m4a"
    src.write_bytes(b"\0" * 100)
    got = {}

    def scan():
        got["audio"] = np.concatenate(list(iter_audio_blocks(src, block_s=0.5)))

    import threading

    t = threading.Thread(target=scan, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "reading ffmpeg's audio stalled behind its unread stderr"
    assert got["audio"].shape == (32000,) and np.allclose(got["audio"], 0.25)
