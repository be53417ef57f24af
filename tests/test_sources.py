"""Sources: a network stream that drops and comes back (real ffmpeg against a local HTTP server, and an RTSP
camera stand-in sending G.711 over GStreamer's RTSP server), file replay
at real speed, the microphone install hint, names and the reconnection policy."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time

import numpy as np
import pytest

from _models import background, burst, needs_ffmpeg, scene, write_band_energy_model
from screamdetect.audio import SAMPLE_RATE, load_audio, write_audio
from screamdetect.detector import Detector
from screamdetect.sources import (
    FfmpegSource,
    FileSource,
    Gap,
    MicSource,
    Reconnect,
    SourceError,
    is_url,
    open_source,
    safe_name,
    source_name,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """Serves one WAV file over HTTP on a fixed port; can be stopped and started again (a dropping stream)."""

    def __init__(self, port: int, payload: bytes):
        self.port, self.payload = port, payload
        self.served = 0
        self.httpd = None

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)
                outer.served += 1

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait(cond, timeout=20.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.02)


@needs_ffmpeg
def test_stream_that_drops_and_comes_back(tmp_path):
    x = scene(4.0, [(1.5, 1.5)])
    wav = tmp_path / "s.wav"
    write_audio(wav, x)
    clip = load_audio(wav)
    server = _Server(_free_port(), wav.read_bytes())
    server.start()

    def flaky():  # the server goes away after each request and comes back once, after a while
        _wait(lambda: server.served >= 1)
        server.stop()
        time.sleep(0.6)
        server.start()
        _wait(lambda: server.served >= 2)
        server.stop()

    t = threading.Thread(target=flaky, daemon=True)
    t.start()
    status = []
    src = FfmpegSource(f"http://127.0.0.1:{server.port}/s.wav", reconnect=Reconnect(max_retries=6, initial_s=0.1,
                       max_s=0.4), on_status=status.append)
    assert src.live
    det = Detector.load(write_band_energy_model(tmp_path / "m"))
    sd = det.stream()
    got, gaps = [], 0
    with pytest.raises(SourceError, match="gave up after 6 reconnection attempts"):
        for chunk in src.chunks():
            if isinstance(chunk, Gap):  # each lost connection is marked where it happened
                gaps += 1
                continue
            got.append(chunk)
            sd.process(chunk)
    sd.finish()
    t.join(5)
    audio = np.concatenate(got)
    # both connections delivered the whole file, each followed by the mark of its drop
    assert src.connections == 2 and gaps == 2
    np.testing.assert_allclose(audio, np.concatenate([clip, clip]), atol=1e-4)
    assert len(sd.events) == 2
    assert any("reconnecting in" in s for s in status)


@needs_ffmpeg
def test_a_file_on_a_web_server_is_read_once_not_replayed_forever(tmp_path):
    """An http:// URL of a 3-minute file: it arrives far faster than real time and ends cleanly, so it is over
    (once, with a status line saying why), not a dropped live stream to reopen and scan again and again."""
    x = scene(180.0, [(60.0, 2.0)])
    wav = tmp_path / "long.wav"
    write_audio(wav, x)
    server = _Server(_free_port(), wav.read_bytes())
    server.start()
    status = []
    try:
        src = FfmpegSource(f"http://127.0.0.1:{server.port}/long.wav", on_status=status.append,
                           reconnect=Reconnect(max_retries=3, initial_s=0.1, max_s=0.1))
        got = np.concatenate(list(src.chunks()))
    finally:
        server.stop()
    assert server.served == 1 and src.connections == 1
    np.testing.assert_allclose(got, load_audio(wav), atol=1e-4)
    (line,) = status
    assert "ended after 180.0 s of audio" in line and "not reopened" in line


@needs_ffmpeg
@pytest.mark.parametrize("seconds, realtime", [(12.0, False), (2.0, True)])
def test_a_short_file_on_a_web_server_is_read_once_too(tmp_path, seconds, realtime):
    """A 12 s file (under the 30 s a live stream's start-up burst was allowed) was reopened without end, each
    replay sending its alerts again; so was any file read with --realtime (it arrives at real speed)."""
    wav = tmp_path / "short.wav"
    write_audio(wav, scene(seconds, []))
    server = _Server(_free_port(), wav.read_bytes())
    server.start()
    status = []
    try:
        src = FfmpegSource(f"http://127.0.0.1:{server.port}/short.wav", realtime=realtime, on_status=status.append,
                           reconnect=Reconnect(max_retries=3, initial_s=0.05, max_s=0.05))
        got = np.concatenate(list(src.chunks()))
    finally:
        server.stop()
    assert server.served == 1 and got.size == round(seconds * SAMPLE_RATE)
    assert "not reopened" in status[-1]


@needs_ffmpeg
def test_a_very_short_file_that_passes_for_a_live_stream_is_given_up(tmp_path):
    """Under 8 s, a file cannot be told from a live stream's burst, and is reopened as a dropped stream; but the
    count of attempts in a row no longer starts again whenever audio flowed, so it ends after --retries."""
    wav = tmp_path / "blip.wav"
    write_audio(wav, scene(2.0, []))
    server = _Server(_free_port(), wav.read_bytes())
    server.start()
    try:
        src = FfmpegSource(f"http://127.0.0.1:{server.port}/blip.wav", on_status=lambda m: None,
                           reconnect=Reconnect(max_retries=3, initial_s=0.05, max_s=0.05))
        with pytest.raises(SourceError, match="gave up after 3 reconnection attempts"):
            for _ in src.chunks():
                pass
    finally:
        server.stop()
    assert server.served == 4


def test_a_microphone_that_stops_delivering_is_an_error_not_silence(monkeypatch, caplog):
    """An unplugged device delivers nothing and raises nothing: listen sat silent for ever. (And blocks dropped
    because detection fell behind are reported, not lost without a word.)"""
    import types

    class Stream:
        active = True

        def __init__(self, callback, blocksize, **kw):
            self.callback, self.blocksize = callback, blocksize

        def __enter__(self):
            for _ in range(3):  # three blocks, then nothing (the cable is pulled)
                self.callback(np.zeros((self.blocksize, 1), np.float32), self.blocksize, None, None)
            return self

        def __exit__(self, *a):
            return False

    fake = types.SimpleNamespace(PortAudioError=OSError, InputStream=Stream,
                                 check_input_settings=lambda **kw: None)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    src = MicSource(stall_s=0.6)
    t0 = time.monotonic()
    n = 0
    with pytest.raises(SourceError, match=r"microphone \(default\): no audio for"):
        for _ in src.chunks():
            n += 1
    assert n == 3 and time.monotonic() - t0 < 3.0
    small = MicSource(stall_s=0.3, max_queue_s=0.01)  # room for one block: the other two are dropped
    got = []
    with caplog.at_level("WARNING", logger="screamdetect"), pytest.raises(SourceError):
        got.extend(small.chunks())
    assert len(got) == 1 and small.overflows == 2 and "2 block(s) of audio dropped" in caplog.text


@needs_ffmpeg
def test_ffmpeg_file_source_equals_load_audio(tmp_path):
    x = scene(3.0, [(1.0, 1.0)])
    path = tmp_path / "a.flac"
    write_audio(path, x)
    src = FfmpegSource(str(path), chunk_s=0.37)
    assert not src.live
    got = np.concatenate(list(src.chunks()))
    np.testing.assert_allclose(got, load_audio(path), atol=1e-4)
    with pytest.raises(SourceError, match="missing.wav"):
        list(FfmpegSource(str(tmp_path / "missing.wav")).chunks())


def test_file_replay_at_real_speed(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, scene(1.0, []))
    t0 = time.monotonic()
    fast = np.concatenate(list(FileSource(path, chunk_s=0.1).chunks()))
    t_fast = time.monotonic() - t0
    t0 = time.monotonic()
    slow = np.concatenate(list(FileSource(path, chunk_s=0.1, realtime=True).chunks()))
    t_slow = time.monotonic() - t0
    np.testing.assert_array_equal(fast, slow)
    assert slow.size == SAMPLE_RATE
    assert 0.9 <= t_slow < 2.0 and t_fast < 0.5


def test_stop_from_another_thread(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, scene(30.0, []))
    src = FileSource(path, chunk_s=0.1, realtime=True)
    threading.Timer(0.3, src.stop).start()
    t0 = time.monotonic()
    n = sum(c.size for c in src.chunks())
    assert time.monotonic() - t0 < 1.5 and n < 10 * SAMPLE_RATE


def test_microphone_without_sounddevice_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    with pytest.raises(SourceError, match=r"pip install 'screamdetect\[live\]'"):
        next(MicSource().chunks())


def test_open_source_and_names(tmp_path):
    assert isinstance(open_source("mic"), MicSource)
    assert isinstance(open_source("rtsp://user:pw@cam.local:554/live?x=1"), FfmpegSource)
    with pytest.raises(SourceError, match="nope.wav: file not found"):
        open_source(str(tmp_path / "nope.wav"))
    with pytest.raises(SourceError, match="is a directory"):
        open_source(str(tmp_path))
    assert source_name("rtsp://user:pw@cam.local:554/live?x=1") == "cam.local_554_live"
    assert source_name("/x/y/Ward 3 bed#2.wav") == "Ward_3_bed_2"
    # names in any script are kept (they used to become "source", and two of them clashed); MQTT wildcards are not
    assert safe_name("Кухня") == "Кухня" and safe_name("台所 2/+#") == "台所_2"
    assert source_name("mic") == "mic" and is_url("http://a/b") and not is_url("C:/a.wav")
    piped = open_source("-")  # standard input: ffmpeg reads it (no -nostdin), and its end is the end
    assert isinstance(piped, FfmpegSource) and not piped.live and source_name("-") == "stdin"
    cmd = piped.command()
    assert "-nostdin" not in cmd and cmd[cmd.index("-i") + 1] == "pipe:0"
    assert "-nostdin" in open_source("rtsp://cam/live").command()


@needs_ffmpeg
def test_a_source_that_never_gives_up_reconnects_past_any_count_until_stopped():
    """--retries forever (max_retries None): a camera down for hours comes back by itself instead of being given up
    after ~3 min; stopping it still ends it at once, with no error."""
    status = []
    src = FfmpegSource(f"http://127.0.0.1:{_free_port()}/s.wav", io_timeout_s=1.0,
                       reconnect=Reconnect(max_retries=None, initial_s=0.0, max_s=0.0))

    def told(msg):
        status.append(msg)
        if len(status) == 15:  # past the default 10, and past any small count
            src.stop()

    src.on_status = told
    assert list(src.chunks()) == []  # no audio, no SourceError
    assert len(status) == 15 and all("reconnecting in" in m for m in status)
    assert status[-1].endswith("(attempt 15)")  # no "/N": nothing to count towards


def test_reconnect_policy():
    r = Reconnect(max_retries=5, initial_s=0.5, max_s=3.0, factor=2.0)
    assert [r.delay(i) for i in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Reconnect(max_retries=None).max_retries is None  # never give up
    for kw, name in [({"max_retries": -1}, "max_retries"), ({"max_retries": 1.5}, "max_retries"),
                     ({"initial_s": -1}, "initial_s"),
                     ({"max_s": 0.1, "initial_s": 1.0}, "max_s"), ({"factor": 0.5}, "factor")]:
        with pytest.raises(ValueError, match=name):
            Reconnect(**kw)


@needs_ffmpeg
@pytest.mark.parametrize("healthy_s", [30.0, 1.0])
def test_a_live_hls_playlist_that_stops_updating_is_a_stall_not_a_silent_hang(tmp_path, healthy_s):
    """A live HLS stream whose playlist is no longer updated (the encoder died) keeps ffmpeg re-reading it for over
    half an hour without a word: `listen` sat silent. No audio for stall_s is now a drop: reconnect, then give up.
    Each connection starts a few segments before the playlist's end: the second one's audio was heard already, so
    however long it lasted (healthy_s 1.0: longer than a healthy connection) it does not count as one."""
    import functools
    import subprocess

    write_audio(tmp_path / "src.wav", _speech_like(6.0, SAMPLE_RATE, np.random.default_rng(0)))
    hls = tmp_path / "hls"
    hls.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(tmp_path / "src.wav"),
                    "-c:a", "aac", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_flags", "omit_endlist",
                    str(hls / "live.m3u8")], check=True)
    assert "#EXT-X-ENDLIST" not in (hls / "live.m3u8").read_text()  # a live playlist, frozen
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(hls))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    status, got, gaps, errors = [], [], [], []
    src = FfmpegSource(f"http://127.0.0.1:{httpd.server_address[1]}/live.m3u8", on_status=status.append,
                       reconnect=Reconnect(max_retries=1, initial_s=0.1, max_s=0.1), stall_s=1.5)
    src.HEALTHY_S = healthy_s

    def read():
        try:
            for c in src.chunks():
                (gaps if isinstance(c, Gap) else got).append(c)
        except SourceError as e:
            errors.append(str(e))

    t0 = time.monotonic()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    try:
        assert not reader.is_alive(), "the reader hung on the frozen playlist"
    finally:
        src.stop()
        httpd.shutdown()
        httpd.server_close()
    assert time.monotonic() - t0 < 30 and got
    # each drop, and once the second connection's audio was found to repeat the first's: nothing was lost
    assert [type(g).__name__ for g in gaps] == ["Gap", "Resumed", "Gap"]
    (err,) = errors
    assert "gave up after 1 reconnection attempts" in err and "no audio for 1.5 s (the stream stalled)" in err
    assert any("(the stream stalled); reconnecting in" in s for s in status)
    # Each connection got the playlist's last seconds again; the second one's were heard already and dropped.
    assert sum(len(c) for c in got) < 4 * SAMPLE_RATE and src.replay.dropped_s > 1.0
    assert any("sent again after reconnecting" in s for s in status), status
    with pytest.raises(ValueError, match="stall_s"):
        FfmpegSource("http://127.0.0.1:1/x", stall_s=0)


# ----------------------------------------------------------------------------------------------------------------
# audio sent again after a reconnection (ReplayTrim)

def _speech_like(seconds: float, sr: int, rng) -> np.ndarray:
    """Noise under a syllable-rate envelope: nowhere periodic, so any stretch of it is found in one place only."""
    n = int(seconds * sr)
    env = np.repeat(rng.uniform(0.05, 1.0, n // (sr // 8) + 1), sr // 8)[:n]
    return (0.2 * env * rng.standard_normal(n)).astype(np.float32)


def _feed(trim, audio, chunk):
    out = []
    for i in range(0, len(audio), chunk):
        out += trim.feed(audio[i: i + chunk])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def test_audio_sent_again_after_a_reconnection_is_dropped(rng):
    """An HLS stream reopened 2 s before its live edge, decoded and resampled afresh (a third of a sample off,
    and its first 50 ms unlike the first decoding): the repeat is dropped, the new audio kept from where it was."""
    import soxr

    from screamdetect.sources import ReplayTrim

    sr = SAMPLE_RATE
    hi = _speech_like(14.0, 48000, rng)  # the broadcast, at 48 kHz
    first = soxr.resample(hi[: 10 * 48000], 48000, sr).astype(np.float32)  # heard before the drop: 0-10 s
    again = soxr.resample(hi[8 * 48000 + 1:], 48000, sr).astype(np.float32)  # reopened at 8 s + 1/48000 s
    again[: int(0.05 * sr)] = rng.standard_normal(int(0.05 * sr)) * 0.1  # a fresh decoder's first frame
    trim = ReplayTrim()
    before = _feed(trim, first, 1600)
    np.testing.assert_array_equal(before, first)  # nothing held or changed before a reconnection
    trim.reconnected()
    after = _feed(trim, again, 5920)  # uneven chunks: the repeat (2 s) is longer than the audio held (0.7 s)
    cut = len(again) - len(after)
    np.testing.assert_array_equal(after, again[cut:])  # the new audio, unaltered, from where it was before
    assert abs(cut - 2 * sr) <= 1 and abs(trim.dropped_s - 2.0) < 0.001  # the repeat: 8-10 s, to a sample
    trim.reconnected()  # a second reconnection straight onto the live edge: new audio only, kept whole
    fresh = _speech_like(3.0, sr, rng)
    np.testing.assert_array_equal(_feed(trim, fresh, 1600), fresh)
    assert abs(trim.dropped_s - 2.0) < 0.001


@pytest.mark.parametrize("kind", ["tone", "silence"])
def test_a_doubtful_repeat_is_kept(kind):
    """A steady tone fits the past at every period, silence anywhere: nothing is dropped (a repeat is possible,
    a loss is not)."""
    from screamdetect.sources import ReplayTrim

    t = np.arange(14 * SAMPLE_RATE) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) if kind == "tone" else np.zeros_like(t)).astype(np.float32)
    trim = ReplayTrim()
    _feed(trim, audio[: 10 * SAMPLE_RATE], 1600)
    trim.reconnected()
    again = audio[8 * SAMPLE_RATE:]
    np.testing.assert_array_equal(_feed(trim, again, 1600), again)
    assert trim.dropped_s == 0.0


def test_audio_held_when_the_connection_ends_is_delivered(rng):
    from screamdetect.sources import ReplayTrim

    trim = ReplayTrim()
    past = _speech_like(5.0, SAMPLE_RATE, rng)
    _feed(trim, past, 1600)
    trim.reconnected()
    short = past[-SAMPLE_RATE // 2:]  # 0.5 s: a repeat, but too short to tell before the connection ended
    assert len(_feed(trim, short, 1600)) == 0
    np.testing.assert_array_equal(np.concatenate(trim.flush()), short)
    assert trim.flush() == [] and trim.dropped_s == 0.0


def _gst_python() -> str | None:
    """A Python that can run tests/_rtsp_server.py (PyGObject + GStreamer's RTSP server), or None."""
    import shutil
    import subprocess

    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    for exe in ("/usr/bin/python3", shutil.which("python3")):
        if exe and subprocess.run([exe, "-c", probe], check=False, capture_output=True).returncode == 0:
            return exe
    return None


def _rtsp_server(python: str, wav, port: int):
    import subprocess
    from pathlib import Path

    proc = subprocess.Popen([python, str(Path(__file__).with_name("_rtsp_server.py")), str(wav), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "serving":
        proc.kill()
        pytest.fail("the RTSP test server did not start")
    return proc


@needs_ffmpeg
def test_an_rtsp_camera_that_drops_and_comes_back(tmp_path):
    """What IP cameras send: RTSP (TCP-interleaved, as FfmpegSource asks), G.711 µ-law at 8 kHz, at real-time pace.
    The scream stand-in is detected where it is; when the camera goes away the source marks the drop and retries
    (refused while it is down), and once it is back the audio flows again, from a new connection."""
    python = _gst_python()
    if python is None:
        pytest.skip("GStreamer's RTSP server for Python not installed (make system-deps, or apt-get install "
                    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
    wav = tmp_path / "cam.wav"
    x = background(6.0)
    x[2 * SAMPLE_RATE: 2 * SAMPLE_RATE + round(1.5 * SAMPLE_RATE)] += burst(1.5, f1=3500.0)  # within G.711's 4 kHz
    write_audio(wav, x)
    port = _free_port()
    server = _rtsp_server(python, wav, port)
    status = []
    src = FfmpegSource(f"rtsp://127.0.0.1:{port}/live", on_status=status.append,
                       reconnect=Reconnect(max_retries=20, initial_s=0.5, max_s=0.5))
    det = Detector.load(write_band_energy_model(tmp_path / "m"))
    sd = det.stream()
    first, second, gaps = 0, 0, 0
    servers = [server]

    def back():  # the camera comes back after a while
        servers.append(_rtsp_server(python, wav, port))

    try:
        for chunk in src.chunks():
            if isinstance(chunk, Gap):
                gaps += 1
                if gaps == 1:
                    threading.Timer(2.0, back).start()
                continue
            if gaps == 0:
                first += chunk.size
                sd.process(chunk)
                if first >= 4 * SAMPLE_RATE:  # past the burst: the camera goes away
                    server.kill()
                    server.wait(5)
            else:
                second += chunk.size
                if second >= 2 * SAMPLE_RATE:
                    src.stop()
    finally:
        for p in servers:
            p.kill()
            p.wait(5)
    sd.finish()
    assert gaps == 1 and src.connections == 2 and second >= 2 * SAMPLE_RATE
    assert any("reconnecting" in m for m in status)  # retried (refused) while the camera was down
    (ev,) = sd.events  # the burst at 2.0-3.5 s of the first connection, through G.711 and RTSP
    assert 1.5 <= ev.start_s <= 2.25 and 3.25 <= ev.end_s <= 4.25
