"""YAMNet transfer models on the corpus split: the table of docs/yamnet.md ("Results on the corpus split").

Models (--models, comma-separated):
  zs        zero-shot, YAMNet's Screaming class (11): clip score = max over 0.96 s patches of its sigmoid
  zs_group  zero-shot, max over the scream group (11, 6, 9, 10, 22) (Frigate's mapping)
  head      frozen YAMNet embeddings -> logistic head started from the Screaming unit (one fit per --seeds)
  head_mlp  frozen YAMNet embeddings -> MLP head (--hidden units), one fit per --seeds
  ft        fine-tuned float port (last --ft-blocks blocks + new head), robust augmentation (one run per --ft-lr)

Protocol: the corpus is split by `group` with data.load_or_make_split and the default SplitSpec (the split file
is <out>/split.csv, reused when present). Clip score = max over the clip's 0.96 s patches (hop 0.48 s). The F1
threshold is the one maximising scream F1 on VAL, applied to TEST; AP is threshold-free. Per-clip YAMNet logits
and embeddings (the 8-bit ONNX graph) are computed once and cached with data.FeatureCache, so a second run of
zs/zs_group/head/head_mlp takes seconds. Fine-tuning is slow (~5-8 min per learning rate on 2 CPU cores with the
default --ft-neg-frac; the frozen layers alone take 1-2 min).

    .venv/bin/python bench/yamnet_eval.py --corpus ../shared/corpus --out runs/yamnet_eval
    .venv/bin/python bench/yamnet_eval.py --models zs,zs_group --limit 200     # a quick check on subsampled splits

Writes <out>/results.json (every number, per seed / per learning rate, with training histories) and
<out>/results.md (the markdown table). Speed and sizes: bench/yamnet_speed.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("zs", "zs_group", "head", "head_mlp", "ft")
# Cache key of the per-clip (logits ++ embedding) arrays: bump "kind" when what is stored changes.
CACHE_KIND = "yamnet_onnx_clip/1"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="yamnet_eval.py",
        description="Evaluate YAMNet transfer models (zero-shot, frozen heads, fine-tuning) on the corpus split "
                    "(threshold chosen on val, metrics on test); writes results.json and results.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", default="../shared/corpus", help="corpus folder (manifest.csv or class folders)")
    ap.add_argument("--out", default="runs/yamnet_eval", help="output folder (split.csv, results.json, results.md)")
    ap.add_argument("--split-file", default=None, help="split CSV to use or create; None = <out>/split.csv")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--limit", type=int, default=0,
                    help="quick check: keep at most this many clips per split (all screams up to a quarter of "
                         "it, the rest non-screams, seeded); 0 = the full splits")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the head / head_mlp fits (comma-separated)")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units of head_mlp")
    ap.add_argument("--head-epochs", type=int, default=300, help="max epochs of the frozen heads (full batch)")
    ap.add_argument("--head-patience", type=int, default=40, help="head: epochs without val AP gain before stopping")
    ap.add_argument("--epochs", type=int, default=6, help="max epochs of fine-tuning")
    ap.add_argument("--ft-patience", type=int, default=3, help="fine-tuning: epochs without val AP gain")
    ap.add_argument("--ft-lr", default="1e-4",
                    help="fine-tuning learning rate(s), comma-separated: one run each (docs/yamnet.md has 3e-4,1e-4)")
    ap.add_argument("--ft-blocks", type=int, default=2, help="fine-tuning: trainable last blocks of YAMNet")
    ap.add_argument("--ft-neg-frac", type=float, default=0.34,
                    help="fine-tuning: seeded share of the train non-screams kept (every train scream is kept)")
    ap.add_argument("--ft-copies", type=int, default=1, help="fine-tuning: augmented copies per clip (robust preset)")
    ap.add_argument("--noise", default=None, help="noise bank for augmentation; None = <corpus>/noise")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime / torch threads")
    ap.add_argument("--cache-dir", default=None, help="FeatureCache folder; None = $SCREAMDETECT_CACHE/features (~/.cache/screamdetect/features)")
    ap.add_argument("--ft-trained-only", action="store_true",
                    help="fine-tuning: checkpoint the best TRAINED epoch (the untrained start does not compete)")
    ap.add_argument("--save-ft", action="store_true", help="save each fine-tuned state to <out>/ft_lr<lr>.pt")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        ap.error(f"--models: unknown {bad or 'empty list'}; choose from {', '.join(MODELS)}")
    args.models = models
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.ft_lr = [float(s) for s in args.ft_lr.split(",") if s.strip()]
    except ValueError as e:
        ap.error(f"--seeds / --ft-lr must be comma-separated numbers ({e})")
    if not args.seeds or not args.ft_lr or any(lr <= 0 for lr in args.ft_lr):
        ap.error("--seeds and --ft-lr need at least one value; learning rates must be > 0")
    for name in ("limit", "hidden", "ft_copies"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("head_epochs", "head_patience", "epochs", "ft_patience", "ft_blocks", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.ft_neg_frac <= 1:
        ap.error("--ft-neg-frac must be in (0, 1]")
    return args


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def subsample(clips: list, limit: int, seed: int = 0) -> list:
    """At most `limit` clips: the screams (up to a quarter of `limit`, at least 1) + non-screams, seeded, order kept."""
    if not limit or len(clips) <= limit:
        return clips
    rng = np.random.default_rng(seed)
    pos = [i for i, c in enumerate(clips) if c.label == 1]
    neg = [i for i, c in enumerate(clips) if c.label == 0]
    n_pos = min(len(pos), max(1, limit // 4))
    keep = list(rng.choice(pos, n_pos, replace=False)) if n_pos else []
    keep += list(rng.choice(neg, min(len(neg), limit - n_pos), replace=False))
    return [clips[i] for i in sorted(keep)]


def clip_arrays(splits: dict, threads: int, cache_dir: str | None) -> tuple[dict, list]:
    """Per clip: float32 (p, 521 + 1024) = YAMNet logits ++ embeddings per 0.96 s patch, through FeatureCache.

    Returns ({split: {"clips", "y", "logits", "emb"}}, skipped [(path, reason)]). Unreadable clips are reported
    and left out."""
    from rich.progress import track

    from screamdetect.audio import AudioError, load_audio
    from screamdetect.data import FeatureCache
    from screamdetect.models import yamnet as Y

    ym = Y.YamnetOnnx(threads=threads)
    cache = FeatureCache(cache_dir)
    settings = {"kind": CACHE_KIND, "frontend": Y.YAMNET_FRONTEND.to_dict(),
                "model": f"{Y.YAMNET_PACKAGE}-{Y.YAMNET_PACKAGE_VERSION}/YamNet_w8a8"}

    def compute(path):
        lo, em = ym.clip(load_audio(path))
        return np.concatenate([lo, em], axis=1).astype(np.float32)

    out, skipped = {}, []
    t0 = time.time()
    for s, clips in splits.items():
        kept, arrs = [], []
        for c in track(clips, description=f"YAMNet {s} ({len(clips)} clips)"):
            try:
                arrs.append(cache.get(c.path, settings, compute))
                kept.append(c)
            except (AudioError, OSError) as e:
                print(f"warning: {c.path}: skipped ({e})", file=sys.stderr)
                skipped.append((c.path, str(e)))
        out[s] = {"clips": kept, "y": np.array([c.label for c in kept], np.int64),
                  "logits": [a[:, :Y.N_CLASSES] for a in arrs], "emb": [a[:, Y.N_CLASSES:] for a in arrs]}
    print(f"embeddings: {time.time() - t0:.0f} s (cache hits {cache.hits}, misses {cache.misses})")
    return out, skipped


def test_metrics(D: dict, pv: np.ndarray, pt: np.ndarray) -> dict:
    """Val-F1 threshold applied to test, plus the fixed 0.5 threshold."""
    from screamdetect.evaluate import clip_metrics
    from screamdetect.models.yamnet import _best_f1_threshold

    keys = ("ap", "f1", "precision", "recall", "threshold", "tp", "fp", "fn")
    thr = _best_f1_threshold(D["val"]["y"], pv)
    m = clip_metrics(D["test"]["y"], pt, float(np.clip(thr, 0, 1)))
    m05 = clip_metrics(D["test"]["y"], pt, 0.5)
    mv = clip_metrics(D["val"]["y"], pv, 0.5)
    return {**{k: m[k] for k in keys}, "at_0.5": {k: m05[k] for k in keys}, "val_ap": mv["ap"]}


def eval_zero_shot(D: dict, classes) -> dict:
    from screamdetect.models.yamnet import YamnetZeroShot

    zs = YamnetZeroShot(classes=classes)
    p = {s: np.array([zs.scores_from_logits(lo) for lo in D[s]["logits"]]) for s in ("val", "test")}
    res = test_metrics(D, p["val"], p["test"])
    yt, clips = D["test"]["y"], D["test"]["clips"]
    res["top_test_false_positives"] = [(clips[i].category, round(float(p["test"][i]), 3))
                                       for i in np.argsort(-p["test"]) if yt[i] == 0][:8]
    res["classes"] = list(classes)
    return res


def eval_head(D: dict, hidden: int, seeds: list[int], epochs: int, patience: int) -> dict:
    from screamdetect.models.yamnet import YamnetHead

    runs = []
    for seed in seeds:
        t = time.time()
        m = YamnetHead(seed=seed, hidden=hidden, epochs=epochs, patience=patience, progress=True)
        m.fit_embeddings(D["train"]["emb"], D["train"]["y"], D["val"]["emb"], D["val"]["y"])
        pv, pt = m.predict_proba_embeddings(D["val"]["emb"]), m.predict_proba_embeddings(D["test"]["emb"])
        runs.append({**test_metrics(D, pv, pt), "seed": seed, "best_epoch": m.history_.get("best_epoch"),
                     "fit_s": time.time() - t,
                     "n_params": int(sum(p.numel() for p in m.head_.parameters()))})
        print(f"  hidden={hidden} seed={seed}: test AP {runs[-1]['ap']:.3f} F1 {runs[-1]['f1']:.3f}")
    agg = {f"{s}_{k}": float(getattr(np, s)([r[k] for r in runs])) for k in ("ap", "f1") for s in ("mean", "std")}
    return {"hidden": hidden, "seeds": runs, **agg}


def eval_ft(D: dict, args, lr: float, out: Path) -> dict:
    from rich.progress import track

    from screamdetect.audio import load_audio
    from screamdetect.augment import NoiseBank, augment_dataset
    from screamdetect.models import yamnet as Y

    t0 = time.time()
    ytr = D["train"]["y"]
    rs = np.random.default_rng(0)
    keep = np.flatnonzero((ytr == 1) | (rs.random(len(ytr)) < args.ft_neg_frac))
    clips = D["train"]["clips"]
    waves = [load_audio(clips[i].path) for i in track(keep, description="fine-tuning: load train")]
    noise = Path(args.noise) if args.noise else Path(args.corpus) / "noise"
    try:
        bank = NoiseBank.from_dir(noise, split="train")
    except ValueError as e:
        fail(f"fine-tuning needs a noise bank for the robust augmentation: {e} (use --noise)")
    aw, ay, _, _ = augment_dataset(waves, ytr[keep], [clips[i].group for i in keep], "robust", bank,
                                   copies=args.ft_copies, seed=0)
    Xtr = [Y.yamnet_log_mel(w) for w in track(aw, description="fine-tuning: log-mel train")]
    Xva = [Y.yamnet_log_mel(load_audio(c.path)) for c in D["val"]["clips"]]
    Xte = [Y.yamnet_log_mel(load_audio(c.path)) for c in D["test"]["clips"]]
    t1 = time.time()
    m = Y.YamnetFineTune(seed=0, trainable_blocks=args.ft_blocks, epochs=args.epochs, patience=args.ft_patience,
                         lr=lr, threads=args.threads, progress=True,
                         keep_start=not args.ft_trained_only).fit(Xtr, ay, Xva, D["val"]["y"])
    fit_s = time.time() - t1
    pv, pt = m.predict_proba(Xva), m.predict_proba(Xte)
    res = {**test_metrics(D, pv, pt), "lr": lr, "trainable_blocks": args.ft_blocks, "neg_frac": args.ft_neg_frac,
           "n_train_src": len(keep), "n_train_clips": len(aw), "fit_s": fit_s, "total_s": time.time() - t0,
           "best_epoch": m.history_.get("best_epoch"), "history": m.history_}
    if args.save_ft:
        import torch

        path = out / f"ft_lr{lr:g}{'_trained' if args.ft_trained_only else ''}.pt"
        torch.save({"yamnet": m.yamnet_.state_dict(), "head": m.head_.state_dict()}, path)
        res["state"] = str(path)
    print(f"  ft lr={lr:g}: test AP {res['ap']:.3f} F1 {res['f1']:.3f} (best epoch {res['best_epoch']})")
    return res


def _pr(r: dict) -> str:
    return f"{r['precision']:.2f} / {r['recall']:.2f}"


def markdown(results: dict) -> str:
    """The results table (docs/yamnet.md layout, without the speed columns: see bench/yamnet_speed.py)."""
    c = results["counts"]
    lines = [f"Corpus {results['corpus']}, split {results['split_file']}: "
             + ", ".join(f"{s} {c[s]['clips']} clips ({c[s]['screams']} screams)" for s in ("train", "val", "test"))
             + (f"; subsampled with --limit {results['limit']}" if results["limit"] else "") + ".",
             "F1 at the threshold maximising val F1; AP threshold-free; clip score = max over 0.96 s patches.", "",
             "| model | test AP | scream F1 (val threshold) | P / R | val AP |", "|---|---|---|---|---|"]
    M = results["models"]
    for key, name in (("zs", "zero-shot, Screaming (11)"), ("zs_group", "zero-shot, group (11, 6, 9, 10, 22)")):
        if key in M:
            r = M[key]
            lines.append(f"| {name} | {r['ap']:.3f} | {r['f1']:.3f} (thr {r['threshold']:.2f}); at 0.5: "
                         f"{r['at_0.5']['f1']:.2f} (R {r['at_0.5']['recall']:.2f}) | {_pr(r)} | {r['val_ap']:.3f} |")
    for key, name in (("head", "frozen head, logistic (started from the Screaming unit)"),
                      ("head_mlp", f"frozen head, MLP {M.get('head_mlp', {}).get('hidden', '')}")):
        if key in M:
            r, runs = M[key], M[key]["seeds"]
            f1s = ", ".join(f"{x['f1']:.2f}" for x in runs)
            ps, rs = [x["precision"] for x in runs], [x["recall"] for x in runs]
            lines.append(f"| {name} | {r['mean_ap']:.3f} ± {r['std_ap']:.3f} | {r['mean_f1']:.2f} ± {r['std_f1']:.2f} "
                         f"({len(runs)} seeds: {f1s}) | {min(ps):.2f}-{max(ps):.2f} / {min(rs):.2f}-{max(rs):.2f} | "
                         f"{np.mean([x['val_ap'] for x in runs]):.3f} |")
    for r in M.get("ft", []):
        kept = " (start kept: best_epoch -1)" if r["best_epoch"] == -1 else f" (best epoch {r['best_epoch']})"
        lines.append(f"| fine-tuned, last {r['trainable_blocks']} blocks, lr {r['lr']:g}{kept} | {r['ap']:.3f} | "
                     f"{r['f1']:.3f} (thr {r['threshold']:.2f}) | {_pr(r)} | {r['val_ap']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from screamdetect.data import DatasetError, SplitSpec, discover, load_or_make_split
    from screamdetect.models.yamnet import SCREAM_GROUP, SCREAMING, YamnetMissingError

    out = Path(args.out)
    split_file = Path(args.split_file) if args.split_file else out / "split.csv"
    try:
        ds = discover(args.corpus)
        out.mkdir(parents=True, exist_ok=True)
        splits = load_or_make_split(ds, split_file, SplitSpec())
    except DatasetError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{args.out} / {split_file}: {e}")
    splits = {s: subsample(cs, args.limit) for s, cs in splits.items()}
    counts = {s: {"clips": len(cs), "screams": sum(c.label for c in cs)} for s, cs in splits.items()}
    print("split:", counts)
    try:
        D, skipped = clip_arrays(splits, args.threads, args.cache_dir)
    except YamnetMissingError as e:
        fail(str(e))
    if D["val"]["y"].sum() == 0 or D["test"]["y"].sum() == 0:
        fail("val and test need at least one scream each (raise --limit)")
    results = {"corpus": str(args.corpus), "split_file": str(split_file), "split_spec": SplitSpec().__dict__,
               "limit": args.limit, "counts": counts, "skipped": skipped, "args": vars(args), "models": {}}
    M = results["models"]
    t0 = time.time()
    if "zs" in args.models:
        M["zs"] = eval_zero_shot(D, (SCREAMING,))
    if "zs_group" in args.models:
        M["zs_group"] = eval_zero_shot(D, SCREAM_GROUP)
    if "head" in args.models:
        M["head"] = eval_head(D, 0, args.seeds, args.head_epochs, args.head_patience)
    if "head_mlp" in args.models:
        M["head_mlp"] = eval_head(D, args.hidden, args.seeds, args.head_epochs, args.head_patience)
    if "ft" in args.models:
        M["ft"] = [eval_ft(D, args, lr, out) for lr in args.ft_lr]
    results["eval_s"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
