"""augment.py: the noise is in the output at the intended level, labels and groups are kept, inputs untouched,
the seed preset's 100%/20%/50% rates, robust's equal rates across classes, determinism, bad parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import sine
from screamdetect.audio import SAMPLE_RATE, write_audio
from screamdetect.augment import (
    ROBUST,
    SEED,
    AugmentSpec,
    NoiseBank,
    augment_clip,
    augment_dataset,
    augmentation_rates,
    get_preset,
)


def _bank(seed: int = 0) -> NoiseBank:
    r = np.random.default_rng(seed)
    return NoiseBank([(0.05 * r.standard_normal(3 * SAMPLE_RATE)).astype(np.float32),
                      (0.2 * r.standard_normal(SAMPLE_RATE // 2)).astype(np.float32)],  # shorter than a clip: looped
                     ["hiss", "loud"], ["a.wav", "b.wav"])


def _clips(n_pos: int, n_neg: int, dur_s: float = 1.0, seed: int = 0):
    r = np.random.default_rng(seed)
    waves = [sine(float(r.uniform(300, 3000)), dur_s * float(r.uniform(0.7, 1.3)), amp=0.3) for _ in range(n_pos + n_neg)]
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    groups = np.array([f"g{i // 2}" for i in range(n_pos + n_neg)], dtype=object)
    return waves, labels, groups


def _segment(bank: NoiseBank, noise: dict, n: int) -> np.ndarray:
    p = bank.pieces[noise["piece"]]
    return np.resize(np.roll(p, -noise["offset"]), n) if p.size < n else p[noise["offset"]: noise["offset"] + n]


def test_seed_preset_adds_exactly_0_4_times_the_noise_segment():
    bank = _bank()
    waves, labels, groups = _clips(30, 30)
    W, _, _, _, infos = augment_dataset(waves, labels, groups, "seed", bank, copies=1, seed=3, return_info=True)
    assert infos, "the seed preset must augment every scream"
    for k, info in enumerate(infos):
        out = W[len(waves) + k]
        src = waves[info["source"]]
        assert info["noise"] is not None and info["noise"]["scale"] == pytest.approx(0.4)
        base = np.roll(src, info["shift"]) if info["shift"] is not None else src  # the shift is a circular roll
        residual = out - base
        np.testing.assert_allclose(residual, 0.4 * _segment(bank, info["noise"], src.size), atol=1e-6)


def test_seed_preset_noises_every_copy_and_shifts_half_in_both_classes():
    """The study's transformations at the same rates in both classes (the study: noise on 100% of scream copies
    and 20% of the others, shift on screams only)."""
    bank = _bank()
    waves, labels, groups = _clips(300, 600, dur_s=0.1)
    _, _, _, _, infos = augment_dataset(waves, labels, groups, "seed", bank, copies=1, seed=0, return_info=True)
    rates = augmentation_rates(labels, infos, copies=1)
    for cls, n in (("scream", 300), ("not_scream", 600)):
        assert rates[cls]["noise"] == 1.0 and rates[cls]["emitted"] == n
        assert rates[cls]["shift"] == pytest.approx(0.5, abs=0.07)
    shifts = [abs(d["shift"]) / waves[d["source"]].size for d in infos if d["shift"] is not None]
    assert max(shifts) <= 0.2 and max(shifts) > 0.1


def test_robust_snr_is_within_range_measured_on_the_output():
    bank = _bank()
    spec = dataclasses.replace(ROBUST, p_noise_scream=1.0, p_noise_other=1.0, p_gain=0.0, p_filter=0.0,
                               p_shift_scream=0.0, p_shift_other=0.0)
    waves, labels, groups = _clips(40, 40)
    W, _, _, _, infos = augment_dataset(waves, labels, groups, spec, bank, copies=1, seed=5, return_info=True)
    snrs = []
    for k, info in enumerate(infos):
        src = waves[info["source"]]
        # A mix louder than full scale is scaled down as a whole (which keeps the SNR): undo it to get the noise.
        residual = W[len(waves) + k] / info["peak_scale"] - src
        snr = 10 * np.log10(np.mean(src.astype(np.float64) ** 2) / np.mean(residual.astype(np.float64) ** 2))
        assert snr == pytest.approx(info["noise"]["snr_db"], abs=0.01)
        snrs.append(snr)
    assert min(snrs) >= -0.01 and max(snrs) <= 30.01
    assert max(snrs) - min(snrs) > 15  # spread over the range, not one fixed level


def test_robust_rates_are_equal_across_classes():
    bank = _bank()
    waves, labels, groups = _clips(400, 400, dur_s=0.1)
    _, _, _, _, infos = augment_dataset(waves, labels, groups, "robust", bank, copies=1, seed=1, return_info=True)
    rates = augmentation_rates(labels, infos, copies=1)
    for k, p in (("noise", ROBUST.p_noise_scream), ("shift", 0.5), ("gain", ROBUST.p_gain), ("filter", ROBUST.p_filter)):
        assert rates["scream"][k] == pytest.approx(p, abs=0.08), k
        assert rates["not_scream"][k] == pytest.approx(p, abs=0.08), k
        assert abs(rates["scream"][k] - rates["not_scream"][k]) < 0.1, k
    snrs = [d["noise"]["snr_db"] for d in infos if d["noise"]]
    assert 0 <= min(snrs) and max(snrs) <= 30


@pytest.mark.parametrize("preset", ["seed", "robust"])
def test_labels_groups_kept_inputs_untouched_dtype_and_length(preset):
    bank = _bank()
    waves, labels, groups = _clips(10, 20)
    before = [w.copy() for w in waves]
    labels_before, groups_before = labels.copy(), groups.copy()
    W, Y, G, S = augment_dataset(waves, labels, groups, preset, bank, copies=3, seed=0)
    for w, b in zip(waves, before):
        np.testing.assert_array_equal(w, b)
    np.testing.assert_array_equal(labels, labels_before)
    np.testing.assert_array_equal(groups, groups_before)
    assert len(W) == len(Y) == len(G) == len(S) > len(waves)
    np.testing.assert_array_equal(S[: len(waves)], np.arange(len(waves)))
    np.testing.assert_array_equal(Y, labels[S])
    np.testing.assert_array_equal(G, groups[S])
    for k, w in enumerate(W):
        assert w.dtype == np.float32 and w.shape == waves[S[k]].shape
        assert np.isfinite(w).all() and np.max(np.abs(w)) <= 1.0
    # The originals come through unchanged and are copies, not the caller's arrays.
    for k in range(len(waves)):
        np.testing.assert_array_equal(W[k], waves[k])
        assert W[k] is not waves[k]


def test_two_dimensional_input_returns_an_array():
    bank = _bank()
    X = np.stack([sine(440, 0.5), sine(880, 0.5)])
    W, _, _, _ = augment_dataset(X, [1, 0], ["a", "b"], "robust", bank, copies=2, seed=0)
    assert isinstance(W, np.ndarray) and W.dtype == np.float32 and W.shape[1] == X.shape[1]


def test_deterministic_for_a_seed_and_different_across_seeds():
    bank = _bank()
    waves, labels, groups = _clips(8, 8)
    a = augment_dataset(waves, labels, groups, "robust", bank, copies=2, seed=7)
    b = augment_dataset(waves, labels, groups, "robust", bank, copies=2, seed=7)
    c = augment_dataset(waves, labels, groups, "robust", bank, copies=2, seed=8)
    assert len(a[0]) == len(b[0])
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[3], b[3])
    assert any(len(x) != len(y) or not np.array_equal(x, y) for x, y in zip(a[0][16:], c[0][16:]))


def test_a_clip_copy_does_not_depend_on_the_other_clips():
    bank = _bank()
    waves, labels, groups = _clips(4, 4)
    spec = dataclasses.replace(ROBUST, drop_unchanged=False)
    full = augment_dataset(waves, labels, groups, spec, bank, copies=1, seed=2)
    # Clip 5 alone would be index 0; the per-copy RNG is keyed by (seed, copy, index) so compare via augment_clip.
    rng = np.random.default_rng(np.random.SeedSequence([2, 0, 5]))
    alone, _ = augment_clip(waves[5], int(labels[5]), spec, bank, rng)
    np.testing.assert_array_equal(full[0][8 + 5], alone)


def test_shift_is_a_circular_roll():
    bank = _bank()
    x = sine(500, 0.5)
    spec = AugmentSpec(name="shift-only", p_noise_scream=0, p_noise_other=0, p_shift_scream=1.0, p_gain=0, p_filter=0)
    for s in range(5):
        y, info = augment_clip(x, 1, spec, bank, np.random.default_rng(s))
        np.testing.assert_array_equal(y, np.roll(x, info["shift"]))


def test_filters_change_the_spectrum_the_intended_way():
    spec = AugmentSpec(name="filter-only", p_noise_scream=0, p_noise_other=0, p_shift_scream=0, p_shift_other=0,
                       p_gain=0, p_filter=1.0)
    x = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32)
    seen = set()
    for s in range(30):
        y, info = augment_clip(x, 0, spec, None, np.random.default_rng(s))
        spec_x, spec_y = np.abs(np.fft.rfft(x)) ** 2, np.abs(np.fft.rfft(y)) ** 2
        hi = slice(int(7500 / 8000 * spec_x.size), None)
        lo = slice(1, int(40 / 8000 * spec_x.size))
        if info["filter"] == "lowpass":
            assert spec_y[hi].sum() < 0.5 * spec_x[hi].sum()
        if info["filter"] == "highpass":
            assert spec_y[lo].sum() < 0.5 * spec_x[lo].sum()
        seen.add(info["filter"])
    assert seen == {"lowpass", "highpass", "bandpass"}


def test_bad_parameters_are_rejected():
    bank = _bank()
    waves, labels, groups = _clips(2, 2)
    with pytest.raises(ValueError, match="p_gain"):
        AugmentSpec(name="x", p_gain=1.5)
    with pytest.raises(ValueError, match="min_snr_db"):
        AugmentSpec(name="x", min_snr_db=20, max_snr_db=10)
    with pytest.raises(ValueError, match="noise_mode"):
        AugmentSpec(name="x", noise_mode="loud")
    with pytest.raises(ValueError, match="max_shift_fraction"):
        AugmentSpec(name="x", max_shift_fraction=1.5)
    with pytest.raises(ValueError, match="preset"):
        get_preset("heavy")
    with pytest.raises(ValueError, match="copies"):
        augment_dataset(waves, labels, groups, "robust", bank, copies=-1)
    with pytest.raises(ValueError, match="noise_bank"):
        augment_dataset(waves, labels, groups, "seed", None, copies=1)
    with pytest.raises(ValueError, match="same length"):
        augment_dataset(waves, labels[:3], groups, "robust", bank)
    with pytest.raises(ValueError, match="0/1"):
        augment_dataset(waves, [0, 1, 2, 1], groups, "robust", bank)
    with pytest.raises(ValueError, match="pieces"):
        NoiseBank([], [])
    assert get_preset("seed") is SEED


def test_noise_bank_from_a_plain_folder(tmp_path):
    (tmp_path / "rain").mkdir()
    write_audio(tmp_path / "rain" / "r1.wav", sine(200, 1.0, amp=0.1))
    write_audio(tmp_path / "hum.flac", sine(50, 0.5, amp=0.1))
    bank = NoiseBank.from_dir(tmp_path, split=None)
    assert sorted(bank.categories) == ["noise", "rain"]
    seg, _ = bank.segment(3 * SAMPLE_RATE, np.random.default_rng(0))
    assert seg.dtype == np.float32 and seg.size == 3 * SAMPLE_RATE
    with pytest.raises(ValueError, match="not a folder"):
        NoiseBank.from_dir(tmp_path / "missing")


@pytest.mark.corpus
def test_noise_bank_of_the_corpus_uses_only_training_pieces(corpus):
    from screamdetect.scenes import noise_split

    bank = NoiseBank.from_dir(corpus / "noise", split="train")
    split = noise_split(corpus / "noise")
    assert sorted(bank.names) == sorted(p.name for p in split["train"])
    assert not set(bank.names) & {p.name for p in split["test"] + split["val"]}
    assert len(set(bank.categories)) >= 5
    assert all(p.dtype == np.float32 for p in bank.pieces)


@pytest.mark.corpus
def test_presets_on_real_corpus_clips(corpus, corpus_subset):
    """Real clips and the real noise bank: screams all get noise under `seed`, lengths/labels/groups kept."""
    from screamdetect.audio import load_audio
    from screamdetect.data import discover

    clips = discover(corpus_subset).clips[:3] + [c for c in discover(corpus_subset).clips if c.label == 0][:3]
    waves = [load_audio(c.path) for c in clips]
    labels = np.array([c.label for c in clips])
    groups = np.array([c.group for c in clips], dtype=object)
    bank = NoiseBank.from_dir(corpus / "noise", split="train")
    for preset in ("seed", "robust"):
        W, Y, G, S, infos = augment_dataset(waves, labels, groups, preset, bank, copies=2, seed=0, return_info=True)
        np.testing.assert_array_equal(Y, labels[S])
        np.testing.assert_array_equal(G, groups[S])
        assert all(w.dtype == np.float32 and w.size == waves[s].size for w, s in zip(W, S))
        if preset == "seed":
            assert sum(1 for d in infos if labels[d["source"]] == 1 and d["noise"]) == 2 * int(labels.sum())
        for k, d in enumerate(infos):
            if d["noise"] and preset == "robust" and d["gain_db"] is None and d["filter"] is None and not d["shift"]:
                src = waves[d["source"]]
                resid = W[len(waves) + k] / d["peak_scale"] - src
                snr = 10 * np.log10(np.mean(src.astype(np.float64) ** 2) / np.mean(resid.astype(np.float64) ** 2))
                assert -0.01 <= snr <= 30.01
