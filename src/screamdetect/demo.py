"""`make demo`: a 60 s scene with known screams, the shipped detector, events beside the ground truth, a PNG.

With the corpus present the scene is built from its TEST split (screams at 20, 10, 5 and 0 dB SNR over test noise
and test non-screams); without it, from a synthetic scene the package generates (harmonic high-pitched "screams"
with vibrato over pink noise and tones), clearly labelled as synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import scenes
from .audio import SAMPLE_RATE


def synthetic_scream(dur_s: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    """A crude scream-like sound: harmonic tone at f0 (Hz) with vibrato and a rise/fall envelope. float32."""
    t = np.arange(int(dur_s * SAMPLE_RATE)) / SAMPLE_RATE
    f = f0 * (1 + 0.04 * np.sin(2 * np.pi * 6 * t)) * (1 + 0.1 * t / dur_s)
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    x = sum((0.6 ** k) * np.sin(k * phase) for k in range(1, 6))
    env = np.minimum(1, t / 0.08) * np.minimum(1, (dur_s - t) / 0.2)
    x = x * env + 0.02 * rng.standard_normal(t.size)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def synthetic_scene(duration_s: float = 60.0, seed: int = 0) -> scenes.Scene:
    """A scene the package makes on its own: pink-ish noise + tones + 4 synthetic screams at 20/10/5/0 dB (at 8,
    22, 36 and 50 s: a scene shorter than 52 s holds those that fit)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * SAMPLE_RATE)
    white = rng.standard_normal(n)
    pink = np.cumsum(white) * 0.002
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")
    noise = (0.05 * pink / np.std(pink) * 0.3 + 0.003 * white).astype(np.float32)
    # distractors: a beeping alarm and a low hum
    t = np.arange(n) / SAMPLE_RATE
    noise += (0.02 * np.sin(2 * np.pi * 120 * t)).astype(np.float32)
    beep = ((t % 7) < 0.3) & (t > 3)
    noise += (0.05 * np.sin(2 * np.pi * 2500 * t) * beep).astype(np.float32)
    noise = noise.astype(np.float32)
    events = []
    for at, snr in zip((8.0, 22.0, 36.0, 50.0), (20.0, 10.0, 5.0, 0.0)):
        s = synthetic_scream(rng.uniform(1.2, 2.0), rng.uniform(700, 1100), rng)
        if int(at * SAMPLE_RATE) + len(s) > n:
            break
        s0, s1 = scenes.insert_scream(noise, s, int(at * SAMPLE_RATE), snr)
        events.append(scenes.GroundTruth(s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, snr, "synthetic"))
    scenes.fit_full_scale(noise)
    return scenes.Scene("demo_synthetic", noise, events)


def corpus_scene(corpus: Path, seed: int = 0) -> scenes.Scene:
    """60 s from the corpus TEST split: 4 test screams at 20/10/5/0 dB over test noise and test non-screams."""
    from .data import SplitSpec, discover, split_clips

    ds = discover(corpus)
    assign = split_clips(ds.clips, SplitSpec())
    test = [c for c in ds.clips if assign[c.path] == "test"]
    rng = np.random.default_rng(seed)
    pos = [c for c in test if c.label == 1]
    neg = [c for c in test if c.label == 0]
    pick = [pos[i] for i in rng.choice(len(pos), size=min(4, len(pos)), replace=False)]
    noises = scenes.load_many(scenes.noise_split(Path(ds.root) / "noise")["test"])
    negatives = scenes.load_many([neg[i].path for i in rng.choice(len(neg), size=min(30, len(neg)), replace=False)],
                                 max_s=8.0)
    spec = scenes.SceneSpec(duration_s=60.0, seed=seed, clips_per_minute=6.0)
    audio = scenes.background(noises, negatives, 60.0, rng, spec)
    events = []
    for (path, a), at, snr in zip(scenes.load_named([c.path for c in pick]), (6.0, 20.0, 34.0, 48.0),
                                  (20.0, 10.0, 5.0, 0.0)):
        a = a[: int(8 * SAMPLE_RATE)]
        s0, s1 = scenes.insert_scream(audio, a, int(at * SAMPLE_RATE), snr)
        events.append(scenes.GroundTruth(s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, snr, Path(path).name))
    scenes.fit_full_scale(audio)
    return scenes.Scene("demo_corpus_test", audio, events)


def plot_scene(path: Path, audio: np.ndarray, scores: np.ndarray, hop_s: float, window_s: float, threshold: float,
               events, truth, title: str, looser: tuple[float, float] | None = None) -> None:
    """PNG: log-mel spectrogram with ground truth, score timeline with threshold and detected events.

    looser: (false alarms/h, threshold) of a looser operating point, drawn as a dotted line."""
    from .features import log_mel
    from .report import plt, save_fig

    p = plt()
    fig, (a1, a2) = p.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    mel = log_mel(audio, n_mels=64, hop_s=0.02)
    dur = audio.size / SAMPLE_RATE
    a1.imshow(mel, origin="lower", aspect="auto", extent=[0, dur, 0, mel.shape[0]], cmap="magma",
              vmin=mel.max() - 80, vmax=mel.max())
    for g in truth:
        a1.axvspan(g.start_s, g.end_s, color="cyan", alpha=0.25)
        a1.text(g.start_s, mel.shape[0] * 0.92, f"scream {g.snr_db:g} dB", color="cyan", fontsize=8)
    a1.set_ylabel("mel band")
    a1.set_title(title)
    t = np.arange(scores.size) * hop_s + window_s / 2
    a2.plot(t, scores, lw=1.2, label="window score")
    a2.axhline(threshold, color="r", ls="--", lw=1, label=f"threshold {threshold:g}")
    if looser is not None:
        a2.axhline(looser[1], color="grey", ls=":", lw=1,
                   label=f"{looser[1]:g}: at most {looser[0]:g} false alarms/h on validation")
    for e in events:
        a2.axvspan(e.start_s, e.end_s, color="orange", alpha=0.35)
    for g in truth:
        a2.axvspan(g.start_s, g.end_s, ymin=0, ymax=0.08, color="cyan", alpha=0.9)
    a2.set_ylim(0, 1.02)
    a2.set_xlim(0, dur)
    a2.set_xlabel("time (s)   [orange: detected events, cyan: true screams]")
    a2.set_ylabel("P(scream)")
    a2.legend(loc="upper right", fontsize=8)
    save_fig(fig, path)


LOOSER_FA_PER_HOUR = 5.0


def best_window_score(scores: np.ndarray, hop_s: float, window_s: float, start_s: float, end_s: float) -> float:
    """The highest score of the windows that hold any part of [start_s, end_s] (window i spans
    [i·hop_s, i·hop_s + window_s]); 0.0 if none does."""
    i = np.arange(np.asarray(scores).size)
    inside = (i * hop_s < end_s) & (i * hop_s + window_s > start_s)
    return float(np.max(scores[inside])) if inside.any() else 0.0


def match_truth(truth: list[dict], events: list[dict]) -> list[int | None]:
    """For each true scream (in order), the index of the first unused event that covers it, or None (one event
    finds at most one scream; the rule of `evaluate.covers_scream`)."""
    from .evaluate import covers_scream

    used: set[int] = set()
    out: list[int | None] = []
    for g in truth:
        hit = next((i for i, e in enumerate(events) if i not in used
                    and covers_scream(e["start_s"], e["end_s"], g["start_s"], g["end_s"])), None)
        if hit is not None:
            used.add(hit)
        out.append(hit)
    return out


def _event_dicts(events) -> list[dict]:
    return [{"start_s": round(e.start_s, 3), "end_s": round(e.end_s, 3), "peak_score": round(float(e.peak_score), 4),
             "alert_s": round(e.alert_s, 3)} for e in events]


def run_demo(corpus: Path | None, out: Path, model: Path | None = None, seed: int = 0,
             max_false_alarms_per_hour: float | None = None) -> dict:
    """Build the scene, detect, write scene.flac + truth.json + events.json + demo.png under `out`."""
    from .detector import Detector

    out.mkdir(parents=True, exist_ok=True)
    if corpus is not None and (Path(corpus) / "manifest.csv").is_file():
        scene, label = corpus_scene(Path(corpus), seed), "corpus test split"
    else:
        why = "no corpus given" if corpus is None else f"no corpus at {corpus}: no manifest.csv there"
        scene, label = synthetic_scene(seed=seed), f"SYNTHETIC scene ({why})"
    from .detector import EventTracker, ModelError, threshold_for_rate
    from .evaluate import alerts_from_scores

    det = Detector.load(model, max_false_alarms_per_hour=max_false_alarms_per_hour)
    scores = det.score_windows(scene.audio)
    dur = scene.audio.size / SAMPLE_RATE
    events = alerts_from_scores(scores, det.tracker(), dur)
    truth = [{**g.to_dict(), "best_window_score": round(best_window_score(scores, det.hop_s, det.window_s,
                                                                          g.start_s, g.end_s), 4)}
             for g in scene.events]
    # What a looser operating point of the same card gives on this scene (the card's own validation sweep), so a
    # newcomer sees the trade-off instead of only "missed".
    looser = None
    try:
        t = threshold_for_rate({"calibration": det.calibration}, LOOSER_FA_PER_HOUR)
    except ModelError:  # a card without a sweep
        t = None
    if t is not None and t < det.threshold:
        ev = _event_dicts(alerts_from_scores(scores, EventTracker(t, det.smoothing, det.window_s, det.hop_s), dur))
        hits = match_truth(truth, ev)
        looser = {"max_false_alarms_per_hour": LOOSER_FA_PER_HOUR, "threshold": t,
                  "found": sum(h is not None for h in hits), "false_alarms": len(ev) - sum(h is not None for h in hits)}
    scenes.write_scene(scene, out)
    plot_scene(out / "demo.png", scene.audio, scores, det.hop_s, det.window_s, det.threshold, events, scene.events,
               f"screamdetect demo — {label}",
               looser=None if looser is None else (LOOSER_FA_PER_HOUR, looser["threshold"]))
    result = {"scene": str(out / f"{scene.name}.flac"), "source": label, "threshold": det.threshold,
              "model": det.description, "smoothing": {"k": det.smoothing.k, "n": det.smoothing.n},
              "truth": truth, "events": _event_dicts(events), "looser": looser}
    (out / "events.json").write_text(json.dumps(result, indent=1))
    return result
