"""Live audio sources: microphone, ffmpeg (RTSP/HTTP/any URL or file), local file replay.

Every source yields float32 mono chunks at SAMPLE_RATE from :meth:`chunks` (chunk sizes may vary) and can be
stopped from another thread with :meth:`stop`. Network streams that drop are reopened with exponential back-off
(:class:`Reconnect`), and a :class:`Gap` marks each drop in the chunks (the audio on either side is not one
signal; :func:`alerts.run_live` handles it); what a reopened stream sends again (HLS restarts a few segments back)
is dropped (:class:`ReplayTrim`), and :class:`Resumed` then says that no audio was lost; a source that cannot go on raises :class:`SourceError` naming the source and the
cause.

    src = open_source("rtsp://cam/stream")    # or "mic", "mic:2", "a.flac", "http://host/radio.mp3"
    for chunk in src.chunks():
        if isinstance(chunk, Gap): ...        # the stream dropped here
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, drain_lines, iter_audio_blocks

log = logging.getLogger("screamdetect")

CHUNK_S = 0.1  # default chunk length of live sources, seconds
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms", "hls")
LIVE_HINT = "pip install 'screamdetect[live]'"


class SourceError(RuntimeError):
    """A source that cannot (or can no longer) deliver audio. The message names the source and the cause."""


@dataclass(frozen=True)
class Gap:
    """Yielded by a source's chunks() between two chunks when the stream dropped (the connection was lost, and the
    source will try to reopen it): the audio before and after it are not one signal. run_live ends the open event
    at the drop, starts its detector afresh on the next chunk, and moves stream time on by the wall-clock seconds
    of the outage, so alert times keep to the clock (unless a :class:`Resumed` follows: then nothing was lost)."""


@dataclass(frozen=True)
class Resumed(Gap):
    """Yielded after a Gap when the reopened stream was found to go on exactly where it stopped (the seconds it
    sent again were dropped: :class:`ReplayTrim`): no audio was lost, so stream time must not move on by the
    outage. A Gap itself for consumers that know only Gap (a second drop at the same place costs them nothing)."""


@dataclass(frozen=True)
class Reconnect:
    """Reconnection policy for streams that drop.

    max_retries: consecutive failed attempts before giving up (0 = never reconnect, None = never give up); the
    count restarts once audio flows again. Delays grow from initial_s by `factor` per attempt, capped at max_s
    (seconds).
    """

    max_retries: int | None = 10
    initial_s: float = 1.0
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self):
        if self.max_retries is not None and (not isinstance(self.max_retries, int) or self.max_retries < 0):
            raise ValueError(f"max_retries must be an integer >= 0 or None (never give up), got "
                             f"{self.max_retries!r}")
        if not self.initial_s >= 0:
            raise ValueError(f"initial_s must be >= 0 seconds, got {self.initial_s!r}")
        if not self.max_s >= self.initial_s:
            raise ValueError(f"max_s must be >= initial_s ({self.initial_s}), got {self.max_s!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1-based)."""
        return min(self.max_s, self.initial_s * self.factor ** (attempt - 1))


class Source:
    """Base class: `name` (for topics and file names), `chunks()`, `stop()`."""

    name: str = "source"

    def __init__(self) -> None:
        self._stop = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask chunks() to end (thread-safe); it returns at the next chunk boundary."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


def _chunk_samples(chunk_s: float) -> int:
    if not chunk_s > 0:
        raise ValueError(f"chunk_s must be positive seconds, got {chunk_s!r}")
    return max(1, round(chunk_s * SAMPLE_RATE))


class FileSource(Source):
    """A local audio file read in chunks (any format load_audio reads); realtime=True paces it at real speed."""

    def __init__(self, path: str | os.PathLike, chunk_s: float = CHUNK_S, realtime: bool = False):
        super().__init__()
        self.path = Path(path)
        self.chunk_s = chunk_s
        _chunk_samples(chunk_s)
        self.realtime = realtime
        self.name = safe_name(self.path.stem)

    def chunks(self) -> Iterator[np.ndarray]:
        t0 = time.monotonic()
        n = 0
        try:
            for block in iter_audio_blocks(self.path, block_s=self.chunk_s):
                if self.stopped:
                    return
                if self.realtime:  # a block is released when its last sample would have been recorded
                    wait = t0 + (n + block.size) / SAMPLE_RATE - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                n += block.size
                yield block
        except AudioError as e:
            raise SourceError(str(e)) from e


class ReplayTrim:
    """Drops the audio a stream sends again after a reconnection, so that what was heard before a drop is not
    detected (and alerted) twice.

    A live HLS stream reopened by ffmpeg starts a few segments before its live edge (``live_start_index`` -3): the
    last seconds before the drop come again (measured: 2.0 s on a playlist of 1 s segments; up to 3 segments, 18 s
    at HLS's usual 6 s). After :meth:`reconnected`, :meth:`feed` holds the new connection's first
    ``skip_s + probe_s`` seconds, looks for its probe (``probe_s`` seconds after the first ``skip_s``, where a
    fresh decoder may still differ) in the last ``keep_s`` seconds delivered, and when it is found there drops
    the new audio up to the end of what was delivered. The match must be close (normalised correlation below
    2 kHz >= min_corr: a re-decoded, resampled copy is not bit-identical) and unique (no other lag more than 5 ms away
    within ``margin`` of it, which steady tones and silence are not): a doubtful match trims nothing, so audio is
    never lost to a false match, at the price of a possible repeat.
    """

    def __init__(self, keep_s: float = 30.0, probe_s: float = 0.5, skip_s: float = 0.2, min_corr: float = 0.8,
                 margin: float = 0.2, min_rms: float = 1e-4):
        self.keep = int(round(keep_s * SAMPLE_RATE))
        self.probe = int(round(probe_s * SAMPLE_RATE))
        self.skip = int(round(skip_s * SAMPLE_RATE))
        self.min_corr, self.margin, self.min_rms = min_corr, margin, min_rms
        self._tail: collections.deque[np.ndarray] = collections.deque()
        self._tail_n = 0
        self._pending: list[np.ndarray] | None = None  # held after a reconnection until the probe is complete
        self._drop = 0  # replayed samples still to come
        self.dropped_s = 0.0  # replayed seconds dropped in all (for reports)

    def reconnected(self) -> None:
        """The stream was reopened: hold its first audio until it can be compared with what came before."""
        self._pending = [] if self._tail_n >= self.skip + self.probe else None
        self._drop = 0

    def feed(self, x: np.ndarray) -> list[np.ndarray]:
        """A chunk as the source read it → the chunks to deliver (none while held; the replay removed)."""
        if self._drop:
            cut = min(self._drop, len(x))
            self._drop -= cut
            x = x[cut:]
        if self._pending is None:
            return self._remember(x)
        self._pending.append(x)
        if sum(len(c) for c in self._pending) < self.skip + self.probe:
            return []
        new = np.concatenate(self._pending)
        self._pending = None
        replay = self.replayed(new)
        self.dropped_s += replay / SAMPLE_RATE
        self._drop = max(0, replay - len(new))
        return self._remember(new[replay:])

    def flush(self) -> list[np.ndarray]:
        """The connection ended while audio was held: deliver it as it is (too short to compare). With nothing
        held the next connection is still compared."""
        if not self._pending:
            return []
        held, self._pending = self._pending, None
        return self._remember(np.concatenate(held))

    def replayed(self, new: np.ndarray) -> int:
        """How many samples at the start of `new` repeat the end of what was delivered (0 when not sure)."""
        from scipy.signal import butter, fftconvolve, sosfilt

        tail = np.concatenate(self._tail) if self._tail else np.zeros(0, np.float32)
        if len(new) < self.skip + self.probe or len(tail) < self.probe:
            return 0
        # Compared below 2 kHz: a fresh resampler may be a fraction of a sample off, which decorrelates the top
        # octaves (broadband noise a third of a sample off: 0.84 at full band). The same filter on both sides.
        sos = butter(4, 2000.0, fs=SAMPLE_RATE, output="sos")
        probe = sosfilt(sos, new.astype(np.float64))[self.skip: self.skip + self.probe]
        if np.sqrt(np.mean(probe ** 2)) < self.min_rms:
            return 0
        t = sosfilt(sos, tail.astype(np.float64))
        corr = fftconvolve(t, probe[::-1], mode="valid")  # corr[o] = <t[o:o+L], probe>
        c2 = np.concatenate([[0.0], np.cumsum(t * t)])
        norms = np.sqrt(np.maximum(c2[self.probe:] - c2[:-self.probe], 0.0)) * np.linalg.norm(probe)
        ncc = np.where(norms > 1e-12, corr / np.maximum(norms, 1e-12), 0.0)
        o = int(np.argmax(ncc))
        if ncc[o] < self.min_corr:
            return 0
        far = np.abs(np.arange(len(ncc)) - o) > int(0.005 * SAMPLE_RATE)
        if far.any() and ncc[far].max() > ncc[o] - self.margin:
            return 0  # periodic or featureless: another lag fits nearly as well
        return len(tail) - (o - self.skip)  # new[0] is tail[o - skip]; everything up to the tail's end repeats

    def _remember(self, x: np.ndarray) -> list[np.ndarray]:
        if not len(x):
            return []
        self._tail.append(x)
        self._tail_n += len(x)
        while self._tail_n - len(self._tail[0]) >= self.keep:
            self._tail_n -= len(self._tail.popleft())
        return [x]


class FfmpegSource(Source):
    """Any URL or file ffmpeg can open (RTSP, HTTP, RTMP, SRT, files), decoded to float32 mono at SAMPLE_RATE.

    live: whether the end of the stream means it dropped (reopen with back-off) or that it is over; default:
    True for network URLs, False for files. With the default, a network source that ends cleanly after delivering
    audio much faster than real time (more than FINITE_BURST_S, a live stream's start-up burst, plus twice the
    seconds it was open), or one read with realtime, was a file on a server, not a live stream: it is over, not
    reopened (it was replayed forever, with the same alerts again each time). The count of reconnection attempts
    in a row starts again only after a connection that lasted HEALTHY_S and delivered audio not heard before, so a
    short file that still passes for a live stream, or a frozen live HLS playlist (each connection sends its last
    seconds again, then stalls), is given up after `reconnect.max_retries`, not reopened for ever. realtime: read at
    real speed (ffmpeg -re), for file replay.
    on_status(message) is called with reconnection news. `command` replaces the ffmpeg executable (tests).
    stall_s: a network stream that stays open but delivers no audio for this long has stalled and is treated as a
    drop (ffmpeg is stopped and the stream reopened). ffmpeg's own I/O timeout does not see every stall: a live HLS
    playlist that is no longer updated is re-read successfully every few seconds, and ffmpeg waits on it for
    about 1,000 reloads (over half an hour at 2 s segments) without a word.
    """

    def __init__(self, url: str, chunk_s: float = CHUNK_S, realtime: bool = False, live: bool | None = None,
                 reconnect: Reconnect = Reconnect(), on_status: Callable[[str], None] | None = None,
                 ffmpeg: str = "ffmpeg", io_timeout_s: float = 10.0, stall_s: float = 30.0):
        super().__init__()
        self.url = str(url)
        self.stdin = self.url == "-"  # audio piped in (any format ffmpeg recognises): read ffmpeg's stdin
        self.chunk = _chunk_samples(chunk_s)
        self.realtime = realtime
        self.network = is_url(self.url)
        self.live = self.network if live is None else live
        self._guess_files = live is None and self.network
        self._run_samples, self._run_wall_s = 0, 0.0  # of the last ffmpeg run
        self._run_new = 0  # samples of the last run delivered (those it sent again were not)
        self.reconnect = reconnect
        self.on_status = on_status or (lambda msg: log.warning(msg))
        self.ffmpeg = ffmpeg
        if not io_timeout_s > 0:
            raise ValueError(f"io_timeout_s must be positive seconds, got {io_timeout_s!r}")
        self.io_timeout_s = io_timeout_s
        if not stall_s > 0:
            raise ValueError(f"stall_s must be positive seconds, got {stall_s!r}")
        self.stall_s = float(stall_s)
        self.name = source_name(self.url)
        self.connections = 0  # how many times ffmpeg delivered audio (1 + successful reconnections)
        self._proc: subprocess.Popen | None = None
        self.replay = ReplayTrim() if self.live else None  # drops what a reopened stream sends again

    def command(self) -> list[str]:
        cmd = [self.ffmpeg, *([] if self.stdin else ["-nostdin"]), "-hide_banner", "-loglevel", "error"]
        if self.realtime:
            cmd.append("-re")
        if self.network:
            if self.url.lower().startswith("rtsp"):
                cmd += ["-rtsp_transport", "tcp", "-timeout", str(int(self.io_timeout_s * 1e6))]
            else:
                cmd += ["-rw_timeout", str(int(self.io_timeout_s * 1e6))]
        return cmd + ["-i", "pipe:0" if self.stdin else self.url, "-vn", "-f", "f32le", "-ac", "1", "-ar",
                      str(SAMPLE_RATE), "pipe:1"]

    def chunks(self) -> Iterator[np.ndarray]:
        if shutil.which(self.ffmpeg) is None:
            raise SourceError(f"{self.url}: ffmpeg is needed to read this source and is not installed "
                              "(apt-get install ffmpeg)")
        failures = 0
        while not self.stopped:
            got, err = yield from self._run_once()
            if self.stopped:
                return
            # healthy: long enough, and with audio not heard before (a frozen HLS playlist sends its last
            # seconds again at every connection, then stalls: each such connection is a failed attempt)
            if got and self._run_wall_s >= self.HEALTHY_S and self._run_new:
                failures = 0
            if self._guess_files and err is None and got and (self._finite() or self.realtime):
                how = "read at real speed (--realtime)" if self.realtime else "faster than real time"
                self.on_status(f"{self.url}: ended after {self._run_samples / SAMPLE_RATE:.1f} s of audio received "
                               f"in {self._run_wall_s:.1f} s, {how}: a file, not a live stream; not reopened")
                return
            if not self.live:
                if err is None:
                    return
                raise SourceError(f"{'standard input' if self.stdin else self.url}: {err}")
            if got:  # a connection that delivered audio was lost: whatever comes next is another signal
                yield Gap()
                if self.replay is not None:
                    self.replay.reconnected()
            failures += 1
            why = err or "stream ended"
            most = self.reconnect.max_retries
            if most is not None and failures > most:
                raise SourceError(f"{self.url}: gave up after {most} reconnection attempts (last: {why})")
            delay = self.reconnect.delay(failures)
            self.on_status(f"{self.url}: {why}; reconnecting in {delay:.1f} s "
                           f"(attempt {failures}{'' if most is None else f'/{most}'})")
            if self._stop.wait(delay):
                return

    # Audio a live stream may deliver at once when it starts (an Icecast burst, a camera's buffer: a few seconds).
    # HLS can deliver 3 segments of 10 s at once, but a live HLS stream does not then end cleanly: ffmpeg keeps
    # polling its playlist (a clean end means the playlist ended: a recording, finite).
    FINITE_BURST_S = 8.0
    HEALTHY_S = 30.0  # a connection this long resets the count of reconnection attempts in a row

    def _finite(self) -> bool:
        """Whether the last run delivered more audio than a live stream can (see the class doc)."""
        return self._run_samples / SAMPLE_RATE > self.FINITE_BURST_S + 2.0 * self._run_wall_s

    def _run_once(self):
        """One ffmpeg run; yields chunks; returns (got_audio, error message or None). Counts the samples it
        delivered and the seconds it was open (_run_samples, _run_wall_s)."""
        self._run_samples, self._run_new, t0 = 0, 0, time.monotonic()
        try:
            return (yield from self._run_ffmpeg())
        finally:
            self._run_wall_s = time.monotonic() - t0

    def _run_ffmpeg(self):
        try:
            proc = subprocess.Popen(self.command(), stdin=None if self.stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            return False, f"ffmpeg failed to start ({e})"
        self._proc = proc
        tail: collections.deque[str] = collections.deque(maxlen=5)
        drain = threading.Thread(target=drain_lines, args=(proc.stderr, tail), daemon=True)
        drain.start()
        # When the read now waiting on ffmpeg began (None between reads: time spent on detection is not a stall).
        waiting: list[float | None] = [time.monotonic()]
        stalled = threading.Event()
        done = threading.Event()
        if self.network:
            def watch():
                while not done.wait(min(0.5, self.stall_s / 4)):
                    since = waiting[0]
                    if since is not None and time.monotonic() - since > self.stall_s:
                        stalled.set()
                        proc.kill()
                        return
            threading.Thread(target=watch, daemon=True, name="stall-watch").start()
        got = False
        nbytes = self.chunk * 4
        rest = b""
        try:
            assert proc.stdout is not None
            while not self.stopped:
                waiting[0] = time.monotonic()
                buf = proc.stdout.read(nbytes)
                waiting[0] = None
                if not buf:
                    break
                buf = rest + buf
                cut = len(buf) // 4 * 4
                rest = buf[cut:]
                if cut:
                    if not got:
                        self.connections += 1
                        got = True
                    self._run_samples += cut // 4
                    yield from self._deliver(np.frombuffer(buf[:cut], dtype=np.float32).copy())
        finally:
            done.set()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            drain.join(timeout=1.0)
            self._proc = None
        if self.stopped:
            return got, None
        if self.replay is not None:
            yield from self.replay.flush()
        if stalled.is_set():
            return got, f"no audio for {self.stall_s:g} s (the stream stalled)"
        if proc.returncode != 0:
            msg = tail[-1] if tail else f"ffmpeg exited with status {proc.returncode}"
            return got, msg.removeprefix(("pipe:0" if self.stdin else self.url) + ": ")
        if not got:
            return got, "no audio in the stream"
        return got, None

    def _deliver(self, x: np.ndarray) -> Iterator[np.ndarray]:
        if self.replay is None:
            self._run_new += len(x)
            yield x
            return
        before = self.replay.dropped_s
        out = self.replay.feed(x)
        if self.replay.dropped_s > before:
            self.on_status(f"{self.url}: skipped {self.replay.dropped_s - before:.1f} s of audio that the stream "
                           "sent again after reconnecting (heard before the drop)")
            yield Resumed()
        for c in out:
            self._run_new += len(c)
            yield c

    def stop(self) -> None:
        super().stop()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


class MicSource(Source):
    """The default (or a chosen) input device via sounddevice (the `live` extra), resampled to SAMPLE_RATE."""

    def __init__(self, device: int | str | None = None, chunk_s: float = CHUNK_S, max_queue_s: float = 10.0,
                 stall_s: float = 5.0):
        super().__init__()
        self.device = device
        self.stall_s = stall_s
        self.chunk = _chunk_samples(chunk_s)
        self.name = "mic" if device is None else safe_name(f"mic{device}")
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(max_queue_s * SAMPLE_RATE / self.chunk)))
        self.overflows = 0

    def chunks(self) -> Iterator[np.ndarray]:
        sd = import_sounddevice()
        import soxr

        try:
            rate = SAMPLE_RATE
            try:
                sd.check_input_settings(device=self.device, channels=1, samplerate=SAMPLE_RATE, dtype="float32")
            except (ValueError, sd.PortAudioError):  # cannot record at 16 kHz: use the device's rate, resample
                rate = int(sd.query_devices(self.device, "input")["default_samplerate"])
            rs = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
            blocksize = round(self.chunk * rate / SAMPLE_RATE)

            def callback(indata, frames, time_info, status):
                try:
                    self._q.put_nowait(indata[:, 0].copy())
                except queue.Full:  # the consumer is too slow: drop rather than grow without bound
                    self.overflows += 1

            stream = sd.InputStream(device=self.device, channels=1, samplerate=rate, dtype="float32",
                                    blocksize=blocksize, callback=callback)
        except Exception as e:
            raise SourceError(f"microphone {self.device if self.device is not None else '(default)'}: "
                              f"cannot open ({e})") from e
        with stream:
            last = time.monotonic()
            reported, warned_at = 0, -math.inf
            while not self.stopped:
                try:
                    block = self._q.get(timeout=0.5)
                except queue.Empty:
                    # a device unplugged or stopped delivers nothing, with no error: say so rather than sit silent
                    if time.monotonic() - last > self.stall_s or not stream.active:
                        raise SourceError(f"microphone {self.device if self.device is not None else '(default)'}: "
                                          f"no audio for {time.monotonic() - last:.1f} s (unplugged, or stopped by "
                                          "the system?)") from None
                    continue
                last = time.monotonic()
                if self.overflows > reported and last - warned_at >= 60.0:  # blocks dropped: say so, once a minute
                    log.warning("microphone: %d block(s) of audio dropped so far (detection fell behind the "
                                "device); stream time runs behind the clock by %.1f s", self.overflows,
                                self.overflows * self.chunk / SAMPLE_RATE)
                    reported, warned_at = self.overflows, last
                yield rs.resample_chunk(block) if rs is not None else block


def import_sounddevice():
    """sounddevice, or SourceError with the install hint (Python package and PortAudio library)."""
    try:
        import sounddevice
    except ImportError as e:
        raise SourceError(f"microphone input needs sounddevice: {LIVE_HINT}") from e
    except OSError as e:  # the package is there but the PortAudio library is not
        raise SourceError(f"microphone input needs the PortAudio library ({e}): apt-get install libportaudio2 "
                          f"(and {LIVE_HINT})") from e
    return sounddevice


def is_url(spec: str) -> bool:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    return bool(m) and m.group(1).lower() in NETWORK_SCHEMES


def safe_name(text: str) -> str:
    """A name usable in MQTT topics (UTF-8) and file names: letters and digits of any script ('Кухня', '台所'),
    '-', '_' and '.'; anything else (spaces, '/', MQTT's '+' and '#') becomes '_'."""
    name = re.sub(r"[^\w.-]+", "_", text).strip("_.")
    return name or "source"


def source_name(spec: str) -> str:
    """Default source name: 'mic', 'stdin', a file's stem, or a URL's host and path."""
    if spec == "-":
        return "stdin"
    if spec == "mic" or spec.startswith("mic:"):
        return safe_name(spec.replace(":", ""))
    if is_url(spec):
        rest = spec.split("://", 1)[1].split("@")[-1].split("?")[0]
        return safe_name(rest.replace("/", "_").replace(":", "_"))
    return safe_name(Path(spec).stem)


def open_source(spec: str, chunk_s: float = CHUNK_S, realtime: bool = False, reconnect: Reconnect = Reconnect(),
                on_status: Callable[[str], None] | None = None) -> Source:
    """'mic' or 'mic:DEVICE' → MicSource; a network URL → FfmpegSource (reconnecting); '-' → FfmpegSource on
    standard input (audio piped in, in any format ffmpeg recognises; its end is the end); a file → FileSource."""
    if spec == "-":
        return FfmpegSource("-", chunk_s, realtime=realtime, live=False, reconnect=reconnect, on_status=on_status)
    if spec == "mic" or spec.startswith("mic:"):
        dev: int | str | None = spec[4:] or None
        if isinstance(dev, str) and dev.isdigit():
            dev = int(dev)
        return MicSource(dev, chunk_s)
    if is_url(spec):
        return FfmpegSource(spec, chunk_s, realtime=realtime, reconnect=reconnect, on_status=on_status)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{spec}: file not found (use 'mic', a file, or a URL such as rtsp://host/stream)")
    if path.is_dir():
        raise SourceError(f"{spec}: is a directory; `listen` takes a file, a URL or a microphone per --source (use `detect` for folders)")
    return FileSource(path, chunk_s, realtime=realtime)
