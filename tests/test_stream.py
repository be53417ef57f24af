"""StreamDetector: any chunk size gives exactly the whole-signal scores; events as they happen; bounded state."""

from __future__ import annotations

import numpy as np
import pytest

from _models import background, scene, write_band_energy_model
from screamdetect.audio import SAMPLE_RATE, write_audio
from screamdetect.detector import Detector, iter_chunks


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return Detector.load(write_band_energy_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def signal():
    return scene(47.3, [(5.0, 3.0), (25.0, 1.5), (40.0, 2.0)], seed=3)


def _stream_scores(det, x, chunk):
    sd = det.stream()
    got = [sd.process(c).scores for c in iter_chunks(x, chunk)]
    got.append(sd.finish().scores)
    return np.concatenate(got), sd


@pytest.mark.parametrize("chunk_s", [1.0, 0.37, 4096 / SAMPLE_RATE, 30.0, 0.1, 100.0])
def test_any_chunk_size_gives_the_whole_signal_scores(det, signal, chunk_s):
    want = det.score_windows(signal)
    got, sd = _stream_scores(det, signal, max(1, round(chunk_s * SAMPLE_RATE)))
    np.testing.assert_array_equal(got, want)
    assert sd.events == det.detect(signal)


@pytest.mark.parametrize("n", [1, 100, 4000, 16000, 16160, 16161])
def test_short_and_odd_lengths(det, n):
    x = background(n / SAMPLE_RATE, seed=n)
    for chunk in (1, 333, n):
        np.testing.assert_array_equal(_stream_scores(det, x, chunk)[0], det.score_windows(x))


def test_tiny_chunks(det):
    x = scene(2.5, [(1.0, 1.0)])
    np.testing.assert_array_equal(_stream_scores(det, x, 7)[0], det.score_windows(x))


def test_events_emitted_as_they_happen(det):
    x = scene(20.0, [(5.0, 3.0)])
    sd = det.stream()
    ups = []
    for c in iter_chunks(x, 1600):
        ups += sd.process(c).updates
    ups += sd.finish().updates
    assert [u.kind for u in ups] == ["start", "end"]
    start, end = ups
    # onset known within two windows of the burst onset, well before the burst is over
    assert start.end_s is None and 5.0 <= start.at_s <= 6.6
    assert end.at_s > 8.0 and end.event == det.detect(x)[0]
    # the times are those of the audio, not of the chunking
    sd = det.stream()
    other = [u for c in iter_chunks(x, 4096 * 3 + 1) for u in sd.process(c).updates] + sd.finish().updates
    assert other == ups


def test_state_stays_bounded(det):
    sd = det.stream()
    x = background(1.0)
    for _ in range(120):
        sd.process(x)
        from screamdetect.detector import MIN_SEG_FRAMES

        bound = det.frontend.fft_size + (MIN_SEG_FRAMES + det.window_frames + 2) * det.frontend.hop_length
        assert sd._buf.size < bound + x.size
        assert sd._mel.shape[1] <= det.window_frames + det.hop_frames
    assert sd.time_s == 120.0


def test_scan_file_in_blocks_equals_whole_array(det, signal, tmp_path):
    path = tmp_path / "s.flac"
    write_audio(path, signal)
    from screamdetect.audio import load_audio

    x = load_audio(path)
    res = det.scan_file(path, keep_scores=True, block_s=7.3)
    np.testing.assert_array_equal(res.scores, det.score_windows(x))
    assert res.events == det.detect(x) and len(res.events) == 3
    assert res.duration_s == pytest.approx(signal.size / SAMPLE_RATE)
    assert res.max_score == pytest.approx(float(res.scores.max()))


def test_long_signals_scored_block_by_block_equal_the_one_log_mel(det):
    from screamdetect.detector import WHOLE_MAX_S
    from screamdetect.features import log_mel

    x = scene(2.5 * WHOLE_MAX_S + 0.123, [(30.0, 2.0), (100.0, 3.0)])
    np.testing.assert_array_equal(det.score_windows(x), det.score_mel(log_mel(x, frontend=det.frontend)))
    assert len(det.detect(x)) == 2


def test_process_after_finish_is_an_error(det):
    sd = det.stream()
    sd.process(background(1.0))
    sd.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        sd.process(background(1.0))


def test_chunks_that_are_not_mono_float_audio_are_refused(det, signal):
    """A sound card's (frames, 2) block or int16 samples used to be flattened or cast and scored as nonsense (no
    events, twice the duration); now a clear error. A one-channel (frames, 1) block is the mono signal."""
    sd = det.stream()
    with pytest.raises(ValueError, match=r"stream chunk must be mono.*mean\(axis=1\)"):
        sd.process(np.stack([signal[:1600], signal[:1600]], axis=1))
    with pytest.raises(ValueError, match="float samples in .* got dtype int16"):
        sd.process((signal[:1600] * 32767).astype(np.int16))
    with pytest.raises(ValueError, match="far above full scale"):
        sd.process(signal[:1600] * 1000)
    with pytest.raises(ValueError, match="NaN"):
        sd.process(np.full(1600, np.nan, np.float32))
    assert sd.time_s == 0.0  # nothing refused was taken in
    got, _ = _stream_scores(det, signal[:, None], 4000)
    np.testing.assert_array_equal(got, _stream_scores(det, signal, 4000)[0])


def test_auto_gain_is_causal_bounded_and_chunk_independent():
    from screamdetect.detector import AutoGain

    rng = np.random.default_rng(3)
    quiet = (10 ** (-70 / 20) * rng.standard_normal(45 * SAMPLE_RATE)).astype(np.float32)  # -70 dBFS background
    whole = AutoGain().process(quiet)
    np.testing.assert_array_equal(whole[:SAMPLE_RATE], quiet[:SAMPLE_RATE])  # no history yet: the first second as is
    gain = whole[10 * SAMPLE_RATE:] / quiet[10 * SAMPLE_RATE:]
    np.testing.assert_allclose(gain, 10 ** (30 / 20), rtol=1e-5)  # -70 dBFS is 30 dB under the target: the cap
    parts, i = [], 0
    g = AutoGain()
    for n in rng.integers(1, 40_000, size=200):
        parts.append(g.process(quiet[i: i + n]))
        i += n
    parts.append(g.process(quiet[i:]))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    loud = (0.05 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)  # -26 dBFS: above the target
    np.testing.assert_array_equal(AutoGain().process(loud), loud)
    mid = (10 ** (-50 / 20) * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    g = AutoGain()
    g.process(mid)
    assert g.gain_db == pytest.approx(10.0, abs=0.2)  # -50 dBFS → +10 dB to the -40 dBFS target
    with pytest.raises(ValueError, match="auto gain"):
        AutoGain(target_dbfs=3.0)


def test_auto_gain_finds_a_scream_that_a_quiet_microphone_hides(det):
    """A scene 40 dB quieter: its burst no longer reaches the threshold; with auto gain it does, and streaming still
    equals the whole signal."""
    x = scene(40.0, [(25.0, 2.0)]) * np.float32(0.01)
    assert det.detect(x) == []
    det.auto_gain = {}
    try:
        ev = det.detect(x)
        assert len(ev) == 1 and 24.0 <= ev[0].start_s <= 25.5
        want = det.score_windows(x)
        sd = det.stream()
        got = [sd.process(c).scores for c in iter_chunks(x, 12_345)]
        got.append(sd.finish().scores)
        np.testing.assert_array_equal(np.concatenate(got), want)
    finally:
        det.auto_gain = None
