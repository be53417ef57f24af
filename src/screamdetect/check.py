"""`screamdetect check`: is this machine ready to run the detector, and with what?

Each check gives a status ("ok", "warn": the detector runs but something optional is missing, "fail": it cannot
run) and one line saying what was found. The model is loaded and scores 10 s of the package's synthetic scene, so
the second stage's YAMNet graph (and on VNNI / AMX CPUs its measured int8 check) is built here, once, not at the
first alert. Inference only: imports no torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

OK, WARN, FAIL = "ok", "warn", "fail"


def _row(name: str, status: str, detail: str) -> dict:
    return {"check": name, "status": status, "detail": detail}


def check_model(model: str | os.PathLike | None) -> tuple[list[dict], object | None]:
    """The model and its second stage, then scores of the synthetic scene. Returns (rows, the Detector or None)."""
    from .demo import synthetic_scene
    from .detector import Detector, ModelError

    rows = []
    try:
        det = Detector.load(model)
    except ModelError as e:
        return [_row("model", FAIL, str(e))], None
    rows.append(_row("model", OK, f"{det.path} (window {det.window_s:g} s, hop {det.hop_s:g} s, threshold "
                                  f"{det.threshold:.2f})"))
    if det.second_stage is not None:
        from .models.yamnet import WEIGHTS_ENV, weights_setting

        weights = det.second_stage.yamnet.weights
        if weights_setting() != "auto":
            why = f"as ${WEIGHTS_ENV} asks"
        elif weights == "int8":
            why = "this CPU's int8 kernels were measured to compute the uint8 graph's outputs"
        else:
            why = "the CPU has no VNNI / AMX, or its int8 kernels did not compute the uint8 graph's outputs"
        rows.append(_row("second stage", OK, f"YAMNet, {weights} weights ({why})"))
        rows.append(check_yamnet_arithmetic(det.second_stage.yamnet))
    elif det.second_stage_note and "unavailable" in det.second_stage_note:
        rows.append(_row("second stage", WARN, f"{det.second_stage_note}: the CNN alone scores, with its own "
                                               f"threshold {det.threshold:.2f} (fewer screams found)"))
    audio = synthetic_scene(10.0, seed=0).audio
    try:
        t0 = time.perf_counter()
        scores = det.score_windows(audio)
        ms = (time.perf_counter() - t0) * 1e3
    except Exception as e:  # noqa: BLE001 - whatever stops scoring is what this check is for
        rows.append(_row("scoring", FAIL, f"scoring 10 s of the synthetic scene failed: {type(e).__name__}: {e}"))
        return rows, det
    if not (len(scores) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()):
        rows.append(_row("scoring", FAIL, f"10 s of the synthetic scene gave scores outside [0, 1]: {scores!r}"))
    else:
        rows.append(_row("scoring", OK, f"{len(scores)} windows of 10 s of the synthetic scene in {ms:.0f} ms "
                                        f"(highest {scores.max():.2f})"))
    return rows, det


def check_yamnet_arithmetic(yamnet) -> dict:
    """What onnxruntime's fused 8-bit kernels compute here against the same graph run node by node (what caught
    the saturating int8 kernels of AVX2-only CPUs: cosine 0.52 there). Limits as tests/test_yamnet.py's."""
    from .models.yamnet import SCREAMING, _sigmoid, node_by_node, probe_patches

    patches = probe_patches()
    try:
        want_logits, want_emb = node_by_node(patches)
        logits, emb = yamnet.run(patches)
    except Exception as e:  # noqa: BLE001 - whatever stops it is the finding
        return _row("YAMNet arithmetic", FAIL, f"could not run YAMNet node by node: {type(e).__name__}: {e}")
    cos = (emb * want_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(want_emb, axis=1) + 1e-9)
    dp = float(np.abs(_sigmoid(logits[:, SCREAMING]) - _sigmoid(want_logits[:, SCREAMING])).max())
    found = (f"embeddings at cosine >= {cos.min():.3f} (median {np.median(cos):.3f}) and P(Screaming) within "
             f"{dp:.3f} of the graph run node by node, {len(patches)} patches")
    if cos.min() > 0.97 and np.median(cos) > 0.99 and dp < 0.15:
        return _row("YAMNet arithmetic", OK, found)
    return _row("YAMNet arithmetic", FAIL, f"{found}: this CPU / onnxruntime computes other scores than the "
                                           f"model's; report it (SCREAMDETECT_YAMNET_WEIGHTS=uint8 may help)")


# what `listen` streams come as: rtsp and hls are ffmpeg demuxers, the rest input protocols
NETWORK_INPUTS = ("rtsp", "http", "https", "hls", "rtmp", "srt")


def check_ffmpeg() -> dict:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return _row("ffmpeg", WARN, "not found: needed for network streams (RTSP, HTTP, HLS), audio piped in, and "
                                    "formats soundfile cannot read (apt-get install ffmpeg)")
    def run(*args: str) -> str:
        return subprocess.run([exe, "-hide_banner", *args], capture_output=True, text=True, timeout=10,
                              check=False).stdout

    try:
        out = run("-version")
        first = out.splitlines()[0].split(" Copyright")[0] if out else "no version"
        inputs = run("-protocols").split("Output:")[0].split()  # "Supported file protocols: Input: ... Output: ..."
        demuxers = {line.split()[1] for line in run("-demuxers").splitlines()
                    if line.startswith(" D") and len(line.split()) > 1}
    except (OSError, subprocess.SubprocessError) as e:
        return _row("ffmpeg", WARN, f"{exe} does not run ({e})")
    have = set(inputs) | demuxers
    missing = [n for n in NETWORK_INPUTS if n not in have]
    if missing:
        return _row("ffmpeg", WARN, f"{exe}: {first}; this build cannot open {', '.join(missing)} "
                    "(a Debian/Ubuntu ffmpeg package can)")
    return _row("ffmpeg", OK, f"{exe}: {first}; opens {', '.join(NETWORK_INPUTS)}")


def check_microphone() -> dict:
    try:
        import sounddevice
    except ImportError:
        return _row("microphone", WARN, "sounddevice not installed: `listen --source mic` needs "
                                        "pip install 'screamdetect[live]'")
    except OSError as e:  # the module is there, PortAudio is not
        return _row("microphone", WARN, f"sounddevice cannot load PortAudio ({e}): apt-get install libportaudio2")
    try:
        inputs = [d for d in sounddevice.query_devices() if d.get("max_input_channels", 0) > 0]
    except Exception as e:  # noqa: BLE001 - PortAudio errors are not one class
        return _row("microphone", WARN, f"cannot list audio devices ({e})")
    if not inputs:
        return _row("microphone", WARN, "no audio input device found")
    return _row("microphone", OK, f"{len(inputs)} input device(s), e.g. {inputs[0]['name']}")


def _installed(check: str, module: str, package: str, needed_by: str) -> dict:
    """ok with the version when `module` imports, else a warning saying what needs it and how to add it."""
    import importlib
    import importlib.metadata

    try:
        importlib.import_module(module)
    except ImportError:
        return _row(check, WARN, f"{package} not installed: `{needed_by}` needs pip install 'screamdetect[live]'")
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # importable, not installed as a distribution
        version = "(version unknown)"
    return _row(check, OK, f"{package} {version}")


def check_mqtt() -> dict:
    return _installed("mqtt", "paho.mqtt", "paho-mqtt", "listen --mqtt")


def check_metrics() -> dict:
    return _installed("metrics", "prometheus_client", "prometheus_client", "listen --metrics")


def check_cache() -> dict:
    from .data import default_cache_dir

    d = Path(default_cache_dir())
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return _row("cache", WARN, f"{d}: not writable ({e}); YAMNet's graph is rebuilt in every process "
                                   "(set SCREAMDETECT_CACHE)")
    return _row("cache", OK, str(d))


def run_checks(model: str | os.PathLike | None = None) -> list[dict]:
    """Every check, in order: machine, model, second stage and its arithmetic, scoring, ffmpeg, microphone, MQTT,
    cache."""
    from .bench import host, host_line

    try:
        rows = [_row("machine", OK, host_line(host()).removeprefix("machine: "))]
    except ValueError as e:  # a bad $SCREAMDETECT_YAMNET_WEIGHTS: the model check below says it too
        rows = [_row("machine", WARN, str(e))]
    model_rows, _ = check_model(model)
    return rows + model_rows + [check_ffmpeg(), check_microphone(), check_mqtt(), check_metrics(), check_cache()]
