"""Side-by-side comparison of scream detectors on the same split and the same scenes (issue 5's table).

Every candidate is a *window scorer* (audio → one score per window of window_s every hop_s) with the detector's
smoothing; each gets its threshold calibrated on VALIDATION data to the same false-alarm target
(product.calibrate), then is measured on the TEST split: clip metrics (clip score = max window score), event
metrics on the test scenes (evaluate.evaluate_events), scanning speed (× real time, 10 min of test audio) and size.

    .venv/bin/python bench/compare_models.py --corpus ../shared/corpus --out runs/compare [--models product,zs,zs_group]

Writes runs/compare/compare.json and compare.md.
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


def product_scorer(model: Path | None) -> WindowScorer:
    det = Detector.load(model)
    return WindowScorer("product CNN (ours)", det.score_windows, det.window_s, det.hop_s, det.smoothing,
                        det.path.stat().st_size)


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

    det = Detector.load(model)
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


def speed(scorer: WindowScorer, audio: np.ndarray) -> float:
    t = time.perf_counter()
    scorer.score_windows(audio)
    return audio.size / SAMPLE_RATE / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/compare"))
    ap.add_argument("--model", type=Path, default=None, help="product ONNX (default: the shipped model)")
    ap.add_argument("--models", default="product,zs,zs_group")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gate", type=float, default=0.1, help="stage-1 (CNN) threshold of the cascade")
    ap.add_argument("--free-hours", type=float, default=1.0)
    ap.add_argument("--calib-hours", type=float, default=1.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

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
        "zs": lambda: yamnet_zero_shot((11,), "YAMNet zero-shot: Screaming", smoothing),
        "zs_group": lambda: yamnet_zero_shot((11, 6, 9, 10, 22), "YAMNet zero-shot: scream group", smoothing),
        "cascade": lambda: cascade(args.model, args.gate, (11,), smoothing),
        "head": lambda: yamnet_head(splits, smoothing),
    }
    rows = []
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
        rows.append(row)
        (args.out / "compare.json").write_text(json.dumps(rows, indent=1))
    from screamdetect.report import table_markdown

    (args.out / "compare.md").write_text(table_markdown(rows, floatfmt="{:.3g}"))
    print(table_markdown(rows, floatfmt="{:.3g}"))


if __name__ == "__main__":
    main()
