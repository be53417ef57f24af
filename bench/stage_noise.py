"""Benchmark: how each stage of the shipped cascade scores the validation screams as background noise rises.

Each VALIDATION scream (at most its first MAX_S seconds from its loud part on) is scored clean (its active part
set to `--level-dbfs`, padded with 0.5 s of digital silence), then over every validation noise piece: an excerpt of
the piece set to `--bed-dbfs`, the scream inserted at 30, 20, 10, 5 and 0 dB SNR over its active part, as the event
scenes do (scenes.insert_scream). A scream's score is its highest window score; per SNR the median over the noise
pieces, then the median (and the share above --above) over the screams. Scored: the CNN alone, the second stage
alone (its head on every window, no gate: YAMNet's own P(Screaming) for v7, the head trained on our windows for v6)
and the cascade as the card runs it.
VALIDATION split only.

    .venv/bin/python bench/stage_noise.py [--model src/screamdetect/assets/default.onnx] [--out runs/stage_noise]

Writes <out>/stage_noise.json and <out>/stage_noise.png (with --compare, other runs' curves too) and prints a markdown
table (docs/detector.md, "Why the validation screams are lost").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from screamdetect import scenes as sc
from screamdetect.data import SplitSpec, discover, load_or_make_split
from screamdetect.detector import Detector

SNRS = (30.0, 20.0, 10.0, 5.0, 0.0)
MAX_S = 6  # seconds of a scream recording scored (the noise pieces must be longer)


def stage_scores(det: Detector, cnn: Detector, audio: np.ndarray) -> tuple[float, float, float]:
    """Highest window score of `audio` for the CNN alone, the second stage alone (every window) and the cascade."""
    n = det.n_audio_windows(audio.size)
    windows = np.stack([det.window_audio(audio, i) for i in range(n)])
    return (float(cnn.score_windows(audio).max()), float(det.second_stage.score(windows).max()),
            float(det.score_windows(audio).max()))


def plot(results: list[dict], path: Path) -> bool:
    """Median highest-window score against SNR, one line per stage, one line style per model. False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    x = {f"{s:g} dB": s for s in SNRS} | {"clean": max(SNRS) + 10}
    colors = {"CNN": "tab:blue", "cascade": "tab:red"}
    fig, ax = plt.subplots(figsize=(9.5, 4))
    for res, style in zip(results, ("-", "--", ":", "-.")):
        label = res.get("label") or Path(res["model"]).parent.name or res["model"]  # the run folder, or "shipped"
        for name in next(iter(res["table"].values())):
            if name == "CNN" and res is not results[0] and all(
                    res["table"][c]["CNN"] == results[0]["table"].get(c, {}).get("CNN") for c in res["table"]):
                continue  # the same CNN as the first model's (v6 and v7): drawn once
            xs = [x[c] for c in res["table"]]
            ys = [res["table"][c][name]["median"] for c in res["table"]]
            ax.plot(*zip(*sorted(zip(xs, ys))), style, marker="o", color=colors.get(name, "tab:green"),
                    label=f"{label}: {name}")
    ax.set_xticks(sorted(x.values()), [k.replace(" dB", "") for k, _ in sorted(x.items(), key=lambda kv: kv[1])])
    ax.set_xlabel("SNR over the noise bed (dB)")
    ax.set_ylabel("median of each scream's best window")
    ax.set_ylim(0, 1)
    ax.set_title(f"{results[0]['screams']} validation screams over {results[0]['noise_pieces']} validation noise pieces")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--split-file", type=Path, default=Path("runs/default7/split.csv"))
    ap.add_argument("--model", type=Path, default=None, help="ONNX model with a second stage (default: shipped)")
    ap.add_argument("--level-dbfs", type=float, default=-20.0, help="active level of the clean screams")
    ap.add_argument("--bed-dbfs", type=float, default=-35.0, help="level of the noise beds (scenes: -45..-25)")
    ap.add_argument("--above", type=float, default=0.3, help="also report the share of screams scoring above this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/stage_noise"))
    ap.add_argument("--label", default=None, help="the model's name in the plot (default: its run folder)")
    ap.add_argument("--compare", nargs="*", default=[], help="stage_noise.json of other runs to draw in the plot")
    args = ap.parse_args()

    det = Detector.load(args.model)
    if det.second_stage is None:
        raise SystemExit(f"error: the model has no usable second stage ({det.second_stage_note or 'none in its card'})")
    cnn = Detector.load(args.model, second_stage=False)
    ds = discover(args.corpus)
    val = load_or_make_split(ds, args.split_file, SplitSpec())["val"]
    screams = sc.load_many([c.path for c in val if c.label == 1])
    pieces = [p for p in sc.load_many(sc.noise_split(Path(ds.root) / "noise", seed=0)["val"])
              if p.size > (MAX_S + 4) * 16000 and np.sqrt(np.mean(p.astype(np.float64) ** 2)) > 1e-5]
    rng = np.random.default_rng(args.seed)
    pad = 8000
    rows = {"clean": []} | {f"{s:g} dB": [] for s in SNRS}
    for a in screams:
        if a.size > MAX_S * 16000:  # a long recording: the MAX_S seconds from its loud part on
            start = max(0, sc.active_region(a)[0] - 8000)
            a = a[start: start + MAX_S * 16000]
        a = sc._level_clip(a, args.level_dbfs)
        rows["clean"].append(stage_scores(det, cnn, np.pad(a, (pad, pad))))
        n = a.size + 2 * pad
        for snr in SNRS:
            per_piece = []
            for p in pieces:
                while True:  # an excerpt that is not silent (some pieces have silent stretches)
                    o = int(rng.integers(0, p.size - n))
                    bg = p[o: o + n].copy()
                    if sc._rms(bg) > 1e-5:
                        break
                bg = sc._level(bg, args.bed_dbfs)
                sc.insert_scream(bg, a, pad, snr)
                per_piece.append(stage_scores(det, cnn, sc.fit_full_scale(bg)))
            rows[f"{snr:g} dB"].append(tuple(np.median(np.array(per_piece), axis=0)))
    head = det.card["second_stage"].get("head", "trained")
    names = ("CNN", f"stage 2 ({'P(Screaming)' if head == 'screaming' else 'trained head'})", "cascade")
    table = {cond: {name: {"median": float(np.median(np.array(v)[:, k])),
                           f"share_above_{args.above:g}": float(np.mean(np.array(v)[:, k] > args.above))}
                    for k, name in enumerate(names)} for cond, v in rows.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"model": str(args.model or "shipped"), "label": args.label, "screams": len(screams), "noise_pieces": len(pieces),
              "level_dbfs": args.level_dbfs, "bed_dbfs": args.bed_dbfs, "table": table}
    (args.out / "stage_noise.json").write_text(json.dumps(result, indent=1))
    others = [json.loads(Path(f).read_text()) for f in args.compare]
    if plot([result, *others], args.out / "stage_noise.png"):
        print(f"wrote {args.out / 'stage_noise.png'}")
    print(f"{len(screams)} validation screams, {len(pieces)} validation noise pieces; "
          f"median of the highest window score (share > {args.above:g})")
    print("| condition | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for cond, t in table.items():
        print(f"| {cond} | " + " | ".join(f"{t[n]['median']:.2f} ({t[n][f'share_above_{args.above:g}']:.2f})"
                                         for n in names) + " |")


if __name__ == "__main__":
    main()
