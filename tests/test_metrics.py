"""`listen --metrics`: Prometheus metrics of a live run, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from _models import scene, write_band_energy_model
from screamdetect.alerts import WebhookSink, run_live
from screamdetect.audio import SAMPLE_RATE, write_audio
from screamdetect.detector import Detector, iter_chunks
from screamdetect.sources import Gap

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from screamdetect.metrics import MetricsSink, parse_metrics_address


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return Detector.load(write_band_energy_model(tmp_path_factory.mktemp("model")))


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label items): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m: dict, name: str, **labels) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_a_live_run(det):
    x = scene(20.0, [(5.0, 3.0)])  # one burst 5.0-8.0 s: one event
    meter = MetricsSink("127.0.0.1", 0, sources=["cam1", "cam2"], threshold=det.threshold, info={"model": "test"})
    seen = {}

    def chunks():
        for i, c in enumerate(iter_chunks(x, 1600)):  # 0.1 s chunks
            yield c
            if i == 69:  # 7.0 s in: the event is open
                seen["during"] = scrape(meter.url)

    try:
        before = scrape(meter.url)
        t0 = time.time()
        summary = run_live(chunks(), det, [meter], source="cam1", close_sinks=False)
        after = scrape(meter.url)
    finally:
        meter.close()
    assert len(summary.events) == 1
    # every source is there from the start, at 0: a camera that never delivers shows as down, not as missing
    for src in ("cam1", "cam2"):
        assert value(before, "screamdetect_source_up", source=src) == 0
        assert value(before, "screamdetect_events_total", source=src) == 0
    during = seen["during"]
    assert value(during, "screamdetect_source_up", source="cam1") == 1
    assert value(during, "screamdetect_scream_active", source="cam1") == 1
    assert value(during, "screamdetect_events_total", source="cam1") == 1
    assert value(during, "screamdetect_audio_seconds_total", source="cam1") == pytest.approx(7.0)  # 70 chunks scored
    # at the end: one event, closed, its peak; all the audio counted; the source down once (its end)
    assert value(after, "screamdetect_events_total", source="cam1") == 1
    assert value(after, "screamdetect_scream_active", source="cam1") == 0
    assert value(after, "screamdetect_last_event_peak_score", source="cam1") == pytest.approx(
        summary.events[0].peak_score, abs=1e-4)
    assert value(after, "screamdetect_source_up", source="cam1") == 0
    assert value(after, "screamdetect_source_drops_total", source="cam1") == 1
    assert value(after, "screamdetect_audio_seconds_total", source="cam1") == pytest.approx(x.size / SAMPLE_RATE)
    busy = value(after, "screamdetect_processing_seconds_total", source="cam1")
    assert 0 < busy < time.time() - t0
    assert t0 - 1 <= value(after, "screamdetect_last_audio_timestamp_seconds", source="cam1") <= time.time()
    assert value(after, "screamdetect_source_up", source="cam2") == 0  # untouched by cam1's run
    assert value(after, "screamdetect_threshold") == pytest.approx(det.threshold)
    from screamdetect import __version__

    assert value(after, "screamdetect_info", model="test", version=__version__) == 1


def test_a_drop_shows_as_down_then_up_again(det):
    x = np.zeros(SAMPLE_RATE, np.float32)
    meter = MetricsSink("127.0.0.1", 0, sources=["cam1"])
    seen = []

    def chunks():
        yield x
        seen.append(scrape(meter.url))
        yield Gap()
        seen.append(scrape(meter.url))
        yield x
        seen.append(scrape(meter.url))

    try:
        run_live(chunks(), det, [meter], source="cam1", close_sinks=False)
        end = scrape(meter.url)
    finally:
        meter.close()
    ups = [value(m, "screamdetect_source_up", source="cam1") for m in (*seen, end)]
    drops = [value(m, "screamdetect_source_drops_total", source="cam1") for m in (*seen, end)]
    assert ups == [1, 0, 1, 0] and drops == [0, 1, 1, 2]
    assert value(end, "screamdetect_audio_seconds_total", source="cam1") == pytest.approx(2.0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_deliveries_and_the_mqtt_connection_are_reported(det):
    hook = WebhookSink(f"http://127.0.0.1:{_closed_port()}/hook", retries=0, timeout_s=1)

    class Client:  # what the metrics read of an MqttSink: its broker and its client's connection state
        connected = True

        def is_connected(self):
            return self.connected

    mqtt = type("Mqtt", (), {"broker": "broker:1883", "client": Client()})()
    meter = MetricsSink("127.0.0.1", 0, sources=["cam1"], others=[hook, mqtt])
    try:
        run_live(iter_chunks(scene(12.0, [(5.0, 3.0)]), 1600), det, [hook, meter], source="cam1",
                 close_sinks=False)
        hook.close()
        m = scrape(meter.url)
        assert value(m, "screamdetect_webhook_alerts_total", url=hook.url, result="failed") == 2  # start, end
        assert value(m, "screamdetect_webhook_alerts_total", url=hook.url, result="sent") == 0
        assert value(m, "screamdetect_mqtt_connected", broker="broker:1883") == 1
        mqtt.client.connected = False
        assert value(scrape(meter.url), "screamdetect_mqtt_connected", broker="broker:1883") == 0
    finally:
        meter.close()


def test_metrics_addresses():
    assert parse_metrics_address("9108") == ("127.0.0.1", 9108)  # this machine only unless asked
    assert parse_metrics_address("0.0.0.0:9108") == ("0.0.0.0", 9108)
    assert parse_metrics_address("[::1]:9108") == ("::1", 9108)
    assert parse_metrics_address("localhost:0") == ("localhost", 0)
    for bad in ("", "host", "host:", "::1", "[::1]", "host:99999", "host:x", ":9108"):
        with pytest.raises(ValueError, match="--metrics"):
            parse_metrics_address(bad)


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"--metrics 127.0.0.1:{port}: cannot listen there"):
            MetricsSink("127.0.0.1", port)


def test_listen_serves_metrics_while_it_runs(det, tmp_path):
    model = write_band_energy_model(tmp_path / "m")
    wav = tmp_path / "cam.wav"
    write_audio(wav, scene(6.0, [(2.0, 2.0)]))
    proc = subprocess.Popen([sys.executable, "-m", "screamdetect", "listen", "-s", str(wav), "--realtime",
                             "--name", "gate", "--model", str(model), "--metrics", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            if line.startswith("metrics at "):
                url = line.split()[-1]
                break
        assert url and url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 20
        while True:  # scrape until audio has been scored
            m = scrape(url)
            if value(m, "screamdetect_audio_seconds_total", source="gate") > 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value(m, "screamdetect_source_up", source="gate") == 1
        assert 1 < value(m, "screamdetect_audio_seconds_total", source="gate") < 6
        out, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert '"type": "start"' in out
    with pytest.raises(OSError):  # the server ended with the run
        urllib.request.urlopen(url, timeout=2)


def test_bad_metrics_options_are_one_line_errors(det, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from screamdetect.cli import app

    model = write_band_energy_model(tmp_path / "m")
    wav = tmp_path / "cam.wav"
    write_audio(wav, scene(2.0, []))
    res = CliRunner().invoke(app, ["listen", "-s", str(wav), "--model", str(model), "--metrics", "host"])
    assert res.exit_code == 2 and "--metrics 'host': give PORT" in res.output
    assert "Traceback" not in res.output
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    res = CliRunner().invoke(app, ["listen", "-s", str(wav), "--model", str(model), "--metrics", "0"])
    assert res.exit_code == 2 and "--metrics needs prometheus_client" in res.output
    assert "Traceback" not in res.output
