"""Runtime scream detection with onnxruntime: sliding-window scores, event smoothing, streaming.

Imports only numpy, onnxruntime and the package's audio/features modules (never torch), so
`pip install screamdetect` is enough to run a shipped model.

A model is an ONNX file (input "logmel" float32 [batch, n_mels, n_frames] in dB, output "scream_prob" float32
[batch]) with its model card beside it (same stem, .json; see DESIGN.md). Windows of `window_s` seconds start
every `hop_s` seconds; the log-mel of the signal is computed once and frame windows are sliced from it, exactly
as in training (window w covers frames [w·H, w·H + W) with W = round(window_s / fe.hop_s), H = round(hop_s /
fe.hop_s)); a signal shorter than one window is scored once, its log-mel padded with its own quietest value.

Events (:class:`Smoothing`): an event starts when at least `k` of the last `n` windows score >= threshold; it
ends when no window has reached the threshold for `hold_s` seconds (or at the end of the signal); after its end
is known (the end alert), no new event may be alerted for `refractory_s` seconds, and the windows of that time
neither start an event nor count towards one. An event spans the windows that fired: start_s = start of the
first window >= threshold, end_s = end of the last one (clipped to the signal), peak_score = their maximum.

Second stage (optional, cascade.py): when the card has "second_stage", windows the CNN scores >= its gate are
re-scored by YAMNet + a trained head on the window's audio (samples [w·hop, w·hop + window)), the others score 0.
If YAMNet is not installed the detector warns and uses the CNN alone with the card's fallback calibration.

Patch models (a card whose "frontend" has "kind": "yamnet": the transfer models `yamnet_head` / `yamnet_ft` trained
by `screamdetect train`): the ONNX input is one YAMNet log-mel patch per window, [batch, 64, 96], computed from the
window's own audio (samples [w·hop, w·hop + window), its first 0.975 s; models.yamnet.window_log_mels). Windows lie
wholly inside the signal (a signal shorter than one window is scored once, zero-padded).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .audio import BLOCK_S, SAMPLE_RATE, AudioError, check_values, iter_audio_blocks
from .features import FrontEnd, check_number, log_mel, whole_steps

CARD_FORMAT = "screamdetect-card/1"
INPUT_NAME = "logmel"
OUTPUT_NAME = "scream_prob"
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default.onnx"
BATCH_WINDOWS = 256  # windows per onnxruntime call: large enough to amortise the call, small in memory
SCAN_BLOCK_S = 20.0  # block length of file scanning, seconds (1.3 MB of float32 per block)
WHOLE_MAX_S = 60.0  # score_windows computes the log-mel of longer signals block by block (same result)
MAX_WINDOW_S = 30.0  # longest window a card may ask for (the shipped one is 1 s; screams last 0.5-4 s)
STREAM_PIECE_S = 30.0  # a chunk larger than this is processed in pieces, so memory stays bounded
# BLAS computes the mel projection of very few frames by another path (last-bit differences), so the streaming
# log-mel is always computed over at least this many frames (adding past context) to equal the whole-signal one.
MIN_SEG_FRAMES = 64


class ModelError(RuntimeError):
    """A model file or its card that cannot be used. The message names the file and the cause."""


@dataclass(frozen=True)
class Smoothing:
    """Event smoothing. k/n: windows (count); hold_s, refractory_s: seconds (>= 0).

    k of the last n windows >= threshold start an event; `hold_s` without any window >= threshold ends it;
    for `refractory_s` after its end alert, no start alert (the new event's windows start refractory_s after the
    window that ended the previous one: with 1 s windows, hold 0.5 s, refractory 1 s, at least 0.5 s after its
    end_s).
    """

    k: int = 2
    n: int = 3
    hold_s: float = 0.5
    refractory_s: float = 1.0

    def __post_init__(self):
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"smoothing k must be an integer >= 1, got {self.k!r}")
        if not isinstance(self.n, (int, np.integer)) or self.n < self.k:
            raise ValueError(f"smoothing n must be an integer >= k ({self.k}), got {self.n!r}")
        for name in ("hold_s", "refractory_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"smoothing {name} must be a finite number of seconds >= 0, got {v!r}")

    @classmethod
    def from_dict(cls, d: dict) -> Smoothing:
        if not isinstance(d, dict):
            raise TypeError(f"smoothing must be a mapping (k, n, hold_s, refractory_s), got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown smoothing keys: {sorted(unknown)} (known: k, n, hold_s, refractory_s)")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    """A detected scream: start_s/end_s in seconds from the start of the signal, peak_score in [0, 1]."""

    start_s: float
    end_s: float
    peak_score: float

    def to_dict(self, ndigits: int = 3) -> dict:
        return {"start_s": round(float(self.start_s), ndigits), "end_s": round(float(self.end_s), ndigits),
                "peak_score": round(float(self.peak_score), 4)}


@dataclass(frozen=True)
class EventUpdate:
    """A change of event state while streaming.

    kind: "start" (end_s is None, peak_score so far) or "end" (the final event). at_s: the stream time, in
    seconds of audio, from which the update could be known (all samples of the deciding window had arrived;
    the same whatever the chunk sizes; a live emitter adds at most one chunk).
    """

    kind: str
    start_s: float
    end_s: float | None
    peak_score: float
    at_s: float

    @property
    def event(self) -> Event | None:
        return None if self.end_s is None else Event(self.start_s, self.end_s, self.peak_score)

    def to_dict(self) -> dict:
        return {"type": self.kind, "start_s": round(self.start_s, 3),
                "end_s": None if self.end_s is None else round(self.end_s, 3),
                "peak_score": round(float(self.peak_score), 4), "at_s": round(self.at_s, 3)}


class EventTracker:
    """Turns window scores, one at a time, into event updates (the smoothing state machine).

    window_s/hop_s in seconds; window i covers [i·hop_s, i·hop_s + window_s).
    """

    def __init__(self, threshold: float, smoothing: Smoothing, window_s: float, hop_s: float):
        check_threshold(threshold)
        if window_s <= 0 or hop_s <= 0:
            raise ValueError(f"window_s and hop_s must be positive, got window_s={window_s}, hop_s={hop_s}")
        self.threshold = float(threshold)
        self.smoothing = smoothing
        self.window_s = float(window_s)
        self.hop_s = float(hop_s)
        # Seconds → whole windows, rounding up (a tiny epsilon so 0.5 / 0.25 stays 2).
        self._hold = max(1, math.ceil(smoothing.hold_s / hop_s - 1e-9))
        self._refractory = math.ceil(smoothing.refractory_s / hop_s - 1e-9)
        self._recent: deque[tuple[int, bool, float]] = deque(maxlen=smoothing.n)
        self._i = 0  # index of the next window
        self._active = False
        self._start_i = 0
        self._last_above = 0
        self._peak = 0.0
        self._blocked_until = 0  # first window index allowed to start an event
        self.events: list[Event] = []

    def update(self, score: float, at_s: float | None = None) -> list[EventUpdate]:
        """Feed the next window's score; returns the updates it causes (0, 1 or 2)."""
        i = self._i
        self._i += 1
        at = (i * self.hop_s + self.window_s) if at_s is None else at_s
        above = score >= self.threshold
        out: list[EventUpdate] = []
        if self._active:
            if above:
                self._last_above = i
                self._peak = max(self._peak, score)
            elif i - self._last_above >= self._hold:
                out.append(self._close(at))
            return out
        if i < self._blocked_until:
            return out  # refractory: these windows neither start an event nor count towards one
        self._recent.append((i, above, score))
        if sum(a for _, a, _ in self._recent) >= self.smoothing.k:
            first = next(j for j, a, _ in self._recent if a)
            self._active = True
            self._start_i = first
            self._last_above = i
            self._peak = float(max(s for _, a, s in self._recent if a))
            out.append(EventUpdate("start", first * self.hop_s, None, self._peak, at))
        return out

    def _close(self, at: float, duration_s: float | None = None) -> EventUpdate:
        end = self._last_above * self.hop_s + self.window_s
        if duration_s is not None:
            end = min(end, max(duration_s, self._start_i * self.hop_s))
        ev = Event(self._start_i * self.hop_s, end, self._peak)
        self.events.append(ev)
        self._active = False
        self._recent.clear()
        self._blocked_until = self._i - 1 + self._refractory
        return EventUpdate("end", ev.start_s, ev.end_s, ev.peak_score, at)

    def finish(self, duration_s: float | None = None) -> list[EventUpdate]:
        """Close an open event at the end of the signal (`duration_s` clips its end).

        A signal too short to hold the onset rule's n windows (N < n windows in all: for 1 s windows every 0.25 s
        and 2 of 3, a clip under 1.25 s has one window) could never meet k of n; there an event starts (and ends)
        when ceil(k·N/n) of its N windows, at least 1, reach the threshold: a 1 s scream clip scoring 0.96 against
        0.94 is an event."""
        at = duration_s if duration_s is not None else self._i * self.hop_s + self.window_s
        out: list[EventUpdate] = []
        if not self._active and not self.events and 0 < self._i < self.smoothing.n:
            hits = [(j, s) for j, above, s in self._recent if above]
            if len(hits) >= max(1, math.ceil(self.smoothing.k * self._i / self.smoothing.n)):
                self._active, self._start_i, self._last_above = True, hits[0][0], hits[-1][0]
                self._peak = float(max(s for _, s in hits))
                out.append(EventUpdate("start", self._start_i * self.hop_s, None, self._peak, at))
        if self._active:
            out.append(self._close(at, duration_s))
        return out

    @property
    def active(self) -> bool:
        return self._active


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float, np.floating)) or not (0.0 < float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1], got {threshold!r}")
    return float(threshold)


# The thresholds calibration sweeps (validation in `train`, test in evaluate-events' operating curve, site audio
# without a card sweep): 0.05-0.99 every 0.01, then finer near 1 for models whose scores saturate there (YAMNet
# heads: their false alarms score 0.99+).
CALIBRATION_THRESHOLDS = [*np.round(np.arange(0.05, 1.0, 0.01), 2).tolist(), 0.995, 0.998, 0.999, 0.9995, 0.9999]


def grid_with(grid, threshold: float) -> list[float]:
    """The sorted threshold grid with `threshold` itself in it (not rounded: a --threshold 0.3333333 must find its
    own row), unless the grid already holds it (within 1e-9)."""
    t = float(threshold)
    return sorted(set(grid) | ({t} if all(abs(g - t) >= 1e-9 for g in grid) else set()))


def threshold_for_rate(card: dict, max_false_alarms_per_hour: float, where: str | os.PathLike = "card") -> float:
    """The lowest threshold of the card's calibration sweep ([threshold, false alarms/h, recall] rows, measured on
    validation data) whose false-alarm rate is <= `max_false_alarms_per_hour`; the highest swept one if none is."""
    check_number("max_false_alarms_per_hour", max_false_alarms_per_hour, low=0)
    calibration = card.get("calibration")
    sweep = calibration.get("sweep") if isinstance(calibration, dict) else None
    if not sweep:
        raise ModelError(f"{where}: the model card has no calibration sweep, so --max-false-alarms-per-hour cannot "
                         "be applied (use --threshold)")
    rows = []
    for i, row in enumerate(sweep if isinstance(sweep, list) else [sweep]):
        try:
            if not isinstance(row, (list, tuple)) or len(row) < 2:
                raise ValueError(f"expected [threshold, false alarms/h, ...], got {row!r}")
            rows.append((check_threshold(row[0]), check_number("false alarms/h", row[1], low=0)))
        except ValueError as e:
            raise ModelError(f"{where}: invalid calibration sweep, row {i + 1}: {e}") from e
    ok = [t for t, rate in rows if rate <= max_false_alarms_per_hour]
    return min(ok) if ok else max(t for t, _ in rows)


def events_from_scores(scores: np.ndarray, threshold: float, smoothing: Smoothing, window_s: float, hop_s: float,
                       duration_s: float | None = None) -> list[Event]:
    """Events of a whole score timeline (float array (n_windows,), one per hop). Same rule as streaming."""
    tr = EventTracker(threshold, smoothing, window_s, hop_s)
    for s in np.asarray(scores, dtype=np.float64):
        tr.update(float(s))
    tr.finish(duration_s)
    return tr.events


class AutoGain:
    """Causal automatic gain for quiet inputs (a distant or low-gain microphone): the samples of second k of the
    signal are multiplied by 10^(g/20), g = clip(target_dbfs − the 20th percentile of the RMS levels of the
    `history_s` whole seconds before it, 0, max_gain_db) (nothing for the first second), then clipped to ±1. It
    only ever amplifies, and only audio whose background is quieter than target_dbfs. Each second's gain depends on
    earlier seconds only, computed from their samples as a whole, so the output is the same whatever the chunk
    sizes (streaming = whole signal, bit for bit).
    """

    def __init__(self, target_dbfs: float = -40.0, max_gain_db: float = 30.0, history_s: int = 30):
        if not (-100.0 < target_dbfs < 0.0 and 0.0 <= max_gain_db <= 60.0 and int(history_s) >= 1):
            raise ValueError(f"auto gain needs -100 < target_dbfs < 0, 0 <= max_gain_db <= 60, history_s >= 1; got "
                             f"{target_dbfs}, {max_gain_db}, {history_s}")
        self.target_dbfs, self.max_gain_db = float(target_dbfs), float(max_gain_db)
        self._levels: deque[float] = deque(maxlen=int(history_s))
        self._current: list[np.ndarray] = []  # raw samples of the second in progress
        self._pos = 0
        self.gain_db = 0.0  # the gain applied now
        self._gain = np.float32(1.0)

    def process(self, x: np.ndarray) -> np.ndarray:
        """The next samples (float32 mono at SAMPLE_RATE, any length) with the gain applied."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        out = np.empty_like(x)
        i = 0
        while i < x.size:
            take = min(SAMPLE_RATE - self._pos % SAMPLE_RATE, x.size - i)
            seg = x[i: i + take]
            out[i: i + take] = np.clip(seg * self._gain, -1.0, 1.0)
            self._current.append(seg.copy())
            self._pos += take
            i += take
            if self._pos % SAMPLE_RATE == 0:
                second = np.concatenate(self._current)
                self._current = []
                self._levels.append(10 * math.log10(float(np.mean(second.astype(np.float64) ** 2)) + 1e-12))
                self.gain_db = float(np.clip(self.target_dbfs - np.percentile(self._levels, 20), 0.0,
                                             self.max_gain_db))
                self._gain = np.float32(10 ** (self.gain_db / 20))
        return out


class Detector:
    """An ONNX scream model with its card: front-end, window/hop, threshold, smoothing.

    Build with :meth:`load`. `threshold` and `smoothing` may be overridden after loading (validated).
    """

    def __init__(self, onnx_path: str | os.PathLike, card: dict, intra_op_threads: int | None = None,
                 batch_windows: int = BATCH_WINDOWS, second_stage: bool = True):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.card = card
        self.auto_gain: dict | None = None  # AutoGain settings ({} = its defaults); None = off
        name = str(self.path)
        try:
            fe = card["frontend"]
            self.patch_model = isinstance(fe, dict) and fe.get("kind") == "yamnet"
            if self.patch_model:
                from .models.yamnet import YamnetFrontEnd

                self.frontend = YamnetFrontEnd.from_dict(fe)
            else:
                self.frontend = FrontEnd.from_dict(fe)
            self.window_s = check_number("window_s", card["window_s"], low=0, low_open=True, high=MAX_WINDOW_S)
            self.hop_s = check_number("hop_s", card["hop_s"], low=0, low_open=True, high=self.window_s)
            threshold = check_threshold(card["threshold"])
            smoothing = Smoothing.from_dict(card.get("smoothing", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{self.path.with_suffix('.json')}: invalid model card ({type(e).__name__}: {e})") from e
        if not self.patch_model and self.frontend.top_db is not None:
            raise ModelError(f"{self.path.with_suffix('.json')}: frontend top_db must be null for detection (scores "
                             "would depend on the rest of the signal)")
        if self.frontend.sample_rate != SAMPLE_RATE:
            raise ModelError(f"{name}: card sample_rate {self.frontend.sample_rate} != {SAMPLE_RATE}")
        self.window_frames = round(self.window_s / self.frontend.hop_s)
        self.hop_frames = round(self.hop_s / self.frontend.hop_s)
        if self.patch_model:  # one YAMNet patch per window, cut from the window's first 0.975 s
            self.window_frames = self.frontend.patch_frames
            if round(self.window_s * SAMPLE_RATE) < self.frontend.min_samples or self.hop_s <= 0:
                raise ModelError(f"{name}: a YAMNet patch model needs window_s >= "
                                 f"{self.frontend.min_samples / SAMPLE_RATE} s and hop_s > 0, got {self.window_s}, "
                                 f"{self.hop_s}")
        elif not (whole_steps(self.window_s, self.frontend.hop_s) and whole_steps(self.hop_s, self.frontend.hop_s)):
            raise ModelError(f"{name}: window_s and hop_s must be whole numbers (>= 1) of front-end hops "
                             f"({self.frontend.hop_s} s), got {self.window_s}, {self.hop_s} (windows are cut in "
                             "whole frames: event times would drift)")
        if self.patch_model and not whole_steps(self.hop_s, 1.0 / SAMPLE_RATE):
            raise ModelError(f"{name}: hop_s must be a whole number of samples, got {self.hop_s}")
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
        self.batch_windows = int(batch_windows)
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = int(intra_op_threads or 0)  # 0 = onnxruntime's default (all cores)
        # No busy-waiting between calls: a live stream scores a window every hop and should sleep in between.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"{name}: cannot load ONNX model ({str(e).strip().splitlines()[0]})") from e
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelError(f"{name}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', got inputs "
                             f"{sorted(inputs)} and outputs {outputs}")
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != self.frontend.n_mels) or \
                (isinstance(shape[2], int) and shape[2] != self.window_frames):
            raise ModelError(f"{name}: input shape {shape} does not match the card "
                             f"([batch, {self.frontend.n_mels}, {self.window_frames}])")
        self.calibration = card.get("calibration")
        self.second_stage = None
        self.second_stage_note = None  # why a card's second stage is not in use (None when in use or absent)
        spec = card.get("second_stage")
        if spec is not None and self.patch_model:
            raise ModelError(f"{self.path.with_suffix('.json')}: a YAMNet patch model cannot have a second stage")
        if spec is not None:
            threshold = self._load_second_stage(spec, second_stage, intra_op_threads, threshold)
        self.threshold = threshold
        self.smoothing = smoothing

    def _load_second_stage(self, spec: dict, enabled: bool, threads: int | None, threshold: float) -> float:
        """Load the card's second stage; without it (disabled or YAMNet missing) switch to the fallback
        calibration of the CNN alone. Returns the threshold to use."""
        where = self.path.with_suffix(".json")
        fallback = spec.get("fallback") if isinstance(spec, dict) else None
        if not isinstance(fallback, dict) or "threshold" not in fallback:
            raise ModelError(f"{where}: second_stage needs a 'fallback' with the CNN-only threshold")
        try:
            check_threshold(fallback["threshold"])
        except ValueError as e:
            raise ModelError(f"{where}: invalid second_stage fallback ({e})") from e
        if enabled:
            from .cascade import SecondStage
            from .models.yamnet import YamnetMissingError, weights_setting

            try:
                weights_setting()  # a bad $SCREAMDETECT_YAMNET_WEIGHTS is the environment's fault, not the card's
            except ValueError as e:
                raise ModelError(str(e)) from e
            try:
                self.second_stage = SecondStage(spec, threads=threads)
                return threshold
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"{where}: invalid second_stage ({type(e).__name__}: {e})") from e
            except (YamnetMissingError, ImportError, RuntimeError, OSError) as e:
                self.second_stage_note = f"second stage (YAMNet) unavailable: {e}"
                print(f"warning: {self.second_stage_note}; using the CNN alone with its own calibrated threshold "
                      f"{float(fallback['threshold']):.2f}", file=sys.stderr)
        else:
            self.second_stage_note = "second stage disabled"
        self.calibration = fallback.get("calibration")
        return float(fallback["threshold"])

    @property
    def description(self) -> str:
        """One line for humans: which stages score the windows."""
        if self.patch_model:
            return f"{self.card.get('architecture', 'YAMNet transfer model')} (YAMNet patch on every window)"
        if self.second_stage is not None:
            return f"CNN, then YAMNet second stage on windows scoring >= {self.second_stage.gate:g}"
        return "CNN" + (f" ({self.second_stage_note})" if self.second_stage_note else "")

    # ---- construction ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, threshold: float | None = None,
             max_false_alarms_per_hour: float | None = None, intra_op_threads: int | None = None,
             second_stage: bool = True, auto_gain: bool = False) -> Detector:
        """Load an ONNX model and its card (same stem, .json). path None = the shipped default model.

        threshold overrides the card's; max_false_alarms_per_hour instead picks the lowest threshold whose false-alarm
        rate on the card's validation calibration sweep is within that target (not both). second_stage=False runs
        the CNN alone even when the card has a second stage (with the card's CNN-only calibration). auto_gain:
        amplify quiet inputs first (:class:`AutoGain`, its defaults; off by default).
        Raises ModelError naming the file when the model or card is missing or invalid.
        """
        if threshold is not None and max_false_alarms_per_hour is not None:
            raise ValueError("give either threshold or max_false_alarms_per_hour, not both")
        onnx_path = Path(path) if path is not None else DEFAULT_MODEL
        if onnx_path.suffix.lower() == ".json":
            onnx_path = onnx_path.with_suffix(".onnx")
        card_path = onnx_path.with_suffix(".json")
        if not onnx_path.is_file():
            hint = (" (the shipped default model is not built yet: see the README for the command that makes it, "
                    "or pass --model PATH)") if path is None else ""
            raise ModelError(f"{onnx_path}: model file not found{hint}")
        if not card_path.is_file():
            raise ModelError(f"{card_path}: model card not found (expected beside {onnx_path.name}, same stem)")
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{card_path}: cannot read model card ({e})") from e
        if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
            raise ModelError(f"{card_path}: not a screamdetect model card (format should be '{CARD_FORMAT}')")
        det = cls(onnx_path, card, intra_op_threads=intra_op_threads, second_stage=second_stage)
        if auto_gain:
            det.auto_gain = {}
        if threshold is not None:
            det.threshold = threshold
        elif max_false_alarms_per_hour is not None:
            det.threshold = threshold_for_rate({"calibration": det.calibration}, max_false_alarms_per_hour, card_path)
        return det

    # ---- settings --------------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)

    @property
    def smoothing(self) -> Smoothing:
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: Smoothing) -> None:
        if not isinstance(value, Smoothing):
            raise TypeError(f"smoothing must be a Smoothing, got {type(value).__name__}")
        self._smoothing = value

    @property
    def window_samples(self) -> int:
        if self.patch_model:
            return round(self.window_s * SAMPLE_RATE)
        return self.window_frames * self.frontend.hop_length

    @property
    def hop_samples(self) -> int:
        if self.patch_model:
            return round(self.hop_s * SAMPLE_RATE)
        return self.hop_frames * self.frontend.hop_length

    def n_audio_windows(self, n_samples: int) -> int:
        """Windows of a patch model in a signal of n_samples (at least one: a short signal is padded)."""
        W, H = self.window_samples, self.hop_samples
        return 1 if n_samples <= W else 1 + (n_samples - W) // H

    def score_audio_windows(self, windows: np.ndarray) -> np.ndarray:
        """Patch models: audio windows (n, samples) → float32 (n,) scores, in batches of `batch_windows`."""
        from .models.yamnet import window_log_mels

        out = [self.run_windows(window_log_mels(windows[i: i + self.batch_windows], self.frontend))
               for i in range(0, len(windows), self.batch_windows)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def window_audio(self, audio: np.ndarray, i: int, offset: int = 0) -> np.ndarray:
        """Samples of window i ([i·hop, i·hop + window), zero-padded past the end) from `audio`, whose first sample
        is signal sample `offset`."""
        a = i * self.hop_samples - offset
        if a < 0:
            raise ValueError(f"window {i} starts before the audio given (offset {offset})")
        w = audio[a: a + self.window_samples]
        return w if w.size == self.window_samples else np.pad(w, (0, self.window_samples - w.size))

    def window_times(self, n_windows: int) -> np.ndarray:
        """Start times in seconds (float64, shape (n_windows,)) of the windows score_windows returns."""
        return np.arange(n_windows) * self.hop_s

    def tracker(self) -> EventTracker:
        return EventTracker(self.threshold, self.smoothing, self.window_s, self.hop_s)

    # ---- scoring ---------------------------------------------------------------------------------------------
    def n_windows(self, n_frames: int) -> int:
        """Windows in a log-mel of `n_frames` frames (at least one: a short input is padded)."""
        if n_frames <= self.window_frames:
            return 1
        return 1 + (n_frames - self.window_frames) // self.hop_frames

    def score_mel(self, mel: np.ndarray) -> np.ndarray:
        """Scores of all windows of a log-mel (n_mels, n_frames) float32 dB: float32 (n_windows,) in [0, 1]."""
        W, H = self.window_frames, self.hop_frames
        if mel.shape[1] < W:
            mel = np.pad(mel, ((0, 0), (0, W - mel.shape[1])), constant_values=float(mel.min()))
        n = self.n_windows(mel.shape[1])
        view = np.lib.stride_tricks.sliding_window_view(mel, W, axis=1)  # (n_mels, T - W + 1, W)
        out = np.empty(n, dtype=np.float32)
        for b0 in range(0, n, self.batch_windows):
            idx = slice(b0 * H, min(n, b0 + self.batch_windows) * H, H)
            out[b0: b0 + self.batch_windows] = self.run_windows(view[:, idx].transpose(1, 0, 2))
        return out

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """ONNX inference on windows (batch, n_mels, window_frames) dB → float32 (batch,) probabilities."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        y = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return np.asarray(y, dtype=np.float32).reshape(-1)

    def score_windows(self, audio: np.ndarray) -> np.ndarray:
        """One score per window of window_s seconds every hop_s seconds of float32 mono audio at SAMPLE_RATE.

        audio: shape (n_samples,). Returns float32 (n_windows,) in [0, 1]; window i starts at i·hop_s seconds.
        The log-mel is computed once, over the whole signal; a signal longer than WHOLE_MAX_S (60 s) goes through
        the streaming path block by block (bit-identical scores, bounded memory, faster: cache-sized arrays).
        """
        audio = _check_audio(audio)
        if audio.size > WHOLE_MAX_S * SAMPLE_RATE:
            return self.scan(iter_chunks(audio, int(BLOCK_S * SAMPLE_RATE)), keep_scores=True).scores
        if self.auto_gain is not None:  # (the long path above applies it in the stream)
            audio = AutoGain(**self.auto_gain).process(audio)
        if self.patch_model:
            n = self.n_audio_windows(audio.size)
            return self.score_audio_windows(np.stack([self.window_audio(audio, i) for i in range(n)]))
        scores = self.score_mel(log_mel(audio, frontend=self.frontend))
        if self.second_stage is not None:
            scores = self.second_stage.combine(scores, lambda i: self.window_audio(audio, i), self.hop_samples)
        return scores

    def detect(self, audio: np.ndarray) -> list[Event]:
        """Scream events in float32 mono audio at SAMPLE_RATE (see the module doc for the smoothing rule)."""
        audio = _check_audio(audio)
        scores = self.score_windows(audio)
        return events_from_scores(scores, self.threshold, self.smoothing, self.window_s, self.hop_s,
                                  audio.size / SAMPLE_RATE)

    def stream(self) -> StreamDetector:
        return StreamDetector(self)

    def scan(self, blocks: Iterable[np.ndarray], keep_scores: bool = False) -> ScanResult:
        """Score a signal given as consecutive blocks (float32 mono at SAMPLE_RATE), in bounded memory.

        Scores equal score_windows on the concatenated signal. keep_scores: keep the timeline (n_windows floats).
        """
        sd = StreamDetector(self)
        scores: list[np.ndarray] = []
        max_score = 0.0
        n = 0
        for block in blocks:
            step = sd.process(block)
            n += step.scores.size
            if step.scores.size:
                max_score = max(max_score, float(step.scores.max()))
                if keep_scores:
                    scores.append(step.scores)
        step = sd.finish()
        n += step.scores.size
        if step.scores.size:
            max_score = max(max_score, float(step.scores.max()))
            if keep_scores:
                scores.append(step.scores)
        return ScanResult(duration_s=sd.samples_seen / SAMPLE_RATE, max_score=max_score, events=sd.events,
                          n_windows=n, scores=np.concatenate(scores) if keep_scores and scores else
                          (np.zeros(0, np.float32) if keep_scores else None))

    def scan_file(self, path: str | os.PathLike, keep_scores: bool = False, block_s: float = SCAN_BLOCK_S,
                  prefetch: bool = True, on_block: Callable[[float], None] | None = None,
                  tap: Callable[[np.ndarray], None] | None = None) -> ScanResult:
        """:meth:`scan` over a file read with audio.iter_audio_blocks. Raises AudioError for unusable files.

        prefetch: decode the next block in a background thread while this one is scored (decoders release the
        GIL, so decoding and features overlap on two cores); at most one block waits, so memory stays bounded
        (about three blocks of block_s seconds in flight). on_block(seconds): called as each block is taken up
        (for progress bars). tap(block): sees each decoded block (float32 at SAMPLE_RATE) before it is scored.
        """
        blocks = iter_audio_blocks(path, block_s=block_s)
        if prefetch:
            blocks = _prefetched(blocks)
        if on_block is not None or tap is not None:
            blocks = _reporting(blocks, on_block, tap)
        return self.scan(blocks, keep_scores=keep_scores)


@dataclass(frozen=True)
class ScanResult:
    """Result of scanning a whole signal: duration (s), max window score, events, optional score timeline."""

    duration_s: float
    max_score: float
    events: list[Event]
    n_windows: int
    scores: np.ndarray | None = None


@dataclass(frozen=True)
class StreamStep:
    """What one call to StreamDetector.process/finish produced: new window scores (float32) and event updates."""

    scores: np.ndarray
    start_index: int
    updates: list[EventUpdate]


class StreamDetector:
    """Streaming scores and events from chunks of any size, equal to Detector.score_windows on the whole signal.

    Keeps only the samples the next frames need (< one window + MIN_SEG_FRAMES hops + one FFT + one chunk) and the
    frames the next window needs (< one window + one hop): a bounded buffer whatever the stream length; chunks
    larger than 30 s are processed in pieces. Call :meth:`process` with each chunk and :meth:`finish` at the end of the stream.
    """

    def __init__(self, detector: Detector):
        self.det = detector
        fe = detector.frontend
        self._hop = fe.hop_length
        n_fft, win = (fe.n_fft if detector.patch_model else fe.fft_size), fe.win_length
        # Frame j reads samples [j·hop + lo, j·hop + lo + win) of the signal (centred frames, zero outside).
        self._lo = (n_fft - win) // 2 - n_fft // 2
        self._margin = -(-max(0, -self._lo) // self._hop)  # frames of context needed on the left
        self._need_right = self._lo + win
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # signal index of _buf[0]; always a multiple of hop
        self._next_frame = 0  # next frame to compute
        self._mel = np.zeros((fe.n_mels, 0), dtype=np.float32)
        self._mel_start = 0  # frame index of _mel[:, 0]
        self._next_window = 0
        self.samples_seen = 0
        self.tracker = detector.tracker()
        self._finished = False
        # Raw audio of the windows not scored yet, for the second stage (one window + one chunk at most).
        self._ring = np.zeros(0, dtype=np.float32)
        self._ring_start = 0  # signal index of _ring[0]
        self._gain = AutoGain(**detector.auto_gain) if detector.auto_gain is not None else None

    @property
    def events(self) -> list[Event]:
        """Completed events so far."""
        return self.tracker.events

    @property
    def time_s(self) -> float:
        """Seconds of audio fed so far."""
        return self.samples_seen / SAMPLE_RATE

    def process(self, chunk: np.ndarray) -> StreamStep:
        """Feed float32 mono samples at SAMPLE_RATE (any length, also 0); returns new scores and updates."""
        if self._finished:
            raise RuntimeError("StreamDetector.process called after finish()")
        chunk = np.asarray(chunk)
        if chunk.ndim == 2 and chunk.shape[1] == 1:  # (frames, 1): a one-channel device's block
            chunk = chunk[:, 0]
        if chunk.size:
            chunk = _check_audio(chunk, "stream chunk")  # stereo (frames, 2) or int16 would be scored as nonsense
        chunk = chunk.astype(np.float32, copy=False).reshape(-1)
        if self._gain is not None:
            chunk = self._gain.process(chunk)
        piece = int(STREAM_PIECE_S * SAMPLE_RATE)
        steps = [self._process(chunk[i: i + piece]) for i in range(0, max(chunk.size, 1), piece)]
        return _merge(steps)

    def _process(self, chunk: np.ndarray) -> StreamStep:
        if self.det.patch_model:  # windows are cut from the raw-audio ring; no frames, no frame buffer
            self._ring = np.concatenate([self._ring, chunk]) if self._ring.size else chunk.copy()
            self.samples_seen += chunk.size
            return self._audio_windows(final=False)
        self._buf = np.concatenate([self._buf, chunk]) if self._buf.size else chunk.copy()
        if self.det.second_stage is not None:
            self._ring = np.concatenate([self._ring, chunk]) if self._ring.size else chunk.copy()
        self.samples_seen += chunk.size
        last = (self.samples_seen - self._need_right) // self._hop  # last frame whose samples have all arrived
        # Frames are computed only once the next window can be completed (fewer, larger log-mel calls).
        if last >= self._next_window * self.det.hop_frames + self.det.window_frames - 1:
            self._frames_upto(last, final=False)
        return self._windows(final=False)

    def finish(self) -> StreamStep:
        """End of stream: computes the last frames (zero padding at the end, as the whole-signal log-mel),
        scores the remaining windows (one padded window if the stream was shorter than a window) and closes an
        open event."""
        if self._finished:
            return StreamStep(np.zeros(0, np.float32), self._next_window, [])
        self._finished = True
        if self.samples_seen == 0:
            return StreamStep(np.zeros(0, np.float32), 0, [])
        if self.det.patch_model:
            step = self._audio_windows(final=True)
            ups = self.tracker.finish(self.samples_seen / SAMPLE_RATE)
            return StreamStep(step.scores, step.start_index, step.updates + ups)
        self._frames_upto(self.samples_seen // self._hop, final=True)
        step = self._windows(final=True)
        ups = self.tracker.finish(self.samples_seen / SAMPLE_RATE)
        return StreamStep(step.scores, step.start_index, step.updates + ups)

    def _audio_windows(self, final: bool) -> StreamStep:
        """Patch models: score the windows whose samples have all arrived (at the end, one padded window if the
        stream was shorter than a window), from the raw-audio ring."""
        det = self.det
        W, H = det.window_samples, det.hop_samples
        start_index = self._next_window
        if final and start_index == 0:
            n_avail = det.n_audio_windows(self.samples_seen)
        else:
            n_avail = 0 if self.samples_seen < W else 1 + (self.samples_seen - W) // H
        new = n_avail - start_index
        if new <= 0:
            return StreamStep(np.zeros(0, np.float32), start_index, [])
        scores = det.score_audio_windows(
            np.stack([det.window_audio(self._ring, start_index + j, self._ring_start) for j in range(new)]))
        self._next_window = n_avail
        keep = n_avail * H
        if keep > self._ring_start:
            self._ring = self._ring[keep - self._ring_start:].copy()
            self._ring_start = keep
        updates: list[EventUpdate] = []
        for j, s in enumerate(scores):
            known = min(self.samples_seen, (start_index + j) * H + W)
            updates += self.tracker.update(float(s), at_s=known / SAMPLE_RATE)
        return StreamStep(scores, start_index, updates)

    def _frames_upto(self, last: int, final: bool) -> None:
        if last < self._next_frame:
            return
        first = self._next_frame
        seg_frame0 = max(0, min(first - self._margin, last - MIN_SEG_FRAMES + 1))
        if not final and last - seg_frame0 + 1 < MIN_SEG_FRAMES:
            return  # start of the stream: wait for enough frames
        s0 = seg_frame0 * self._hop - self._buf_start
        assert s0 >= 0, "sample buffer was trimmed too far"
        seg = self._buf[s0:]
        if not final:  # samples past the last complete frame are not needed (and must not count as padding)
            seg = seg[: (last - seg_frame0) * self._hop + max(self._need_right, 0) + self._hop]
        mel = log_mel(seg, frontend=self.det.frontend)
        new = mel[:, first - seg_frame0: last - seg_frame0 + 1]
        assert new.shape[1] == last - first + 1, (new.shape, first, last)
        self._mel = np.concatenate([self._mel, new], axis=1) if self._mel.size else new
        self._next_frame = last + 1
        keep_frame = max(0, min(self._next_frame - self._margin, self._next_frame - MIN_SEG_FRAMES + 1))
        if keep_frame * self._hop > self._buf_start:
            self._buf = self._buf[keep_frame * self._hop - self._buf_start:].copy()
            self._buf_start = keep_frame * self._hop

    def _windows(self, final: bool) -> StreamStep:
        det = self.det
        W, H = det.window_frames, det.hop_frames
        n_frames = self._next_frame
        start_index = self._next_window
        if final and n_frames < W and self._next_window == 0:
            mel = np.pad(self._mel, ((0, 0), (0, W - self._mel.shape[1])), constant_values=float(self._mel.min()))
            scores = det.run_windows(mel[None])
            self._next_window = 1
        else:
            n_avail = 0 if n_frames < W else 1 + (n_frames - W) // H  # windows fully inside the frames so far
            new = n_avail - self._next_window
            if new <= 0:
                return StreamStep(np.zeros(0, np.float32), start_index, [])
            off = self._next_window * H - self._mel_start
            mel = self._mel[:, off: off + (new - 1) * H + W]
            scores = det.score_mel(mel)
            assert scores.size == new
            self._next_window = n_avail
        keep = self._next_window * H
        if keep > self._mel_start:
            self._mel = self._mel[:, keep - self._mel_start:].copy()
            self._mel_start = keep
        if det.second_stage is not None:
            scores = det.second_stage.combine(
                scores, lambda j: det.window_audio(self._ring, start_index + j, self._ring_start), det.hop_samples)
            keep_s = self._next_window * det.hop_samples
            if keep_s > self._ring_start:
                self._ring = self._ring[keep_s - self._ring_start:].copy()
                self._ring_start = keep_s
        updates: list[EventUpdate] = []
        for j, s in enumerate(scores):
            # The update is known once the window's last frame could be computed: independent of chunk sizes.
            last_frame = (start_index + j) * H + W - 1
            known = min(self.samples_seen, last_frame * self._hop + max(self._need_right, 0))
            updates += self.tracker.update(float(s), at_s=known / SAMPLE_RATE)
        return StreamStep(scores, start_index, updates)


def _prefetched(it: Iterator[np.ndarray], depth: int = 1) -> Iterator[np.ndarray]:
    """Iterate `it` in a background thread, at most `depth` items ahead; its exceptions are re-raised here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer and raised there
            q.put((done, e))

    t = threading.Thread(target=run, daemon=True, name="prefetch")
    t.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
        close = getattr(it, "close", None)
        if close is not None and not t.is_alive():
            close()


def _merge(steps: list[StreamStep]) -> StreamStep:
    if len(steps) == 1:
        return steps[0]
    return StreamStep(np.concatenate([s.scores for s in steps]), steps[0].start_index,
                      [u for s in steps for u in s.updates])


def _check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """Mono float audio in [-1, 1] as float32; a clear ValueError (AudioError) otherwise."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{what} must be mono, shape (n_samples,), got shape {audio.shape}"
                         + (" (mix the channels down first, e.g. x.mean(axis=1))" if audio.ndim == 2 else ""))
    if audio.size == 0:
        raise ValueError(f"{what} is empty (0 samples)")
    if audio.dtype.kind != "f":
        raise ValueError(f"{what} must be float samples in [-1, 1], got dtype {audio.dtype}"
                         + (f" (divide by {2 ** (8 * audio.dtype.itemsize - 1)})" if audio.dtype.kind == "i" else ""))
    check_values(audio, f"<{what}>")
    return audio.astype(np.float32, copy=False)


def iter_chunks(audio: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Consecutive slices of `chunk` samples (the last may be shorter)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 sample, got {chunk}")
    for i in range(0, audio.size, chunk):
        yield audio[i: i + chunk]


# ---- batch file scanning (the `detect` command) -----------------------------------------------------------------
def _walk_audio(root: Path) -> list[tuple[str, str | None]]:
    """The audio files under `root`, sorted, as (path, error) pairs. Linked folders are followed, each folder once
    (a link loop ends there). A dangling link is listed with its error (a file the user meant to scan), and so is
    a folder that cannot be read (its files would otherwise be left out without a word)."""
    from .audio import AUDIO_EXTENSIONS

    found: list[tuple[str, str | None]] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(e: OSError) -> None:
        why = f"cannot read this folder ({e.strerror or e}): its files were not scanned"
        found.append((e.filename or str(root), why))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as e:
            unreadable(e)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in filenames:
            f = Path(dirpath) / name
            if f.suffix.lower() in AUDIO_EXTENSIONS and (f.is_file() or (f.is_symlink() and not f.exists())):
                found.append((str(f), None if f.exists() else "broken symbolic link (its target does not exist)"))
    return sorted(found, key=lambda x: x[0])


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Inputs in order, folders walked recursively (sorted) for files with an audio extension.

    Returns (path, error) pairs: error is None for a file to scan, or why the input cannot be scanned
    (a folder without audio files). Missing files are passed through; scanning reports them.
    """
    out: list[tuple[str, str | None]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = _walk_audio(path)
            if not found:
                from .audio import AUDIO_EXTENSIONS

                exts = ", ".join(sorted(AUDIO_EXTENSIONS))
                out.append((str(p), f"folder holds no audio files (extensions: {exts})"))
            out.extend(found)
        else:
            out.append((str(p), None))
    return out


def scan_result_dict(path: str, res: ScanResult, hop_s: float | None = None) -> dict:
    """The output contract of `screamdetect detect` for one scanned file (DESIGN.md)."""
    d = {"path": path, "duration_s": round(res.duration_s, 3), "max_score": round(res.max_score, 4),
         "events": [e.to_dict() for e in res.events]}
    if res.scores is not None:
        d["hop_s"] = hop_s
        d["scores"] = [round(float(s), 4) for s in res.scores]
    return d


def _reporting(blocks: Iterator[np.ndarray], on_block: Callable[[float], None] | None,
               tap: Callable[[np.ndarray], None] | None = None) -> Iterator[np.ndarray]:
    for b in blocks:
        if on_block is not None:
            on_block(b.size / SAMPLE_RATE)
        if tap is not None:
            tap(b)
        yield b


def scan_one(det: Detector, path: str, keep_scores: bool = False,
             on_block: Callable[[float], None] | None = None) -> dict:
    """Scan one file; any failure becomes {"path", "error"} (never raises for a bad file)."""
    try:
        return scan_result_dict(path, det.scan_file(path, keep_scores=keep_scores, on_block=on_block), det.hop_s)
    except AudioError as e:
        return {"path": path, "error": e.cause}
    except (OSError, RuntimeError, ValueError, MemoryError) as e:
        return {"path": path, "error": f"{type(e).__name__}: {e}"}


_WORKER: Detector | None = None


def _init_worker(model: str | None, threshold: float | None, second_stage: bool = True, threads: int = 1,
                 auto_gain: bool = False) -> None:
    global _WORKER
    _WORKER = Detector.load(model, threshold=threshold, intra_op_threads=threads, second_stage=second_stage,
                            auto_gain=auto_gain)


def _work(args: tuple[str, bool]) -> dict:
    assert _WORKER is not None
    return scan_one(_WORKER, *args)


def scan_paths(items: list[tuple[str, str | None]], model: str | os.PathLike | None = None,
               threshold: float | None = None, jobs: int = 1, keep_scores: bool = False,
               second_stage: bool = True, threads_per_job: int = 1,
               on_audio: Callable[[float], None] | None = None, auto_gain: bool = False) -> Iterator[dict]:
    """Scan (path, error) items from :func:`expand_paths`; yields result dicts in input order.

    jobs > 1 scans files in parallel worker processes, each with `threads_per_job` onnxruntime (and BLAS) threads;
    jobs = 1 scans here with onnxruntime's default threads (all cores). The model is loaded here first, so a bad
    model raises ModelError before any work starts. on_audio(seconds): progress, in seconds of audio scanned (block
    by block in one process; file by file from workers).
    """
    if jobs < 1 or threads_per_job < 1:
        raise ValueError(f"jobs and threads_per_job must be >= 1, got {jobs} and {threads_per_job}")
    det = Detector.load(model, threshold=threshold, second_stage=second_stage, auto_gain=auto_gain)
    todo = [p for p, e in items if e is None]
    jobs = min(jobs, len(todo))
    if jobs <= 1:
        results: Iterator[dict] = (scan_one(det, p, keep_scores, on_audio) for p in todo)
        yield from _interleave(items, results)
        return

    def pool(workers: int):
        return _pool(workers, model, threshold, second_stage, threads_per_job, auto_gain)

    pools = [pool(jobs)]  # the pool in use last; renewed when a worker dies
    try:
        results = _scan_in_pool(pools, pool, jobs, todo, keep_scores)
        yield from _interleave(items, (_reported(r, on_audio) for r in results))
    finally:  # interrupted (Ctrl-C, or the consumer stopped): files not yet started are not scanned
        pools[-1].shutdown(wait=True, cancel_futures=True)


def _pool(workers: int, model, threshold, second_stage, threads_per_job, auto_gain):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # Workers: as many BLAS/OpenMP threads as onnxruntime threads (they inherit the environment at start).
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: str(threads_per_job) for k in saved})
    try:
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(None if model is None else str(model), threshold, second_stage,
                                             threads_per_job, auto_gain))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _scan_in_pool(pools: list, pool: Callable, workers: int, todo: list[str], keep_scores: bool) -> Iterator[dict]:
    """Results of `todo` in order from the process pool pools[-1] (`pool(n)` makes a pool of n workers).

    A worker that dies (a decoder that crashes, the OOM killer) breaks the whole pool and fails every file in it:
    the first such file is scanned again alone, in a pool of its own (a file that kills that one too is reported
    as the cause), and the files not done yet go to a fresh pool of `workers` (appended to `pools`), so one crash
    costs one file at most, never the rest of the batch."""
    from concurrent.futures.process import BrokenProcessPool

    futures = [pools[-1].submit(_work, (p, keep_scores)) for p in todo]
    for i, path in enumerate(todo):
        try:
            result = futures[i].result()
        except BrokenProcessPool:
            pools[-1].shutdown(wait=True, cancel_futures=True)
            alone = pool(1)
            try:
                result = alone.submit(_work, (path, keep_scores)).result()
            except BrokenProcessPool:
                result = {"path": path, "error": "the process scanning this file died (a crash in its decoder, or "
                                                 "out of memory); the other files are scanned"}
            finally:
                alone.shutdown(wait=True, cancel_futures=True)
            if i + 1 < len(todo):
                pools.append(pool(workers))
                for j in range(i + 1, len(todo)):
                    if not (futures[j].done() and not futures[j].cancelled() and futures[j].exception() is None):
                        futures[j] = pools[-1].submit(_work, (todo[j], keep_scores))
        yield result


def _reported(result: dict, on_audio: Callable[[float], None] | None) -> dict:
    if on_audio is not None and "duration_s" in result:
        on_audio(result["duration_s"])
    return result


def _interleave(items: list[tuple[str, str | None]], results: Iterator[dict]) -> Iterator[dict]:
    for path, error in items:
        yield {"path": path, "error": error} if error is not None else next(results)
