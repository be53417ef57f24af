"""Side-by-side comparison of scream detectors on the same split and the same scenes (issue 5's table).

Every candidate is a *window scorer* (audio → one score per window of window_s every hop_s) with the detector's
smoothing; each gets its threshold calibrated on VALIDATION data to the same false-alarm target
(product.calibrate), then is measured on the TEST split: clip metrics (clip score = max window score), event
metrics on the test scenes (evaluate.evaluate_events), scanning speed (× real time, 10 min of test audio) and size.

    .venv/bin/python bench/compare_models.py --corpus ../shared/corpus --out runs/compare [--models product,zs,zs_group]

Writes runs/compare/compare.json, compare.md and compare.html (the table and two figures: event recall per SNR
for each model, and speed against test AP with the 1000× target); `--report-only` rebuilds the last two from
compare.json without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from screamdetect import scenes
from screamdetect.audio import SAMPLE_RATE, load_audio
from screamdetect.data import SplitSpec, discover, load_or_make_split
from screamdetect.detector import Detector, EventTracker, Smoothing
from screamdetect.evaluate import clip_metrics, evaluate_events
from screamdetect.product import ProductConfig, calibrate


class WindowScorer:
    """A Detector-like object around a function audio → window scores (for calibration and event evaluation)."""

    def __init__(self, name: str, fn, window_s: float, hop_s: float, smoothing: Smoothing, size_bytes: int):
        self.name, self.fn, self.window_s, self.hop_s = name, fn, window_s, hop_s
        self.smoothing, self.size_bytes, self.threshold = smoothing, size_bytes, 0.5

    def score_windows(self, audio: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(audio), dtype=np.float32)

    def tracker(self) -> EventTracker:
        return EventTracker(self.threshold, self.smoothing, self.window_s, self.hop_s)


def product_scorer(model: Path | None, second_stage: bool = True) -> WindowScorer:
    det = Detector.load(model, second_stage=second_stage)
    size = det.path.stat().st_size
    name = "product CNN (ours)"
    if det.patch_model:  # a YAMNet transfer model from `train` (configs/yamnet_*.yaml): its ONNX holds YAMNet
        name = f"product {det.card.get('architecture', 'YAMNet')} (train/export; YAMNet patch on every window)"
    elif det.second_stage is not None:
        from screamdetect.models.yamnet import yamnet_zip_path

        name = f"product cascade (ours): CNN >= {det.second_stage.gate:g} then YAMNet + logistic head"
        size += yamnet_zip_path().stat().st_size
    return WindowScorer(name, det.score_windows, det.window_s, det.hop_s, det.smoothing, size)


def yamnet_zero_shot(classes: tuple[int, ...], name: str, smoothing: Smoothing) -> WindowScorer:
    from screamdetect.models.yamnet import YamnetOnnx, _sigmoid

    y = YamnetOnnx(threads=2)
    fe = y.frontend

    def fn(audio):
        logits, _ = y.clip(audio)
        return _sigmoid(logits[:, list(classes)]).max(axis=1)

    return WindowScorer(name, fn, fe.patch_s, fe.patch_hop_s, smoothing, y.path.stat().st_size)


def cascade(model: Path | None, gate: float, classes: tuple[int, ...], smoothing: Smoothing) -> WindowScorer:
    """Stage 1: the product CNN on every window; stage 2: YAMNet's own score (max over `classes`) on the 0.96 s of
    audio at the start of each window the CNN scores >= `gate`; other windows score 0. Cost: CNN everywhere +
    YAMNet on the candidates only."""
    from screamdetect.models.yamnet import YamnetOnnx, _sigmoid, audio_to_patches

    det = Detector.load(model, second_stage=False)  # stage 1 = the CNN alone
    y = YamnetOnnx(threads=2)
    seg = round(y.frontend.patch_s * SAMPLE_RATE)
    hop = round(det.hop_s * SAMPLE_RATE)

    def fn(audio):
        s1 = det.score_windows(audio)
        out = np.zeros_like(s1)
        idx = np.flatnonzero(s1 >= gate)
        if idx.size:
            patches = np.stack([audio_to_patches(audio[i * hop: i * hop + seg])[0] for i in idx])
            out[idx] = _sigmoid(y.run(patches)[0][:, list(classes)]).max(axis=1)
        return out

    return WindowScorer(f"cascade: CNN >= {gate} then YAMNet {list(classes)}", fn, det.window_s, det.hop_s,
                        det.smoothing, det.path.stat().st_size + y.path.stat().st_size)


def yamnet_head(splits: dict, smoothing: Smoothing, hidden: int = 0) -> WindowScorer:
    """YAMNet frozen (8-bit ONNX) → 1024-d embedding per 0.96 s patch → the logistic head trained on the TRAIN
    split's cached embeddings (bench/yamnet_eval.py), checkpointed on validation; one score per patch."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from yamnet_eval import clip_arrays

    from screamdetect.models.yamnet import YamnetHead, YamnetOnnx

    D, _ = clip_arrays({k: splits[k] for k in ("train", "val")}, threads=2, cache_dir=None)
    head = YamnetHead(seed=0, hidden=hidden, progress=False)
    head.fit_embeddings(D["train"]["emb"], D["train"]["y"], D["val"]["emb"], D["val"]["y"])
    y = YamnetOnnx(threads=2)
    fe = y.frontend

    def fn(audio):
        _, emb = y.clip(audio)
        return head.predict_proba_embeddings([e[None] for e in emb])

    n_head = sum(p.numel() for p in head.head_.parameters()) * 4
    return WindowScorer(f"YAMNet frozen + {'logistic' if not hidden else f'MLP {hidden}'} head", fn, fe.patch_s,
                        fe.patch_hop_s, smoothing, y.path.stat().st_size + n_head)


def study_scorer(run_dir: Path, smoothing: Smoothing, hop_s: float = 0.5) -> WindowScorer:
    """A model of the study grid (`screamdetect study`, e.g. runs/study/resnet__both) as a detector: windows of the
    study's clip length (clip_s) every `hop_s`, each through the study's own front-end (features.log_mel of the
    window, first n_frames frames) and the saved torch module; P(scream) per window."""
    import torch
    import yaml

    from screamdetect.features import FrontEnd, log_mel
    from screamdetect.product import load_trained_module

    cfg = yaml.safe_load((run_dir.parent / "config.yaml").read_text())
    fe = FrontEnd.from_dict(cfg["frontend"])
    module, (_, n_frames) = load_trained_module(run_dir / "model.pt")
    torch.set_num_threads(2)
    win, hop = round(cfg["clip_s"] * SAMPLE_RATE), round(hop_s * SAMPLE_RATE)

    def fn(audio):
        n = 1 if audio.size <= win else 1 + (audio.size - win) // hop
        x = np.pad(audio, (0, max(0, (n - 1) * hop + win - audio.size)))
        out = []
        for b in range(0, n, 256):
            X = np.stack([log_mel(x[i * hop: i * hop + win], frontend=fe)[:, :n_frames]
                          for i in range(b, min(n, b + 256))])
            with torch.no_grad():
                out.append(torch.sigmoid(module(torch.from_numpy(X))).numpy().reshape(-1))
        return np.concatenate(out)

    size = sum(p.numel() for p in module.parameters()) * 4
    return WindowScorer(f"study {run_dir.name} (from scratch, {cfg['clip_s']:g} s windows)", fn, cfg["clip_s"],
                        hop_s, smoothing, size)


def yamnet_ft_scorer(state: Path, smoothing: Smoothing) -> WindowScorer:
    """The fine-tuned YAMNet saved by bench/yamnet_eval.py --save-ft (our float port with its trained last blocks +
    the new head): one score per 0.96 s patch every 0.48 s, in torch."""
    import torch

    from screamdetect.models.yamnet import (
        EMBEDDING_DIM,
        YAMNET_FRONTEND,
        audio_to_patches,
        build_yamnet_torch,
    )

    ck = torch.load(str(state), map_location="cpu", weights_only=True)
    yam = build_yamnet_torch()
    yam.load_state_dict(ck["yamnet"])
    head = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(EMBEDDING_DIM, 1))
    head.load_state_dict(ck["head"])
    yam.eval()
    head.eval()
    torch.set_num_threads(2)

    def fn(audio):
        P = torch.from_numpy(audio_to_patches(audio))
        with torch.no_grad():
            return torch.cat([torch.sigmoid(head(yam(P[i: i + 256])[1])).reshape(-1)
                              for i in range(0, len(P), 256)]).numpy()

    size = sum(p.numel() for p in list(yam.parameters()) + list(head.parameters())) * 4
    return WindowScorer(f"YAMNet fine-tuned ({state.name})", fn, YAMNET_FRONTEND.patch_s, YAMNET_FRONTEND.patch_hop_s,
                        smoothing, size)


def speed(scorer: WindowScorer, audio: np.ndarray) -> float:
    t = time.perf_counter()
    scorer.score_windows(audio)
    return audio.size / SAMPLE_RATE / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/compare"))
    ap.add_argument("--model", type=Path, default=None, help="product ONNX (default: the shipped model)")
    ap.add_argument("--models", default="product,zs,zs_group",
                    help="comma-separated: product (--model; with its second stage when the card has one), "
                         "product_cnn (the same without its second stage), zs, "
                         "zs_group, cascade (CNN then YAMNet's own Screaming), head, study, ft")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gate", type=float, default=0.1, help="stage-1 (CNN) threshold of the cascade")
    ap.add_argument("--study-run", type=Path, default=Path("runs/study/resnet__both"),
                    help="study run folder of the `study` row (a from-scratch model of the study grid)")
    ap.add_argument("--ft-state", type=Path, default=Path("runs/yamnet_eval/ft_lr0.0003.pt"),
                    help="fine-tuned YAMNet state of the `ft` row (bench/yamnet_eval.py --models ft --save-ft)")
    ap.add_argument("--free-hours", type=float, default=1.0)
    ap.add_argument("--calib-hours", type=float, default=1.0)
    ap.add_argument("--report-only", action="store_true", help="rebuild compare.md/.html from compare.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        if not (args.out / "compare.json").is_file():
            raise SystemExit(f"error: {args.out / 'compare.json'} not found: run without --report-only first")
        write_report(json.loads((args.out / "compare.json").read_text()), args.out)
        return

    ds = discover(args.corpus)
    splits = load_or_make_split(ds, args.out / "split.csv", SplitSpec())
    nsplit = scenes.noise_split(Path(ds.root) / "noise")
    val = splits["val"]
    val_audio = [load_audio(c.path) for c in val]
    test = splits["test"]
    test_audio = [load_audio(c.path) for c in test]
    y_test = np.array([c.label for c in test])
    val_noises = scenes.load_many(nsplit["val"])
    cfg = ProductConfig(calib_hours=args.calib_hours)
    smoothing = cfg.smoothing
    bench_audio = np.concatenate(test_audio)[: 600 * SAMPLE_RATE]

    makers = {
        "product": lambda: product_scorer(args.model),
        "product_cnn": lambda: product_scorer(args.model, second_stage=False),
        "zs": lambda: yamnet_zero_shot((11,), "YAMNet zero-shot: Screaming", smoothing),
        "zs_group": lambda: yamnet_zero_shot((11, 6, 9, 10, 22), "YAMNet zero-shot: scream group", smoothing),
        "cascade": lambda: cascade(args.model, args.gate, (11,), smoothing),
        "head": lambda: yamnet_head(splits, smoothing),
        "study": lambda: study_scorer(args.study_run, smoothing),
        "ft": lambda: yamnet_ft_scorer(args.ft_state, smoothing),
    }
    # rows accumulate across runs into the same --out (a model measured again replaces its row)
    old = args.out / "compare.json"
    rows = json.loads(old.read_text()) if old.is_file() else []
    for key in args.models.split(","):
        sc = makers[key]()
        print(f"== {sc.name}")
        cal = calibrate(sc, [a for c, a in zip(val, val_audio) if c.label == 1],
                        [a for c, a in zip(val, val_audio) if c.label == 0], val_noises, cfg)
        sc.threshold = cal["threshold"]
        p = np.array([float(sc.score_windows(a).max()) for a in test_audio])
        m = clip_metrics(y_test, p, threshold=sc.threshold)
        ev = evaluate_events(sc, args.corpus, out_dir=args.out / key, split_file=args.out / "split.csv",
                             repeats=args.repeats, free_hours=args.free_hours, write_scenes=False)
        row = {"model": sc.name, "threshold": sc.threshold, "val_recall": cal["val_recall"],
               "val_fa_per_h": cal["val_false_alarms_per_hour"], "test_ap": m["ap"], "test_f1": m["f1"],
               "test_precision": m["precision"], "test_recall": m["recall"],
               "fa_per_h": ev["false_alarms_per_hour"], **{f"recall_{k}dB": v for k, v in ev["recall_by_snr"].items()},
               "latency_median_s": ev["latency_median_s"], "x_realtime": speed(sc, bench_audio),
               "size_mb": sc.size_bytes / 1e6}
        print(json.dumps(row, indent=1))
        rows = [r for r in rows if r["model"] != row["model"]] + [row]
        (args.out / "compare.json").write_text(json.dumps(rows, indent=1))
    write_report(rows, args.out)


SNRS = ("0", "5", "10", "20")


def plot_recall_by_snr(rows: list[dict]):
    """One line per model: event recall at each SNR; the legend gives its false alarms per hour on test."""
    from screamdetect.report import plt

    fig, ax = plt().subplots(figsize=(8.5, 4.8))
    styles = ("-", "--", ":", "-.")
    order = sorted(rows, key=lambda r: -np.nanmean([r.get(f"recall_{k}dB", np.nan) for k in SNRS]))
    for i, r in enumerate(order):
        y = [r.get(f"recall_{k}dB", np.nan) for k in SNRS]
        ax.plot([float(k) for k in SNRS], y, marker="o", ls=styles[i % len(styles)], alpha=0.85,
                label=f"{r['model'][:62]} ({r['fa_per_h']:.1g} FA/h)")
    ax.set(xlabel="SNR of the inserted screams (dB)", ylabel="event recall (test scenes)", ylim=(-0.02, 1.0),
           xticks=[0, 5, 10, 20], title="Event recall per SNR, each model calibrated to 0.5 false alarms/h on validation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_speed_vs_ap(rows: list[dict]):
    """Scanning speed (× real time, log axis) against test clip AP, with the detector's 1000× target; points are
    numbered, the legend names them."""
    from matplotlib.ticker import ScalarFormatter

    from screamdetect.report import plt

    fig, ax = plt().subplots(figsize=(8.5, 4.8))
    for i, r in enumerate(rows, 1):
        ax.scatter(r["x_realtime"], r["test_ap"], s=36, label=f"{i}: {r['model'][:62]}")
        ax.annotate(str(i), (r["x_realtime"], r["test_ap"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.axvline(1000, color="k", ls="--", lw=1)
    ax.text(1030, ax.get_ylim()[0] + 0.01, "target ≥ 1000×", fontsize=8)
    ax.set(xscale="log", xlabel="× real time (score_windows, 10 min of test clips, one process)",
           ylabel="test clip AP", title="Speed against ranking quality")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def write_report(rows: list[dict], out: Path) -> None:
    """compare.md (the table) and compare.html (the table + both figures, self-contained)."""
    from screamdetect.report import fig_to_png_bytes, html_page, img_tag, table_html, table_markdown

    (out / "compare.md").write_text(table_markdown(rows, floatfmt="{:.3g}"))
    print(table_markdown(rows, floatfmt="{:.3g}"))
    recall_png = fig_to_png_bytes(plot_recall_by_snr(rows))
    (out / "recall_by_snr.png").write_bytes(recall_png)
    speed_png = fig_to_png_bytes(plot_speed_vs_ap(rows))
    (out / "speed_vs_ap.png").write_bytes(speed_png)
    page = html_page("Scream detectors side by side", [
        ("Table", table_html(rows, floatfmt="{:.3g}")),
        ("Event recall per SNR", img_tag(recall_png, "event recall per SNR")),
        ("Speed against test AP", img_tag(speed_png, "speed against test AP")),
    ], intro="Same split, same validation calibration (0.5 false alarms/h), same test scenes for every model; "
             "bench/compare_models.py.")
    (out / "compare.html").write_text(page)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.html'} (+ recall_by_snr.png, speed_vs_ap.png)")


if __name__ == "__main__":
    main()
