"""Alert sinks: JSON lines, webhook (local HTTP server, retries, never blocking), MQTT against a real mosquitto
broker, event clips from the ring buffer, and the live loop."""

from __future__ import annotations

import functools
import getpass
import http.server
import json
import os
import shutil
import signal as signal_module  # (`signal` is a fixture here)
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from _models import background, scene, write_band_energy_model
from screamdetect.alerts import (
    AudioRing,
    ClipSaver,
    JsonlSink,
    LiveStream,
    MqttSink,
    Sink,
    WebhookSink,
    parse_host_port,
    run_live,
    run_many,
)
from screamdetect.audio import SAMPLE_RATE, load_audio
from screamdetect.detector import Detector, iter_chunks


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return Detector.load(write_band_energy_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def signal():
    return scene(20.0, [(5.0, 3.0)])  # one burst 5.0-8.0 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Recorder(http.server.ThreadingHTTPServer):
    """Records POSTed JSON; answers `codes` in turn (then 200), after `delay_s`."""

    def __init__(self, codes=(), delay_s=0.0):
        self.posts, self.codes, self.delay_s, self.hits = [], list(codes), delay_s, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits += 1
                time.sleep(outer.delay_s)
                code = outer.codes.pop(0) if outer.codes else 200
                if code == 200:
                    outer.posts.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def stop(self):
        self.shutdown()
        self.server_close()


def _run(det, x, sinks, clips=None, chunk=1600, source="cam1"):
    return run_live(iter_chunks(x, chunk), det, sinks, source=source, clips=clips)


def test_jsonl_sink_appends_start_and_end(det, signal, tmp_path):
    out = tmp_path / "alerts.jsonl"
    out.write_text('{"earlier": true}\n')  # the user's file is appended to, never overwritten
    summary = _run(det, signal, [JsonlSink(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"earlier": True}
    start, end = lines[1:]
    assert start["type"] == "start" and end["type"] == "end" and start["source"] == "cam1"
    assert start["end_s"] is None and 4.0 <= start["start_s"] <= 5.0 and 8.0 <= end["end_s"] <= 9.0
    assert start["at_s"] < end["at_s"] and "T" in start["time"]
    assert len(summary.events) == 1 and summary.seconds == 20.0


def test_jsonl_sink_follows_its_path_when_the_file_is_rotated(tmp_path):
    """logrotate moves alerts.jsonl away (or it is deleted): the next alert goes to a new alerts.jsonl at the path
    given, not on into the moved file for ever; an empty file put there (logrotate's `create`) is used; a file of
    another kind put there is not written into, and the sink takes up again once the path is free."""
    out = tmp_path / "alerts.jsonl"
    sink = JsonlSink(out)
    try:
        sink.handle({"n": 1})
        out.rename(tmp_path / "alerts.jsonl.1")  # rotated
        sink.handle({"n": 2})
        assert [json.loads(x)["n"] for x in (tmp_path / "alerts.jsonl.1").read_text().splitlines()] == [1]
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [2]
        out.rename(tmp_path / "alerts.jsonl.2")
        out.write_text("")  # logrotate's `create`: a new empty file
        sink.handle({"n": 3})
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [3]
        out.unlink()
        out.write_bytes(b"RIFF\x00\x00WAVE")  # someone's file now stands at the path
        with pytest.raises(ValueError, match="not a JSON-lines file"):
            sink.handle({"n": 4})
        assert out.read_bytes() == b"RIFF\x00\x00WAVE"
        out.unlink()
        sink.handle({"n": 5})
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [5]
    finally:
        sink.close()


def test_webhook_posts_without_blocking_detection(det, signal):
    server = _Recorder(delay_s=0.3)
    try:
        hook = WebhookSink(server.url, timeout_s=5, retries=0)
        t0 = time.monotonic()
        hook.handle({"type": "start", "n": 1})
        hook.handle({"type": "end", "n": 2})
        assert time.monotonic() - t0 < 0.1  # handed to the background thread
        hook.close()
        assert [p["n"] for p in server.posts] == [1, 2] and hook.sent == 2
        hook = WebhookSink(server.url)
        _run(det, signal, [hook])
        assert [p["type"] for p in server.posts[2:]] == ["start", "end"]
    finally:
        server.stop()


def test_webhook_retries_with_backoff_then_succeeds(tmp_path):
    server = _Recorder(codes=[500, 503])
    try:
        hook = WebhookSink(server.url, retries=3, backoff_s=0.05)
        t0 = time.monotonic()
        hook.handle({"type": "start"})
        hook.close()
        assert server.hits == 3 and hook.sent == 1 and hook.failed == 0
        assert time.monotonic() - t0 >= 0.05 + 0.1  # back-off 0.05 s, then 0.1 s
        hook = WebhookSink(server.url, retries=3, backoff_s=0.01)
        server.codes = [404]
        hook.handle({"type": "start"})
        hook.close()
        assert server.hits == 4 and hook.failed == 1  # a 4xx is not retried
    finally:
        server.stop()
    dead = WebhookSink(server.url, retries=1, backoff_s=0.01, timeout_s=1)
    dead.handle({"type": "start"})
    dead.close()
    assert dead.failed == 1 and dead.sent == 0


def test_closing_a_webhook_that_cannot_keep_up_counts_what_it_could_not_send(caplog):
    server = _Recorder(delay_s=1.0)
    try:
        hook = WebhookSink(server.url, timeout_s=5.0)
        for i in range(6):
            hook.handle({"type": "start", "n": i})
        t0 = time.monotonic()
        with caplog.at_level("WARNING", logger="screamdetect"):
            hook.close(timeout_s=1.5)
        assert time.monotonic() - t0 < 2.5  # not the 6 s the queue needs
        _wait_until(lambda: not hook._thread.is_alive(), 5.0)  # it ends after the request it was sending
        assert hook.sent + hook.dropped == 6 and hook.sent in (1, 2) and hook.failed == 0
        assert "alert(s) (queued or being sent) not delivered within 1.5 s of closing" in caplog.text
    finally:
        server.stop()


def _wait_until(cond, timeout):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)


def test_webhook_back_off_doubles_up_to_a_minute():
    """--webhook-retries 5 with a back-off that doubles: 20, 40, then 60 s at most between attempts (uncapped, the
    fifth wait would have been over 5 minutes and a tenth 2.8 hours, holding every later alert behind it)."""
    import types

    sink = WebhookSink(f"http://127.0.0.1:{_free_port()}/", retries=5, backoff_s=20.0, timeout_s=1.0)
    waits = []
    sink._closing = types.SimpleNamespace(wait=lambda d: waits.append(d) or False, is_set=lambda: False,
                                          set=lambda: None)  # records the waits instead of sleeping them
    try:
        sink.handle({"type": "start"})
        _wait_until(lambda: sink.failed == 1, 10.0)
    finally:
        sink.close()
    assert waits == [20.0, 40.0, 60.0, 60.0, 60.0]


def test_webhook_bad_parameters():
    for kw, name in [({"url": "ftp://x"}, "url"), ({"timeout_s": 0}, "timeout_s"), ({"retries": -1}, "retries"),
                     ({"backoff_s": -1}, "backoff_s")]:
        with pytest.raises(ValueError, match=name):
            WebhookSink(**{"url": "http://127.0.0.1:9/", **kw})
    for url in ("http://", "http://exa mple.com/x", "http://host:99999/", "https://host/a\nb"):
        with pytest.raises(ValueError, match="url"):
            WebhookSink(url)


def test_an_unexpected_error_in_a_post_does_not_kill_the_sender(monkeypatch):
    """Whatever urllib raises (here a ValueError, as http.client.InvalidURL is), the alert is counted as not
    delivered and the next one is still sent."""
    import urllib.request

    server = _Recorder(codes=[])
    real = urllib.request.urlopen
    calls = []

    def flaky(req, timeout):
        calls.append(req)
        if len(calls) == 1:
            raise ValueError("URL can't contain control characters")
        return real(req, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    try:
        hook = WebhookSink(server.url, retries=2, backoff_s=0.01)
        hook.handle({"type": "start"})
        hook.handle({"type": "end"})
        hook.close()
        assert hook.failed == 1 and hook.sent == 1 and server.hits == 1 and len(calls) == 2  # not retried
    finally:
        server.stop()


@pytest.fixture
def mosquitto(tmp_path):
    proc, port = _broker(tmp_path)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _broker(tmp_path, extra: str = ""):
    """A mosquitto broker of the test's own on a free port (its config + `extra` lines): (process, port)."""
    exe = shutil.which("mosquitto") or (shutil.which("/usr/sbin/mosquitto"))
    if exe is None:
        pytest.skip("mosquitto broker not installed (make system-deps, or apt-get install mosquitto)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    proc.wait(5)
    pytest.fail("mosquitto did not start")


def _mqtt_messages(port: int, publish, topics: tuple[str, ...] = ("screamdetect/#",),
                   ca=None) -> list[tuple[str, str]]:
    """(topic, payload) of every message under `topics` while `publish()` runs, until "offline" arrives (over TLS
    checked against `ca` when given)."""
    import paho.mqtt.client as mqtt

    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    if ca is not None:
        sub.tls_set(ca_certs=str(ca))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode()))
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        publish()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and ("screamdetect/available", "offline") not in got:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    return got


def test_mqtt_frigate_style_topics_on_a_real_broker(det, signal, mosquitto):
    got = _mqtt_messages(mosquitto, lambda: _run(det, signal, [MqttSink("127.0.0.1", mosquitto, source="cam1")]))
    states = [p for t, p in got if t == "screamdetect/cam1/scream"]
    events = [json.loads(p) for t, p in got if t == "screamdetect/events"]
    assert states == ["OFF", "ON", "OFF"]  # its state at connection, then the event
    assert [e["type"] for e in events] == ["start", "end"]
    assert events[1]["source"] == "cam1" and 8.0 <= events[1]["end_s"] <= 9.0 and events[1]["peak_score"] > 0.99
    assert ("screamdetect/available", "online") in got and ("screamdetect/available", "offline") in got


def test_home_assistant_discovery_announces_each_source(det, signal, mosquitto):
    """With discovery on, Home Assistant learns one binary sensor per source, retained, pointing at the topics
    the states are really published on; names Home Assistant's ids cannot hold stay apart."""
    names = ["cam1", "Кухня", "Спальня", "cam.1"]

    def run():
        sink = MqttSink("127.0.0.1", mosquitto, source="cam1", sources=names, discovery="homeassistant")
        _run(det, signal, [sink])

    got = _mqtt_messages(mosquitto, run, topics=("screamdetect/#", "homeassistant/#"))
    configs = {t: json.loads(p) for t, p in got if t.startswith("homeassistant/")}
    assert len(configs) == 4 and all(t.startswith("homeassistant/binary_sensor/screamdetect/") for t in configs)
    assert all(t.endswith("_scream/config") and t.isascii() for t in configs)
    by_state = {c["state_topic"]: c for c in configs.values()}
    assert set(by_state) == {f"screamdetect/{n}/scream" for n in names}
    assert len({c["unique_id"] for c in configs.values()}) == 4  # 'Кухня' and 'Спальня' are both '_____' + hash
    cam = by_state["screamdetect/cam1/scream"]
    assert cam["device_class"] == "sound" and (cam["payload_on"], cam["payload_off"]) == ("ON", "OFF")
    assert cam["availability_mode"] == "all" and [a["topic"] for a in cam["availability"]] == [
        "screamdetect/available", "screamdetect/cam1/available"]  # running, and this camera's audio coming in
    assert all((a["payload_available"], a["payload_not_available"]) == ("online", "offline")
               for a in cam["availability"])
    assert cam["device"]["name"] == "screamdetect cam1" and cam["unique_id"] == "screamdetect_cam1_scream"
    states = [p for t, p in got if t == "screamdetect/cam1/scream"]
    assert states == ["OFF", "ON", "OFF"]  # the sensor announced is the one that goes ON and OFF
    # retained: a Home Assistant started later still finds the sensors
    late = _mqtt_messages(mosquitto, lambda: None, topics=("homeassistant/#", "screamdetect/available"))
    assert {t for t, _ in late} >= set(configs)


def test_mqtt_says_when_a_sources_audio_is_down(det, signal, mosquitto):
    """`screamdetect/<source>/available`: offline until audio comes, online while it does, offline through a drop
    and after the end, so a camera whose audio is down is not shown as 'no scream'."""
    from screamdetect.sources import Gap

    def chunks():
        yield from iter_chunks(signal[: 3 * SAMPLE_RATE], 1600)
        yield Gap()
        yield from iter_chunks(signal[3 * SAMPLE_RATE:], 1600)

    def run():
        run_live(chunks(), det, [MqttSink("127.0.0.1", mosquitto, source="cam1")], source="cam1")

    got = _mqtt_messages(mosquitto, run)
    assert [p for t, p in got if t == "screamdetect/cam1/available"] == [
        "offline", "online", "offline", "online", "offline"]  # connected; audio; the drop; back; the end
    assert next(p for t, p in got if t == "screamdetect/cam1/scream") == "OFF"  # its state, as before


def _tls_files(d):
    """A CA and a certificate it signed for 127.0.0.1 / localhost (openssl), as a broker of one's own has."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=d)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
         "-keyout", "ca.key", "-out", "ca.pem"])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key",
         "-out", "srv.csr"])
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "san.cnf", "-out", "srv.pem"])
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


def test_mqtt_over_tls_with_the_brokers_own_ca(det, signal, tmp_path):
    """--mqtt-ca: the broker's certificate is checked against the given CA; without it (the system's CAs) the
    same broker is refused with the reason, and a CA file that is not one is a clear error."""
    ca, cert, key = _tls_files(tmp_path)
    # (user: run as root, mosquitto would drop to the 'mosquitto' user, who cannot read the test's files)
    proc, port = _broker(tmp_path, f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\nuser {getpass.getuser()}\n")
    try:
        sink = functools.partial(MqttSink, "127.0.0.1", port, source="cam1", ca_file=ca)
        got = _mqtt_messages(port, lambda: _run(det, signal, [sink()]), ca=ca)
        assert [p for t, p in got if t == "screamdetect/cam1/scream"] == ["OFF", "ON", "OFF"]
        with pytest.raises(RuntimeError, match=r"cannot connect.*(certificate verify failed|CERTIFICATE)"):
            MqttSink("127.0.0.1", port, source="cam1", tls=True)  # the system's CAs do not know this one
    finally:
        proc.terminate()
        proc.wait(5)
    with pytest.raises(ValueError, match="cannot be read as certificates"):
        MqttSink("127.0.0.1", port, ca_file=key.with_name("san.cnf"))
    with pytest.raises(ValueError, match="not found"):
        MqttSink("127.0.0.1", port, ca_file=tmp_path / "nope.pem")


def test_listen_shows_a_source_that_failed_to_open_as_offline(signal, mosquitto, tmp_path):
    """Of two cameras one cannot be opened: it is published offline (and its state OFF), not left with whatever an
    earlier run retained; the other goes online, then offline at its end."""
    from typer.testing import CliRunner

    from screamdetect.audio import write_audio
    from screamdetect.cli import app

    model = write_band_energy_model(tmp_path / "m")
    write_audio(tmp_path / "gate.wav", signal)

    def run():
        res = CliRunner().invoke(app, ["listen", "-s", str(tmp_path / "gate.wav"), "-s", str(tmp_path / "yard.wav"),
                                       "--model", str(model), "--mqtt", f"127.0.0.1:{mosquitto}",
                                       "--jsonl", str(tmp_path / "a.jsonl")])
        assert "yard.wav" in res.output and "(skipped)" in res.output

    got = _mqtt_messages(mosquitto, run)
    assert [p for t, p in got if t == "screamdetect/yard/available"] == ["offline"]
    assert [p for t, p in got if t == "screamdetect/yard/scream"] == ["OFF"]
    assert [p for t, p in got if t == "screamdetect/gate/available"] == ["offline", "online", "offline"]


def test_source_events_say_when_the_audio_is_down(det, signal, tmp_path):
    """--source-events: JSON lines (and any sink) learn when the source starts, drops, comes back and ends, at
    which stream time; without it the messages are the detections only, as before."""
    from screamdetect.sources import Gap

    def chunks():
        yield from iter_chunks(signal[: 3 * SAMPLE_RATE], 1600)
        yield Gap()
        yield from iter_chunks(signal[3 * SAMPLE_RATE:], 1600)

    out = tmp_path / "a.jsonl"
    run_live(chunks(), det, [JsonlSink(out)], source="cam1", source_events=True)
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    src = [(m["state"], m["at_s"]) for m in msgs if m["type"] == "source"]
    assert [st for st, _ in src] == ["up", "down", "up", "down"] and all(m["source"] == "cam1" for m in msgs)
    assert src[0][1] == 0.0 and src[1][1] == pytest.approx(3.0, abs=0.01) and src[3][1] >= 20.0
    assert msgs[0]["type"] == "source" and (msgs[-1]["type"], msgs[-1]["state"]) == ("source", "down")
    assert {m["type"] for m in msgs} == {"source", "start", "end"}
    plain = tmp_path / "b.jsonl"
    run_live(chunks(), det, [JsonlSink(plain)], source="cam1")
    assert {json.loads(line)["type"] for line in plain.read_text().splitlines()} == {"start", "end"}


def test_mqtt_unreachable_broker_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"MQTT broker 127.0.0.1:\d+: cannot connect"):
        MqttSink("127.0.0.1", _free_port())
    assert parse_host_port("broker.local") == ("broker.local", 1883)
    assert parse_host_port("10.0.0.2:1884") == ("10.0.0.2", 1884)
    with pytest.raises(ValueError, match="port"):
        parse_host_port("host:99999")


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_clip_holds_pre_roll_event_and_post_roll(det, signal, tmp_path, fmt):
    saved = []
    clips = ClipSaver(tmp_path / "clips", source="cam1", pre_s=1.0, post_s=1.5, fmt=fmt, on_saved=saved.append)
    summary = _run(det, signal, [], clips=clips, chunk=4096)
    (ev,) = summary.events
    (path,) = clips.saved
    assert path.suffix == f".{fmt}" and path.name.startswith("cam1_")
    clip = load_audio(path)
    start, stop = round((ev.start_s - 1.0) * SAMPLE_RATE), round((ev.end_s + 1.5) * SAMPLE_RATE)
    assert clip.size == stop - start  # pre-roll + event + post-roll, to the sample
    np.testing.assert_allclose(clip, signal[start:stop], atol=1e-4)  # the stream's own audio, burst included
    burst = slice(int((5.0 - ev.start_s + 1.0) * SAMPLE_RATE), int((8.0 - ev.start_s + 1.0) * SAMPLE_RATE))
    assert np.sqrt(np.mean(clip[burst] ** 2)) > 10 * np.sqrt(np.mean(clip[: SAMPLE_RATE // 2] ** 2))
    assert saved[0]["path"] == str(path) and saved[0]["duration_s"] == pytest.approx(clip.size / SAMPLE_RATE)


def test_an_event_in_the_previous_ones_post_roll_gets_its_own_clip(det, tmp_path):
    x = scene(20.0, [(5.0, 1.0), (8.0, 1.5)], seed=4)
    clips = ClipSaver(tmp_path / "clips", source="cam1", pre_s=1.0, post_s=4.0)
    summary = _run(det, x, [], clips=clips, chunk=1600)
    first, second = summary.events
    assert second.start_s < first.end_s + 4.0  # the second starts while the first's post-roll is recorded
    assert len(clips.saved) == 2
    for ev, path in zip(summary.events, clips.saved):
        start, stop = round((ev.start_s - 1.0) * SAMPLE_RATE), round((ev.end_s + 4.0) * SAMPLE_RATE)
        np.testing.assert_allclose(load_audio(path), x[start:stop], atol=1e-4)


def test_clip_at_stream_end_and_no_overwrite(det, tmp_path):
    x = scene(8.0, [(6.5, 1.5)])  # the event is still open when the stream ends
    folder = tmp_path / "clips"
    for _ in range(2):
        clips = ClipSaver(folder, source="s", pre_s=0.5, post_s=2.0)
        (ev,) = _run(det, x, [], clips=clips, source="s").events
        assert len(clips.saved) == 1
    files = sorted(folder.iterdir())
    assert len(files) == 2  # same name stem, second one got a suffix (nothing overwritten)
    for f in files:  # from start - 0.5 s to the end of the stream (the post-roll is cut short)
        assert load_audio(f).size == x.size - round((ev.start_s - 0.5) * SAMPLE_RATE)


def test_ring_buffer_is_bounded(tmp_path):
    r = AudioRing(10)
    x = np.arange(37, dtype=np.float32)
    for i in range(0, 37, 3):
        r.write_all(x[i: i + 3])
    np.testing.assert_array_equal(r.read(20, 40), x[27:37])
    assert r.read(0, 5).size == 0 and r.total == 37
    r.write_all(np.arange(25, dtype=np.float32))
    np.testing.assert_array_equal(r.read(0, 100), np.arange(15, 25))
    with pytest.raises(ValueError, match="capacity"):
        AudioRing(0)
    with pytest.raises(ValueError, match="pre-roll"):
        ClipSaver("/tmp", pre_s=-1)
    with pytest.raises(ValueError, match="post-roll must be 0 to 600"):
        ClipSaver("/tmp", post_s=1e9)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        ClipSaver(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_failing_sink_does_not_stop_detection(det, signal, tmp_path):
    class Broken(Sink):
        def handle(self, msg):
            raise OSError("disk full")

    out = tmp_path / "a.jsonl"
    summary = _run(det, signal, [Broken(), JsonlSink(out)])
    assert len(summary.events) == 1 and len(out.read_text().splitlines()) == 2


def test_source_failure_closes_the_open_event(det, signal, tmp_path):
    def dying():
        yield from iter_chunks(signal[: 7 * SAMPLE_RATE], 1600)
        raise RuntimeError("stream gave up")

    out = tmp_path / "a.jsonl"
    summary = run_live(dying(), det, [JsonlSink(out)])
    assert summary.error == "stream gave up" and len(summary.events) == 1
    assert [json.loads(x)["type"] for x in out.read_text().splitlines()] == ["start", "end"]


def test_a_glitch_in_a_live_stream_is_repaired_not_the_end_of_it(det, signal, caplog):
    """NaN, inf or a wild sample in one chunk (a decoder glitch): the stream goes on to its end, with a warning
    naming the source and the time, and finds the scream after the glitch as the clean stream does."""
    x = signal.copy()
    x[round(2.05 * SAMPLE_RATE)] = np.nan  # in the chunk that starts at 2.0 s
    x[3 * SAMPLE_RATE] = 1e6
    x[3 * SAMPLE_RATE + 7] = -np.inf
    clean = _run(det, signal, [])
    with caplog.at_level("WARNING", logger="screamdetect"):
        summary = _run(det, x, [], source="cam1")
    assert summary.error is None and summary.seconds == pytest.approx(20.0)
    assert [(e.start_s, e.end_s) for e in summary.events] == [(e.start_s, e.end_s) for e in clean.events]
    warnings = [r.getMessage() for r in caplog.records if "zeroed or clipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("cam1: audio at 2.05 s holds NaN")


class _Recording(Sink):
    def __init__(self):
        self.msgs, self.closed, self._lock = [], 0, threading.Lock()

    def handle(self, msg):
        with self._lock:
            self.msgs.append(msg)

    def close(self):
        self.closed += 1


def test_run_many_streams_keep_their_own_events_and_one_failure_spares_the_rest(det, signal, tmp_path):
    """Three streams at once in threads, one detector: each finds exactly what it finds alone, whatever the
    others do (different chunk sizes, one source dying half-way), and the shared sinks are closed once."""
    other = scene(16.0, [(2.0, 1.5), (10.0, 2.0)], seed=3)

    def dying():
        yield from iter_chunks(signal[: 7 * SAMPLE_RATE], 800)
        raise OSError("connection reset")

    alone = {"cam1": _run(det, signal, [], chunk=1600), "cam2": _run(det, other, [], chunk=4000)}
    rec, out = _Recording(), tmp_path / "many.jsonl"
    summaries = run_many([LiveStream(iter_chunks(signal, 1600), "cam1"), LiveStream(iter_chunks(other, 4000), "cam2"),
                          LiveStream(dying(), "cam3")], det, [rec, JsonlSink(out)])
    assert [s.source for s in summaries] == ["cam1", "cam2", "cam3"]
    cam1, cam2, cam3 = summaries
    for sm in (cam1, cam2):
        assert sm.error is None and sm.events == alone[sm.source].events and sm.seconds == alone[sm.source].seconds
    assert len(cam1.events) == 1 and len(cam2.events) == 2
    assert cam3.error == "connection reset" and len(cam3.events) == 1  # its open event is closed, as alone
    assert rec.closed == 1
    by_source = {}
    for m in rec.msgs:
        by_source.setdefault(m["source"], []).append(m["type"])
    assert by_source == {"cam1": ["start", "end"], "cam2": ["start", "end"] * 2, "cam3": ["start", "end"]}
    lines = [json.loads(x) for x in out.read_text().splitlines()]  # whole lines, never interleaved
    assert sorted((m["source"], m["start_s"], m["type"]) for m in lines) == sorted(
        (m["source"], m["start_s"], m["type"]) for m in rec.msgs)
    with pytest.raises(ValueError, match="unique"):
        run_many([LiveStream([], "a"), LiveStream([], "a")], det, [])


def _ctrl_c_after(delay_s, run):
    """run() with a Ctrl-C (KeyboardInterrupt in this, the main thread) delay_s seconds after it starts. It must
    raise even when the test runner was started with SIGINT ignored (a shell starts background jobs so, and Python
    then installs no handler: interrupt_main would do nothing, and endless streams would never stop)."""
    import _thread

    sigint = signal_module.signal(signal_module.SIGINT, signal_module.default_int_handler)
    threading.Timer(delay_s, _thread.interrupt_main).start()
    try:
        return run()
    finally:
        signal_module.signal(signal_module.SIGINT, sigint)


def test_ctrl_c_while_an_alert_is_sent_waits_until_every_sink_has_it(det, signal):
    """Ctrl-C that lands while the start alert is being sent (here: sent by the first sink itself) does not cut
    the update short: the second sink still gets the start, the run then stops before the next chunk, and both
    get the end alert. Before, the second sink got an end with no start. The handler is put back afterwards."""

    class Interrupting(_Recording):
        def handle(self, msg):
            if msg["type"] == "start":
                os.kill(os.getpid(), signal_module.SIGINT)
                time.sleep(0.05)  # the handler runs here, in the middle of the update
            super().handle(msg)

    first, second = Interrupting(), _Recording()
    sigint = signal_module.signal(signal_module.SIGINT, signal_module.default_int_handler)
    try:
        summary = _run(det, signal, [first, second])
        assert signal_module.getsignal(signal_module.SIGINT) is signal_module.default_int_handler
    finally:
        signal_module.signal(signal_module.SIGINT, sigint)
    assert [m["type"] for m in first.msgs] == [m["type"] for m in second.msgs] == ["start", "end"]
    start = first.msgs[0]
    assert summary.seconds == pytest.approx(start["at_s"], abs=0.11)  # stopped after that chunk (0.1 s)
    assert summary.seconds < 8.0 and len(summary.events) == 1
    assert first.closed == second.closed == 1


def test_run_many_stops_every_stream_on_ctrl_c(det):
    """Ctrl-C in the main thread stops the streams before their next chunk, closes their sources, and reports a
    stream that stays blocked (a network source waiting to reconnect) instead of hanging on it."""
    closed = []

    def endless(name):
        try:
            x = background(0.1)
            while True:
                time.sleep(0.01)
                yield x
        finally:
            closed.append(name)

    def blocked():
        yield background(0.1)
        time.sleep(30)  # daemon thread: left behind
        yield background(0.1)

    rec = _Recording()
    t0 = time.monotonic()
    summaries = _ctrl_c_after(0.6, lambda: run_many([LiveStream(endless("a"), "a"), LiveStream(endless("b"), "b"),
                                                     LiveStream(blocked(), "c")], det, [rec], stop_timeout_s=1.0))
    assert time.monotonic() - t0 < 5
    a, b, c = summaries
    assert a.error is None and b.error is None and a.seconds > 0.2 and b.seconds > 0.2
    assert sorted(closed) == ["a", "b"]  # the generators were closed (their subprocess / device released)
    assert c.error is not None and "did not stop" in c.error
    assert rec.closed == 1


def test_ctrl_c_reaches_a_stream_waiting_to_reconnect_and_its_event_is_closed(det, signal):
    """A stream whose source dropped mid-scream and waits (back-off) to reconnect: Ctrl-C calls its stop(), which
    wakes the wait, so the stream ends at once and its open event gets its end alert (MQTT OFF), instead of the
    stream being left behind with the scream ON."""

    woken = threading.Event()

    def dropped_mid_scream():
        yield from iter_chunks(signal[: 7 * SAMPLE_RATE], 1600)  # the burst starts at 5 s
        woken.wait(60)  # the back-off wait of a reconnecting source; Source.stop() wakes it

    def endless():
        x = background(0.1)
        while True:
            time.sleep(0.01)
            yield x

    rec = _Recording()
    t0 = time.monotonic()
    cam, other = _ctrl_c_after(1.0, lambda: run_many(
        [LiveStream(dropped_mid_scream(), "cam", stop=woken.set), LiveStream(endless(), "b")], det, [rec],
        stop_timeout_s=10.0))
    assert time.monotonic() - t0 < 5  # not the 10 s of stop_timeout_s: the wait was woken
    assert woken.is_set() and cam.error is None and other.error is None
    assert cam.seconds == pytest.approx(7.0) and len(cam.events) == 1
    assert [m["type"] for m in rec.msgs if m["source"] == "cam"] == ["start", "end"]


def test_run_many_keeps_every_result_whenever_ctrl_c_lands(det):
    """Ctrl-C at any moment: every stream's summary comes back (a thread still running was once taken for
    stopped when the interrupt landed inside Thread.join, and its result was lost about one time in five)."""
    import _thread

    def endless():
        x = background(0.05)
        while True:
            time.sleep(0.002)
            yield x

    sigint = signal_module.signal(signal_module.SIGINT, signal_module.default_int_handler)
    try:
        for k in range(12):
            timer = threading.Timer(0.15 + 0.013 * k, _thread.interrupt_main)
            timer.start()
            summaries = run_many([LiveStream(endless(), f"s{i}") for i in range(4)], det, [_Recording()],
                                 stop_timeout_s=5.0)
            assert [s.error for s in summaries] == [None] * 4, f"attempt {k}"
            assert all(s.seconds > 0 for s in summaries)
    finally:
        signal_module.signal(signal_module.SIGINT, sigint)


def test_one_mqtt_sink_serves_several_streams(det, signal, mosquitto):
    other = scene(12.0, [(2.0, 1.5), (8.0, 1.5)], seed=4)
    got = _mqtt_messages(mosquitto, lambda: run_many(
        [LiveStream(iter_chunks(signal, 1600), "cam1"), LiveStream(iter_chunks(other, 1600), "door")], det,
        [MqttSink("127.0.0.1", mosquitto, source="cam1")]))
    assert [p for t, p in got if t == "screamdetect/cam1/scream"] == ["OFF", "ON", "OFF"]
    assert [p for t, p in got if t == "screamdetect/door/scream"] == ["ON", "OFF", "ON", "OFF"]
    events = [json.loads(p) for t, p in got if t == "screamdetect/events"]
    assert sorted(e["source"] for e in events) == ["cam1"] * 2 + ["door"] * 4


def test_a_webhook_that_trickles_its_answer_does_not_hold_back_the_next_alerts():
    """A server answering 200 and then its body one byte every 0.5 s: timeout_s bounds each socket read, so
    reading the body held every later alert for as long as the server liked. The status is the delivery."""
    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/", timeout_s=1.0, retries=0)
        hook.handle({"type": "start"})
        hook.handle({"type": "end"})
        _wait_until(lambda: hook.sent == 2, 5.0)
        hook.close(timeout_s=1.0)
        assert hook.failed == 0 and hook.dropped == 0
    finally:
        server.shutdown()
        server.server_close()


def test_closing_counts_the_alert_being_sent():
    """The alert in flight when close() stops waiting was counted neither as failed nor as dropped, so `listen`
    said fewer alerts were lost than were. If it is delivered after all, it is counted as sent instead."""
    server = _Recorder(delay_s=1.5)
    try:
        hook = WebhookSink(server.url, timeout_s=5.0, retries=0)
        hook.handle({"type": "start"})
        _wait_until(lambda: server.hits == 1, 5.0)
        hook.close(timeout_s=0.3)
        assert hook.dropped == 1 and hook.sent == 0
        _wait_until(lambda: not hook._thread.is_alive(), 5.0)
        assert hook.sent == 1 and hook.dropped == 0
    finally:
        server.stop()


def test_a_stale_retained_on_is_cleared_when_a_run_starts(det, mosquitto):
    """A run killed during an event leaves "ON" retained for ever: the next run, with no scream at all, publishes
    each source's state when it connects, so the topic reads OFF."""
    import paho.mqtt.client as mqtt

    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="killed-run")
    old.connect("127.0.0.1", mosquitto)
    old.loop_start()
    old.publish("screamdetect/k1/scream", "ON", qos=1, retain=True).wait_for_publish(5)
    old.disconnect()
    old.loop_stop()
    quiet = background(4.0)
    got = _mqtt_messages(mosquitto, lambda: _run(det, quiet, [MqttSink("127.0.0.1", mosquitto, source="k1")],
                                                 source="k1"))
    states = [p for t, p in got if t == "screamdetect/k1/scream"]
    assert states[0] == "ON" and states[-1] == "OFF"  # the retained ON seen on subscribing, then put right


def test_two_processes_with_one_source_name_do_not_knock_each_other_off(mosquitto):
    """The client id was screamdetect-<source>: two hosts both listening to "mic" took turns being disconnected."""
    a = MqttSink("127.0.0.1", mosquitto, source="mic")
    b = MqttSink("127.0.0.1", mosquitto, source="mic")
    try:
        time.sleep(1.0)
        assert a.client.is_connected() and b.client.is_connected()
    finally:
        a.close()
        b.close()


def test_processes_with_their_own_prefixes_keep_their_own_availability(mosquitto):
    """Two boxes on one broker: with one prefix, the one that stops (or dies: its will) would publish
    screamdetect/available offline under the other, and Home Assistant would show the other's cameras unavailable.
    Each with its own prefix (as Frigate's topic_prefix), the one that stops leaves the other online."""
    a = MqttSink("127.0.0.1", mosquitto, source="mic", prefix="site-a", discovery="homeassistant")
    b = MqttSink("127.0.0.1", mosquitto, source="mic", prefix="site-b/screamdetect", discovery="homeassistant")
    try:
        a.close()
        time.sleep(0.5)
        got = dict(_mqtt_messages(mosquitto, lambda: None, topics=("site-a/#", "site-b/#", "homeassistant/#")))
        assert got["site-a/available"] == "offline" and got["site-b/screamdetect/available"] == "online"
        ha = {t: json.loads(p) for t, p in got.items() if t.startswith("homeassistant/")}
        assert {c["unique_id"] for c in ha.values()} == {"site-a_mic_scream", "site-b_screamdetect_mic_scream"}
        assert {c["state_topic"] for c in ha.values()} == {"site-a/mic/scream", "site-b/screamdetect/mic/scream"}
        assert {c["availability"][0]["topic"] for c in ha.values()} == {
            "site-a/available", "site-b/screamdetect/available"}
    finally:
        b.close()
    for bad in ("", "a/+/b", "#", "/lead", "trail/", "a\nb"):
        with pytest.raises(ValueError, match="MQTT topic prefix"):
            MqttSink("127.0.0.1", mosquitto, prefix=bad)


def test_alerts_sent_while_the_broker_is_down_arrive_once_it_is_back(tmp_path):
    """The broker restarts (an update, a reboot) while a scream is detected: the alerts wait in the client and are
    delivered when it has reconnected by itself, and the source's state ends where the alerts left it."""
    import paho.mqtt.client as mqtt

    proc, port = _broker(tmp_path)
    sink = MqttSink("127.0.0.1", port, source="cam1")
    try:
        proc.terminate()
        proc.wait(5)
        _wait_until(lambda: not sink.client.is_connected(), 5.0)
        for kind, end in (("start", None), ("end", 2.0)):
            sink.handle({"type": kind, "source": "cam1", "start_s": 1.0, "end_s": end, "peak_score": 0.9,
                         "at_s": 1.5, "time": "t"})
        conf = tmp_path / "mosquitto.conf"  # the same broker, same port, back
        proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub-restart")
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("screamdetect/#", qos=1)
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode()))
        _wait_until(lambda: _port_open(port), 5.0)
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        try:
            _wait_until(lambda: sum(t == "screamdetect/events" for t, _ in got) == 2, 15.0)
        finally:
            sub.disconnect()
            sub.loop_stop()
        events = [json.loads(p)["type"] for t, p in got if t == "screamdetect/events"]
        assert events == ["start", "end"]
        assert [p for t, p in got if t == "screamdetect/cam1/scream"][-1] == "OFF"
    finally:
        sink.close()
        proc.terminate()
        proc.wait(5)


def test_a_broker_that_refuses_the_client_says_why_at_once(tmp_path):
    exe = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if exe is None:
        pytest.skip("mosquitto broker not installed (make system-deps, or apt-get install mosquitto)")
    port = _free_port()
    (tmp_path / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "m.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_until(lambda: _port_open(port), 5.0)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"connection refused \(Not authorized\)"):
            MqttSink("127.0.0.1", port, source="cam1", connect_timeout_s=10.0)
        assert time.monotonic() - t0 < 5.0  # not the 10 s CONNACK timeout
    finally:
        proc.terminate()
        proc.wait(5)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        return True
    except OSError:
        return False


def test_broker_addresses_with_ipv6():
    from screamdetect.alerts import parse_host_port

    assert parse_host_port("::1") == ("::1", 1883)
    assert parse_host_port("[::1]:1884") == ("::1", 1884)
    assert parse_host_port("[fe80::1]") == ("fe80::1", 1883)
    assert parse_host_port("broker.local:8883") == ("broker.local", 8883)
    with pytest.raises(ValueError, match="IPv6"):
        parse_host_port("[::1")


def test_a_stream_that_resumes_where_it_stopped_keeps_its_stream_time(det, tmp_path):
    """After a reconnection whose repeat was dropped (Resumed: the audio goes on where it stopped), stream time
    does not move on by the outage, nor does the clips' clock: the event's clip holds the event's audio."""
    from screamdetect.sources import Gap, Resumed

    first = scene(6.0, [], seed=1)
    second = scene(10.0, [(3.0, 2.0)], seed=2)

    def chunks():
        yield from iter_chunks(first, 1600)
        yield Gap()
        time.sleep(0.5)  # the outage, during which the HLS server kept the segments
        yield Resumed()
        time.sleep(1.0)  # however long the audio then takes, none was lost
        yield from iter_chunks(second, 1600)

    sink = _Recording()
    saver = ClipSaver(tmp_path / "clips", source="cam", pre_s=0.5, post_s=0.5)
    res = run_live(chunks(), det, [sink], source="cam", clips=saver)
    (start,) = [m for m in sink.msgs if m["type"] == "start"]
    assert 6.0 + 2.5 <= start["start_s"] <= 6.0 + 3.5  # 6 s before, 3 s into the second; no outage added
    assert res.seconds == pytest.approx(16.0, abs=0.01)
    (path,) = saver.saved
    clip = load_audio(path)
    s0 = start["start_s"] - 6.0 - 0.5
    ref = second[max(0, round(s0 * SAMPLE_RATE)):][: clip.size]
    lag = np.argmax(np.correlate(clip[: 2 * SAMPLE_RATE], ref[: 2 * SAMPLE_RATE], "full")) - 2 * SAMPLE_RATE + 1
    assert abs(lag) < 0.05 * SAMPLE_RATE


def test_a_dropped_stream_ends_its_event_at_the_drop_and_keeps_to_the_clock(det, tmp_path):
    """A scream running when the connection drops: its end alert comes at the drop (it stayed ON through the whole
    outage before), no window spans the splice, and times after the reconnection include the outage (they ran
    behind the clock by it). The clip's clock moves on too: the next event's clip holds that event's audio."""
    from screamdetect.sources import Gap

    first = scene(6.0, [(4.0, 3.0)], seed=1)[: 6 * SAMPLE_RATE]  # ends mid-scream
    second = scene(10.0, [(3.0, 2.0)], seed=2)

    def chunks():
        yield from iter_chunks(first, 1600)
        yield Gap()
        time.sleep(1.5)  # the outage
        yield from iter_chunks(second, 1600)

    sink = _Recording()
    saver = ClipSaver(tmp_path / "clips", source="cam", pre_s=0.5, post_s=0.5)
    res = run_live(chunks(), det, [sink], source="cam", clips=saver)
    starts = [m for m in sink.msgs if m["type"] == "start"]
    ends = [m for m in sink.msgs if m["type"] == "end"]
    assert len(starts) == len(ends) == 2
    assert ends[0]["end_s"] <= 6.0 and ends[0]["at_s"] <= 6.0 + 1e-6  # closed at the drop, not after it
    assert 6.0 + 1.4 + 2.5 <= starts[1]["start_s"] <= 6.0 + 1.8 + 3.5  # 6 s before, the outage, 3 s into the second
    assert res.seconds == pytest.approx(16.0 + 1.5, abs=0.3) and len(res.events) == 2
    assert res.events[1].start_s == pytest.approx(starts[1]["start_s"], abs=1e-3)
    assert len(saver.saved) == 2
    clip = load_audio(saver.saved[1])
    s0 = starts[1]["start_s"] - (6.0 + 1.5) - 0.5  # where the clip begins in the second signal (approximately)
    ref = second[max(0, round(s0 * SAMPLE_RATE)):][: clip.size]
    lag = np.argmax(np.correlate(clip[: 2 * SAMPLE_RATE], ref[: 2 * SAMPLE_RATE], "full")) - 2 * SAMPLE_RATE + 1
    assert abs(lag) < 0.3 * SAMPLE_RATE
