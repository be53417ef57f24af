"""Site calibration (`screamdetect calibrate-site`): counting false alarms fast, the threshold rule, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from _models import background, burst, write_band_energy_model
from screamdetect.audio import load_audio, write_audio
from screamdetect.cli import app
from screamdetect.detector import Detector, Smoothing, events_from_scores
from screamdetect.site import ExcerptSampler, calibrate_site, count_events, load_screams, poisson_upper


@pytest.mark.parametrize("seed", range(4))
def test_count_events_equals_the_tracker(seed):
    """The island shortcut counts exactly the events of the full smoothing run, for any rule and timeline."""
    rng = np.random.default_rng(seed)
    for _ in range(300):
        s = rng.random(int(rng.integers(0, 80))) ** rng.uniform(0.2, 5)  # from mostly low to mostly high scores
        sm = Smoothing(k=int(rng.integers(1, 4)), n=3, hold_s=float(rng.choice([0.0, 0.25, 0.5, 1.0])),
                       refractory_s=float(rng.choice([0.0, 0.5, 1.0, 2.0])))
        thr = float(rng.choice([0.3, 0.5, 0.8, 0.95]))
        assert count_events(s, thr, sm, 1.0, 0.25) == len(events_from_scores(s, thr, sm, 1.0, 0.25))


def test_poisson_upper_bound():
    # no event in H hours: the 95 % bound is -ln(0.05) / H ("rule of three")
    assert poisson_upper(0, 6.0) == pytest.approx(-math.log(0.05) / 6.0, rel=1e-6)
    assert poisson_upper(0, 6.0) < 0.5 < poisson_upper(0, 5.0)
    assert poisson_upper(3, 1.0) > poisson_upper(2, 1.0) > 2.0
    assert poisson_upper(0, 0.0) == math.inf


def _with_bursts(dur_s: float, bursts: list[tuple[float, float]], seed: int) -> np.ndarray:
    x = background(dur_s, seed)
    for at, amp in bursts:
        b = burst(2.0, amp)
        i = round(at * 16000)
        x[i: i + b.size] += b
    return x


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """120 s of 'scream-free' site audio holding three known sounds the test model scores: one loud chirp
    (score ~1.0) in a.wav, two faint ones (scores 0.25-0.39) in b.flac, nothing in c.wav."""
    d = tmp_path_factory.mktemp("site")
    model = write_band_energy_model(d / "model")
    (d / "in").mkdir()
    write_audio(d / "in" / "a.wav", _with_bursts(40.0, [(10.0, 0.3)], 1))
    write_audio(d / "in" / "b.flac", _with_bursts(40.0, [(8.0, 0.03), (28.0, 0.03)], 2))
    write_audio(d / "in" / "c.wav", background(40.0, 3))
    return d, model


def test_the_row_at_the_detectors_threshold_is_found_for_any_threshold(site):
    """A threshold with more than 6 decimals (--threshold 0.3333333): its own row of the sweep is reported, not
    None (the sweep held it rounded, the lookup wanted it exact)."""
    d, model = site
    paths = sorted(str(p) for p in (d / "in").iterdir())
    for thr in (1 / 3, 0.3):
        res = calibrate_site(Detector.load(model, threshold=thr), paths, max_false_alarms_per_hour=30.0)
        row = res["at_card_threshold"]
        assert row is not None and row["threshold"] == pytest.approx(thr, abs=1e-12)
        assert sum(abs(r["threshold"] - thr) < 1e-9 for r in res["sweep"]) == 1


def test_threshold_is_the_lowest_that_meets_the_target(site):
    d, model = site
    det = Detector.load(model)
    paths = sorted(str(p) for p in (d / "in").iterdir())
    # 120 s = 1/30 h: a target of 30/h allows one false alarm
    res = calibrate_site(det, paths, max_false_alarms_per_hour=30.0)
    assert res["files"] == 3 and res["hours"] == pytest.approx(120 / 3600)
    by_thr = {r["threshold"]: r["false_alarms"] for r in res["sweep"]}
    assert by_thr[0.05] == 3 and by_thr[0.2] == 3  # every chirp fires at a low threshold
    assert by_thr[0.9999] == 1  # the loud one even at the top of the sweep
    t = res["recommended_threshold"]
    assert 0.2 < t <= 0.4  # just above the faint chirps' scores, far below the loud one's
    assert all(n > 1 for thr, n in by_thr.items() if thr < t)
    # the one false alarm left is the loud chirp, found where it is, as `detect --threshold t` finds it
    (fa,) = res["false_alarms_at_recommended"]
    assert fa["path"] == str(d / "in" / "a.wav") and 9.0 <= fa["start_s"] <= 10.0 and 12.0 <= fa["end_s"] <= 13.0
    found = [len(Detector.load(model, threshold=t).scan_file(p).events) for p in paths]
    assert found == [1, 0, 0]
    # no false alarm allowed: no swept threshold is above the loud chirp
    strict = calibrate_site(det, paths, max_false_alarms_per_hour=0.0)
    assert strict["recommended_threshold"] is None and strict["at_card_threshold"]["false_alarms"] == 1  # card: 0.5


def test_conservative_rule_uses_the_upper_bound(site):
    d, model = site
    det = Detector.load(model)
    paths = sorted(str(p) for p in (d / "in").iterdir())
    # 200/h over 1/30 h: the measured rate allows all three chirps (6.7 events), so the lowest swept threshold
    loose = calibrate_site(det, paths, max_false_alarms_per_hour=200.0)
    assert loose["recommended_threshold"] == 0.05 and loose["at_recommended"]["false_alarms"] == 3
    # the 95 % bound allows one (bound 142/h) but not three (232/h): just above the faint chirps again
    strict = calibrate_site(det, paths, max_false_alarms_per_hour=200.0, conservative=True)
    assert strict["at_recommended"]["false_alarms"] == 1 and 0.2 < strict["recommended_threshold"] <= 0.4
    assert strict["at_recommended"]["upper95_per_hour"] <= 200.0
    # with a target of 30/h no count is enough in two minutes (even none: bound 90/h)
    assert calibrate_site(det, paths, 30.0, conservative=True)["recommended_threshold"] is None


def test_unreadable_file_is_reported_and_skipped(site, tmp_path):
    d, model = site
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    seen = []
    res = calibrate_site(Detector.load(model), [str(bad), str(d / "in" / "a.wav")], 30.0,
                         on_error=lambda p, why: seen.append(p))
    assert seen == [str(bad)] and res["failed"][0]["path"] == str(bad) and "cannot decode" in res["failed"][0]["error"]
    assert res["files"] == 1 and res["hours"] == pytest.approx(40 / 3600)


def _cli(args):
    return CliRunner().invoke(app, ["calibrate-site", *map(str, args)])


def test_command_writes_results_and_never_overwrites(site, tmp_path):
    d, model = site
    (tmp_path / "broken.wav").write_bytes(b"junk")
    out = tmp_path / "out"
    res = _cli([d / "in", tmp_path / "broken.wav", tmp_path / "missing.flac", "--model", model, "-o", out,
                "--max-false-alarms-per-hour", 30])
    assert res.exit_code == 1, res.output  # two inputs failed, the rest was calibrated
    saved = json.loads((out / "site.json").read_text())
    assert saved["files"] == 3 and 0.2 < saved["recommended_threshold"] <= 0.4
    assert {f["path"] for f in saved["failed"]} == {str(tmp_path / "broken.wav"), str(tmp_path / "missing.flac")}
    assert (out / "site.png").stat().st_size > 10_000
    assert f"--threshold {saved['recommended_threshold']:g}" in res.stdout
    assert "too little audio" in res.stderr  # 2 minutes cannot show 30/h... at 95 % confidence
    assert "lowest threshold swept" not in res.stderr
    loose = _cli([d / "in", "--model", model, "-o", tmp_path / "loose", "--max-false-alarms-per-hour", 200])
    assert loose.exit_code == 0 and "lowest threshold swept" in loose.stderr  # all three chirps allowed: the floor
    before = (out / "site.json").read_bytes()
    again = _cli([d / "in", "--model", model, "-o", out, "--max-false-alarms-per-hour", 0.0])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert (out / "site.json").read_bytes() == before
    forced = _cli([d / "in", "--model", model, "-o", out, "--max-false-alarms-per-hour", 0.0, "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "site.json").read_text())["recommended_threshold"] is None
    assert "no swept threshold" in forced.stderr
    (out / "site.png").unlink()
    (out / "site.png").mkdir()  # where the plot goes, a folder: refused before any work, with --force too
    (out / "site.png" / "mine.txt").write_text("mine")
    blocked = _cli([d / "in", "--model", model, "-o", out, "--max-false-alarms-per-hour", 0.0, "--force"])
    assert blocked.exit_code == 2 and "site.png: is a folder" in blocked.stderr and "Traceback" not in blocked.output
    assert (out / "site.png" / "mine.txt").read_text() == "mine"


def test_a_file_given_twice_is_counted_once_and_a_minute_is_the_least(site, tmp_path):
    """The same file under two spellings would double its hours and false alarms (and halve the bound): it is
    counted once, with a warning. Under a minute of audio, no threshold is recommended (before: one sample gave
    "use it: --threshold 0.05")."""
    import os

    d, model = site
    a = d / "in" / "a.wav"
    once = _cli([d / "in", "--model", model, "-o", tmp_path / "once", "--max-false-alarms-per-hour", 30])
    twice = _cli([d / "in", a, os.path.relpath(a), "--model", model, "-o", tmp_path / "twice",
                  "--max-false-alarms-per-hour", 30])
    assert once.exit_code == twice.exit_code == 0, twice.output
    assert "given more than once, counted once" in twice.stderr
    j1, j2 = (json.loads((tmp_path / n / "site.json").read_text()) for n in ("once", "twice"))
    assert j1["files"] == j2["files"] == 3 and j2["hours"] == j1["hours"] and j2["sweep"] == j1["sweep"]
    write_audio(tmp_path / "short.wav", background(30.0))
    res = _cli([tmp_path / "short.wav", "--model", model, "-o", tmp_path / "short"])
    assert res.exit_code == 2 and "30.0 s of site audio is too little" in " ".join(res.stderr.split())
    assert "use it" not in res.output and not (tmp_path / "short").exists()


def test_command_with_nothing_readable_fails_clearly(site, tmp_path):
    d, model = site
    res = _cli([tmp_path / "missing.wav", "--model", model, "-o", tmp_path / "o"])
    assert res.exit_code == 2 and "no input could be read" in res.stderr
    assert not (tmp_path / "o" / "site.json").exists()
    (tmp_path / "a_file").write_text("keep me")
    res = _cli([d / "in", "--model", model, "-o", tmp_path / "a_file"])
    assert res.exit_code == 2 and "must be a folder" in res.stderr and (tmp_path / "a_file").read_text() == "keep me"
    for bad in ("nan", "-1"):
        res = _cli([d / "in", "--model", model, "-o", tmp_path / "o", "--max-false-alarms-per-hour", bad])
        assert res.exit_code == 2 and "must be a number >= 0" in res.stderr and "Traceback" not in res.output


def test_shipped_model_on_real_noise_agrees_with_detect(corpus, tmp_path):
    """Real audio: three noise-bank pieces; the count at the card's threshold is what `detect` finds there."""
    pieces = sorted((corpus / "noise").rglob("*.flac"))[:3]
    det = Detector.load()
    res = calibrate_site(det, [str(p) for p in pieces])
    assert res["hours"] == pytest.approx(sum(load_audio(p).size for p in pieces) / 16000 / 3600, rel=1e-6)
    found = sum(len(det.scan_file(p).events) for p in pieces)
    assert res["at_card_threshold"]["false_alarms"] == found
    assert res["at_card_threshold"]["card_val_recall"] == pytest.approx(det.calibration["val_recall"], abs=1e-3)
    assert all(r["card_val_recall"] is not None for r in res["sweep"])


def test_excerpt_sampler_weights_blocks_by_length():
    picks = 0
    for seed in range(300):
        sampler = ExcerptSampler(1, seed=seed)
        for i in range(10):
            sampler.offer(np.full(5 * 16000, i, np.float32))  # ten 5 s blocks
        sampler.offer(np.full(50 * 16000, 99, np.float32))  # one 50 s block: half of all the audio
        sampler.offer(np.zeros(16000, np.float32))  # 1 s: under the 5 s minimum, never kept
        (kept,) = sampler.excerpts()
        assert kept.size >= 5 * 16000
        picks += kept[0] == 99
    assert 0.4 < picks / 300 < 0.6
    three = ExcerptSampler(3, seed=0)
    for i in range(10):
        three.offer(np.full(6 * 16000, i, np.float32))
    firsts = [int(b[0]) for b in three.excerpts()]
    assert len(firsts) == 3 and firsts == sorted(firsts)  # in the order seen


@pytest.fixture(scope="module")
def screams(tmp_path_factory):
    """Two 'scream' clips for the test model (a chirp with silence around it) and one that is not audio."""
    d = tmp_path_factory.mktemp("screams")
    pad = np.zeros(8000, np.float32)
    write_audio(d / "s1.wav", np.concatenate([pad, burst(2.0, 0.3), pad]))
    write_audio(d / "s2.flac", np.concatenate([pad, burst(1.5, 0.1, 3000.0, 6000.0), pad]))
    (d / "bad.wav").write_bytes(b"junk")
    return d


def test_site_recall_of_inserted_screams(site, screams):
    """The test model finds a chirp 10 dB or more above the site background at 0.8 (scores >= 0.9), not at
    5 dB (~0.6); at 0.2 also at 5 dB, never at 0 dB (~0.1)."""
    d, model = site
    bad = []
    clips = load_screams([screams / "s1.wav", screams / "s2.flac", screams / "bad.wav"],
                         on_error=lambda p, why: bad.append(p))
    assert [n for n, _ in clips] == [str(screams / "s1.wav"), str(screams / "s2.flac")]
    assert bad == [str(screams / "bad.wav")]
    res = calibrate_site(Detector.load(model), [str(d / "in" / "c.wav")], 30.0, screams=clips)
    ins = res["inserted_screams"]
    assert ins["trials"] == 8 and ins["skipped_silent"] == 0 and ins["excerpts"] == 2  # 40 s file: 20 s blocks
    rows = {r["threshold"]: r for r in res["sweep"]}
    assert rows[0.8]["site_recall_by_snr"] == {"0": 0.0, "5": 0.0, "10": 1.0, "20": 1.0}
    assert rows[0.2]["site_recall_by_snr"] == {"0": 0.0, "5": 1.0, "10": 1.0, "20": 1.0}
    assert rows[0.8]["site_recall"] == 0.5


def test_no_site_recall_over_digital_silence(site, screams, tmp_path):
    _, model = site
    write_audio(tmp_path / "silent.wav", np.zeros(30 * 16000, np.float32))
    res = calibrate_site(Detector.load(model), [str(tmp_path / "silent.wav")], 30.0,
                         screams=load_screams([screams / "s1.wav"]))
    assert res["inserted_screams"]["trials"] == 0 and res["inserted_screams"]["skipped_silent"] == 4
    assert all(r["site_recall"] is None for r in res["sweep"])


def test_command_with_screams(site, screams, tmp_path):
    d, model = site
    res = _cli([d / "in", "--screams", screams, "--model", model, "-o", tmp_path / "o",
                "--max-false-alarms-per-hour", 30])
    assert res.exit_code == 1, res.output  # bad.wav among the screams
    saved = json.loads((tmp_path / "o" / "site.json").read_text())
    assert saved["inserted_screams"]["trials"] == 8
    assert [f["path"] for f in saved["failed"]] == [str(screams / "bad.wav")]
    assert "of the screams inserted here" in res.stdout
    res = _cli([d / "in", "--screams", screams / "bad.wav", "--model", model, "-o", tmp_path / "o2"])
    assert res.exit_code == 2 and "none of the --screams clips could be read" in res.stderr


def test_help_paragraphs_are_reflowed():
    """--help shows each docstring paragraph as one paragraph, not cut at the source's 120 columns."""
    res = CliRunner().invoke(app, ["calibrate-site", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "A quiet site (a ward at night) can take a lower threshold" in res.stdout


def test_every_snr_is_tried_on_every_kind_of_excerpt():
    """4 excerpts and 4 SNRs: trial j took excerpt j % 4, so every 0 dB trial fell on the first excerpt and
    recall per SNR measured excerpts. Each excerpt now serves as many trials, in a random order."""
    from types import SimpleNamespace

    from screamdetect.site import insertion_trials

    rng = np.random.default_rng(0)
    levels = [0.001, 0.002, 0.004, 0.008]  # the excerpt is known from its level before the scream
    excerpts = [(lv * rng.standard_normal(10 * 16000)).astype(np.float32) for lv in levels]
    seen = []

    def score_windows(a):
        seen.append(int(np.argmin([abs(np.std(a[:8000]) - lv) for lv in levels])))
        return np.zeros(37, np.float32)

    det = SimpleNamespace(score_windows=score_windows, window_s=1.0, hop_s=0.25, smoothing=Smoothing())
    screams = [(f"s{i}", burst(1.0, amp=0.3)) for i in range(8)]
    trials, skipped = insertion_trials(det, excerpts, screams, snrs_db=(0.0, 5.0, 10.0, 20.0), seed=0)
    assert skipped == 0 and len(trials) == 32
    by_snr = {}
    for t, e in zip(trials, seen):
        by_snr.setdefault(t.snr_db, set()).add(e)
    assert all(len(v) >= 2 for v in by_snr.values()), by_snr
    assert sorted(seen.count(e) for e in range(4)) == [8, 8, 8, 8]
