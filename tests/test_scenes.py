"""Scenes: noise split by piece, scream insertion at a known SNR and time, scream-free audio."""

import numpy as np
import pytest

from conftest import sine
from screamdetect import scenes
from screamdetect.audio import SAMPLE_RATE


def test_active_region_finds_the_loud_part():
    x = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    x[SAMPLE_RATE: 2 * SAMPLE_RATE] = sine(1000, 1.0)
    a0, a1 = scenes.active_region(x)
    assert abs(a0 - SAMPLE_RATE) <= 320 and abs(a1 - 2 * SAMPLE_RATE) <= 320


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_insert_scream_hits_the_snr(rng, snr):
    bg = (0.01 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32)
    before = bg.copy()
    s = sine(1500, 1.0, amp=0.2)
    s0, s1 = scenes.insert_scream(bg, s, 2 * SAMPLE_RATE, snr)
    assert (s0, s1) == (2 * SAMPLE_RATE, 3 * SAMPLE_RATE) or abs(s0 - 2 * SAMPLE_RATE) < 400
    added = bg - before
    p_s = np.mean(added[s0:s1].astype(np.float64) ** 2)
    p_b = np.mean(before[s0:s1].astype(np.float64) ** 2)
    assert 10 * np.log10(p_s / p_b) == pytest.approx(snr, abs=0.1)


def test_event_scenes_hold_every_scream_at_every_snr(rng):
    screams = [(f"s{i}", sine(800 + 100 * i, 1.0, amp=0.3)) for i in range(3)]
    noises = [(0.02 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32)]
    spec = scenes.SceneSpec(duration_s=30.0, snrs_db=(0.0, 10.0), min_gap_s=4.0, seed=3)
    out = list(scenes.event_scenes(screams, [], noises, spec, repeats=2))
    events = [e for s in out for e in s.events]
    assert len(events) == 3 * 2 * 2
    assert sorted({e.snr_db for e in events}) == [0.0, 10.0]
    for s in out:
        assert s.audio.dtype == np.float32 and np.abs(s.audio).max() <= 1.0
        for e in s.events:
            assert 0 <= e.start_s < e.end_s <= s.duration_s
    # deterministic for a seed
    again = list(scenes.event_scenes(screams, [], noises, spec, repeats=2))
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(out, again))


def test_scream_free_scenes_cover_the_hours(rng):
    noises = [(0.02 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)]
    spec = scenes.SceneSpec(duration_s=20.0, min_gap_s=2.0)
    out = list(scenes.scream_free_scenes([sine(300, 0.5)], noises, hours=60 / 3600, spec=spec))
    assert len(out) == 3 and all(not s.events for s in out)
    assert sum(s.duration_s for s in out) == pytest.approx(60.0)


def test_noise_split_is_disjoint_and_covers_the_bank(corpus):
    sp = scenes.noise_split(corpus / "noise")
    all_pieces = [p for v in sp.values() for p in v]
    assert len(all_pieces) == len(set(all_pieces)) == len(list((corpus / "noise").glob("*.flac")))
    assert sp["val"] and sp["test"] and len(sp["train"]) > len(sp["test"])
    assert sp == scenes.noise_split(corpus / "noise")


def test_noise_split_by_category_keeps_each_piece_in_its_split(corpus):
    import csv

    with open(corpus / "noise" / "manifest.csv", newline="") as f:
        cat = {r["path"]: r["category"] for r in csv.DictReader(f)}
    full = scenes.noise_split(corpus / "noise")
    quiet = scenes.noise_split(corpus / "noise", categories=["rain", "wind"])
    for k in full:
        assert quiet[k] == [p for p in full[k] if cat[p.name] in ("rain", "wind")]
    assert quiet["test"] and {cat[p.name] for p in quiet["train"]} == {"rain", "wind"}
    with pytest.raises(ValueError, match=r"\['lava'\] are not in .*it has: .*birds"):
        scenes.noise_split(corpus / "noise", categories=["rain", "lava"])


@pytest.mark.parametrize("piece_s", [30.0, 7.0, 0.5])
def test_a_bed_holds_its_level_to_the_end(piece_s):
    """A noise bed is at the level it was given over its whole length, the last 50 ms too, and logs only the
    pieces it is made of. Before, the last piece stepped back by the cross-fade and the loop went on: ~800
    ever-shorter pieces at the bed level piled into the last 50 ms (-12 dBFS in a -35 dBFS bed, peak 0.98), and
    the peak fitting then turned the whole scene down."""
    noise = [(0.1 * np.random.default_rng(1).standard_normal(round(piece_s * SAMPLE_RATE))).astype(np.float32)]
    spec = scenes.SceneSpec(duration_s=20.0, clips_per_minute=0, bed_level_dbfs=(-35.0, -35.0))
    log = []
    a = scenes.background(noise, [], 20.0, np.random.default_rng(0), spec, log)
    db = lambda x: 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert a.size == 20 * SAMPLE_RATE
    assert db(a[SAMPLE_RATE: 19 * SAMPLE_RATE]) == pytest.approx(-35.0, abs=1.0)
    assert db(a[-800:]) == pytest.approx(-35.0, abs=2.0)
    # pieces of at most piece_s (from a random offset in the first half), overlapping by 50 ms
    assert len(log) <= np.ceil(20.0 / (piece_s / 2 - 0.05)) + 1
    assert all(s.end_s - s.start_s > 0.05 for s in log[:-1])


def test_scene_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="duration_s"):
        scenes.SceneSpec(duration_s=5.0, min_gap_s=3.0)
    with pytest.raises(ValueError, match="clips_per_minute"):
        scenes.SceneSpec(clips_per_minute=-1)


def test_scenes_are_never_clipped_and_keep_their_snr(rng):
    # a sparse, loud negative (a click train) and a scream at 20 dB: the scene is scaled down, not clipped
    clicks = np.zeros(SAMPLE_RATE, dtype=np.float32)
    clicks[::4000] = 1.0
    noises = [(0.05 * rng.standard_normal(30 * SAMPLE_RATE)).astype(np.float32)]
    spec = scenes.SceneSpec(duration_s=20.0, snrs_db=(20.0,), min_gap_s=4.0, clips_per_minute=30.0)
    out = list(scenes.event_scenes([("s", sine(1000, 1.0, amp=0.9))], [clicks], noises, spec))
    for s in out:
        assert np.abs(s.audio).max() <= scenes.PEAK_MAX + 1e-6
        assert len(np.unique(np.round(np.abs(s.audio), 6))) > 100  # not a clipped plateau
    bg = scenes.background(noises, [clicks], 20.0, rng, spec)
    assert np.abs(bg).max() <= scenes.PEAK_MAX + 1e-6


def test_a_scene_says_how_far_it_was_turned_down():
    """A 20 dB scream over a -15 dBFS bed cannot fit under full scale: the whole scene is turned down and says by
    how much (gain_db), so the bed away from the scream sits at its level + gain_db; a quiet scene keeps 0 dB."""
    noise = [(0.1 * np.random.default_rng(1).standard_normal(30 * SAMPLE_RATE)).astype(np.float32)]
    db = lambda x: 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    for snr, bed in ((20.0, -15.0), (0.0, -45.0)):
        spec = scenes.SceneSpec(duration_s=20.0, snrs_db=(snr,), min_gap_s=4.0, clips_per_minute=0,
                                bed_level_dbfs=(bed, bed))
        (scene,) = scenes.event_scenes([("s", sine(1000, 1.0, amp=0.9))], [], noise, spec)
        if snr == 20.0:
            assert scene.gain_db < -3.0 and np.abs(scene.audio).max() == pytest.approx(scenes.PEAK_MAX, rel=1e-3)
        else:
            assert scene.gain_db == 0.0
        assert db(scene.audio[-3 * SAMPLE_RATE:]) == pytest.approx(bed + scene.gain_db, abs=1.0)
    free = list(scenes.scream_free_scenes([], noise, 20.0 / 3600, scenes.SceneSpec(duration_s=20.0,
                                                                                 clips_per_minute=0)))
    assert len(free) == 1 and free[0].gain_db == 0.0


@pytest.mark.parametrize("rt60, drr_db", [(0.6, 0.0), (0.3, 6.0)])
def test_room_impulse_response_decays_at_rt60_and_keeps_the_level(rt60, drr_db):
    from screamdetect.scenes import reverberate, room_impulse_response

    rir = room_impulse_response(rt60, drr_db, np.random.default_rng(0))
    assert rir.size == int(rt60 * SAMPLE_RATE) and rir[0] == 1.0
    assert 10 * np.log10(np.sum(rir[1:].astype(np.float64) ** 2)) == pytest.approx(-drr_db, abs=1e-3)
    # the tail's energy envelope falls 60 dB over rt60: compare 10 ms around 10 % and 90 % of it
    e = rir[1:].astype(np.float64) ** 2
    k, w = int(0.1 * e.size), 160
    drop = 10 * np.log10(e[k: k + w].mean() / e[-k - w: -k].mean())
    assert drop == pytest.approx(60 * 0.8, abs=6)
    # a click comes out as the response itself (scaled to the same RMS); noise keeps its RMS and length
    click = np.zeros(SAMPLE_RATE, np.float32)
    click[100] = 1.0
    y = reverberate(click, rir)
    assert np.corrcoef(y[100: 100 + rir.size], rir)[0, 1] > 0.9999
    x = (0.1 * np.random.default_rng(1).standard_normal(SAMPLE_RATE)).astype(np.float32)
    z = reverberate(x, rir)
    assert z.size == x.size and z.dtype == np.float32
    assert np.sqrt(np.mean(z ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-5)
    with pytest.raises(ValueError, match="rt60_s"):
        room_impulse_response(0.0, 0.0, np.random.default_rng(0))


def test_background_log_says_where_each_sound_is_without_changing_the_audio():
    """The log of a background names each placed clip where its energy is; logging leaves the audio as it was."""
    noises = [np.zeros(SAMPLE_RATE * 3, np.float32)]  # a silent bed: every sound heard is a clip
    tone, hum = sine(2000, 0.5, amp=0.5), sine(300, 0.8, amp=0.5)
    spec = scenes.SceneSpec(duration_s=30.0, clips_per_minute=8.0)
    log: list[scenes.Sound] = []
    a = scenes.background(noises, [tone, hum], 30.0, np.random.default_rng(3), spec, log)
    b = scenes.background(noises, [tone, hum], 30.0, np.random.default_rng(3), spec)
    assert np.array_equal(a, b)
    clips = [s for s in log if s.kind == "clip"]
    beds = [s for s in log if s.kind == "noise"]
    assert clips and {s.index for s in clips} <= {0, 1} and all(s.index == 0 for s in beds)
    assert beds[0].start_s == 0 and beds[-1].end_s == pytest.approx(30.0)
    assert all(-35 <= s.level_dbfs <= -15 for s in clips)  # SceneSpec's clip levels
    for s in clips:  # the clip's samples are loud exactly inside its logged interval
        i0, i1 = round(s.start_s * SAMPLE_RATE), round(s.end_s * SAMPLE_RATE)
        assert i1 - i0 == (tone if s.index == 0 else hum).size
        assert np.mean(a[i0:i1] ** 2) > 1e-5
    loud = np.abs(a) > 0  # every sound sample lies under some logged clip
    covered = np.zeros(a.size, bool)
    for s in clips:
        covered[round(s.start_s * SAMPLE_RATE): round(s.end_s * SAMPLE_RATE)] = True
    assert not np.any(loud & ~covered)


def test_cause_of_picks_the_clip_that_puts_most_energy_into_the_detection():
    S = scenes.Sound
    sounds = [S(0, 10, "noise", 0, -20.0), S(10, 20, "noise", 1, -30.0), S(3, 5, "clip", 7, -30.0),
              S(4.5, 9, "clip", 2, -30.0)]
    assert scenes.cause_of(sounds, 4.0, 6.0).index == 2  # same level: 1.5 s of clip 2 against 1 s of clip 7
    assert scenes.cause_of(sounds, 3.0, 4.2).index == 7
    louder = sounds[:2] + [S(3, 5, "clip", 7, -20.0), S(4.5, 9, "clip", 2, -30.0)]
    assert scenes.cause_of(louder, 4.0, 6.0).index == 7  # 10 dB louder over 1 s beats 1.5 s
    assert scenes.cause_of(sounds, 12.0, 13.0) == sounds[1]  # no clip there: the bed's piece
    assert scenes.cause_of(sounds, 25.0, 26.0) is None
