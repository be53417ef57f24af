"""Event metrics: matching, recall per SNR, false alarms per hour, latency — known answers."""

from pathlib import Path
from types import SimpleNamespace as E

import numpy as np
import pytest

from screamdetect.evaluate import event_metrics, match_events


def gt(s, e, snr):
    return E(start_s=s, end_s=e, snr_db=snr)


def test_match_events_hits_misses_and_false_alarms():
    truth = [gt(10, 12, 0.0), gt(30, 31, 10.0), gt(50, 52, 10.0)]
    det = [E(start_s=9.5, end_s=12.5, alert_s=10.6), E(start_s=20, end_s=21),  # false alarm
           E(start_s=50.2, end_s=51, alert_s=50.9), E(start_s=51.5, end_s=52.2)]  # a split event, not a FA
    m, fa = match_events(truth, det, tolerance_s=1.0)
    assert [x.detected for x in m] == [True, False, True]
    assert m[0].latency_s == pytest.approx(0.6) and m[2].latency_s == pytest.approx(0.9)
    assert fa == 1


def test_tolerance_decides_a_near_miss():
    truth = [gt(10, 11, 5.0)]
    det = [E(start_s=11.8, end_s=12.5)]
    assert not match_events(truth, det, tolerance_s=0.5)[0][0].detected
    assert match_events(truth, det, tolerance_s=1.0)[0][0].detected
    with pytest.raises(ValueError, match="tolerance_s"):
        match_events(truth, det, tolerance_s=-1)


def test_event_metrics_by_snr_and_rate():
    truth = [gt(i * 10, i * 10 + 1, snr) for i, snr in enumerate([0, 0, 10, 10])]
    det = [E(start_s=0.2, end_s=1, alert_s=0.5), E(start_s=20, end_s=21, alert_s=20.25),
           E(start_s=30, end_s=31, alert_s=31.0)]
    m, _ = match_events(truth, det)
    r = event_metrics(m, false_alarms=3, scream_free_hours=2.0)
    assert r["recall_by_snr"] == {"0": 0.5, "10": 1.0}
    assert r["event_recall"] == 0.75
    assert r["false_alarms_per_hour"] == 1.5
    assert r["latency_median_s"] == pytest.approx(0.5)
    assert r["latency_p95_s"] == pytest.approx(np.percentile([0.5, 0.25, 1.0], 95))


def test_evaluate_events_on_a_kind_of_site(corpus, tmp_path):
    """Real corpus, shipped model: scenes of ambience only (no non-screams, rain and wind pieces of the TEST noise),
    every test scream once per SNR; the ground truth written beside each scene holds exactly those screams."""
    import json

    from screamdetect import Detector
    from screamdetect.data import SplitSpec, discover, load_or_make_split
    from screamdetect.evaluate import evaluate_events
    from screamdetect.scenes import SceneSpec, noise_split

    split_file = tmp_path / "split.csv"
    res = evaluate_events(Detector.load(), corpus, out_dir=tmp_path / "ev", split_file=split_file, repeats=1,
                          free_hours=300 / 3600, scene_spec=SceneSpec(clips_per_minute=0), noise_categories=["rain", "wind"])
    n_test = sum(c.label == 1 for c in load_or_make_split(discover(corpus), split_file, SplitSpec())["test"])
    assert res["events"] == 4 * n_test and res["events_by_snr"] == {s: n_test for s in ("0", "5", "10", "20")}
    assert res["clips_per_minute"] == 0 and res["noise_categories"] == ["rain", "wind"]
    assert res["test_noise_pieces"] == len(noise_split(corpus / "noise", categories=["rain", "wind"])["test"]) >= 2
    assert res["scream_free_hours"] == pytest.approx(300 / 3600)  # one 5 min scene
    truth = [json.loads(p.read_text()) for p in sorted((tmp_path / "ev" / "scenes").glob("*.json"))]
    assert sum(len(t["events"]) for t in truth) == 4 * n_test
    rain_wind = {q.name for q in noise_split(corpus / "noise", categories=["rain", "wind"])["test"]}
    beds = [x for t in truth for x in t["sounds"]]  # what each scene's background is made of, by file
    assert beds and all(x["kind"] == "noise" and Path(x["name"]).name in rain_wind for x in beds)
    assert all(x["start_s"] < x["end_s"] <= t["duration_s"] + 1e-6 for t in truth for x in t["sounds"])
    with pytest.raises(ValueError, match="not in"):
        evaluate_events(Detector.load(), corpus, split_file=split_file, noise_categories=["lava"])


class _BeepDetector:
    """A detector with a known answer: an event wherever a 2 kHz tone is loud (0.1 s frames)."""

    threshold = 0.5

    def detect_with_alerts(self, audio):
        from screamdetect.audio import SAMPLE_RATE

        n = SAMPLE_RATE // 10
        frames = audio[: audio.size // n * n].reshape(-1, n)
        spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        band = spec[:, 195:206].sum(axis=1)  # 1950-2050 Hz (10 Hz bins)
        on = band > 0.5 * spec.sum(axis=1)
        events, i = [], 0
        while i < on.size:
            if on[i]:
                j = i
                while j < on.size and on[j]:
                    j += 1
                events.append(E(start_s=i / 10, end_s=j / 10, alert_s=i / 10, peak_score=1.0))
                i = j
            i += 1
        return events


def _beep_dataset(tmp_path, broken_scream: bool = False, split: str = "test", scream_hz: float = 700,
                  beep_hz: float = 2000) -> None:
    """tmp_path/data: 3 screams (tones of 700-900 Hz, or scream_hz + 0/100/200), 3 beeps (2 kHz or beep_hz,
    category beep), 3 hums (300 Hz), a noise bank of 3 quiet noise pieces; tmp_path/split.csv puts every clip in
    `split`. broken_scream: one more scream, aaa_bad.wav (first in name order), that is not audio."""
    import csv

    from conftest import sine
    from screamdetect.audio import write_audio

    rng = np.random.default_rng(0)
    (tmp_path / "data" / "noise").mkdir(parents=True)
    rows = []
    if broken_scream:
        (tmp_path / "data" / "aaa_bad.wav").write_text("not audio")
        rows.append(("aaa_bad.wav", 1, "scream"))
    for i in range(3):
        write_audio(tmp_path / "data" / f"scream{i}.wav", sine(scream_hz + 100 * i, 1.5, amp=0.3))
        rows.append((f"scream{i}.wav", 1, "scream"))
    for i in range(3):
        write_audio(tmp_path / "data" / f"beep{i}.wav", sine(beep_hz, 0.4 + 0.1 * i, amp=0.3))
        write_audio(tmp_path / "data" / f"hum{i}.wav", sine(300, 1.0, amp=0.3))
        rows += [(f"beep{i}.wav", 0, "beep"), (f"hum{i}.wav", 0, "hum")]
    with open(tmp_path / "data" / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "category", "source", "group"])
        w.writerows([(p, y, c, "synthetic", p) for p, y, c in rows])
    with open(tmp_path / "split.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "split")] + [(p, split) for p, _, _ in rows])
    with open(tmp_path / "data" / "noise" / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "category")] + [(f"n{i}.wav", "rain") for i in range(3)])
    for i in range(3):
        write_audio(tmp_path / "data" / "noise" / f"n{i}.wav", (0.01 * rng.standard_normal(80000)).astype(np.float32))


def test_an_unreadable_test_scream_is_listed_and_never_named_for_another(tmp_path):
    """A test scream that cannot be decoded is reported and left out; the screams inserted into the scenes are
    named by their own files (a failure must not shift the names of the ones after it)."""
    import json

    from screamdetect.evaluate import evaluate_events

    _beep_dataset(tmp_path, broken_scream=True)
    res = evaluate_events(_BeepDetector(), tmp_path / "data", out_dir=tmp_path / "ev", split_file=tmp_path / "split.csv",
                          repeats=1, free_hours=60 / 3600)
    assert [Path(u["path"]).name for u in res["unreadable"]] == ["aaa_bad.wav"] and res["unreadable"][0]["error"]
    assert res["test_screams"] == 3 and res["events"] == 3 * 4
    named = [e["clip"] for p in (tmp_path / "ev" / "scenes").glob("*.json") for e in json.loads(p.read_text())["events"]]
    assert sorted({Path(n).name for n in named}) == ["scream0.wav", "scream1.wav", "scream2.wav"]
    assert json.loads((tmp_path / "ev" / "event_metrics.json").read_text())["unreadable"] == res["unreadable"]


def test_evaluate_events_command_reports_bad_files_and_bad_outputs(tmp_path):
    """The command: exit 1 naming the unreadable file (metrics still written); a clear error for an empty test
    split, an --out that is a file, and metrics already in --out (kept unless --force)."""
    from typer.testing import CliRunner

    from _models import write_band_energy_model
    from screamdetect.cli import app

    model = write_band_energy_model(tmp_path / "model")
    _beep_dataset(tmp_path, broken_scream=True)
    base = ["evaluate-events", str(tmp_path / "data"), "--model", str(model), "--split-file", str(tmp_path / "split.csv"),
            "--repeats", "1", "--free-hours", str(60 / 3600), "--no-scenes"]
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, base + ["--out", str(out)])
    assert res.exit_code == 1 and "aaa_bad.wav" in res.output and "Traceback" not in res.output
    before = (out / "event_metrics.json").read_text()
    res = CliRunner().invoke(app, base + ["--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    assert (out / "event_metrics.json").read_text() == before
    res = CliRunner().invoke(app, base + ["--out", str(out), "--force", "--noise", str(tmp_path / "data" / "noise")])
    assert res.exit_code == 1 and "aaa_bad.wav" in res.output
    res = CliRunner().invoke(app, base + ["--out", str(out), "--force", "--noise", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no such folder" in res.output
    (out / "events.png").unlink()
    (out / "events.png").mkdir()  # a folder where a plot goes: refused before any work
    res = CliRunner().invoke(app, base + ["--out", str(out), "--force"])
    assert res.exit_code == 2 and "events.png: is a folder" in res.output and "Traceback" not in res.output
    (out / "events.png").rmdir()
    (tmp_path / "afile").write_text("mine")
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "must be a folder" in res.output and (tmp_path / "afile").read_text() == "mine"
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "afile" / "ev")])
    assert res.exit_code == 2 and "afile is a file, not a folder" in " ".join(res.output.split())
    # a folder of the user's (or the dataset itself) that holds no earlier event metrics: refused, even with
    # --force, before events.png or operating_curve.csv could land on files of theirs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "events.png").write_text("my photo")
    for folder in (mine, tmp_path / "data"):
        listing = sorted(p.name for p in folder.iterdir())
        res = CliRunner().invoke(app, base + ["--out", str(folder), "--force"])
        assert res.exit_code == 2 and "holds no earlier event metrics" in " ".join(res.output.split())
        assert sorted(p.name for p in folder.iterdir()) == listing
    assert (mine / "events.png").read_text() == "my photo"
    for opt, value, words in (("--repeats", "0", "--repeats"), ("--free-hours", "0", "--free-hours"),
                              ("--free-hours", "nan", "--free-hours"), ("--clips-per-minute", "nan",
                                                                         "--clips-per-minute")):
        res = CliRunner().invoke(app, [*base, opt, value, "--out", str(tmp_path / "ev_bad")])
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and words in text and "Traceback" not in res.output, (opt, value, text)
    empty = tmp_path / "empty"
    _beep_dataset(empty, split="train")
    res = CliRunner().invoke(app, ["evaluate-events", str(empty / "data"), "--model", str(model), "--split-file",
                                   str(empty / "split.csv"), "--out", str(empty / "ev")])
    assert res.exit_code == 2 and "0 readable screams" in res.output and "Traceback" not in res.output


def test_false_alarms_are_traced_to_the_sound_under_them(tmp_path):
    """Synthetic dataset: non-screams are 2 kHz beeps (category beep) and 300 Hz hums (category hum) over quiet
    noise; a detector that fires on 2 kHz. Every false alarm of the scream-free scenes is traced to a beep clip,
    listed in false_alarms.csv and counted by category."""
    import csv
    import json

    from screamdetect.evaluate import evaluate_events
    from screamdetect.scenes import SceneSpec

    _beep_dataset(tmp_path)
    # 3 clips a minute: a beep rarely overlaps a hum (where one does, the tracer can only guess: cause_of)
    res = evaluate_events(_BeepDetector(), tmp_path / "data", out_dir=tmp_path / "ev", split_file=tmp_path / "split.csv",
                          repeats=1, free_hours=1200 / 3600, write_scenes=False, scene_spec=SceneSpec(clips_per_minute=3))
    assert res["false_alarms"] > 15  # ~30 beeps in 20 min
    assert res["false_alarm_causes"] == {"beep": res["false_alarms"]}
    with open(tmp_path / "ev" / "false_alarms.csv", newline="") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == res["false_alarms"]
    assert all(Path(r["cause"]).name.startswith("beep") and r["cause_kind"] == "clip" for r in listed)
    assert json.loads((tmp_path / "ev" / "event_metrics.json").read_text())["false_alarm_causes"] == {"beep": len(listed)}


def test_the_operating_curve_agrees_with_the_metrics_at_the_detectors_threshold(tmp_path):
    """The curve re-runs the smoothing on the same window scores at every threshold: its row at the detector's own
    threshold is exactly what evaluate_events measured there, and the false alarms never grow with the threshold.
    The command writes it as CSV and a plot, and prints a few operating points."""
    import csv

    from typer.testing import CliRunner

    from _models import write_band_energy_model
    from screamdetect import Detector
    from screamdetect.cli import app
    from screamdetect.evaluate import best_within, evaluate_events
    from screamdetect.scenes import SceneSpec

    model = write_band_energy_model(tmp_path / "model")
    _beep_dataset(tmp_path, scream_hz=3000, beep_hz=3000)  # screams and (shorter) beeps both in the model's band
    det = Detector.load(model)
    res = evaluate_events(det, tmp_path / "data", out_dir=tmp_path / "ev", split_file=tmp_path / "split.csv",
                          repeats=2, free_hours=600 / 3600, write_scenes=False, scene_spec=SceneSpec(clips_per_minute=6))
    curve = res["operating_curve"]
    own = [r for r in curve if r["threshold"] == det.threshold]
    assert len(own) == 1
    assert own[0]["recall_by_snr"] == res["recall_by_snr"] and own[0]["event_recall"] == res["event_recall"]
    assert own[0]["false_alarms_per_hour"] == pytest.approx(res["false_alarms_per_hour"])
    rates = [r["false_alarms_per_hour"] for r in sorted(curve, key=lambda r: r["threshold"])]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]  # the sweep spans operating points
    assert {r["event_recall"] for r in curve} != {res["event_recall"]}
    pick = best_within(curve, res["false_alarms_per_hour"])
    assert pick["event_recall"] >= res["event_recall"]
    with open(tmp_path / "ev" / "operating_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(curve) and float(rows[0]["recall_20dB"]) == pytest.approx(curve[0]["recall_by_snr"]["20"],
                                                                                       abs=1e-4)
    res = CliRunner().invoke(app, ["evaluate-events", str(tmp_path / "data"), "--model", str(model), "--split-file",
                                   str(tmp_path / "split.csv"), "--repeats", "1", "--free-hours", str(300 / 3600),
                                   "--no-scenes", "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "events.png").stat().st_size > 10_000 and (tmp_path / "cli" / "operating_curve.csv").is_file()
    assert "other operating points" in " ".join(res.output.split())


def test_a_detection_over_before_the_onset_is_not_the_screams():
    """No tolerance before the onset: a detection that ended before the scream began was raised by something
    else (it gave recall and a negative latency before), and of the detections on a scream the first alerting at
    or after the onset gives the latency."""
    truth = [gt(10, 12, 0.0)]
    early = E(start_s=7.0, end_s=9.2, alert_s=7.5)
    real = E(start_s=10.2, end_s=12.0, alert_s=10.75)
    m, fa = match_events(truth, [early])
    assert not m[0].detected and fa == 1
    m, fa = match_events(truth, [early, real])
    assert m[0].detected and m[0].latency_s == pytest.approx(0.75) and fa == 1
    running = E(start_s=8.0, end_s=10.5, alert_s=8.5)  # on before the onset and still on after it
    m, fa = match_events(truth, [running, real])
    assert m[0].latency_s == pytest.approx(0.75) and fa == 0  # the other is a split event, not a false alarm
    m, _ = match_events(truth, [running])
    assert m[0].detected and m[0].latency_s == pytest.approx(-1.5)
