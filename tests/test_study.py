"""The study pipeline on tiny data: features (cache, train-only augmentation, bad files), the grid end to end, the
threshold chosen on validation, and the cross-dataset phases (phase D's fraction of B's train split)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from screamdetect.audio import SAMPLE_RATE, load_audio, pad_or_trim, write_audio
from screamdetect.data import FeatureCache, discover, load_or_make_split
from screamdetect.evaluate import choose_threshold
from screamdetect.study import (
    CONDITIONS,
    StudyConfig,
    _mel,
    compute_features,
    load_dataset,
    parse_data_spec,
    phase_data,
    run_deploy,
    run_grid,
    sample_fraction,
    training_data,
)

TINY = dict(  # noqa: C408 - reads like the YAML it stands for
    clip_s=0.5,
    frontend={"n_mels": 16, "win_s": 0.025, "hop_s": 0.02},
    train={"epochs": 1, "batch_size": 8, "patience": None, "threads": 1},
    model_params={"fnn": {"hidden": [8]}, "cnn": {"channels": [4, 8], "dense": 8},
                  "cnn_reg": {"channels": [4, 8], "dense": 8}, "cnn_f1": {"channels": [4, 8], "dense": 8},
                  "resnet": {"width": 0.0625, "dense": 8}},
)


def tiny_config(**changes) -> StudyConfig:
    return StudyConfig.from_dict({**TINY, **changes})


def _tone(freq: float, dur_s: float, rng: np.random.Generator, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(dur_s * SAMPLE_RATE)) / SAMPLE_RATE
    f = freq * (1 + 0.2 * t)  # a slight upward glide
    return (amp * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def synth_data(tmp_path) -> Path:
    """A labelled dataset with known answers: screams are 2-3 kHz glides, non-screams 150-300 Hz tones, 0.3-0.8 s
    long; two sources ("s1", "s2"), a group per file; plus a noise bank of three white-noise pieces."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(48):
        label = int(i % 3 == 0)
        freq = rng.uniform(2000, 3000) if label else rng.uniform(150, 300)
        p = root / "audio" / f"c{i:02d}.wav"
        write_audio(p, _tone(freq, rng.uniform(0.3, 0.8), rng))
        rows.append({"path": f"audio/{p.name}", "label": label, "group": f"g{i}", "source": "s1" if i < 24 else "s2"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group", "source"])
        w.writeheader()
        w.writerows(rows)
    (root / "noise").mkdir()
    for k in range(3):
        write_audio(root / "noise" / f"n{k}.wav", (0.05 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32))
    return root


def test_config_rejects_unknown_settings_by_name():
    with pytest.raises(ValueError, match="clip_seconds"):
        StudyConfig.from_dict({"clip_seconds": 3})
    with pytest.raises(ValueError, match="n_mel"):
        StudyConfig.from_dict({"frontend": {"n_mel": 64}})
    with pytest.raises(ValueError, match="models"):
        StudyConfig.from_dict({"models": ["svm", "xgboost"]})
    with pytest.raises(ValueError, match="class_weight"):
        StudyConfig.from_dict({"train": {"class_weight": True}})
    with pytest.raises(ValueError, match="clip_s"):
        StudyConfig.from_dict({"clip_s": -1})


@pytest.mark.parametrize("settings, words", [
    ({"train": {"epochs": 2.5}}, "train.epochs must be a whole number"),  # was a TypeError deep in training
    ({"train": {"epochs": "six"}}, "train.epochs must be a whole number"),
    ({"train": {"lr": "fast"}}, "train.lr must be a finite number"),
    ({"train": {"batch_size": 0}}, "train.batch_size must be a whole number >= 1"),
    ({"clip_s": "three"}, "clip_s (seconds) must be a finite number"),
    ({"clip_s": 1e9}, "<= 60"),  # tried to allocate 58 TiB
    ({"conditions": 5}, "conditions must be a list of names"),
    ({"split": [0.8, 0.1, 0.1]}, "split must be a mapping"),
    ({"frontend": "big"}, "frontend must be a mapping"),
    ({"seed": "abc"}, "seed must be a whole number"),
])
def test_config_values_of_the_wrong_type_are_named_when_loaded(settings, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        StudyConfig.from_dict(settings)


def test_whole_numbers_written_as_floats_are_accepted():
    from screamdetect.train import TrainConfig

    assert StudyConfig.from_dict({"train": {"epochs": 3.0}}).train == {"epochs": 3.0}
    assert TrainConfig(epochs=3.0).epochs == 3 and isinstance(TrainConfig(epochs=3.0).epochs, int)


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    seed = StudyConfig.from_yaml(root / "seed.yaml")
    ours = StudyConfig.from_yaml(root / "study.yaml")
    assert (seed.clip_s, seed.frontend.n_mels, seed.frontend.win_s, seed.frontend.hop_s) == (10.0, 128, 0.025, 0.01)
    assert seed.augment == "seed" and ours.augment == "robust"
    assert seed.n_frames == 1000
    assert ours == StudyConfig()  # the built-in defaults are configs/study.yaml
    assert len(ours.grid()) == 1 + 5 * 4 and ours.grid()[0] == ("svm", "baseline")


def test_features_cache_and_train_only_augmentation(synth_data, tmp_path):
    cfg = tiny_config()
    ds = discover(synth_data)
    splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
    from screamdetect.study import noise_bank_for

    bank = noise_bank_for(ds, cfg, log=lambda m: None)
    cache = FeatureCache(tmp_path / "cache")
    f = compute_features(splits, cfg, cache, augment=True, noise_bank=bank, progress=False)
    n_clips = sum(len(v) for v in splits.values())
    assert cache.hits == 0 and cache.misses == n_clips + len(splits["train"]) * cfg.aug_copies
    assert f.X["train"].shape[1:] == (16, 25) and f.X["train"].dtype == np.float32
    # Copies come from TRAIN rows only and keep their source's label.
    assert len(f.y_aug) > 0 and f.aug_src.max() < len(f.y["train"])
    assert np.array_equal(f.y_aug, f.y["train"][f.aug_src])
    assert not np.allclose(f.X_aug[0], f.X["train"][f.aug_src[0]])  # an augmented copy differs from its source
    # Validation and test features are exactly the clean log-mel of the padded clip.
    for split in ("val", "test"):
        for row, clip in enumerate(f.clips[split]):
            clean = _mel(pad_or_trim(load_audio(clip.path), cfg.n_samples, cfg.pad).astype(np.float32), cfg)
            np.testing.assert_array_equal(f.X[split][row], clean)
    # Only augmentation conditions feed the copies; val/test are the same arrays in every condition.
    for cond in CONDITIONS:
        td = training_data(f, cond)
        extra = len(f.y_aug) if cond in ("augmentation", "both") else 0
        assert len(td.y_train) == len(f.y["train"]) + extra
        assert td.X_val is f.X["val"] and td.X_test is f.X["test"]
    # A second run reads everything from the cache; another clip_s misses it.
    cache2 = FeatureCache(tmp_path / "cache")
    f2 = compute_features(splits, cfg, cache2, augment=True, noise_bank=bank, progress=False)
    assert cache2.misses == 0 and cache2.hits == cache.misses
    np.testing.assert_array_equal(f2.X_aug, f.X_aug)
    cache3 = FeatureCache(tmp_path / "cache")
    compute_features(splits, replace(cfg, clip_s=0.4), cache3, augment=False, progress=False)
    assert cache3.hits == 0


def _silent_frames(X: np.ndarray) -> np.ndarray:
    """Per clip, the share of frames at the log-mel floor (digital silence) of (n, n_mels, n_frames) features."""
    return (X.max(axis=1) <= X.min() + 1.0).mean(axis=1)


def test_loop_padding_leaves_no_silence_that_tells_a_clips_length(synth_data, tmp_path):
    """Every clip, scream or not, becomes exactly clip_s seconds. Zero padding (the study's) leaves a silent tail
    whose length is the clip's, and so differs by class wherever durations do; looping (the default) leaves none."""
    ds = discover(synth_data)
    lengths = {c.path: sf.info(c.path).duration for c in ds.clips}
    got = {}
    for pad in ("zeros", "loop"):
        cfg = tiny_config(clip_s=1.0, pad=pad)
        splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
        f = compute_features(splits, cfg, FeatureCache(tmp_path / f"c_{pad}"), augment=False, progress=False)
        assert f.X["train"].shape[-1] == cfg.n_frames and {int(v) for v in f.y["train"]} == {0, 1}
        got[pad] = (_silent_frames(f.X["train"]), np.array([lengths[c.path] for c in f.clips["train"]]))
    silent, dur = got["zeros"]
    # all clips are shorter than 1 s: with zeros the silent share is 1 - duration (to a frame or two)
    np.testing.assert_allclose(silent, 1.0 - dur, atol=0.06)
    assert np.corrcoef(silent, dur)[0, 1] < -0.95
    silent, _ = got["loop"]
    assert silent.max() == 0.0


def test_bad_file_is_reported_and_skipped(synth_data, tmp_path):
    bad = synth_data / "audio" / "c01.wav"
    bad.write_bytes(b"this is not audio")
    cfg = tiny_config()
    ds = discover(synth_data)
    splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
    logged = []
    f = compute_features(splits, cfg, FeatureCache(tmp_path / "c"), augment=False, progress=False,
                         log=logged.append)
    assert [p for p, _ in f.skipped] == [str(bad.resolve())]
    assert any("c01.wav" in m for m in logged)
    assert sum(len(v) for v in f.y.values()) == len(ds) - 1


def test_grid_end_to_end_on_tiny_data(synth_data, tmp_path):
    out = tmp_path / "study"
    cfg = tiny_config(models=("svm", "cnn"), conditions=("baseline", "both"))
    rows = run_grid(synth_data, cfg, out, cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert [r["run"] for r in rows] == ["svm__baseline", "cnn__baseline", "cnn__both"]
    assert json.loads((out / "svm__baseline" / "metrics.json").read_text())["platt_folds"] == "group"
    for name in ("summary.csv", "summary.md", "report.html", "split.csv", "config.yaml", "study_meta.json"):
        assert (out / name).is_file(), name
    for r in rows:
        d = out / r["run"]
        for name in ("metrics.json", "classification_report.txt", "confusion.png", "pr.png", "roc.png",
                     "config.yaml", "scores.csv"):
            assert (d / name).is_file(), f"{r['run']}/{name}"
        m = json.loads((d / "metrics.json").read_text())
        assert m["split"] == "test" and m["threshold_chosen_on"] == "val"
        # The threshold is the one validation gives: recompute it from the stored validation scores.
        sc = list(csv.DictReader((d / "scores.csv").read_text().splitlines()))
        yv = np.array([int(s["label"]) for s in sc if s["split"] == "val"])
        pv = np.array([float(s["p_scream"]) for s in sc if s["split"] == "val"])
        assert m["threshold"] == pytest.approx(choose_threshold(yv, pv, "f1"), abs=1e-5)
        assert m["test"]["n"] == sum(s["split"] == "test" for s in sc)
    both = json.loads((out / "cnn__both" / "metrics.json").read_text())
    base = json.loads((out / "cnn__baseline" / "metrics.json").read_text())
    assert (out / "cnn__both" / "curves.png").is_file()
    # Class weights are computed on the data as fed (originals + augmented copies) and stored.
    n, k = both["train_fed"]["clips"], both["train_fed"]["scream"]
    assert both["class_weights_used"] and both["class_weights"]["1"] == pytest.approx(n / (2 * k))
    assert not base["class_weights_used"] and base["train_fed"]["clips"] < n
    summary = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert len(summary) == 3 and {"f1", "ap", "precision", "recall"} <= set(summary[0])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 * 3 and "cnn__both" in html
    # A second call with the same config reuses the finished runs.
    rows2 = run_grid(synth_data, cfg, out, cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert [r["f1"] for r in rows2] == [r["f1"] for r in rows]
    # ... and another config may not write into the same folder.
    with pytest.raises(ValueError, match="another config"):
        run_grid(synth_data, replace(cfg, clip_s=0.4), out, progress=False, log=lambda m: None)


@pytest.mark.corpus  # integration on real corpus audio: runs in `make test` (a few seconds)
def test_full_grid_on_corpus_subset(corpus, corpus_subset, tmp_path):
    """Every model under every condition, 1 epoch, on 40 real corpus clips (noise bank: the corpus's)."""
    rows = run_grid(corpus_subset, tiny_config(), tmp_path / "s", cache=FeatureCache(tmp_path / "c"),
                    noise_dir=corpus / "noise", progress=False, log=lambda m: None)
    assert len(rows) == 21 and all(0.0 <= r["f1"] <= 1.0 for r in rows)
    assert all((tmp_path / "s" / r["run"] / "metrics.json").is_file() for r in rows)


@pytest.mark.corpus
def test_transfer_models_in_the_grid_on_corpus_subset(corpus, corpus_subset, tmp_path):
    """yamnet_head and yamnet_ft take part in the grid: YAMNet's log-mel of the same clips, their own settings."""
    from screamdetect import study
    from screamdetect.models import TRANSFER_MODELS
    from screamdetect.models import yamnet as Y

    assert set(study.TRANSFER_MODELS) == set(TRANSFER_MODELS)  # the grid knows every transfer family
    if importlib.util.find_spec(Y.YAMNET_PACKAGE) is None:
        pytest.skip(f"the optional YAMNet package is not installed ({Y.INSTALL_HINT})")
    cfg = tiny_config(clip_s=1.5, models=("cnn", "yamnet_head", "yamnet_ft"), conditions=("baseline", "both"),
                      model_params={**TINY["model_params"], "yamnet_head": {"hidden": 0, "epochs": 10},
                                    "yamnet_ft": {"trainable_blocks": 1, "epochs": 1, "batch_size": 16}})
    ds = discover(corpus_subset)
    splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
    f = compute_features(splits, cfg, FeatureCache(tmp_path / "c"), augment=False, progress=False, kind="yamnet")
    assert f.X["train"].shape[1:] == (64, 1 + (24000 - 400) // 160)  # YAMNet's 10 ms frames of the 1.5 s clip
    rows = run_grid(corpus_subset, cfg, tmp_path / "s", cache=FeatureCache(tmp_path / "c"),
                    noise_dir=corpus / "noise", progress=False, log=lambda m: None)
    assert [r["run"] for r in rows] == ["cnn__baseline", "cnn__both", "yamnet_head__baseline", "yamnet_head__both",
                                        "yamnet_ft__baseline", "yamnet_ft__both"]
    for r in rows[2:]:
        m = json.loads((tmp_path / "s" / r["run"] / "metrics.json").read_text())
        assert 0.0 <= m["test"]["f1"] <= 1.0 and m["threshold_chosen_on"] == "val"
        assert m["class_weights_used"] == r["run"].endswith("both")
        assert not (tmp_path / "s" / r["run"] / "model.pt").exists()
    both = json.loads((tmp_path / "s" / "yamnet_head__both" / "metrics.json").read_text())
    base = json.loads((tmp_path / "s" / "yamnet_head__baseline" / "metrics.json").read_text())
    assert both["train_fed"]["clips"] > base["train_fed"]["clips"]  # the augmented copies, YAMNet features too
    assert "transfer models: YAMNet log-mel" in (tmp_path / "s" / "summary.md").read_text()


def test_sample_fraction_is_stratified_and_exact():
    y = np.array([1] * 10 + [0] * 90)
    idx = sample_fraction(y, 0.3, seed=1)
    assert len(idx) == 30 and y[idx].sum() == 3 and len(set(idx.tolist())) == 30
    assert len(sample_fraction(y, 0.0)) == 0
    with pytest.raises(ValueError, match="fraction"):
        sample_fraction(y, 1.5)


def test_phase_d_uses_the_stated_fraction_of_b_train_and_none_of_b_test(synth_data, tmp_path):
    cfg = tiny_config(clip_s=0.3)
    feats = {}
    for tag, src in (("A", "s1"), ("B", "s2")):
        ds = load_dataset(f"{synth_data}::source={src}")
        splits = load_or_make_split(ds, tmp_path / f"split_{tag}.csv", cfg.split_spec)
        feats[tag] = compute_features(splits, cfg, FeatureCache(tmp_path / "c"), augment=False, progress=False)
    fa, fb = feats["A"], feats["B"]
    td, note = phase_data("D", fa, fb, "baseline", 0.5, seed=0)
    n_b = len(fb.y["train"])
    expected = sum(round(0.5 * np.sum(fb.y["train"] == c)) for c in (0, 1))
    assert note["b_train_used"] == expected and note["b_train_total"] == n_b
    assert note["b_fraction_used"] == pytest.approx(expected / n_b)
    assert len(td.y_train) == len(fa.y["train"]) + expected
    b_train = {c.path for c in fb.clips["train"]}
    b_test = {c.path for c in fb.clips["test"]}
    assert set(note["b_train_paths"]) <= b_train and not set(note["b_train_paths"]) & b_test
    assert td.test_paths == [c.path for c in fb.clips["test"]]
    # Every B row fed to training is one of the sampled train clips (compare the features row by row).
    fed_b = td.X_train[len(fa.y["train"]):]
    sampled = [fb.X["train"][[c.path for c in fb.clips["train"]].index(p)] for p in note["b_train_paths"]]
    np.testing.assert_array_equal(fed_b, np.stack(sampled))
    # Phases B and C cross the datasets; A stays inside B.
    tb, _ = phase_data("B", fa, fb, "baseline", 0.5)
    assert len(tb.y_train) == len(fa.y["train"]) and tb.test_paths == [c.path for c in fb.clips["test"]]
    tc, _ = phase_data("C", fa, fb, "baseline", 0.5)
    assert tc.test_paths == [c.path for c in fa.clips["test"]]


def test_deploy_end_to_end_and_source_syntax(synth_data, tmp_path):
    assert parse_data_spec("x/y::source=a, b") == (Path("x/y"), ("a", "b"))
    assert parse_data_spec("x/y::source!=a") == (Path("x/y"), ("!a",))
    assert {c.source for c in load_dataset(f"{synth_data}::source!=s1").clips} == {"s2"}
    with pytest.raises(ValueError, match="source"):
        load_dataset(f"{synth_data}::source=nope")
    with pytest.raises(ValueError, match="two source filters, s1 in the path and s2 given separately"):
        load_dataset(f"{synth_data}::source=s1", ("s2",))
    assert {c.source for c in load_dataset(f"{synth_data}::source=s1", ("s1",)).clips} == {"s1"}
    out = tmp_path / "dep"
    rows = run_deploy(synth_data, synth_data, tiny_config(), out, fraction=0.3, models=("svm",),
                      condition="baseline", sources_a=("s1",), sources_b=("s2",),
                      cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert [r["phase"] for r in rows] == ["A", "B", "C", "D"]
    assert (out / "report.html").is_file() and (out / "summary.csv").is_file()
    d = json.loads((out / "phaseD__svm" / "metrics.json").read_text())["data"]
    assert rows[3]["b_fraction_used"] == pytest.approx(d["b_train_used"] / d["b_train_total"])
    # The folder answers only the same question: the same call reuses its runs; another condition (whose runs
    # were answered with the baseline's metrics, under the new condition's name) is refused.
    again = run_deploy(synth_data, synth_data, tiny_config(), out, fraction=0.3, models=("svm",),
                       condition="baseline", sources_a=("s1",), sources_b=("s2",),
                       cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert again == rows
    with pytest.raises(ValueError, match=r"this is a deploy\(fraction=0.3, condition=class_weights\) one"):
        run_deploy(synth_data, synth_data, tiny_config(), out, fraction=0.3, models=("svm",),
                   condition="class_weights", sources_a=("s1",), sources_b=("s2",),
                   cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    with open(synth_data / "manifest.csv") as f:
        rows_b = list(csv.DictReader(f))
    with open(synth_data / "fewer.csv", "w", newline="") as f:  # B without one of its clips
        w = csv.DictWriter(f, fieldnames=list(rows_b[0]))
        w.writeheader()
        w.writerows([r for r in rows_b if r["source"] == "s2"][1:])
    with pytest.raises(ValueError, match="other data"):  # its runs would have been reused
        run_deploy(synth_data, synth_data / "fewer.csv", tiny_config(), out, fraction=0.3, models=("svm",),
                   condition="baseline", sources_a=("s1",), sources_b=None,
                   cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="share"):
        run_deploy(synth_data, synth_data, tiny_config(), tmp_path / "dep2", models=("svm",),
                   condition="baseline", progress=False, log=lambda m: None)


def test_cli_errors_are_one_line(synth_data, tmp_path):
    from screamdetect.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("clip_seconds: 3\n")
    def run(*args):
        r = CliRunner().invoke(app, list(args))
        return r.exit_code, " ".join(r.output.split())  # rich wraps long lines when not on a terminal

    code, text = run("study", str(synth_data), "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "clip_seconds" in text and "Traceback" not in text
    code, text = run("study", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"))
    assert code == 2 and "no such file" in text
    code, text = run("deploy-study", str(synth_data))
    assert code == 2 and "--a-sources" in text
    (tmp_path / "afile").write_text("mine")
    for cmd in (["study", str(synth_data)], ["deploy-study", str(synth_data), str(synth_data)]):
        code, text = run(*cmd, "--out", str(tmp_path / "afile"))
        assert code == 2 and "--out must be a folder" in text and (tmp_path / "afile").read_text() == "mine"
        code, text = run(*cmd, "--out", str(tmp_path / "afile" / "sub"))
        assert code == 2 and "afile is a file, not a folder" in text and "Traceback" not in text
        # a file as the feature cache: one error about the option, not every clip "skipped"
        code, text = run(*cmd, "--cache-dir", str(tmp_path / "afile"), "--out", str(tmp_path / "o5"))
        assert code == 2 and "--cache-dir" in text and "skipped" not in text and not (tmp_path / "o5").exists()
    for opt in ("--phases", "--models", "--a-sources"):
        code, text = run("deploy-study", str(synth_data), str(synth_data), opt, ",", "--out", str(tmp_path / "o4"))
        assert code == 2 and f"{opt} is empty" in text and "Traceback" not in text
    for opt in ("--models", "--conditions"):  # empty (an unset shell variable) is not "the whole grid"
        code, text = run("study", str(synth_data), opt, " ", "--out", str(tmp_path / "o3"))
        assert code == 2 and f"{opt} is empty" in text and not (tmp_path / "o3").exists()


def test_seed_preset_noises_both_classes_alike(synth_data, tmp_path):
    """The study's noise and shift, without its flaw (noise on every scream copy but ~20% of non-scream copies):
    every clip of either class gets its noisy copy, so noise tells nothing about the label."""
    cfg = tiny_config(augment="seed")
    ds = discover(synth_data)
    splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
    from screamdetect.study import noise_bank_for

    f = compute_features(splits, cfg, FeatureCache(tmp_path / "c"), augment=True,
                         noise_bank=noise_bank_for(ds, cfg, log=lambda m: None), progress=False)
    n_pos, n_neg = int(f.y["train"].sum()), int(len(f.y["train"]) - f.y["train"].sum())
    assert int(f.y_aug.sum()) == n_pos and n_pos > 0
    assert int(len(f.y_aug) - f.y_aug.sum()) == n_neg


def test_a_relabelled_clip_gets_the_copies_of_its_new_label_from_the_cache(synth_data, tmp_path):
    """A file relabelled (a labelling fix) gets exactly the copies (and labels) a fresh cache gives, not the old
    ones."""
    cfg = tiny_config(augment="seed")
    ds = discover(synth_data)
    splits = load_or_make_split(ds, tmp_path / "split.csv", cfg.split_spec)
    from screamdetect.study import noise_bank_for

    bank = noise_bank_for(ds, cfg, log=lambda m: None)
    cache = FeatureCache(tmp_path / "c")
    compute_features(splits, cfg, cache, augment=True, noise_bank=bank, progress=False)
    flipped = {**splits, "train": [replace(c, label=1 - c.label) for c in splits["train"]]}
    again = compute_features(flipped, cfg, cache, augment=True, noise_bank=bank, progress=False)
    fresh = compute_features(flipped, cfg, FeatureCache(tmp_path / "fresh"), augment=True, noise_bank=bank,
                             progress=False)
    np.testing.assert_array_equal(again.y_aug, fresh.y_aug)
    np.testing.assert_array_equal(again.X_aug, fresh.X_aug)
    assert int(again.y_aug.sum()) == sum(c.label for c in flipped["train"])  # every (new) scream has its copy


# ---- folders, splits and data a study must refuse (each seen give wrong or lost results before) ----------------

def _regroup(root: Path, group_of) -> None:
    """Rewrite the manifest of `synth_data` with group_of(row index, row) as each clip's group."""
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        r["group"] = group_of(i, r)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_a_split_without_screams_in_val_or_test_is_refused_before_any_run(synth_data, tmp_path):
    """Two scream groups all land in train: val and test hold no scream, and a study there would report F1 0 and
    AP n/a as a result (threshold 0.5 "from val"). Refused before any model is fitted; once the data are fixed,
    the same folder is taken over (no run had finished in it)."""
    from screamdetect.study import StudyError

    _regroup(synth_data, lambda i, r: f"scream{i % 2}" if r["label"] == "1" else r["group"])
    cfg = tiny_config(models=["svm"])
    out = tmp_path / "s"
    with pytest.raises(StudyError, match=r"the (val|test) split holds only non-screams"):
        run_grid(synth_data, cfg, out, cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert not list(out.glob("*/metrics.json"))
    _regroup(synth_data, lambda i, r: f"g{i}")  # a group per clip again: screams in every split
    (out / "split.csv").unlink()
    logged = []
    rows = run_grid(synth_data, cfg, out, cache=FeatureCache(tmp_path / "c"), progress=False, log=logged.append)
    assert [r["run"] for r in rows] == ["svm__baseline"] and any("starting over" in m for m in logged)


def test_a_reused_split_that_tears_a_group_apart_is_refused(synth_data, tmp_path):
    """A split made before the manifest's groups changed would put one group on both sides, silently."""
    from screamdetect.data import DatasetError

    split = tmp_path / "split.csv"
    splits = load_or_make_split(discover(synth_data), split)
    a, b = splits["train"][0], splits["test"][0]
    _regroup(synth_data, lambda i, r: "same-speaker" if r["path"] in (Path(a.path).relative_to(synth_data).as_posix(),
                                                                        Path(b.path).relative_to(synth_data).as_posix())
             else r["group"])
    with pytest.raises(DatasetError, match=r"group 'same-speaker' has clips in test and train"):
        load_or_make_split(discover(synth_data), split)


@pytest.mark.parametrize("key, value", [("checkpoint", "loss"), ("weight_decay", 0.0)])
def test_study_wide_training_settings_cannot_redefine_the_model_variants(key, value):
    """train.checkpoint: loss turned cnn_f1 into cnn_reg (and f1 turned cnn into cnn_f1), silently."""
    with pytest.raises(ValueError, match=rf"train.{key} defines the model variants.*model_params"):
        StudyConfig.from_dict({"train": {key: value}})


def test_subsets_of_one_study_fill_one_folder_and_one_summary(synth_data, tmp_path):
    """--models svm (no augmentation) then --models fnn --conditions augmentation into one folder: accepted (the
    noise bank is checked run by run), and the summary lists both runs instead of the last subset only."""
    out = tmp_path / "s"
    kw = dict(cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)  # noqa: C408
    run_grid(synth_data, tiny_config(models=["svm"]), out, **kw)
    rows = run_grid(synth_data, tiny_config(models=["fnn"], conditions=["augmentation"]), out, **kw)
    assert sorted(r["run"] for r in rows) == ["fnn__augmentation", "svm__baseline"]
    with open(out / "summary.csv", newline="") as f:
        assert sorted(r["run"] for r in csv.DictReader(f)) == ["fnn__augmentation", "svm__baseline"]
    # another noise bank: the augmented run is fitted again, the baseline one is reused
    other = tmp_path / "noise2"
    other.mkdir()
    for k in range(2):
        noise = 0.02 * np.random.default_rng(k).standard_normal(SAMPLE_RATE)
        write_audio(other / f"m{k}.wav", noise.astype(np.float32))
    logged = []
    run_grid(synth_data, tiny_config(models=["svm", "fnn"], conditions=["augmentation"]), out,
             cache=FeatureCache(tmp_path / "c"), noise_dir=other, progress=False, log=logged.append)
    assert any("svm / baseline: done before" in m for m in logged)
    assert not any("fnn / augmentation: done before" in m for m in logged)


def test_a_missing_noise_bank_writes_nothing(synth_data, tmp_path):
    """Augmentation without a noise bank is refused before the folder is claimed, so the same --out works once
    --noise is given."""
    import shutil

    from screamdetect.study import StudyError

    shutil.rmtree(synth_data / "noise")
    out = tmp_path / "s"
    cfg = tiny_config(models=["fnn"], conditions=["augmentation"])
    with pytest.raises(StudyError, match="a noise bank is needed"):
        run_grid(synth_data, cfg, out, cache=FeatureCache(tmp_path / "c"), progress=False, log=lambda m: None)
    assert not out.exists()
