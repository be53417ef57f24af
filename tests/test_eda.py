"""eda.py and `screamdetect eda`: features of every clip, a bad file reported and skipped, the report, statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import sine
from screamdetect.audio import SAMPLE_RATE, write_audio
from screamdetect.cli import app
from screamdetect.data import SplitSpec, discover
from screamdetect.eda import (
    EdaOptions,
    OutputDirError,
    auc,
    check_out_dir,
    extract,
    run_eda,
    separation_table,
    split_count_rows,
)

pytest.importorskip("librosa", reason="the EDA needs the [train] extra (librosa, matplotlib)")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """Screaming/: 4 loud high tones (2 speakers); NotScreaming/: 4 quiet low tones + one text file named .wav."""
    root = tmp_path / "data"
    for i in range(4):
        (root / "Screaming" / f"spk{i % 2}").mkdir(parents=True, exist_ok=True)
        write_audio(root / "Screaming" / f"spk{i % 2}" / f"s{i}.wav", sine(2500.0 + 100 * i, 1.0 + 0.25 * i, amp=0.8))
        (root / "NotScreaming").mkdir(parents=True, exist_ok=True)
        write_audio(root / "NotScreaming" / f"n{i}.wav", sine(200.0 + 20 * i, 0.5 + 0.1 * i, amp=0.1))
    (root / "NotScreaming" / "broken.wav").write_text("this is not audio\n" * 10)
    return root


def test_cli_eda_reports_a_bad_file_and_goes_on(tiny_folder, tmp_path):
    out = tmp_path / "eda"
    res = CliRunner().invoke(app, ["eda", str(tiny_folder), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 1, res.output  # a clip failed, the others were processed
    assert "broken.wav" in res.output and "not an audio file" in res.output
    assert "Traceback" not in res.output
    # screams from 2 speakers cannot reach all 3 splits: said, since train and study would refuse this split
    assert "warning: the group-aware split" in res.output and "no scream in" in " ".join(res.output.split())
    rows = _read_csv(out / "features.csv")
    assert len(rows) == 8
    assert sorted(int(r["label"]) for r in rows) == [0] * 4 + [1] * 4
    errors = _read_csv(out / "errors.csv")
    assert [Path(e["path"]).name for e in errors] == ["broken.wav"] and "not an audio file" in errors[0]["error"]
    # Features are the ones the signals were built with.
    for r in rows:
        name = Path(r["path"]).name
        i = int(name[1])
        if name.startswith("s"):
            assert float(r["duration_s"]) == pytest.approx(1.0 + 0.25 * i)
            assert float(r["spectral_centroid"]) == pytest.approx(2500.0 + 100 * i, rel=0.05)
            assert float(r["max_amplitude"]) == pytest.approx(0.8, abs=1e-3)
        else:
            assert float(r["duration_s"]) == pytest.approx(0.5 + 0.1 * i)
        assert r["split"] in ("train", "val", "test")
    html = (out / "report.html").read_text()
    for heading in ("Class balance", "Duration per class", "Per-class distributions", "Mean log-mel per class",
                    "Class counts per split", "Features that separate the classes most", "broken.wav"):
        assert heading in html
    assert html.count("data:image/png;base64,") >= 6  # self-contained
    summary = json.loads((out / "eda.json").read_text())
    assert summary["failed"] == 1 and summary["decoded"] == 8 and summary["screams"] == 4
    # Loud high tones vs quiet low tones: centroid / energy / amplitude separate the classes perfectly.
    top = {r["feature"]: r for r in summary["top_features"]}
    assert top["spectral_centroid"]["auc"] == 1.0 and top["max_amplitude"]["auc"] == 1.0
    assert (out / "split.csv").is_file() and (out / "figures" / "mean_log_mel.png").is_file()


def test_cli_eda_reports_a_clip_too_short_to_describe(tiny_folder, tmp_path):
    """A 10-sample clip is reported as too short (it used to fail with an IndexError from deep inside librosa)."""
    write_audio(tiny_folder / "NotScreaming" / "blip.wav", sine(500.0, 10 / SAMPLE_RATE, amp=0.5))
    out = tmp_path / "eda"
    res = CliRunner().invoke(app, ["eda", str(tiny_folder), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = {Path(e["path"]).name: e["error"] for e in _read_csv(out / "errors.csv")}
    assert set(errors) == {"broken.wav", "blip.wav"}
    assert errors["blip.wav"].startswith("too short to describe: 10 samples") and "IndexError" not in res.output
    assert len(_read_csv(out / "features.csv")) == 8


def test_eda_never_overwrites_user_files(tiny_folder, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(app, ["eda", str(tiny_folder), "--out", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output and "Traceback" not in res.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputDirError, match="is not a folder"):
        check_out_dir(out / "notes.txt")
    res = CliRunner().invoke(app, ["eda", str(tiny_folder), "--out", str(out / "notes.txt" / "eda")])
    assert res.exit_code == 2 and "notes.txt is a file, not a folder" in " ".join(res.output.split())
    assert "Traceback" not in res.output and (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_eda_rerun_into_its_own_output_reuses_the_split(tiny_folder, tmp_path):
    out = tmp_path / "eda"
    run_eda(tiny_folder, out, EdaOptions(workers=1))
    split = (out / "split.csv").read_text()
    mtime = (out / "split.csv").stat().st_mtime_ns
    summary = run_eda(tiny_folder, out, EdaOptions(workers=1, split=SplitSpec(seed=5)))
    assert (out / "split.csv").stat().st_mtime_ns == mtime and (out / "split.csv").read_text() == split
    assert summary["decoded"] == 8


def test_cli_eda_bad_dataset_is_one_line_error(tmp_path):
    (tmp_path / "cats").mkdir()
    res = CliRunner().invoke(app, ["eda", str(tmp_path), "--out", str(tmp_path / "o")])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "unknown dataset layout" in text and "Traceback" not in text
    assert "Screaming/ + NotScreaming/" in text
    assert not (tmp_path / "o").exists()  # nothing made for bad input
    res = CliRunner().invoke(app, ["eda", str(tmp_path), "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_extract_on_real_clips_in_parallel(corpus_subset):
    """Two worker processes on 8 real clips: durations agree with the manifest, nothing fails."""
    ds = discover(corpus_subset)
    ds = ds.subset(lambda c: c in ds.clips[:4] or c in ds.clips[-4:])
    res = extract(ds, {c.path: "train" for c in ds.clips}, EdaOptions(workers=2))
    assert res.errors == [] and len(res.rows) == 8
    for c, r in zip(ds.clips, res.rows):
        assert r["path"] == c.path and r["label"] == c.label
        assert r["duration_s"] == pytest.approx(c.duration_s, abs=0.01)
        assert r["sample_rate"] == SAMPLE_RATE  # the corpus is stored at 16 kHz
        assert 0 < r["max_amplitude"] <= 1.0 and r["energy"] > 0
    assert set(res.profiles) == {0, 1} and res.profiles[1].shape == (128,)


@pytest.mark.corpus  # integration on real corpus audio: runs in `make test` (a few seconds)
def test_cli_eda_on_corpus_subset(corpus_subset, tmp_path):
    out = tmp_path / "eda"
    res = CliRunner().invoke(app, ["eda", str(corpus_subset), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = _read_csv(out / "features.csv")
    assert len(rows) == 40 and sum(int(r["label"]) for r in rows) == 12
    summary = json.loads((out / "eda.json").read_text())
    assert summary["failed"] == 0 and len(summary["top_features"]) == 15


# ---- statistics ---------------------------------------------------------------------------------------------

def test_auc_known_answers():
    assert auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert auc([1, 1, 1], [1, 1]) == 0.5
    assert auc([1, 3], [2]) == 0.5
    assert np.isnan(auc([], [1.0]))


def test_separation_table_ranks_the_informative_feature_first(rng):
    n = 200
    labels = np.arange(n) % 2
    rows = [{"path": str(i), "label": int(labels[i]), "group": "", "source": "", "category": "", "split": "",
             "noise": float(rng.standard_normal()), "signal": float(labels[i] * 2.0 + rng.standard_normal())}
            for i in range(n)]
    table = separation_table(rows)
    assert [r["feature"] for r in table] == ["signal", "noise"]
    assert table[0]["auc"] > 0.85 and table[0]["cohens_d"] == pytest.approx(2.0, abs=0.4)
    assert abs(table[1]["auc"] - 0.5) < 0.1


def test_split_count_rows_totals():
    rows = split_count_rows({"train": {"scream": 8, "not_scream": 72, "groups": 30},
                             "val": {"scream": 1, "not_scream": 9, "groups": 4},
                             "test": {"scream": 1, "not_scream": 9, "groups": 5}})
    assert rows[-1] == {"split": "total", "scream": 10, "not_scream": 90, "clips": 100, "groups": 39,
                        "scream_%": 10.0}
    assert rows[0]["scream_%"] == 10.0


def test_eda_options_validate():
    with pytest.raises(ValueError, match="workers"):
        EdaOptions(workers=0)
    with pytest.raises(ValueError, match="top_k"):
        EdaOptions(top_k=0)


@pytest.mark.filterwarnings("error::UserWarning")  # also: the histograms' legend found a panel with data
def test_eda_finds_identical_audio_across_splits_and_labels(tmp_path):
    """The same audio under two names in two groups lands in two splits (a leak the group split cannot see); the
    same audio with both labels contradicts itself. Both are reported, a merely repeated clip in one split too."""
    root = tmp_path / "data"
    root.mkdir()
    rows, split = [], {}

    def clip(name, x, label, group, where):
        write_audio(root / name, x)
        rows.append(f"{name},{label},{group}")
        split[name] = where

    leak, conflict, same = sine(3000.0, 2.0, amp=0.5), sine(500.0, 2.0, amp=0.2), sine(800.0, 2.0, amp=0.2)
    leak = (np.round(leak * 32768) / 32768).astype(np.float32)  # 16-bit samples: a FLAC holds them exactly
    clip("ram.wav", leak, 0, "ram", "train")
    clip("goat.flac", leak, 0, "goat", "val")  # the same samples in another container and group
    clip("yell.wav", conflict, 1, "a", "train")
    clip("yell_copy.wav", conflict, 0, "b", "train")
    clip("x1.wav", same, 0, "c", "test")
    clip("x2.wav", same, 0, "c", "test")
    for i in range(6):  # distinct clips of both classes in every split
        clip(f"s{i}.wav", sine(2000.0 + 50 * i, 2.0, amp=0.6), 1, f"s{i}", ("train", "val", "test")[i % 3])
        clip(f"n{i}.wav", sine(300.0 + 10 * i, 2.0, amp=0.1), 0, f"n{i}", ("train", "val", "test")[i % 3])
    (root / "manifest.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    (tmp_path / "split.csv").write_text("path,split\n" + "".join(f"{p},{s}\n" for p, s in split.items()))
    out = tmp_path / "eda"
    res = CliRunner().invoke(app, ["eda", str(root), "--out", str(out), "--jobs", "1",
                                   "--split-file", str(tmp_path / "split.csv")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "identical audio under different names: 1 set(s) across splits" in text and "1 with both labels" in text
    ident = json.loads((out / "eda.json").read_text())["identical_audio"]
    assert (ident["sets"], ident["files"], ident["across_splits"], ident["label_conflicts"]) == (3, 6, 1, 1)
    first, second, third = ident["list"]
    assert {f["path"] for f in first["files"]} == {"yell.wav", "yell_copy.wav"} and first["labels"] == [0, 1]
    assert {f["path"] for f in second["files"]} == {"ram.wav", "goat.flac"} and second["splits"] == ["train", "val"]
    assert {f["path"] for f in third["files"]} == {"x1.wav", "x2.wav"} and third["splits"] == ["test"]
    assert "span two splits" in (out / "report.html").read_text()
