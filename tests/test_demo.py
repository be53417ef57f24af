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
