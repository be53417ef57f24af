"""Alert sinks for live detection, event clip saving, and the live loop that ties source → detector → sinks.

Every sink receives alert messages (dicts):

    {"type": "start" | "end", "source": "cam1", "start_s": 12.5, "end_s": 15.0 | None, "peak_score": 0.97,
     "at_s": 13.6, "time": "2026-01-01T12:00:00.123+00:00"}

start_s/end_s/at_s are seconds of stream audio since the start; `time` is the wall-clock time the update was
emitted (UTC). A saved clip adds {"type": "clip", "path": ..., ...}. Sinks: :class:`JsonlSink` (stdout or a file,
appended), :class:`WebhookSink` (HTTP POST from a background thread, retries with back-off, never blocks
detection), :class:`MqttSink` (paho-mqtt 2.x; Frigate-style `screamdetect/<source>/scream` "ON"/"OFF" retained,
JSON on `screamdetect/events`). :class:`ClipSaver` writes pre-roll + event + post-roll to WAV/FLAC from a
bounded ring buffer. :func:`run_live` drives one stream; :func:`run_many` several at once, one thread each, sharing
the detector's models and the sinks.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .audio import MAX_PEAK, SAMPLE_RATE, write_audio
from .detector import Detector, EventUpdate
from .sources import Gap, Resumed

log = logging.getLogger("screamdetect")

MQTT_PREFIX = "screamdetect"
HA_DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default MQTT discovery prefix


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def alert_message(update: EventUpdate, source: str) -> dict:
    """The alert dict of an event update (see the module doc)."""
    return {"type": update.kind, "source": source, "start_s": round(update.start_s, 3),
            "end_s": None if update.end_s is None else round(update.end_s, 3),
            "peak_score": round(float(update.peak_score), 4), "at_s": round(update.at_s, 3), "time": now_iso()}


class Sink:
    """Receives alert messages. handle() must return quickly; close() flushes."""

    def handle(self, msg: dict) -> None:
        raise NotImplementedError

    def source_state(self, source: str, up: bool) -> None:
        """Whether `source` delivers audio: True from its first chunk (and again after a drop), False at a drop
        and when its run ends. Default: nothing (the alert messages carry detections only)."""

    def audio(self, source: str, seconds: float, busy_s: float) -> None:
        """`seconds` of `source`'s audio were scored, in `busy_s` seconds of wall time (called after each chunk,
        for sinks that define it: the metrics). Default: nothing."""

    def close(self) -> None:
        pass


def _check_jsonl(path: Path) -> None:
    """Alerts are appended only to a new or empty file or to JSON lines: anything else (an audio file, the source
    being listened to, a document) is refused, so that nothing the user has is written into."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
        ok = isinstance(json.loads(first.decode("utf-8")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: exists and is not a JSON-lines file, so alerts are not appended to it; choose "
                         "another --jsonl (a new file, or an earlier alerts file)")


class JsonlSink(Sink):
    """One JSON object per line to stdout ("-") or appended to a file (never overwritten), flushed per line; safe to
    share between the threads of several streams (a line is never interleaved with another). A file that was moved
    away or deleted since the last line (logrotate) is opened again at its path before the next line, as
    logging.handlers.WatchedFileHandler does, so alerts keep going to the path given."""

    def __init__(self, target: str | os.PathLike = "-"):
        self.target = str(target)
        self._lock = threading.Lock()
        if self.target == "-":
            self._f = sys.stdout
        else:
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            _check_jsonl(Path(self.target))
            self._f = self._open()

    def _open(self):
        try:
            return open(self.target, "a", encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{self.target}: cannot open for appending ({e.strerror})") from e

    def _moved(self) -> bool:
        """Whether the path no longer names the file open (rotated away, deleted)."""
        try:
            st = os.stat(self.target)
        except FileNotFoundError:
            return True
        own = os.fstat(self._f.fileno())
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def handle(self, msg: dict) -> None:
        line = json.dumps(msg) + "\n"
        with self._lock:
            if self._f is None or (self._f is not sys.stdout and self._moved()):
                if self._f is not None:
                    self._f.close()
                    self._f = None  # until it opens again (a folder that went away is retried at each line)
                _check_jsonl(Path(self.target))  # what now stands at the path is JSON lines, empty, or nothing
                self._f = self._open()
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        if self._f is not None and self._f is not sys.stdout:
            self._f.close()


class WebhookSink(Sink):
    """POSTs each message as JSON to `url` from a background thread.

    timeout_s: per request (seconds); retries: extra attempts after a failure (connection error, timeout or
    HTTP 5xx/429; other 4xx are not retried); back-off backoff_s · 2^attempt seconds, at most MAX_BACKOFF_S. A
    full queue (max_queue messages waiting) drops the new message with a warning rather than blocking detection.
    """

    MAX_BACKOFF_S = 60.0

    def __init__(self, url: str, timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 0.5,
                 max_queue: int = 1000, headers: dict | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"webhook url must start with http:// or https://, got {url!r}")
        if not parts.hostname or any(ch.isspace() or ord(ch) < 32 for ch in url):
            raise ValueError(f"webhook url {url!r} has no host name or holds spaces or control characters")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise ValueError(f"webhook url {url!r}: {e}") from None
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s must be >= 0 seconds, got {backoff_s!r}")
        self.url, self.timeout_s, self.retries, self.backoff_s = url, timeout_s, retries, backoff_s
        self.headers = {"Content-Type": "application/json", "User-Agent": "screamdetect", **(headers or {})}
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._closing = threading.Event()
        self._in_flight = False
        self._abandoned = False  # close() gave up waiting for the alert being sent
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def handle(self, msg: dict) -> None:
        try:
            self._q.put_nowait(msg)
        except queue.Full:
            self.dropped += 1
            log.warning("webhook %s: queue full, alert dropped", self.url)

    def _run(self) -> None:
        while not self._closing.is_set():
            msg = self._q.get()
            if msg is None:
                return
            self._in_flight = True
            try:
                if self._post(msg) and self._abandoned:
                    self.dropped -= 1  # counted as undelivered at close(), delivered after all
            finally:
                self._in_flight = False

    def _post(self, msg: dict) -> bool:
        data = json.dumps(msg).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt and self._closing.wait(min(self.MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))):
                last += " (closing: no more retries)"
                break
            req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
            try:
                # A 2xx status is the delivery: the body is not read (timeout_s bounds each socket read, not a
                # whole body, so a server trickling one byte at a time held every later alert behind it).
                with urllib.request.urlopen(req, timeout=self.timeout_s):
                    pass
                self.sent += 1
                return True
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if 400 <= e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                last = str(getattr(e, "reason", e))
            except Exception as e:  # noqa: BLE001 - e.g. http.client.InvalidURL: never let the sender thread die
                last = f"{type(e).__name__}: {e}"
                break
        self.failed += 1
        log.warning("webhook %s: alert not delivered (%s)", self.url, last)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to timeout_s seconds), then stop the thread. Alerts still queued then (a
        server that is down or slow) are counted in `dropped` and named in a warning, not lost silently."""
        deadline = time.monotonic() + timeout_s
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return
        self._closing.set()  # the thread ends after the request it is sending
        self._abandoned = self._in_flight
        left = int(self._in_flight)  # that one is not delivered either, as far as anyone can know now
        while True:
            try:
                left += self._q.get_nowait() is not None
            except queue.Empty:
                break
        self._q.put_nowait(None)  # wakes the thread if it waits for the next alert
        if left:
            self.dropped += left
            log.warning("webhook %s: %d alert(s) (queued or being sent) not delivered within %g s of closing",
                        self.url, left, timeout_s)


def import_paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError as e:
        raise RuntimeError("MQTT alerts need paho-mqtt >= 2: pip install 'screamdetect[live]'") from e
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise RuntimeError("MQTT alerts need paho-mqtt >= 2 (an older version is installed): "
                           "pip install -U 'paho-mqtt>=2'")
    return mqtt


def parse_host_port(spec: str, default_port: int = 1883, min_port: int = 1) -> tuple[str, int]:
    """'host', 'host:port', an IPv6 address ('::1') or '[v6]:port' → (host, port), default_port when none is given;
    ValueError naming the bad part. min_port 0 admits port 0 (a server's "any free port")."""
    if spec.startswith("["):  # [v6] or [v6]:port
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"MQTT broker must be HOST, HOST:PORT or [IPv6]:PORT, got {spec!r}")
        port = rest[1:]
    elif spec.count(":") > 1:  # a bare IPv6 address: no port in it
        host, port = spec, ""
    else:
        host, _, port = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not host:
        raise ValueError(f"MQTT broker must be HOST or HOST:PORT, got {spec!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not min_port <= int(port) < 65536:
        raise ValueError(f"MQTT port must be {min_port}-65535, got {port!r} in {spec!r}")
    return host, int(port)


def check_mqtt_prefix(prefix: str) -> None:
    """ValueError unless `prefix` can start MQTT topics: not empty, no wildcard (+ #), no NUL or control
    character, no leading or trailing '/'."""
    if (not prefix or any(c in "+#" or ord(c) < 32 for c in prefix) or prefix.startswith("/")
            or prefix.endswith("/")):
        raise ValueError(f"MQTT topic prefix {prefix!r}: give a non-empty topic level such as 'screamdetect' or "
                         "'site-a/screamdetect' (no + or #, no leading or trailing /)")


_SINK_IDS = itertools.count(1)  # MQTT client ids unique within a process too


class MqttSink(Sink):
    """Frigate-style MQTT alerts (paho-mqtt 2.x, network loop in its own thread, reconnects by itself).

    Topics: `<prefix>/<source>/scream` "ON" at an event start, "OFF" at its end (retained, so a subscriber that
    connects later sees the state); `<prefix>/events` the JSON message; `<prefix>/available` "online"/"offline"
    (retained, "offline" also as the last will). <source> is the message's own "source" (`source` when it has
    none), so one sink serves several streams (paho's publish is thread-safe). On every (re)connection the state
    of each source in `sources` (default: `source`) is published again: OFF unless an event is open, so an ON
    retained by an earlier run that was killed mid-event, or lost by a broker restarted without persistence, is
    put right. The client id is unique to this process unless given (two processes sharing one id knock each
    other off the broker). A broker that refuses the client (bad credentials) is an error at once, with its reason.

    `<prefix>/<source>/available` "online"/"offline" (retained) says whether that source delivers audio
    (:meth:`source_state`): offline before its first audio, during a drop, and once its run ended.

    tls: connect over TLS, checking the broker's certificate against the system's CAs, or against `ca_file` (a
    PEM file; giving it implies TLS), for a broker with its own CA. Host name mismatches fail as on the web.

    discovery: Home Assistant's MQTT discovery prefix (normally "homeassistant"; None: off). On every connection
    each source in `sources` is announced, retained, as a binary sensor of device class "sound" on its state
    topic, available while both `<prefix>/available` and `<prefix>/<source>/available` are "online"
    (:meth:`discovery_config`): Home Assistant then shows one "Scream" sensor per camera without any
    configuration, "unavailable" while that camera's audio is down.
    """

    def __init__(self, host: str, port: int = 1883, source: str = "mic", prefix: str = MQTT_PREFIX,
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 qos: int = 1, connect_timeout_s: float = 10.0, sources: Iterable[str] | None = None,
                 discovery: str | None = None, tls: bool = False, ca_file: str | os.PathLike | None = None):
        import socket

        mqtt = import_paho()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        check_mqtt_prefix(prefix)
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"MQTT CA file {ca_file}: not found")
        self.prefix, self.source, self.qos = prefix, source, qos
        self.broker = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.state_topic = f"{prefix}/{source}/scream"
        self.events_topic = f"{prefix}/events"
        self.available_topic = f"{prefix}/available"
        self.discovery = discovery
        self._connected = threading.Event()
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._on: dict[str, bool] = {n: False for n in (sources or [source])}
        self._up: dict[str, bool] = dict.fromkeys(self._on, False)  # per source: delivering audio
        client_id = client_id or f"screamdetect-{socket.gethostname()}-{os.getpid()}-{next(_SINK_IDS)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        if tls or ca_file is not None:  # the broker's certificate is checked: against ca_file, or the system's CAs
            try:
                self.client.tls_set(ca_certs=None if ca_file is None else str(ca_file))
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise ValueError(f"MQTT CA file {ca_file}: cannot be read as certificates ({e})") from e
        self.client.will_set(self.available_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 30)
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"MQTT broker {host}:{port}: cannot connect ({e})") from e
        self.client.loop_start()
        if not self._connected.wait(connect_timeout_s) or self._refused:
            self.client.loop_stop()
            if self._refused:
                raise RuntimeError(f"MQTT broker {host}:{port}: connection refused ({self._refused})")
            raise RuntimeError(f"MQTT broker {host}:{port}: no CONNACK within {connect_timeout_s} s")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            if self.discovery:
                for name in list(self._on):
                    topic, config = self.discovery_config(name)
                    client.publish(topic, json.dumps(config), qos=1, retain=True)
            client.publish(self.available_topic, "online", qos=1, retain=True)
            with self._lock:
                for name, on in self._on.items():
                    client.publish(self._topic(name), "ON" if on else "OFF", qos=self.qos, retain=True)
                for name, up in self._up.items():
                    client.publish(self._available(name), "online" if up else "offline", qos=1, retain=True)
            self._connected.set()
        else:
            log.warning("MQTT: connection refused (%s)", reason_code)
            if not self._connected.is_set():  # refused at start: say so now, not after the CONNACK timeout
                self._refused = str(reason_code)
                self._connected.set()

    def _topic(self, src: str) -> str:
        return self.state_topic if src == self.source else f"{self.prefix}/{src}/scream"

    def _available(self, src: str) -> str:
        return f"{self.prefix}/{src}/available"

    def source_state(self, source: str, up: bool) -> None:
        """`<prefix>/<source>/available` "online" while the source delivers audio, "offline" during a drop and
        after it ended (retained): a camera whose audio is down shows as such, not as "no scream"."""
        with self._lock:
            self._up[source] = up
            self.client.publish(self._available(source), "online" if up else "offline", qos=1, retain=True)

    def discovery_config(self, src: str) -> tuple[str, dict]:
        """(topic, payload) announcing source `src` to Home Assistant as a binary sensor. Home Assistant's ids
        allow ASCII letters, digits, '_' and '-' only: a name with other characters ('Кухня', 'cam.1') gets them
        as '_' plus a short hash of the name, so that two such names stay two sensors."""
        import hashlib
        import re

        from . import __version__

        slug = re.sub(r"[^A-Za-z0-9_-]", "_", src)
        if slug != src:
            slug = f"{slug}_{hashlib.sha1(src.encode()).hexdigest()[:6]}"
        node = re.sub(r"[^A-Za-z0-9_-]", "_", self.prefix)
        uid = f"{node}_{slug}"
        config = {
            "name": "Scream",
            "unique_id": f"{uid}_scream",
            "state_topic": self._topic(src),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "sound",
            "availability": [  # both: screamdetect running, and this source's audio coming in
                {"topic": t, "payload_available": "online", "payload_not_available": "offline"}
                for t in (self.available_topic, self._available(src))],
            "availability_mode": "all",
            "device": {"identifiers": [uid], "name": f"screamdetect {src}", "manufacturer": "screamdetect",
                       "model": "scream detector", "sw_version": __version__},
            "origin": {"name": "screamdetect", "sw_version": __version__},
        }
        return f"{self.discovery}/binary_sensor/{node}/{slug}_scream/config", config

    def handle(self, msg: dict) -> None:
        if msg.get("type") in ("start", "end"):
            src = msg.get("source") or self.source
            with self._lock:  # the state a reconnection republishes, and this publish, in one order
                self._on[src] = msg["type"] == "start"
                self.client.publish(self._topic(src), "ON" if msg["type"] == "start" else "OFF", qos=self.qos,
                                    retain=True)
        self.client.publish(self.events_topic, json.dumps(msg), qos=self.qos)

    def close(self) -> None:
        info = self.client.publish(self.available_topic, "offline", qos=1, retain=True)
        try:
            info.wait_for_publish(timeout=5.0)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()  # before loop_stop: it wakes the network loop, which then ends at once
        self.client.loop_stop()


class AudioRing:
    """The last `capacity` samples of a stream (float32), addressed by absolute sample index."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity}")
        self.buf = np.zeros(capacity, dtype=np.float32)
        self.total = 0  # samples written since the start

    @property
    def capacity(self) -> int:
        return self.buf.size

    def write_all(self, chunk: np.ndarray) -> None:
        """Append a chunk of any length (only its last `capacity` samples are kept)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.size > self.capacity:
            self.total += chunk.size - self.capacity
            chunk = chunk[-self.capacity:]
        n = chunk.size
        pos = self.total % self.capacity
        first = min(n, self.capacity - pos)
        self.buf[pos: pos + first] = chunk[:first]
        self.buf[: n - first] = chunk[first:]
        self.total += n

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) that are still held (clipped to what the ring has)."""
        start = max(start, self.total - self.capacity, 0)
        end = min(end, self.total)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        idx = np.arange(start, end) % self.capacity
        return self.buf[idx]


MAX_ROLL_S = 600.0  # pre-/post-roll of a saved clip: the ring buffer holds this much audio (10 min: 38 MB)


@dataclass
class _Clip:
    """A clip being recorded: its audio from sample `start`, its event, the sample to stop at (once it ended)."""

    parts: list
    start: int
    length: int
    event: tuple
    stop_at: int | None = None


class ClipSaver:
    """Saves one audio clip per event: pre_s before its start, the event, post_s after its end (seconds).

    Feed every chunk of the stream with :meth:`feed` and every event update with :meth:`on_update`. Audio is
    kept in a ring of pre_s + lookback_s seconds (lookback_s: how late after its start an event can be reported,
    at least the model window plus the onset windows) plus the events being recorded, each capped at max_event_s.
    An event that starts during the previous one's post-roll gets its own clip (the two clips overlap).
    Files: <folder>/<source>_<UTC date-time>_<start_s>s.<fmt>; an existing file is never overwritten.
    """

    def __init__(self, folder: str | os.PathLike, source: str = "mic", pre_s: float = 2.0, post_s: float = 2.0,
                 fmt: str = "wav", lookback_s: float = 10.0, max_event_s: float = 120.0,
                 on_saved: Callable[[dict], None] | None = None):
        check_clip_options(pre_s, post_s, fmt)
        if not 0 <= lookback_s <= MAX_ROLL_S:
            raise ValueError(f"lookback_s must be 0 to {MAX_ROLL_S:g} seconds, got {lookback_s!r}")
        if not max_event_s > 0:
            raise ValueError(f"max_event_s must be positive seconds, got {max_event_s!r}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: the clip folder is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.source, self.pre_s, self.post_s, self.fmt = source, pre_s, post_s, fmt
        self.max_event_s = max_event_s
        self.on_saved = on_saved
        self.ring = AudioRing(int((pre_s + lookback_s) * SAMPLE_RATE) + 1)
        self.saved: list[Path] = []
        self._clips: list[_Clip] = []  # oldest first; only the last can be an open event (stop_at None)
        self._limit = int((pre_s + max_event_s + post_s) * SAMPLE_RATE)

    def feed(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        for c in self._clips:
            take = chunk[: max(0, self._limit - c.length)]
            if take.size:
                c.parts.append(take)
                c.length += take.size
        self.ring.write_all(chunk)
        for c in list(self._clips):
            if c.stop_at is not None and self.ring.total >= c.stop_at:
                self._write(c)
            elif c.length >= self._limit:
                log.warning("clip of event at %.1f s cut at %.0f s (max_event_s)", c.event[0], self.max_event_s)
                self._write(c)

    def skip(self, n: int) -> None:
        """n samples the stream did not deliver (an outage between a Gap and the next chunk): silence in the clips
        being recorded, and the clips' clock moves on with the stream's."""
        while n > 0:
            if not self._clips and n > self.ring.capacity:  # nothing records: only the last ring-full matters
                self.ring.total += n - self.ring.capacity
                n = self.ring.capacity
            k = min(n, 10 * SAMPLE_RATE)
            self.feed(np.zeros(k, np.float32))
            n -= k

    def on_update(self, update: EventUpdate) -> None:
        open_clip = self._clips[-1] if self._clips and self._clips[-1].stop_at is None else None
        if update.kind == "start" and open_clip is None:
            start = max(0, int((update.start_s - self.pre_s) * SAMPLE_RATE))
            audio = self.ring.read(start, self.ring.total)
            self._clips.append(_Clip([audio], max(start, self.ring.total - self.ring.capacity), audio.size,
                                     (update.start_s, None)))
        elif update.kind == "end" and open_clip is not None:
            open_clip.event = (update.start_s, update.end_s)
            open_clip.stop_at = round((update.end_s + self.post_s) * SAMPLE_RATE)
            if self.ring.total >= open_clip.stop_at:
                self._write(open_clip)

    def close(self) -> None:
        """End of stream: write the clips still being recorded (their post-roll may be short)."""
        for c in list(self._clips):
            self._write(c)

    def _write(self, clip: _Clip) -> None:
        self._clips.remove(clip)
        audio = np.concatenate(clip.parts) if clip.parts else np.zeros(0, np.float32)
        if clip.stop_at is not None:
            audio = audio[: max(0, clip.stop_at - clip.start)]
        start_s, end_s = clip.event
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = _unique(self.folder / f"{self.source}_{stamp}_{start_s:.2f}s.{self.fmt}")
        if audio.size == 0:
            return
        try:
            write_audio(path, audio)
        except (OSError, RuntimeError) as e:
            log.warning("clip %s not written (%s)", path, e)
            return
        self.saved.append(path)
        if self.on_saved:
            self.on_saved({"type": "clip", "source": self.source, "path": str(path), "start_s": round(start_s, 3),
                           "end_s": None if end_s is None else round(end_s, 3),
                           "clip_start_s": round(clip.start / SAMPLE_RATE, 3),
                           "duration_s": round(audio.size / SAMPLE_RATE, 3), "time": now_iso()})


def check_clip_options(pre_s: float, post_s: float, fmt: str) -> None:
    """ValueError for a pre-/post-roll outside 0..MAX_ROLL_S seconds or a format other than wav / flac."""
    for name, v in (("pre-roll", pre_s), ("post-roll", post_s)):
        if not 0 <= v <= MAX_ROLL_S:
            raise ValueError(f"{name} must be 0 to {MAX_ROLL_S:g} seconds, got {v!r}")
    if fmt not in ("wav", "flac"):
        raise ValueError(f"fmt must be 'wav' or 'flac', got {fmt!r}")


def save_file_clips(path: str | os.PathLike, events: list[dict], folder: str | os.PathLike, name: str,
                    pre_s: float = 2.0, post_s: float = 2.0, fmt: str = "wav",
                    max_event_s: float = 120.0) -> list[str | None]:
    """Cut one clip per event of a scanned file: pre_s before its start, the event (its first max_event_s
    seconds), post_s after its end; events are {"start_s", "end_s", ...} dicts, as `detect` reports them. One more
    pass over the file's blocks, holding only the clips (bounded memory, whatever the file's length).

    Files: <folder>/<name>_<start_s>s.<fmt>; an existing file is never overwritten (a -1, -2 ... suffix instead).
    Returns each event's clip path, or None where the clip could not be written (a warning says why). Raises
    AudioError when the file cannot be read again.
    """
    from .audio import iter_audio_blocks

    check_clip_options(pre_s, post_s, fmt)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spans = [(max(0, round((e["start_s"] - pre_s) * SAMPLE_RATE)),
              round((min(e["end_s"], e["start_s"] + max_event_s) + post_s) * SAMPLE_RATE)) for e in events]
    parts: list[list[np.ndarray]] = [[] for _ in spans]
    last = max((b for _, b in spans), default=0)
    pos = 0
    for block in iter_audio_blocks(path) if spans else ():
        end = pos + block.size
        for k, (a, b) in enumerate(spans):
            if a < end and b > pos:
                parts[k].append(block[max(a, pos) - pos: min(b, end) - pos])
        pos = end
        if pos >= last:
            break
    out: list[str | None] = []
    for e, clip in zip(events, parts):
        target = _unique(folder / f"{name}_{e['start_s']:.2f}s.{fmt}")
        try:
            write_audio(target, np.concatenate(clip) if clip else np.zeros(0, np.float32))
        except (OSError, RuntimeError, ValueError) as err:
            log.warning("clip %s not written (%s)", target, err)
            out.append(None)
            continue
        out.append(str(target))
    return out


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    i = 1
    while path.with_name(f"{path.stem}-{i}{path.suffix}").exists():
        i += 1
    return path.with_name(f"{path.stem}-{i}{path.suffix}")


class _Repair:
    """Live audio with NaN/inf samples or samples far above full scale (a decoder glitch in a network stream):
    those samples become 0 (NaN/inf) or are clipped to ±1, so the stream goes on in step instead of ending for
    good; a warning names the source and the stream time, at most once a minute of stream audio."""

    def __init__(self, source: str):
        self.source, self.samples, self.chunks, self._warned_at = source, 0, 0, None

    def __call__(self, chunk, t_s: float):
        x = np.asarray(chunk)
        if x.dtype.kind != "f" or not x.size:
            return chunk  # wrong types are the detector's clear error
        peak = float(np.max(np.abs(x)))
        if np.isfinite(peak) and peak <= MAX_PEAK:
            return chunk
        bad = ~np.isfinite(x) | (np.abs(x) > 1.0)
        self.samples += int(bad.sum())
        self.chunks += 1
        if self._warned_at is None or t_s - self._warned_at >= 60.0:
            t_s += int(np.argmax(bad.reshape(-1))) / SAMPLE_RATE if x.ndim == 1 else 0.0  # the first bad sample
            self._warned_at = t_s
            what = ("NaN or infinite samples" if not np.isfinite(peak)
                    else f"samples of {peak:.3g} (float audio lies in [-1, 1])")
            log.warning("%s: audio at %.2f s holds %s; %d sample(s) in %d chunk(s) so far zeroed or clipped to ±1",
                        self.source, t_s, what, self.samples, self.chunks)
        return np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0).astype(np.float32)


@dataclass
class LiveSummary:
    """What a live run did: seconds of audio processed, events, clips saved, how it ended."""

    seconds: float
    events: list
    clips: list
    error: str | None = None
    source: str = ""


class _Deferred:
    """Blocks that Ctrl-C (SIGINT) and SIGTERM do not cut short: while a `with` block runs, a signal is held and
    acted on when it ends (the previous handler then runs, e.g. raising KeyboardInterrupt); outside the blocks it
    acts at once. So an update reaches every sink, or none, and the detector's state matches the alerts sent.
    The handler is installed once for the run (install / uninstall), so a block costs two attribute writes. Main
    thread only (elsewhere, where Python runs no signal handler, it does nothing)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        import signal

        self._signal = signal
        self._active = threading.current_thread() is threading.main_thread()
        self._old: dict = {}
        self._held: list[int] = []
        self._inside = False

    def install(self) -> None:
        if not self._active:
            return
        for name in self.SIGNALS:
            n = getattr(self._signal, name, None)
            # (a handler not set from Python reads as None and could not be put back: that signal is left alone)
            if n is not None and self._signal.getsignal(n) is not None:
                self._old[n] = self._signal.signal(n, self._handle)

    def uninstall(self) -> None:
        for n, h in self._old.items():
            if self._signal.getsignal(n) == self._handle:  # (not if the previous handler replaced itself)
                self._signal.signal(n, h)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        if self._inside:
            self._held.append(signum)
        else:
            self._act(signum)

    def _act(self, signum: int) -> None:
        h = self._old.get(signum)
        if callable(h):
            h(signum, None)  # Python's SIGINT handler, or listen's SIGTERM one, raises KeyboardInterrupt here
        elif h == self._signal.SIG_DFL:
            self._signal.signal(signum, h)
            os.kill(os.getpid(), signum)

    def __enter__(self) -> None:
        self._inside = True

    def __exit__(self, *exc) -> None:
        self._inside = False
        if self._held:
            held, self._held = self._held, []
            for n in dict.fromkeys(held):  # each signal once, in the order it came
                self._act(n)


def run_live(chunks: Iterable[np.ndarray], detector: Detector, sinks: list[Sink], source: str = "mic",
             clips: ClipSaver | None = None, stop: threading.Event | None = None,
             close_sinks: bool = True, source_events: bool = False) -> LiveSummary:
    """Drive detection over a stream of float32 chunks; send every event update to every sink.

    A sink that raises is logged and skipped for that message (alerts never stop detection). The clip saver, and
    the sinks unless close_sinks is False, are closed at the end, also on error or KeyboardInterrupt (which end the
    run normally). source_events: also send every sink {"type": "source", "source", "state": "up" | "down",
    "at_s", "time"} when the source starts delivering audio, drops, comes back and ends (sinks always get
    :meth:`Sink.source_state`; these messages are for those that read messages only: JSON lines, webhooks).
    Ctrl-C or SIGTERM while a chunk is being scored and its alerts sent takes effect once they are
    sent (never between two sinks); while waiting for audio, at once. Samples that are NaN, infinite or far above
    full scale are zeroed or clipped, with a warning (a glitch in a live stream must not end it). `stop`: ends the
    run before the next chunk once set (how :func:`run_many` stops its threads).
    """
    sd = detector.stream()
    error = None
    repair = _Repair(source)
    deferred = _Deferred()
    offset = 0.0  # stream seconds before the current detector's start (audio before a Gap, plus its outage)
    done: list = []  # events of the detectors before the current one (shifted)
    dropped_at: float | None = None  # when a Gap arrived, until the next chunk
    meters = [s for s in sinks if type(s).audio is not Sink.audio]  # the sinks that count the audio scored

    def shifted(u: EventUpdate) -> EventUpdate:
        if not offset:
            return u
        return replace(u, start_s=u.start_s + offset, end_s=None if u.end_s is None else u.end_s + offset,
                       at_s=u.at_s + offset)

    up = False  # whether the source is delivering audio, as told to the sinks

    def tell(state: bool) -> None:
        nonlocal up
        if state == up:
            return
        up = state
        msg = {"type": "source", "source": source, "state": "up" if state else "down",
               "at_s": round(offset + sd.time_s, 3), "time": now_iso()}
        for s in sinks:
            try:
                s.source_state(source, state)
                if source_events:
                    s.handle(msg)
            except Exception as e:  # noqa: BLE001 - a broken sink must not stop detection
                log.warning("alert sink %s failed: %s", type(s).__name__, e)

    def dispatch(updates):
        for u in map(shifted, updates):
            if clips is not None:
                clips.on_update(u)
            msg = alert_message(u, source)
            for s in sinks:
                try:
                    s.handle(msg)
                except Exception as e:  # noqa: BLE001 - a broken sink must not stop detection
                    log.warning("alert sink %s failed: %s", type(s).__name__, e)

    it = iter(chunks)
    try:
        deferred.install()
        try:
            for chunk in it:
                if isinstance(chunk, Resumed):  # it went on where it stopped: no outage to add
                    dropped_at = None
                    continue
                if isinstance(chunk, Gap):  # the stream dropped: its open event ends here
                    with deferred:
                        dispatch(sd.finish().updates)
                        tell(False)
                    done += _shifted_events(sd.events, offset)
                    offset += sd.time_s
                    sd = detector.stream()
                    dropped_at = time.monotonic()
                    continue
                with deferred:
                    if dropped_at is not None:  # back: stream time moves on by the outage
                        outage = time.monotonic() - dropped_at
                        offset += outage
                        if clips is not None:
                            clips.skip(round(outage * SAMPLE_RATE))
                        dropped_at = None
                    chunk = repair(chunk, offset + sd.time_s)
                    tell(True)
                    if clips is not None:
                        clips.feed(chunk)
                    t0 = time.perf_counter()
                    updates = sd.process(chunk).updates
                    busy = time.perf_counter() - t0
                    dispatch(updates)
                    for m in meters:
                        try:
                            m.audio(source, chunk.size / SAMPLE_RATE, busy)
                        except Exception as e:  # noqa: BLE001 - a broken sink must not stop detection
                            log.warning("alert sink %s failed: %s", type(m).__name__, e)
                if stop is not None and stop.is_set():
                    break
        except KeyboardInterrupt:
            pass
        except (RuntimeError, OSError, ValueError) as e:  # the source failed (SourceError, AudioError, I/O)
            error = str(e)
        try:
            with deferred:  # the end alerts of open events, then: this source delivers no more
                dispatch(sd.finish().updates)
                tell(False)
        except KeyboardInterrupt:  # a second Ctrl-C during them: they were sent; close the rest below
            pass
    finally:
        deferred.uninstall()
        close = getattr(it, "close", None)
        if close is not None:  # a generator source: stop its subprocess / device now, not at garbage collection
            try:
                close()
            except Exception as e:  # noqa: BLE001
                log.warning("closing source %s failed: %s", source, e)
        if clips is not None:
            clips.close()
        if close_sinks:
            _close_all(sinks)
    events = done + _shifted_events(sd.events, offset)
    return LiveSummary(offset + sd.time_s, events, list(clips.saved) if clips else [], error, source)


def _shifted_events(events, offset: float) -> list:
    """Events of a detector started `offset` stream seconds in (after a Gap), in stream time."""
    return [replace(e, start_s=e.start_s + offset, end_s=e.end_s + offset) for e in events]


def _close_all(sinks: list[Sink]) -> None:
    for s in sinks:
        try:
            s.close()
        except Exception as e:  # noqa: BLE001
            log.warning("closing %s failed: %s", type(s).__name__, e)


@dataclass
class LiveStream:
    """One stream of :func:`run_many`: its chunks, its name (in alerts, topics, clip names), its clip saver, and
    how to stop it from another thread (a Source's stop(): it also wakes a source that waits to reconnect)."""

    chunks: Iterable[np.ndarray]
    source: str
    clips: ClipSaver | None = None
    stop: Callable[[], None] | None = None


def run_many(streams: list[LiveStream], detector: Detector, sinks: list[Sink],
             stop_timeout_s: float = 5.0, source_events: bool = False) -> list[LiveSummary]:
    """Several streams at once, one thread each: one detector (its ONNX sessions are shared, each stream keeps its
    own state), the same sinks (closed once, after every stream). A stream whose source fails ends with its error
    and the others go on. Ctrl-C (KeyboardInterrupt in the calling thread) stops every stream before its next
    chunk and calls each stream's `stop` (so that a source waiting to reconnect ends too, and its open event gets
    its end alert); a stream still blocked after stop_timeout_s is left behind and reported as such. Returns the
    summaries in the order of `streams`."""
    if len({s.source for s in streams}) != len(streams):
        raise ValueError(f"stream names must be unique, got {[s.source for s in streams]}")
    stop = threading.Event()
    results: list[LiveSummary | None] = [None] * len(streams)
    # Each stream says when it is done. The main thread waits on these, never on Thread.join: in CPython 3.11 a
    # KeyboardInterrupt that lands inside Thread.join can mark a thread that is still running as stopped (the
    # check added by bpo-45274 releases the thread's own lock), so the streams' results were lost now and then.
    done = [threading.Event() for _ in streams]

    def work(i: int, st: LiveStream) -> None:
        try:
            results[i] = run_live(st.chunks, detector, sinks, st.source, st.clips, stop=stop, close_sinks=False,
                                  source_events=source_events)
        except Exception as e:  # noqa: BLE001 - one stream's failure must not take the others down
            log.warning("stream %s failed: %s", st.source, e)
            results[i] = LiveSummary(0.0, [], [], f"{type(e).__name__}: {e}", st.source)
        finally:
            done[i].set()

    threads = [threading.Thread(target=work, args=(i, st), name=f"listen-{st.source}", daemon=True)
               for i, st in enumerate(streams)]
    # One BLAS thread for the run: the streams are the parallelism. With OpenBLAS's default (a thread per core) one
    # stream in a thread cost 15 % of a core against 1.1 % with this limit (measured, bench/bench_live.py
    # --threads): its idle threads spin after the small products of each chunk.
    from threadpoolctl import threadpool_limits

    blas = threadpool_limits(limits=1, user_api="blas")
    try:
        try:
            for t in threads:
                t.start()
            for d in done:
                while not d.wait(0.2):
                    pass
        except KeyboardInterrupt:
            stop.set()
            for st in streams:
                if st.stop is not None:
                    try:
                        st.stop()
                    except Exception as e:  # noqa: BLE001
                        log.warning("stopping stream %s failed: %s", st.source, e)
            deadline = time.monotonic() + stop_timeout_s
            for d in done:
                d.wait(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
        _close_all(sinks)
        blas.restore_original_limits()
    return [r if r is not None else
            LiveSummary(0.0, [], [], f"did not stop within {stop_timeout_s:g} s (left behind)", st.source)
            for r, st in zip(results, streams)]
