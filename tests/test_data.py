"""data.py: dataset layouts (class folders, manifest), errors, group-aware stratified splits, the feature cache."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import sine
from screamdetect.audio import write_audio
from screamdetect.data import (
    SPLITS,
    Clip,
    DatasetError,
    FeatureCache,
    SplitSpec,
    discover,
    group_folds,
    load_or_make_split,
    read_split,
    split_clips,
    split_counts,
)


def _wav(path: Path, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, sine(freq, 0.1))
    return path


@pytest.mark.parametrize("pos,neg", [("Screaming", "NotScreaming"), ("SCREAM", "Not_Scream"),
                                     ("positive", "Negative"), ("1", "0")])
def test_class_folder_layouts(tmp_path, pos, neg):
    _wav(tmp_path / pos / "a.wav")
    _wav(tmp_path / pos / "speaker7" / "b.WAV")  # nested: the sub-folder is the group
    _wav(tmp_path / pos / "speaker7" / "c.wav")
    _wav(tmp_path / neg / "d.wav")
    _wav(tmp_path / neg / "e.flac")
    (tmp_path / neg / "readme.txt").write_text("not audio")
    ds = discover(tmp_path)
    assert ds.layout == "class_folders"
    labels = {Path(c.path).name: c.label for c in ds.clips}
    assert labels == {"a.wav": 1, "b.WAV": 1, "c.wav": 1, "d.wav": 0, "e.flac": 0}
    groups = {Path(c.path).name: c.group for c in ds.clips}
    assert groups["b.WAV"] == groups["c.wav"] != groups["a.wav"]
    assert ds.summary()["screams"] == 3 and ds.summary()["non_screams"] == 2


def test_class_folders_without_audio(tmp_path):
    (tmp_path / "Screaming").mkdir()
    (tmp_path / "NotScreaming").mkdir()
    with pytest.raises(DatasetError, match="hold no audio files"):
        discover(tmp_path)


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_manifest_csv(tmp_path):
    _wav(tmp_path / "audio" / "s1.wav")
    _wav(tmp_path / "audio" / "n1.wav")
    _write_manifest(tmp_path / "manifest.csv", [
        {"path": "audio/s1.wav", "label": "1", "group": "g1", "source": "x", "license": "CC0"},
        {"path": "audio/n1.wav", "label": "0", "group": "g2", "source": "y", "license": "CC-BY-4.0"}])
    for target in (tmp_path, tmp_path / "manifest.csv"):  # the folder or the CSV itself
        ds = discover(target)
        assert ds.layout == "manifest"
        assert [(Path(c.path).name, c.label, c.group) for c in ds.clips] == [("s1.wav", 1, "g1"), ("n1.wav", 0, "g2")]
        assert all(Path(c.path).is_absolute() and Path(c.path).is_file() for c in ds.clips)
        assert ds.licenses == {"CC0": 1, "CC-BY-4.0": 1}


def test_manifest_minimal_columns_group_defaults_to_path(tmp_path):
    m = _write_manifest(tmp_path / "list.csv", [{"path": "a.wav", "label": "scream"},
                                                {"path": "b.wav", "label": "0"}])
    ds = discover(m)
    assert [c.label for c in ds.clips] == [1, 0]
    assert [c.group for c in ds.clips] == ["a.wav", "b.wav"]


def test_manifest_bad_label_names_the_line(tmp_path):
    _write_manifest(tmp_path / "manifest.csv", [{"path": "a.wav", "label": "1"}, {"path": "b.wav", "label": "maybe"}])
    with pytest.raises(DatasetError, match=r"manifest.csv:3: label 'maybe' is not 0/1"):
        discover(tmp_path)


def test_manifest_missing_columns(tmp_path):
    m = _write_manifest(tmp_path / "manifest.csv", [{"file": "a.wav", "class": "1"}])
    with pytest.raises(DatasetError, match="needs columns 'path' and 'label'"):
        discover(m)


def test_manifest_from_a_spreadsheet_or_in_another_encoding(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: read as usual. A Latin-1 file is a clear error naming it;
    a clip listed twice (one file with two labels, or counted twice) too."""
    m = tmp_path / "manifest.csv"
    m.write_bytes("\ufeffpath,label,group\na.wav,1,café\n\nb.wav,0,b\n".encode())
    ds = discover(m)
    assert [(Path(c.path).name, c.label, c.group) for c in ds.clips] == [("a.wav", 1, "café"), ("b.wav", 0, "b")]
    m.write_bytes("path,label,group\na.wav,1,café\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"manifest.csv: not UTF-8 text \(byte 0xe9"):
        discover(m)
    m.write_text("path,label\na.wav,1\nb.wav,0\n./a.wav,0\n")
    with pytest.raises(DatasetError, match=r"manifest.csv:4: ./a.wav is listed again \(first on line 2\)"):
        discover(m)


def test_unknown_layout_lists_accepted_layouts(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    with pytest.raises(DatasetError) as e:
        discover(tmp_path)
    msg = str(e.value)
    assert "unknown dataset layout" in msg and "cats/" in msg
    for layout in ("manifest CSV", "Screaming/ + NotScreaming/", "scream/ + not_scream/", "positive/ + negative/",
                   "1/ + 0/"):
        assert layout in msg
    with pytest.raises(DatasetError, match="no such file or folder"):
        discover(tmp_path / "absent")
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="accepted layouts"):
        discover(tmp_path / "x.wav")


# ---- splits -------------------------------------------------------------------------------------------------

def _synthetic_clips(n_groups: int = 200, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    for g in range(n_groups):
        label = int(g % 10 == 0)  # 10% of the groups hold screams
        for i in range(int(rng.integers(1, 6))):
            clips.append(Clip(path=f"/d/g{g}/{i}.wav", label=label, group=f"g{g}"))
    return clips


def _groups_per_split(clips, assign):
    out = {s: set() for s in SPLITS}
    for c in clips:
        out[assign[c.path]].add(c.group)
    return out


def test_split_groups_are_disjoint_and_stratified_synthetic():
    clips = _synthetic_clips()
    assign = split_clips(clips, SplitSpec(seed=3))
    assert set(assign) == {c.path for c in clips}
    g = _groups_per_split(clips, assign)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    pos = Counter(assign[c.path] for c in clips if c.label == 1)
    assert all(pos[s] > 0 for s in SPLITS)


def test_split_is_seeded():
    clips = _synthetic_clips()
    assert split_clips(clips, SplitSpec(seed=1)) == split_clips(clips, SplitSpec(seed=1))
    assert split_clips(clips, SplitSpec(seed=1)) != split_clips(clips, SplitSpec(seed=2))


def test_group_folds_keep_groups_whole_and_share_the_screams():
    clips = _synthetic_clips(seed=5)
    fold = group_folds(clips, 4, seed=2)
    assert set(fold) == {c.path for c in clips} and set(fold.values()) == {0, 1, 2, 3}
    by_group: dict[str, set] = {}
    for c in clips:
        by_group.setdefault(c.group, set()).add(fold[c.path])
    assert all(len(f) == 1 for f in by_group.values())  # no group in two folds
    screams = Counter(fold[c.path] for c in clips if c.label == 1)
    sizes = Counter(fold.values())
    biggest_group = max(Counter(c.group for c in clips).values())
    assert max(screams.values()) - min(screams.values()) <= biggest_group
    assert max(sizes.values()) - min(sizes.values()) <= biggest_group
    assert group_folds(clips, 4, seed=2) == fold and group_folds(clips, 4, seed=3) != fold
    with pytest.raises(ValueError, match="folds must be >= 2"):
        group_folds(clips, 1)
    with pytest.raises(ValueError, match="3 groups cannot fill 4 folds"):
        group_folds([c for c in clips if c.group in ("g0", "g1", "g2")], 4)


def test_split_spec_validates():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitSpec(train=0.8, val=0.1, test=0.2)
    with pytest.raises(ValueError, match=">= 0"):
        SplitSpec(train=1.1, val=-0.1, test=0.0)


def test_split_on_real_corpus(corpus):
    ds = discover(corpus)
    assign = split_clips(ds.clips, SplitSpec())
    g = _groups_per_split(ds.clips, assign)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    n = Counter(assign.values())
    for s, target in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert n[s] / len(ds) == pytest.approx(target, abs=0.02), (s, n)
    pos = Counter(assign[c.path] for c in ds.clips if c.label == 1)
    n_pos = sum(pos.values())
    for s, target in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert pos[s] / n_pos == pytest.approx(target, abs=0.03), (s, pos)  # screams in every split, in proportion


def test_split_file_is_written_and_reused(tmp_path):
    # A tiny real dataset on disk so paths are resolvable relative to the root.
    root = tmp_path / "data"
    for i in range(30):
        _wav(root / ("Screaming" if i % 3 == 0 else "NotScreaming") / f"s{i // 2}" / f"{i}.wav")
    ds = discover(root)
    split_file = tmp_path / "split.csv"
    first = load_or_make_split(ds, split_file, SplitSpec(seed=0))
    assert split_file.is_file()
    assert set(read_split(split_file, ds.root)) == {c.path for c in ds.clips}
    mtime = split_file.stat().st_mtime_ns
    again = load_or_make_split(ds, split_file, SplitSpec(seed=99))  # another seed: the file wins
    assert {s: [c.path for c in cs] for s, cs in again.items()} == {s: [c.path for c in cs] for s, cs in first.items()}
    assert split_file.stat().st_mtime_ns == mtime
    counts = split_counts(first)
    assert sum(v["scream"] for v in counts.values()) == 10
    assert sum(v["scream"] + v["not_scream"] for v in counts.values()) == 30
    # Another CSV given as the split file (the manifest, say), or a split name it does not know: clear errors.
    bad = tmp_path / "not_a_split.csv"
    bad.write_text("path,label\na.wav,1\n")
    with pytest.raises(DatasetError, match="needs columns 'path' and 'split'.*right file"):
        load_or_make_split(ds, bad)
    bad.write_text("path,split\na.wav,train\nb.wav,holdout\n")
    with pytest.raises(DatasetError, match=r"not_a_split.csv:3: split 'holdout' is not one of train, val, test"):
        load_or_make_split(ds, bad)
    # A clip the split file does not know is an error, not a silent re-split.
    _wav(root / "Screaming" / "new.wav")
    with pytest.raises(DatasetError, match="not in this split file"):
        load_or_make_split(discover(root), split_file)


# ---- feature cache ------------------------------------------------------------------------------------------

def test_feature_cache_hits_and_misses(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache")
    calls = []

    def compute(path):
        calls.append(path)
        return np.full((2, 3), float(len(calls)), np.float32)

    a = cache.get(wav, {"n_mels": 128}, compute)
    b = cache.get(wav, {"n_mels": 128}, compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(a, b)
    assert b.dtype == np.float32 and b.shape == (2, 3)
    cache.get(wav, {"n_mels": 64}, compute)  # other settings
    assert len(calls) == 2
    write_audio(wav, sine(880.0, 0.1))  # same name, other content
    c = cache.get(wav, {"n_mels": 128}, compute)
    assert len(calls) == 3 and c[0, 0] == 3.0
    assert FeatureCache(tmp_path / "cache").get(wav, {"n_mels": 128}, compute)[0, 0] == 3.0  # persisted on disk
    assert len(calls) == 3
