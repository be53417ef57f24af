"""Labelled datasets: discovery, group-aware stratified splits, and an on-disk feature cache.

A dataset is a list of :class:`Clip`. Two layouts are accepted:

1. a manifest CSV (``manifest.csv`` in the folder, or the CSV itself) with columns ``path,label`` and optionally
   ``group,source,category,duration_s,license``; paths are relative to the CSV's folder;
2. class folders, case-insensitive: ``Screaming/`` + ``NotScreaming/``, ``scream/`` + ``not_scream/``,
   ``positive/`` + ``negative/``, ``1/`` + ``0/`` (audio files found recursively below them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import AUDIO_EXTENSIONS

SPLITS = ("train", "val", "test")

POSITIVE_DIRS = ("screaming", "scream", "screams", "positive", "1")
NEGATIVE_DIRS = ("notscreaming", "not_screaming", "not_scream", "notscream", "non_scream", "nonscream",
                 "negative", "0")
LAYOUTS_HELP = (
    "accepted layouts:\n"
    "  - a manifest CSV (manifest.csv in the folder, or the CSV path) with columns path,label[,group,source,...];\n"
    "    label 1 = scream, 0 = not a scream; paths relative to the CSV's folder\n"
    "  - class folders (case-insensitive): Screaming/ + NotScreaming/, scream/ + not_scream/,\n"
    "    positive/ + negative/, or 1/ + 0/, with audio files below them"
)


class DatasetError(ValueError):
    """A dataset that cannot be read: the message says what was found and what is accepted."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file. `group` ties clips that must stay in one split (speaker, recording, source)."""

    path: str
    label: int
    group: str
    source: str = ""
    category: str = ""
    duration_s: float = float("nan")
    license: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    root: str
    clips: list[Clip]
    layout: str
    licenses: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips], dtype=np.int64)

    def subset(self, keep: Callable[[Clip], bool]) -> Dataset:
        clips = [c for c in self.clips if keep(c)]
        return Dataset(self.root, clips, self.layout, dict(Counter(c.license for c in clips if c.license)))

    def summary(self) -> dict:
        lab = Counter(c.label for c in self.clips)
        return {"root": self.root, "layout": self.layout, "clips": len(self.clips), "screams": lab.get(1, 0),
                "non_screams": lab.get(0, 0), "groups": len({c.group for c in self.clips})}


def _parse_label(value: str, where: str) -> int:
    v = str(value).strip().lower()
    if v in ("1", "1.0", "scream", "screaming", "positive", "true", "yes"):
        return 1
    if v in ("0", "0.0", "not_scream", "notscreaming", "non_scream", "negative", "false", "no"):
        return 0
    raise DatasetError(f"{where}: label {value!r} is not 0/1 (1 = scream, 0 = not a scream)")


def load_manifest(csv_path: str | os.PathLike) -> Dataset:
    csv_path = Path(csv_path)
    root = csv_path.parent
    rows = _read_csv(csv_path)
    cols = [c.strip().lower() for c in rows[0]] if rows else []
    if "path" not in cols or "label" not in cols:
        raise DatasetError(f"{csv_path}: a manifest needs columns 'path' and 'label', found {cols}\n{LAYOUTS_HELP}")
    clips = []
    seen: dict[Path, int] = {}
    for i, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):  # a blank line
            continue
        row = {k: (v or "").strip() for k, v in zip(cols, values) if k}
        rel = row.get("path", "")
        if not rel:
            raise DatasetError(f"{csv_path}:{i}: empty path")
        path = (root / rel).resolve() if not os.path.isabs(rel) else Path(rel)
        if path in seen:  # twice in one dataset: counted twice, or with two labels
            raise DatasetError(f"{csv_path}:{i}: {rel} is listed again (first on line {seen[path]}); list each clip "
                               "once, with one label")
        seen[path] = i
        try:
            dur = float(row.get("duration_s") or "nan")
        except ValueError:
            dur = float("nan")
        clips.append(Clip(path=str(path), label=_parse_label(row.get("label", ""), f"{csv_path}:{i}"),
                          group=row.get("group") or rel, source=row.get("source", ""),
                          category=row.get("category", ""), duration_s=dur, license=row.get("license", "")))
    if not clips:
        raise DatasetError(f"{csv_path}: the manifest lists no clips")
    return Dataset(str(root.resolve()), clips, "manifest", dict(Counter(c.license for c in clips if c.license)))


def _class_dirs(root: Path) -> tuple[Path, Path] | None:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    pos = next((subdirs[n] for n in POSITIVE_DIRS if n in subdirs), None)
    neg = next((subdirs[n] for n in NEGATIVE_DIRS if n in subdirs), None)
    return (pos, neg) if pos is not None and neg is not None else None


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def discover(path: str | os.PathLike) -> Dataset:
    """Find the labelled clips under `path` (a folder or a manifest CSV). Raises DatasetError listing the layouts."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_manifest(path)
        raise DatasetError(f"{path}: not a folder or a manifest CSV\n{LAYOUTS_HELP}")
    if (path / "manifest.csv").is_file():
        return load_manifest(path / "manifest.csv")
    dirs = _class_dirs(path)
    if dirs is None:
        found = sorted(p.name + "/" for p in path.iterdir() if p.is_dir())[:10]
        raise DatasetError(f"{path}: unknown dataset layout (sub-folders found: {found or 'none'})\n{LAYOUTS_HELP}")
    clips = []
    for label, folder in ((1, dirs[0]), (0, dirs[1])):
        for f in _audio_files(folder):
            rel = f.relative_to(folder)
            # Without a manifest the best group we have is the sub-folder (speaker/session) or the file itself.
            group = f"{folder.name}/{rel.parts[0]}" if len(rel.parts) > 1 else str(f.relative_to(path))
            clips.append(Clip(path=str(f.resolve()), label=label, group=group, source=path.name))
    if not clips:
        raise DatasetError(f"{path}: class folders {dirs[0].name}/ and {dirs[1].name}/ hold no audio files")
    return Dataset(str(path.resolve()), clips, "class_folders")


# --------------------------------------------------------------------------------------------------------------
# splits

@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self):
        fr = (self.train, self.val, self.test)
        if any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got train={self.train}, "
                             f"val={self.val}, test={self.test}")


def _deal_groups(clips: Sequence[Clip], fracs: np.ndarray, seed: int) -> dict[str, int]:
    """{clip path: bin index}: groups shuffled with `seed` and dealt, largest first, to the bin furthest below its
    share `fracs` of screams (groups holding screams, dealt first: they are scarce, so they decide), then of clips
    (the other groups fill each bin to its share of clips). No group is in two bins."""
    by_group: dict[str, list[Clip]] = defaultdict(list)
    for c in clips:
        by_group[c.group].append(c)
    rng = random.Random(seed)
    pos_groups = sorted(g for g, cs in by_group.items() if any(c.label == 1 for c in cs))
    neg_groups = sorted(g for g, cs in by_group.items() if all(c.label == 0 for c in cs))
    out: dict[str, int] = {}
    counts_pos = np.zeros(len(fracs))
    counts_all = np.zeros(len(fracs))
    for groups, weight in ((pos_groups, lambda cs: sum(c.label for c in cs)), (neg_groups, len)):
        rng.shuffle(groups)
        groups.sort(key=lambda g: -weight(by_group[g]))  # stable: ties keep the shuffled order
        counts = counts_pos if groups is pos_groups else counts_all
        total = sum(weight(by_group[g]) for g in groups) + (0 if groups is pos_groups else counts_all.sum())
        for g in groups:
            deficit = fracs * total - counts
            deficit[fracs == 0] = -np.inf
            k = int(np.argmax(deficit))
            counts[k] += weight(by_group[g])
            if groups is pos_groups:
                counts_all[k] += len(by_group[g])
            for c in by_group[g]:
                out[c.path] = k
    return out


def split_clips(clips: Sequence[Clip], spec: SplitSpec = SplitSpec()) -> dict[str, str]:
    """Assign each clip to train/val/test, stratified by label and grouped by `group`.

    No group appears in two splits. Groups are shuffled with `spec.seed` and dealt, largest first, to the split
    furthest below its target share of screams (for groups holding screams) or of clips (the other groups).
    Returns {clip path: split name}.
    """
    bins = _deal_groups(clips, np.array([spec.train, spec.val, spec.test]), spec.seed)
    return {p: SPLITS[k] for p, k in bins.items()}


def group_folds(clips: Sequence[Clip], folds: int, seed: int = 0) -> dict[str, int]:
    """Deal `clips` into `folds` group-aware folds for cross-validation: {clip path: fold index}.

    The same dealing as `split_clips`, with equal shares: no group is in two folds; the groups holding screams go
    first, largest first, each to the fold with the fewest screams so far; then the other groups to the fold with
    the fewest clips.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    n_groups = len({c.group for c in clips})
    if n_groups < folds:
        raise ValueError(f"{n_groups} groups cannot fill {folds} folds")
    return _deal_groups(clips, np.full(folds, 1.0 / folds), seed)


def write_split(assign: dict[str, str], path: str | os.PathLike, root: str | None = None) -> None:
    """Write a split file (CSV: path,split; paths relative to `root` when given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split"])
        for p, s in sorted(assign.items()):
            w.writerow([os.path.relpath(p, root) if root else p, s])


def _read_csv(path: Path) -> list[list[str]]:
    """All rows of a CSV file (UTF-8, with or without the byte-order mark spreadsheets write); DatasetError naming
    the file when it cannot be read or is not UTF-8 text."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as "
                           "UTF-8 (e.g. \"CSV UTF-8\" in a spreadsheet)") from e
    except (OSError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read this CSV file ({e})") from e


def read_noise_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """A noise bank's manifest.csv as rows {column: value} (needs a `path` column; `category`, `license` optional);
    DatasetError (a ValueError) naming the file otherwise."""
    path = Path(path)
    rows = _read_csv(path)
    cols = [c.strip().lower() for c in rows[0]] if rows else []
    if "path" not in cols:
        raise DatasetError(f"{path}: a noise manifest needs a 'path' column, found {cols}")
    return [{k: v.strip() for k, v in zip(cols, r)} for r in rows[1:] if any(v.strip() for v in r)]


def read_split(path: str | os.PathLike, root: str | None = None) -> dict[str, str]:
    """A split file (CSV: path,split, as write_split writes it) → {path: split}; DatasetError naming the file and
    line for a file of another kind or a split name other than train/val/test."""
    path = Path(path)
    rows = _read_csv(path)
    cols = [c.strip().lower() for c in rows[0]] if rows else []
    if "path" not in cols or "split" not in cols:
        raise DatasetError(f"{path}: a split file needs columns 'path' and 'split' (as written by this tool), found "
                           f"{cols}: is this the right file?")
    ip, isp = cols.index("path"), cols.index("split")
    out = {}
    for i, r in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in r):
            continue
        if len(r) <= max(ip, isp) or r[isp].strip() not in SPLITS:
            got = r[isp].strip() if len(r) > isp else ""
            raise DatasetError(f"{path}:{i}: split {got!r} is not one of {', '.join(SPLITS)}")
        key = r[ip].strip()
        out[str((Path(root) / key).resolve()) if root else key] = r[isp].strip()
    return out


def load_or_make_split(ds: Dataset, split_file: str | os.PathLike, spec: SplitSpec = SplitSpec()) -> dict[str, list[Clip]]:
    """Reuse `split_file` if it exists (every later run uses the same split), else make it and write it.

    Returns {"train": [...], "val": [...], "test": [...]}. A clip missing from an existing split file is an error.
    """
    split_file = Path(split_file)
    if split_file.exists():
        assign = read_split(split_file, ds.root)
        missing = [c.path for c in ds.clips if c.path not in assign]
        if missing:
            raise DatasetError(f"{split_file}: {len(missing)} clips of the dataset are not in this split file "
                               f"(e.g. {missing[0]}); delete it to make a new split")
        where: dict[str, set[str]] = {}
        for c in ds.clips:
            where.setdefault(c.group, set()).add(assign[c.path])
        torn = sorted(g for g, s in where.items() if len(s) > 1)
        if torn:  # the manifest's groups changed since the split was made: one group would sit on both sides
            raise DatasetError(f"{split_file}: group {torn[0]!r} has clips in {' and '.join(sorted(where[torn[0]]))}"
                               f" ({len(torn)} group(s) split across splits; the manifest's groups changed since "
                               "this split was made?); delete the split file to make a new group-aware split")
    else:
        assign = split_clips(ds.clips, spec)
        write_split(assign, split_file, ds.root)
    out: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for c in ds.clips:
        out[assign[c.path]].append(c)
    return out


def split_counts(splits: dict[str, list[Clip]]) -> dict[str, dict[str, int]]:
    """{split: {"scream": n, "not_scream": n, "groups": n}}."""
    return {s: {"scream": sum(c.label for c in cs), "not_scream": sum(1 - c.label for c in cs),
                "groups": len({c.group for c in cs})} for s, cs in splits.items()}


# --------------------------------------------------------------------------------------------------------------
# feature cache

def default_cache_dir() -> Path:
    return Path(os.environ.get("SCREAMDETECT_CACHE", Path.home() / ".cache" / "screamdetect"))


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """Arrays on disk keyed by the file's content and the settings that produced them.

    `get(path, settings, compute)` returns the cached array for (sha1 of the file bytes, settings) or calls
    `compute(path)` and stores its result. A changed file or changed settings miss the cache.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = Path(directory) if directory else default_cache_dir() / "features"
        self.hits = 0
        self.misses = 0

    def key(self, path: str | os.PathLike, settings: dict) -> str:
        s = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha1((file_digest(path) + s).encode()).hexdigest()

    def get(self, path: str | os.PathLike, settings: dict, compute: Callable[[str], np.ndarray]) -> np.ndarray:
        k = self.key(path, settings)
        f = self.dir / k[:2] / f"{k}.npy"
        if f.exists():
            try:
                arr = np.load(f)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                pass  # a torn write: recompute
        arr = compute(str(path))
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, f)
        self.misses += 1
        return arr
