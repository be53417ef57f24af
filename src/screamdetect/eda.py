"""Exploratory data analysis: the study's 17 features for every clip (in parallel), figures and an HTML report.

`run_eda(data, out)` writes into `out`:

- ``features.csv``: one row per clip that decoded (path, label, group, source, category, split + the features);
- ``errors.csv``: path, error for every clip that failed (the run goes on without them);
- ``split.csv``: the group-aware split (reused if present, as every later run does);
- ``figures/*.png`` and ``report.html`` (one self-contained file, the PNGs embedded);
- ``eda.json``: a summary (counts, wall time, top separating features) that also marks the folder as EDA output.

Features come from :func:`features.eda_features`; ``sample_rate`` is the file's native rate (the audio itself is
decoded to :data:`audio.SAMPLE_RATE`). The mean log-mel per class uses the shared front-end (:func:`log_mel`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, _sf_path, load_audio
from .data import SPLITS, Dataset, SplitSpec, discover, load_or_make_split, split_counts
from .features import EDA_MIN_SAMPLES, EDA_SCALARS, FrontEnd, eda_features, log_mel, too_short_for_eda

MARKER = "eda.json"  # its presence marks a folder as earlier EDA output, which may be overwritten
OUTPUT_FILES = ("features.csv", "errors.csv", "report.html", MARKER)
META_COLUMNS = ("path", "label", "group", "source", "category", "split")
MEL_IMAGE_S = 1.5  # the mean log-mel image: the first seconds of every clip at least this long
LOG_SCALE = frozenset({"energy", "rms", "max_amplitude", "spectral_flatness", "duration_s"})
CLASS_NAMES = {1: "scream", 0: "not scream"}
CLASS_COLORS = {1: "#d62728", 0: "#1f77b4"}


@dataclass(frozen=True)
class EdaOptions:
    """workers: processes extracting features (>= 1); frontend: the log-mel for the mean log-mel figures;
    split: fractions and seed used when no split file exists yet; top_k: rows of the separating-features table."""

    workers: int = 2
    frontend: FrontEnd = field(default_factory=FrontEnd)
    split: SplitSpec = field(default_factory=SplitSpec)
    top_k: int = 15

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


class OutputDirError(ValueError):
    """--out points at a folder with other content: EDA never overwrites or deletes what it did not write."""


def check_out_dir(out: str | os.PathLike) -> Path:
    """Create `out`, or accept it when empty or an earlier EDA output (it holds eda.json). Else OutputDirError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputDirError(f"{out}: folder is not empty and holds no earlier EDA output ({MARKER}); "
                             f"choose an empty or new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---- per-clip work (runs in worker processes) ---------------------------------------------------------------

def _init_worker() -> None:
    """One BLAS thread per worker: the workers already use every core we were given."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def clip_features(path: str, frontend: FrontEnd) -> tuple[dict[str, float], np.ndarray, np.ndarray, str]:
    """Decode one clip and compute its EDA features, mean log-mel profile and first-seconds log-mel image.

    Returns (features, profile float32 (n_mels,) dB = the clip's log-mel averaged over time,
    image float32 (n_mels, MEL_IMAGE_S / hop_s) dB, or None for a shorter clip, digest = SHA-1 of the decoded
    samples: equal for identical audio under two names, whatever the container). Raises AudioError.
    """
    import hashlib

    import soundfile as sf

    audio = load_audio(path)
    if audio.size < EDA_MIN_SAMPLES:
        raise AudioError(path, too_short_for_eda(audio.size, SAMPLE_RATE))
    feats = eda_features(audio, SAMPLE_RATE)
    try:  # the study's "sample rate" is the file's own; the audio here is always SAMPLE_RATE
        feats["sample_rate"] = float(sf.info(_sf_path(Path(path))).samplerate)
    except (sf.LibsndfileError, RuntimeError):
        pass  # ffmpeg formats: keep the decoded rate
    mel = log_mel(audio, frontend=frontend)
    n_img = round(MEL_IMAGE_S / frontend.hop_s)
    image = mel[:, :n_img].copy() if mel.shape[1] >= n_img else None
    digest = hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()
    return feats, mel.mean(axis=1).astype(np.float32), image, digest


def _job(path: str, frontend: FrontEnd):
    try:
        return path, clip_features(path, frontend), None
    except AudioError as e:
        return path, None, e.cause
    except Exception as e:  # noqa: BLE001 - one bad clip must not stop the run; the cause is reported
        return path, None, f"feature extraction failed: {type(e).__name__}: {e}"


@dataclass
class EdaResult:
    """rows: one dict per decoded clip (META_COLUMNS + features); errors: (path, cause) for the others;
    profiles/images: {label: per-band mean (n_mels,) dB} / {label: mean (n_mels, frames) dB} of the first
    MEL_IMAGE_S seconds over the image_counts[label] clips at least that long; digests: {path: SHA-1 of its
    decoded samples}."""

    rows: list[dict]
    errors: list[tuple[str, str]]
    profiles: dict[int, np.ndarray]
    profile_q: dict[int, tuple[np.ndarray, np.ndarray]]
    images: dict[int, np.ndarray]
    split_counts: dict[str, dict[str, int]]
    image_counts: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    digests: dict[str, str] = field(default_factory=dict)


def extract(ds: Dataset, assign: dict[str, str], opts: EdaOptions = EdaOptions(),
            on_done: Callable[[str, str | None], None] | None = None) -> EdaResult:
    """Features of every clip of `ds` with `opts.workers` processes. `on_done(path, error)` after each clip."""
    t0 = time.perf_counter()
    by_path = {c.path: c for c in ds.clips}
    feats: dict[str, dict] = {}
    errors: dict[str, str] = {}
    prof: dict[int, list[np.ndarray]] = {0: [], 1: []}
    n_img = round(MEL_IMAGE_S / opts.frontend.hop_s)
    img_sum = {k: np.zeros((opts.frontend.n_mels, n_img)) for k in (0, 1)}
    img_cnt = {k: 0 for k in (0, 1)}
    digests: dict[str, str] = {}

    def collect(path, res, error):
        if error is not None:
            errors[path] = error
        else:
            f, profile, image, digests[path] = res
            c = by_path[path]
            feats[path] = f
            prof[c.label].append(profile)
            if image is not None:  # one population for every frame: clips covering the whole image
                img_sum[c.label] += image
                img_cnt[c.label] += 1
        if on_done:
            on_done(path, error)

    paths = [c.path for c in ds.clips]
    if opts.workers == 1:
        _init_worker()
        for p in paths:
            collect(*_job(p, opts.frontend))
    else:
        with ProcessPoolExecutor(max_workers=opts.workers, initializer=_init_worker) as ex:
            futures = [ex.submit(_job, p, opts.frontend) for p in paths]
            for fut in as_completed(futures):
                collect(*fut.result())

    rows = []
    for c in ds.clips:  # dataset order, whatever order the workers finished in
        if c.path in feats:
            rows.append({"path": _rel(c.path, ds.root), "label": c.label, "group": c.group, "source": c.source,
                         "category": c.category, "split": assign.get(c.path, ""), **feats[c.path]})
    profiles, profile_q, images = {}, {}, {}
    for k in (0, 1):
        if prof[k]:
            stack = np.stack(prof[k])
            profiles[k] = stack.mean(axis=0)
            profile_q[k] = (np.percentile(stack, 25, axis=0), np.percentile(stack, 75, axis=0))
            if img_cnt[k]:
                images[k] = img_sum[k] / img_cnt[k]
    image_counts = dict(img_cnt)
    ok = [c for c in ds.clips if c.path in feats]
    splits = {s: [c for c in ok if assign.get(c.path) == s] for s in SPLITS}
    order = {p: i for i, p in enumerate(paths)}
    return EdaResult(rows, sorted(errors.items(), key=lambda kv: order[kv[0]]), profiles, profile_q,
                     images, split_counts(splits), image_counts, time.perf_counter() - t0, digests)


def identical_audio(ds: Dataset, res: EdaResult, assign: dict[str, str]) -> list[dict]:
    """Sets of clips whose decoded audio is identical, each as {"files": [{path, label, group, split}],
    "groups": n, "splits": [...], "labels": [...]}: in two splits they leak one clip into the other (the split is
    by group, and they are in different groups); with two labels the dataset contradicts itself. Largest
    problems first (label conflicts, then sets across splits)."""
    by_digest: dict[str, list] = {}
    for c in ds.clips:
        if c.path in res.digests:
            by_digest.setdefault(res.digests[c.path], []).append(c)
    sets = []
    for clips in by_digest.values():
        if len(clips) < 2:
            continue
        splits = sorted({assign.get(c.path, "") for c in clips})
        sets.append({"files": [{"path": _rel(c.path, ds.root), "label": c.label, "group": c.group,
                                "split": assign.get(c.path, "")} for c in clips],
                     "groups": len({c.group for c in clips}), "splits": splits,
                     "labels": sorted({c.label for c in clips})})
    return sorted(sets, key=lambda d: (-len(d["labels"]), -len(d["splits"]), d["files"][0]["path"]))


def _rel(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root) if Path(path).is_relative_to(root) else path
    except ValueError:
        return path


# ---- statistics ---------------------------------------------------------------------------------------------

def feature_columns(rows: list[dict]) -> list[str]:
    """The numeric feature columns of `rows` (the study's scalars first, then mfcc_i, chroma_i)."""
    if not rows:
        return []
    cols = [k for k in rows[0] if k not in META_COLUMNS]
    return sorted(cols, key=lambda k: (k not in EDA_SCALARS, EDA_SCALARS.index(k) if k in EDA_SCALARS else 0))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Univariate ROC AUC of a feature (P(score of a random scream > a random non-scream), ties count half)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def separation_table(rows: list[dict]) -> list[dict]:
    """Each feature's class separation, strongest first: AUC, |AUC − 0.5|, Cohen's d, per-class medians."""
    labels = np.array([r["label"] for r in rows])
    out = []
    for col in feature_columns(rows):
        x = np.array([r[col] for r in rows], float)
        finite = np.isfinite(x)
        p, n = x[(labels == 1) & finite], x[(labels == 0) & finite]
        if p.size < 2 or n.size < 2:
            continue
        a = auc(p, n)
        pooled = math.sqrt(((p.size - 1) * p.var(ddof=1) + (n.size - 1) * n.var(ddof=1)) / (p.size + n.size - 2))
        d = float((p.mean() - n.mean()) / pooled) if pooled > 0 else 0.0
        out.append({"feature": col, "auc": a, "separation": abs(a - 0.5), "cohens_d": d,
                    "median_scream": float(np.median(p)), "median_not_scream": float(np.median(n))})
    return sorted(out, key=lambda r: -r["separation"])


def split_count_rows(counts: dict[str, dict[str, int]]) -> list[dict]:
    """Table rows from data.split_counts: split, screams, non-screams, clips, scream %, groups, + a total row."""
    rows = []
    for s, c in counts.items():
        n = c["scream"] + c["not_scream"]
        rows.append({"split": s, "scream": c["scream"], "not_scream": c["not_scream"], "clips": n,
                     "scream_%": 100.0 * c["scream"] / n if n else 0.0, "groups": c["groups"]})
    tot = {k: sum(r[k] for r in rows) for k in ("scream", "not_scream", "clips", "groups")}
    rows.append({"split": "total", **tot, "scream_%": 100.0 * tot["scream"] / tot["clips"] if tot["clips"] else 0.0})
    return rows


# ---- figures ------------------------------------------------------------------------------------------------

def _by_class(rows, col):
    return {k: np.array([r[col] for r in rows if r["label"] == k and np.isfinite(r[col])], float) for k in (1, 0)}


def plot_class_balance(rows: list[dict]):
    from .report import plt

    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 2.4]})
    n = {k: sum(r["label"] == k for r in rows) for k in (1, 0)}
    bars = axes[0].bar([CLASS_NAMES[k] for k in n], list(n.values()), color=[CLASS_COLORS[k] for k in n])
    axes[0].bar_label(bars, labels=[f"{v} ({100 * v / max(1, sum(n.values())):.1f}%)" for v in n.values()])
    axes[0].set_ylabel("clips")
    axes[0].set_title("class balance")
    cats: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["category"] or r["source"] or "?", r["label"])
        cats[key] = cats.get(key, 0) + 1
    items = sorted(cats.items(), key=lambda kv: -kv[1])[:20]
    axes[1].barh([f"{c}" for (c, _), _ in items][::-1], [v for _, v in items][::-1],
                 color=[CLASS_COLORS[k] for (_, k), _ in items][::-1])
    axes[1].set_xscale("log")
    axes[1].set_xlabel("clips (log scale)")
    axes[1].set_title("clips per category (red: scream)")
    fig.tight_layout()
    return fig


def plot_feature_hists(rows: list[dict], cols: list[str], ncols: int = 4):
    """Per-class histograms (fraction of each class per bin) of each feature; log-x for energy, rms, amplitude,
    flatness and duration."""
    from .report import plt

    p = plt()
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = p.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, cols):  # y: fraction of the class's clips per bin
        data = _by_class(rows, col)
        allv = np.concatenate(list(data.values()))
        if allv.size and allv.min() == allv.max():  # e.g. sample_rate of a corpus stored at one rate
            ax.text(0.5, 0.5, f"constant: {allv[0]:g}", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(col, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        log = col in LOG_SCALE and allv.size and (allv > 0).any()
        if log:
            lo = np.log10(allv[allv > 0].min())
            bins = np.logspace(lo, np.log10(allv.max()), 40) if allv.max() > allv[allv > 0].min() else 10
            ax.set_xscale("log")
        else:
            bins = np.histogram_bin_edges(allv, 40) if allv.size else 10
        for k in (0, 1):
            v = data[k][data[k] > 0] if log else data[k]
            if v.size:
                ax.hist(v, bins=bins, weights=np.full(v.size, 1 / v.size), alpha=0.55, color=CLASS_COLORS[k],
                        label=CLASS_NAMES[k])  # fraction of the class per bin (also right on log-x)
        ax.set_title(col + (" (log)" if log else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    labelled = [ax for ax in axes.flat if ax.get_legend_handles_labels()[0]]
    if labelled:  # the first panel with data (the first feature may have none to show, e.g. no value > 0 on log-x)
        labelled[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_duration(rows: list[dict]):
    from .report import plt

    p = plt()
    fig, ax = p.subplots(figsize=(7, 3.4))
    data = _by_class(rows, "duration_s")
    allv = np.concatenate(list(data.values()))
    bins = np.linspace(0, max(1.0, float(np.percentile(allv, 99.5))) if allv.size else 1.0, 50)
    for k in (0, 1):
        if data[k].size:
            ax.hist(np.clip(data[k], 0, bins[-1]), bins=bins, weights=np.full(data[k].size, 1 / data[k].size),
                    alpha=0.55, color=CLASS_COLORS[k],
                    label=f"{CLASS_NAMES[k]} (median {np.median(data[k]):.2f} s)")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("fraction of the class")
    ax.set_title("duration per class")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_mean_log_mel(res: EdaResult, frontend: FrontEnd):
    """Left: mean log-mel profile per class with interquartile bands; right: mean log-mel of the first seconds."""
    from .report import plt

    p = plt()
    labels = [k for k in (1, 0) if k in res.profiles]
    img_labels = [k for k in labels if k in res.images]
    fig, axes = p.subplots(1, 1 + len(img_labels), figsize=(4.5 + 3.8 * len(img_labels), 3.6), squeeze=False,
                           layout="constrained")
    ax = axes[0, 0]
    bands = np.arange(frontend.n_mels)
    for k in labels:
        ax.plot(bands, res.profiles[k], color=CLASS_COLORS[k], label=CLASS_NAMES[k])
        ax.fill_between(bands, *res.profile_q[k], color=CLASS_COLORS[k], alpha=0.15)
    ax.set_xlabel(f"mel band (0 = {frontend.fmin:g} Hz … {frontend.n_mels - 1} = "
                  f"{(frontend.fmax or frontend.sample_rate / 2) / 1000:g} kHz)")
    ax.set_ylabel("mean log-mel (dB)")
    ax.set_title("mean log-mel per class (IQR shaded)")
    ax.legend()
    if not img_labels:
        return fig
    vmin, vmax = np.percentile(np.concatenate([res.images[k].ravel() for k in img_labels]), [2, 99.5])
    for ax, k in zip(axes[0, 1:], img_labels):
        im = ax.imshow(res.images[k], origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                       extent=(0, res.images[k].shape[1] * frontend.hop_s, 0, frontend.n_mels))
        ax.set_title(f"{CLASS_NAMES[k]}: first {MEL_IMAGE_S:g} s (n={res.image_counts.get(k, 0)})")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel band")
    fig.colorbar(im, ax=axes[0, 1:].tolist(), label="dB")
    return fig


def plot_split_counts(counts: dict[str, dict[str, int]]):
    """Grouped bars of screams / non-screams per split (log y), scream share on top."""
    from .report import plt

    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.4))
    x = np.arange(len(counts))
    for i, (k, key) in enumerate(((1, "scream"), (0, "not_scream"))):
        vals = [counts[s][key] for s in counts]
        bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, color=CLASS_COLORS[k], label=CLASS_NAMES[k])
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, [f"{s}\n({100 * c['scream'] / max(1, c['scream'] + c['not_scream']):.1f}% screams)"
                      for s, c in counts.items()])
    top = max([max(c["scream"], c["not_scream"]) for c in counts.values()] + [1])
    ax.set_yscale("log")
    ax.set_ylim(0.8, top * 2.5)  # room for the labels; empty bars stay empty
    ax.yaxis.set_major_formatter(p.matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("clips (log)")
    ax.set_title("class counts per split")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_top_features(rows: list[dict], table: list[dict], k: int = 8):
    return plot_feature_hists(rows, [r["feature"] for r in table[:k]], ncols=4)


# ---- the run ------------------------------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _identical_html(dups: list[dict]) -> str:
    from .report import table_html

    if not dups:
        return "<p>No two clips hold identical audio (compared sample by sample after decoding).</p>"
    across = sum(len(d["splits"]) > 1 for d in dups)
    conflicts = sum(len(d["labels"]) > 1 for d in dups)
    head = (f"<p>{len(dups)} set(s) of clips hold identical audio ({sum(len(d['files']) for d in dups)} files); "
            f"<b>{across} span two splits</b> (the same audio in training and evaluation: give those files one "
            f"group), <b>{conflicts} carry both labels</b> (the dataset contradicts itself). Compared sample by "
            "sample after decoding: a re-encoded, resampled or trimmed copy is not found.</p>")
    rows = [{"set": i + 1, **f} for i, d in enumerate(dups[:50]) for f in d["files"]]
    return head + table_html(rows)


def run_eda(data: str | os.PathLike, out: str | os.PathLike, opts: EdaOptions = EdaOptions(),
            split_file: str | os.PathLike | None = None,
            on_start: Callable[[int], None] | None = None,
            on_done: Callable[[str, str | None], None] | None = None) -> dict:
    """Discover `data`, split it (OUT/split.csv or `split_file`), extract features, write the report.

    Returns the summary written to eda.json. Raises DatasetError / OutputDirError before any work for bad input.
    """
    from .report import html_page, img_tag, save_fig, table_html

    t0 = time.perf_counter()
    ds = discover(data)
    out = check_out_dir(out)
    split_path = Path(split_file) if split_file else out / "split.csv"
    splits = load_or_make_split(ds, split_path, opts.split)
    assign = {c.path: s for s, cs in splits.items() for c in cs}
    if on_start:
        on_start(len(ds))
    res = extract(ds, assign, opts, on_done)
    cols = feature_columns(res.rows)
    write_csv(out / "features.csv", res.rows, list(META_COLUMNS) + cols)
    write_csv(out / "errors.csv", [{"path": _rel(p, ds.root), "error": e} for p, e in res.errors], ["path", "error"])

    figs = out / "figures"
    sections: list[tuple[str, str]] = []
    n_pos = sum(r["label"] for r in res.rows)
    summary = {"data": str(data), "layout": ds.layout, "clips": len(ds), "decoded": len(res.rows),
               "failed": len(res.errors), "screams": n_pos, "non_screams": len(res.rows) - n_pos,
               "groups": len({r["group"] for r in res.rows}), "workers": opts.workers,
               "extract_s": round(res.wall_s, 1), "split_file": str(split_path),
               "split_counts": res.split_counts, "frontend": opts.frontend.to_dict(), "options": {
                   "workers": opts.workers, "split": asdict(opts.split), "top_k": opts.top_k}}
    overview = [{"": k, "value": summary[k]} for k in ("clips", "decoded", "failed", "screams", "non_screams",
                                                       "groups")]
    body = table_html(overview)
    if res.errors:
        body += (f"<p><b>{len(res.errors)} file(s) could not be used</b> (listed in errors.csv):</p>"
                 + table_html([{"path": _rel(p, ds.root), "error": e} for p, e in res.errors[:50]]))
    sections.append(("Overview", body))
    if res.rows:
        png = save_fig(plot_class_balance(res.rows), figs / "class_balance.png")
        sections.append(("Class balance", img_tag(png, "class balance")))
        png = save_fig(plot_duration(res.rows), figs / "duration.png")
        sections.append(("Duration per class", img_tag(png, "duration histogram per class")))
        png = save_fig(plot_feature_hists(res.rows, [c for c in EDA_SCALARS if c in cols]), figs / "features.png")
        sections.append(("Per-class distributions of the scalar features",
                         "<p class='note'>Fraction of each class per bin; energy, RMS, max amplitude, flatness and duration "
                         "on log-x. mfcc / chroma are the means of their 13 / 12 coefficients.</p>"
                         + img_tag(png, "feature distributions")))
        if res.profiles:
            png = save_fig(plot_mean_log_mel(res, opts.frontend), figs / "mean_log_mel.png", dpi=80)
            sections.append(("Mean log-mel per class",
                             f"<p class='note'>The shared front-end ({opts.frontend.n_mels} mels, "
                             f"{opts.frontend.win_s * 1e3:g} ms window, {opts.frontend.hop_s * 1e3:g} ms hop). "
                             f"Right: mean log-mel of the first {MEL_IMAGE_S:g} s of every clip at least that long.</p>"
                             + img_tag(png, "mean log-mel per class")))
        png = save_fig(plot_split_counts(res.split_counts), figs / "split_counts.png")
        sections.append(("Class counts per split",
                         f"<p class='note'>Split by group (no group in two splits), stratified by label; "
                         f"split file: {split_path}</p>" + table_html(split_count_rows(res.split_counts),
                                                                     floatfmt="{:.1f}") + img_tag(png, "split counts")))
        dups = identical_audio(ds, res, assign)
        summary["identical_audio"] = {
            "sets": len(dups), "files": sum(len(d["files"]) for d in dups),
            "across_splits": sum(len(d["splits"]) > 1 for d in dups),
            "label_conflicts": sum(len(d["labels"]) > 1 for d in dups), "list": dups}
        sections.append(("Identical audio under different names", _identical_html(dups)))
        table = separation_table(res.rows)
        summary["top_features"] = table[: opts.top_k]
        if table:
            png = save_fig(plot_top_features(res.rows, table), figs / "top_features.png")
            sections.append(("Features that separate the classes most",
                             "<p class='note'>Univariate ROC AUC of each feature for scream vs not (0.5 = no "
                             "information; below 0.5: lower in screams) and Cohen's d (mean difference in pooled "
                             "standard deviations). Computed on all decoded clips.</p>"
                             + table_html(table[: opts.top_k]) + img_tag(png, "top separating features")))
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    intro = (f"{summary['clips']} clips from {ds.root} ({ds.layout}); {summary['failed']} failed; features by "
             f"{opts.workers} worker(s) in {summary['extract_s']:.0f} s; whole run {summary['wall_s']:.0f} s.")
    (out / "report.html").write_text(html_page("screamdetect EDA", sections, intro=intro))
    (out / MARKER).write_text(json.dumps(summary, indent=2, default=float))
    return summary
