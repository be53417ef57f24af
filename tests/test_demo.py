"""The demo: scene + detector + PNG; the synthetic scene's ground truth is where the screams are."""

import json

import numpy as np

from _models import write_band_energy_model
from screamdetect.audio import SAMPLE_RATE
from screamdetect.demo import run_demo, synthetic_scene


def test_synthetic_scene_has_four_screams_at_known_snrs():
    s = synthetic_scene(seed=1)
    assert s.duration_s == 60.0 and s.audio.dtype == np.float32
    assert [e.snr_db for e in s.events] == [20.0, 10.0, 5.0, 0.0]
    for e in s.events:  # the scream region is louder than the second before it
        a = s.audio[int(e.start_s * SAMPLE_RATE): int(e.end_s * SAMPLE_RATE)]
        b = s.audio[int((e.start_s - 1.5) * SAMPLE_RATE): int((e.start_s - 0.5) * SAMPLE_RATE)]
        assert np.mean(a ** 2) > np.mean(b ** 2)


def test_a_shorter_synthetic_scene_holds_the_screams_that_fit():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # screams placed past the end gave "Mean of empty slice"
        s = synthetic_scene(30.0, seed=1)
    assert s.duration_s == 30.0 and [e.snr_db for e in s.events] == [20.0, 10.0]
    assert all(e.end_s <= 30.0 for e in s.events)


def test_demo_without_corpus_is_labelled_synthetic_and_finds_the_loud_scream(tmp_path):
    model = write_band_energy_model(tmp_path / "m")
    res = run_demo(tmp_path / "no_corpus_here", tmp_path / "out", model=model)
    assert "SYNTHETIC" in res["source"] and f"no corpus at {tmp_path / 'no_corpus_here'}" in res["source"]
    assert (tmp_path / "out" / "demo.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "out" / "events.json").read_text())
    assert saved["truth"] == res["truth"]
    loud = res["truth"][0]
    assert any(e["start_s"] <= loud["end_s"] and e["end_s"] >= loud["start_s"] for e in res["events"])


def test_demo_command_never_writes_into_a_users_folder(tmp_path):
    """`demo --out` a folder of the user's (here holding their own events.json and demo.png): refused, files kept;
    a folder holding an earlier demo is reused (what `make demo` does every time)."""
    from typer.testing import CliRunner

    from screamdetect.cli import app

    model = write_band_energy_model(tmp_path / "m")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "events.json").write_text('{"my": "events"}')
    (mine / "demo.png").write_text("my plot")
    args = ["demo", "--corpus", str(tmp_path / "none"), "--model", str(model)]
    res = CliRunner().invoke(app, [*args, "--out", str(mine)])
    assert res.exit_code == 2 and "holds no earlier demo" in " ".join(res.output.split())
    assert (mine / "events.json").read_text() == '{"my": "events"}' and (mine / "demo.png").read_text() == "my plot"
    for _ in range(2):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "demo")])
        assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "demo" / "events.json").read_text())["truth"]
    res = CliRunner().invoke(app, [*args, "--seed", "-1", "--out", str(tmp_path / "d2")])
    assert res.exit_code == 2 and "--seed must be" in res.output


def test_demo_on_corpus_uses_test_clips(corpus, tmp_path):
    from screamdetect.data import SplitSpec, discover, split_clips

    model = write_band_energy_model(tmp_path / "m")
    res = run_demo(corpus, tmp_path / "out", model=model)
    assert res["source"] == "corpus test split" and len(res["truth"]) == 4
    ds = discover(corpus)
    assign = split_clips(ds.clips, SplitSpec())
    test_names = {c.path.rsplit("/", 1)[-1] for c in ds.clips if assign[c.path] == "test" and c.label == 1}
    assert {t["clip"] for t in res["truth"]} <= test_names


def test_best_window_score_takes_the_windows_that_hold_the_scream():
    from screamdetect.demo import best_window_score

    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3])  # window i spans [0.25 i, 0.25 i + 1]
    assert best_window_score(scores, 0.25, 1.0, 1.6, 1.7) == 0.8  # windows 3-4 (window 1, 0.9, ends at 1.25)
    assert best_window_score(scores, 0.25, 1.0, 0.0, 0.2) == 0.1  # window 0 only
    assert best_window_score(scores, 0.25, 1.0, 9.0, 9.5) == 0.0  # past the last window


def test_match_truth_gives_one_event_to_one_scream_and_never_an_event_that_ended_before_onset():
    from screamdetect.demo import match_truth

    truth = [{"start_s": 1.0, "end_s": 2.0}, {"start_s": 2.5, "end_s": 3.0}, {"start_s": 8.0, "end_s": 9.0}]
    events = [{"start_s": 0.5, "end_s": 3.2}, {"start_s": 6.0, "end_s": 7.5}]
    # the long event covers both first screams but finds only the first; the second ends before the third's onset
    assert match_truth(truth, events) == [0, None, None]


def test_demo_shows_each_screams_best_score_and_a_looser_operating_point(tmp_path):
    """With a calibration sweep in the card, the demo also says what the 5 false alarms/h point finds on the scene."""
    model = write_band_energy_model(tmp_path / "m", threshold=0.999)
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["calibration"] = {"threshold": 0.999, "sweep": [[0.3, 4.0, 0.9], [0.999, 0.0, 0.1]]}
    card_path.write_text(json.dumps(card))
    res = run_demo(tmp_path / "no_corpus_here", tmp_path / "out", model=model)
    assert res["events"] == []  # nothing reaches 0.999
    loud = res["truth"][0]
    assert 0.3 < loud["best_window_score"] < 0.999
    lo = res["looser"]
    assert lo["threshold"] == 0.3 and lo["max_false_alarms_per_hour"] == 5.0 and lo["found"] >= 1
    assert json.loads((tmp_path / "out" / "events.json").read_text())["looser"] == lo
    # without a sweep there is no looser point to show
    del card["calibration"]
    card_path.write_text(json.dumps(card))
    assert run_demo(tmp_path / "no_corpus_here", tmp_path / "out2", model=model)["looser"] is None
