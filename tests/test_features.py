"""features.py: log_mel == librosa (two settings), the mel filterbank == librosa's, EDA features' known answers."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import sine
from screamdetect.audio import SAMPLE_RATE
from screamdetect.features import EDA_SCALARS, FrontEnd, eda_features, log_mel, mel_filterbank

librosa = pytest.importorskip("librosa", reason="librosa (the [train] extra) is needed to compare against")

STUDY = FrontEnd()  # 128 mels, 25 ms window, 10 ms hop
OTHER = FrontEnd(n_mels=64, win_s=0.032, hop_s=0.016, fmin=50.0, fmax=7600.0)


def _librosa_log_mel(y: np.ndarray, fe: FrontEnd) -> np.ndarray:
    m = librosa.feature.melspectrogram(y=y, sr=fe.sample_rate, n_fft=fe.fft_size, hop_length=fe.hop_length,
                                       win_length=fe.win_length, n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax,
                                       center=True, pad_mode="constant", power=2.0)
    return librosa.power_to_db(m, ref=1.0, amin=1e-10, top_db=fe.top_db)


def _test_signal(rng, seconds: float = 2.3) -> np.ndarray:
    """Noise + a chirp + a quiet stretch: broadband, tonal and near-silent frames (the dB floor matters)."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    y = 0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    y[n // 2: n // 2 + SAMPLE_RATE // 4] *= 1e-4
    return y.astype(np.float32)


@pytest.mark.parametrize("fe", [STUDY, OTHER], ids=["128mel-25/10ms", "64mel-32/16ms-50-7600Hz"])
def test_log_mel_matches_librosa(fe, rng):
    y = _test_signal(rng)
    ours = log_mel(y, frontend=fe)
    ref = _librosa_log_mel(y, fe)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (fe.n_mels, fe.n_frames(y.size))
    np.testing.assert_allclose(ours, ref, atol=0.01)  # dB


def test_log_mel_keyword_settings_equal_frontend(rng):
    y = _test_signal(rng, 1.0)
    a = log_mel(y, n_mels=64, win_s=0.032, hop_s=0.016, fmin=50.0, fmax=7600.0)
    np.testing.assert_array_equal(a, log_mel(y, frontend=OTHER))


def test_log_mel_top_db_and_silence(rng):
    y = _test_signal(rng, 1.0)
    fe = FrontEnd(top_db=80.0)
    out = log_mel(y, frontend=fe)
    np.testing.assert_allclose(out, _librosa_log_mel(y, fe), atol=0.01)
    assert out.max() - out.min() <= 80.0 + 1e-4
    silent = log_mel(np.zeros(SAMPLE_RATE, np.float32))
    np.testing.assert_allclose(silent, -100.0, atol=1e-4)  # 10·log10(1e-10), the floor


def test_log_mel_short_input_gives_frames():
    """Shorter than one FFT: still centred frames, as librosa."""
    y = sine(440.0, 0.01)  # 160 samples < n_fft 512
    out = log_mel(y)
    assert out.shape == (128, STUDY.n_frames(y.size)) == (128, 2)
    assert np.isfinite(out).all()


def test_log_mel_is_local_per_frame(rng):
    """A frame's values depend only on its own samples (what the streaming detector relies on)."""
    y = _test_signal(rng, 2.0)
    full = log_mel(y)
    hop = STUDY.hop_length
    part = log_mel(y[100 * hop: 150 * hop])
    np.testing.assert_allclose(part[:, 3:-3], full[:, 103:148], atol=1e-4)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 128, 0.0, None), (16000, 512, 64, 50.0, 7600.0),
                                                       (22050, 2048, 40, 0.0, 8000.0)])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == (n_mels, n_fft // 2 + 1) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


def test_frontend_validates_parameters():
    with pytest.raises(ValueError, match="n_mels"):
        FrontEnd(n_mels=0)
    with pytest.raises(ValueError, match="hop_s"):
        FrontEnd(hop_s=0.0)
    with pytest.raises(ValueError, match="n_fft"):
        FrontEnd(n_fft=128)  # < 400-sample window
    with pytest.raises(ValueError, match="fmax"):
        FrontEnd(fmin=100.0, fmax=9000.0)
    fe = FrontEnd(n_mels=40)
    assert FrontEnd.from_dict(fe.to_dict()) == fe and fe.key() == FrontEnd(n_mels=40).key() != STUDY.key()


# ---- EDA features: known answers -----------------------------------------------------------------------------

def test_eda_features_of_a_1khz_sine():
    f = eda_features(sine(1000.0, 2.0, amp=0.5))
    assert set(EDA_SCALARS) <= set(f)
    assert all(isinstance(v, float) for v in f.values())
    assert f["spectral_centroid"] == pytest.approx(1000.0, rel=0.03)
    assert f["zcr"] == pytest.approx(2 * 1000.0 / SAMPLE_RATE, rel=0.03)
    assert f["duration_s"] == pytest.approx(2.0)
    assert f["sample_rate"] == SAMPLE_RATE
    assert f["max_amplitude"] == pytest.approx(0.5, rel=1e-3)
    assert f["energy"] == pytest.approx(0.5 ** 2 / 2 * 2.0 * SAMPLE_RATE, rel=1e-3)  # A²/2 per sample
    assert f["spectral_flatness"] < 0.01  # a pure tone is the opposite of flat
    chroma = [f[f"chroma_{i}"] for i in range(1, 13)]
    # librosa's chroma starts at C; 1000 Hz = B5 + 21 cents, so bin 11 (B) must dominate.
    assert int(np.argmax(chroma)) == 11


def test_eda_features_of_silence():
    f = eda_features(np.zeros(SAMPLE_RATE, np.float32))
    assert f["energy"] == 0.0
    assert f["rms"] == 0.0
    assert f["max_amplitude"] == 0.0
    assert f["zcr"] == 0.0


def test_eda_features_of_short_clips_are_finite_or_refused():
    import warnings

    from screamdetect.features import EDA_MIN_SAMPLES

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "n_fft too large" or empty-filter warnings either
        for n in (EDA_MIN_SAMPLES, EDA_MIN_SAMPLES + 1, 1000, 2047, 2048, 2049):
            f = eda_features(rng.normal(0, 0.1, n).astype(np.float32))
            assert all(np.isfinite(v) for v in f.values()), (n, f)
            assert f["duration_s"] == pytest.approx(n / SAMPLE_RATE)
    for n in (0, 1, 10, EDA_MIN_SAMPLES - 1):
        with pytest.raises(ValueError, match=f"too short to describe: {n} samples"):
            eda_features(np.zeros(n, np.float32))


def test_eda_features_clipped_signal_max_amplitude():
    y = np.clip(sine(300.0, 1.0, amp=1.0) * 3, -0.7, 0.7)
    f = eda_features(y)
    assert f["max_amplitude"] == pytest.approx(0.7, abs=1e-6)


def test_eda_features_duration_and_sample_rate_follow_input():
    f = eda_features(sine(1000.0, 3.0, sr=8000), sr=8000)
    assert f["duration_s"] == pytest.approx(3.0)
    assert f["sample_rate"] == 8000.0
    assert f["spectral_centroid"] == pytest.approx(1000.0, rel=0.05)
    assert f["zcr"] == pytest.approx(2 * 1000.0 / 8000, rel=0.03)


def test_eda_features_white_noise_is_flat_and_broad(rng):
    y = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    f = eda_features(y)
    assert f["spectral_flatness"] > 0.3
    assert f["spectral_centroid"] == pytest.approx(SAMPLE_RATE / 4, rel=0.1)  # flat spectrum: mid-band


def test_eda_features_rejects_empty():
    with pytest.raises(ValueError):
        eda_features(np.zeros(0, np.float32))


def test_log_mel_rejects_multichannel_arrays():
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, SAMPLE_RATE), np.float32))


def test_log_mel_long_input_is_chunk_invariant(rng):
    """Frames are computed in batches; a frame's value must not depend on which batch it fell in."""
    y = _test_signal(rng, 5.0)  # 501 frames: several 128-frame batches and a partial one
    full = log_mel(y)
    hop = STUDY.hop_length
    shifted = log_mel(y[37 * hop:])  # frame k of this = frame 37 + k of the whole, other batch boundaries
    np.testing.assert_array_equal(shifted[:, 3:-3], full[:, 40:-3])
