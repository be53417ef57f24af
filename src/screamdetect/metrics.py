"""Prometheus metrics of a live run (`screamdetect listen --metrics [HOST:]PORT`), served at /metrics.

What a deployment watches besides the alerts themselves: is each source's audio coming in (and how fresh is it),
does scoring keep up with real time, how many events, and are the alerts delivered. Per source (label `source`):

    screamdetect_source_up                       1 while the source delivers audio, 0 before, during a drop, after
    screamdetect_source_drops_total              times its audio stopped (a drop, or the end of the run)
    screamdetect_audio_seconds_total             seconds of audio scored
    screamdetect_processing_seconds_total        wall time spent scoring them (÷ the line above: the real-time load)
    screamdetect_last_audio_timestamp_seconds    Unix time of the last audio scored (alert when it stops moving)
    screamdetect_events_total                    scream events started
    screamdetect_scream_active                   1 while an event is open (between its start and end alerts)
    screamdetect_last_event_peak_score           peak score of the last event that ended

and for the run: `screamdetect_info` (version, model), `screamdetect_threshold`, and for the other sinks
`screamdetect_webhook_alerts_total{url, result="sent"|"failed"|"dropped"}` and `screamdetect_mqtt_connected`.
Built on prometheus_client (its own registry per sink, its HTTP server in a daemon thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .alerts import Sink, parse_host_port

DEFAULT_HOST = "127.0.0.1"


def import_prometheus():
    try:
        import prometheus_client
    except ImportError as e:
        raise RuntimeError("--metrics needs prometheus_client: pip install 'screamdetect[live]' "
                           "(or pip install prometheus-client)") from e
    return prometheus_client


def parse_metrics_address(spec: str) -> tuple[str, int]:
    """'9108' → (127.0.0.1, 9108): this machine only; 'HOST:PORT' (0.0.0.0:9108 for every interface,
    [::]:9108 for IPv6) → (HOST, PORT). Port 0: any free port. ValueError naming the option otherwise."""
    s = spec.strip()
    try:
        host, port = (DEFAULT_HOST, int(s)) if s.isdigit() else parse_host_port(s, default_port=-1, min_port=0)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:  # no port given (-1), or a bad one
        raise ValueError(f"--metrics {spec!r}: give PORT (this machine only) or HOST:PORT, e.g. 9108, "
                         "0.0.0.0:9108 (every interface) or [::]:9108; ports 0-65535 (0: any free port)")
    return host, port


class _OtherSinks:
    """Collector reading the other sinks' delivery state at scrape time (they keep their own counts)."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hooks = CounterMetricFamily("screamdetect_webhook_alerts", "Webhook alerts by outcome: sent, failed (after "
                                    "its retries), dropped (queue full, or still queued at the end)",
                                    labels=["url", "result"])
        mqtt = GaugeMetricFamily("screamdetect_mqtt_connected", "1 while connected to the MQTT broker",
                                 labels=["broker"])
        for s in self.sinks:
            if isinstance(getattr(s, "sent", None), int) and hasattr(s, "url"):
                for result in ("sent", "failed", "dropped"):
                    hooks.add_metric([s.url, result], getattr(s, result))
            client = getattr(s, "client", None)
            if client is not None and hasattr(client, "is_connected"):
                mqtt.add_metric([getattr(s, "broker", "")], float(bool(client.is_connected())))
        yield hooks
        yield mqtt


class MetricsSink(Sink):
    """Serves the run's metrics over HTTP (prometheus_client) from a daemon thread; close() stops the server.

    sources: every source name (each gets its series at 0 from the start, so a camera that never delivers shows
    as down, not as missing); info: strings for screamdetect_info; others: the run's other sinks (webhook
    delivery counts, MQTT connection), read at each scrape; port 0: any free port (the bound one is `.port`).
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = 9108, sources: Iterable[str] = (),
                 threshold: float | None = None, info: dict | None = None, others: list | None = None):
        pc = import_prometheus()
        from . import __version__

        self.registry = r = pc.CollectorRegistry()
        lab = ["source"]
        self.up = pc.Gauge("screamdetect_source_up", "1 while the source delivers audio", lab, registry=r)
        self.drops = pc.Counter("screamdetect_source_drops", "Times the source's audio stopped (a drop, or the "
                                "end of the run)", lab, registry=r)
        self.audio_s = pc.Counter("screamdetect_audio_seconds", "Seconds of audio scored", lab, registry=r)
        self.busy_s = pc.Counter("screamdetect_processing_seconds", "Wall time spent scoring audio (divided by "
                                 "audio seconds: the share of real time scoring takes)", lab, registry=r)
        self.last = pc.Gauge("screamdetect_last_audio_timestamp_seconds", "Unix time of the last audio scored",
                             lab, registry=r)
        self.events = pc.Counter("screamdetect_events", "Scream events started", lab, registry=r)
        self.active = pc.Gauge("screamdetect_scream_active", "1 while a scream event is open", lab, registry=r)
        self.peak = pc.Gauge("screamdetect_last_event_peak_score", "Peak score of the last event that ended", lab,
                             registry=r)
        pc.Info("screamdetect", "The detector of this run", registry=r).info(
            {"version": __version__, **{k: str(v) for k, v in (info or {}).items()}})
        if threshold is not None:
            pc.Gauge("screamdetect_threshold", "Score threshold of the run", registry=r).set(threshold)
        self._others = _OtherSinks([s for s in others or [] if s is not self])
        r.register(self._others)
        for s in sources:
            self._init(s)
        try:
            self.server, self._thread = pc.start_http_server(port, addr=host, registry=r)
        except OSError as e:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ValueError(f"--metrics {where}: cannot listen there ({e.strerror or e})") from None
        self.host, self.port = host, self.server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def _init(self, source: str) -> None:
        for m in (self.up, self.drops, self.audio_s, self.busy_s, self.events, self.active):
            m.labels(source)

    def handle(self, msg: dict) -> None:
        kind, src = msg.get("type"), msg.get("source", "")
        if kind == "start":
            self.events.labels(src).inc()
            self.active.labels(src).set(1)
        elif kind == "end":
            self.active.labels(src).set(0)
            if msg.get("peak_score") is not None:
                self.peak.labels(src).set(msg["peak_score"])

    def source_state(self, source: str, up: bool) -> None:
        self.up.labels(source).set(1 if up else 0)
        if not up:
            self.drops.labels(source).inc()

    def audio(self, source: str, seconds: float, busy_s: float) -> None:
        self.audio_s.labels(source).inc(seconds)
        self.busy_s.labels(source).inc(busy_s)
        self.last.labels(source).set(time.time())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
