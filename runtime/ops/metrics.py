"""Prometheus metrics of one service, in a private registry, and the `/metrics` + `/healthz` endpoint.

Names follow Prometheus conventions (`edgewatch_` prefix, base units, `_total` counters).
Counters are read at scrape time from the exact counters of the service and the bus (so the
endpoint and the `<prefix>/stats` message never disagree); the histograms are observed by the
worker. There are no per-stream labels: a gateway serves up to 100,000 streams and every label
value is a time series in the user's Prometheus.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_config.errors import ConfigError
from runtime.mqtt.protocol import BusCounts
from runtime.ops.counts import Counts
from runtime.state.writer import CheckpointStats

__all__ = ["BatchHistogram", "HealthServer", "Metrics", "parse_address"]

log = logging.getLogger("edgewatch.metrics")

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, table: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(table.items()):
        family.add_metric([key], value)
    return family


class _Counters(Collector):
    def __init__(
        self,
        service: Callable[[], Counts],
        bus: Callable[[], BusCounts],
        outbox: Callable[[], tuple[int, int]],
        checkpoints: Callable[[], CheckpointStats] | None,
    ) -> None:
        self._service, self._bus, self._outbox, self._checkpoints = service, bus, outbox, checkpoints

    def collect(self) -> Iterator[Metric]:
        s, b = self._service(), self._bus()
        yield _counter("edgewatch_messages_received", "Input messages delivered by the broker", s.received)
        yield _counter("edgewatch_messages_processed", "Input messages stepped through a model", s.processed)
        yield _labelled("edgewatch_messages_rejected", "Input messages rejected", "reason", s.rejected)
        yield _labelled("edgewatch_messages_skipped", "Valid messages not stepped", "reason", s.skipped)
        yield _labelled("edgewatch_messages_dropped", "Input messages dropped by the queue policy", "policy", s.dropped)
        yield _counter("edgewatch_steps", "Samples stepped through a model (stream-steps)", s.steps)
        yield _labelled("edgewatch_alerts", "Alert messages published", "state", s.alerts)
        yield _counter("edgewatch_ort_calls", "ONNX Runtime calls", s.ort_calls)
        yield _counter("edgewatch_batches", "Batches the worker took from the input queue", s.batches)
        yield _labelled(
            "edgewatch_samples_skipped",
            "Samples not stepped: already seen (duplicate) or too late (out-of-order)",
            "reason",
            {"duplicate": s.duplicate_samples, "out-of-order": s.out_of_order_samples},
        )
        yield _counter("edgewatch_sequence_gaps", "Sequence or time gaps found in a stream's input", s.gaps)
        yield _counter("edgewatch_streams_stale", "Times a stream's status turned stale (no sample stepped)", s.stale)
        yield _counter(
            "edgewatch_sequence_gap_samples",
            "Samples missing in accepted seq gaps (skipped by the sensor or lost)",
            s.seq_gap_samples,
        )
        yield _counter("edgewatch_seq_restarts", "Streams whose seq counter restarted", s.seq_restarts)
        yield _counter("edgewatch_model_state_resets", "Streams whose model state was zeroed", s.model_resets)
        yield _counter(
            "edgewatch_non_finite_resets",
            "Streams reset because their state or score went non-finite",
            s.non_finite_resets,
        )
        yield _counter("edgewatch_samples_clipped", "Samples with a value clipped to ±1,000 std", s.clipped_samples)
        yield _counter("edgewatch_baselines_learned", "Streams that learned their own baseline", s.baselines_learned)
        yield _counter(
            "edgewatch_baselines_out_of_range",
            "Streams whose baseline was far from the calibration data (not learned as normal)",
            s.baselines_out_of_range,
        )
        yield _counter(
            "edgewatch_level_shifts",
            "Persistent shifts of a stream's score over its own level (CUSUM crossed h)",
            s.level_shifts,
        )
        yield _counter("edgewatch_alerts_not_sent", "Alerts the full outbox refused", s.alerts_not_sent)
        yield _counter(
            "edgewatch_statuses_not_sent", "Retained statuses the full outbox refused (sent later)", s.statuses_not_sent
        )
        yield _counter(
            "edgewatch_statuses_resent",
            "Retained statuses published again (after a refusal, or a session the broker lost)",
            s.statuses_resent,
        )
        yield _counter("edgewatch_stream_resets", "Stream resets from the control topic", s.resets)
        yield _counter("edgewatch_streams_evicted", "Streams evicted after the idle TTL", s.evicted)
        yield _counter("edgewatch_streams_restored", "Streams given their state back (checkpoint, reload)", s.restored)
        yield _counter(
            "edgewatch_streams_rewarming", "Streams that lost their model state and warm up again", s.rewarming
        )
        yield _labelled("edgewatch_reloads", "SIGHUP reloads", "result", s.reloads)
        yield _counter("edgewatch_mqtt_connects", "Accepted CONNACKs", b.connects)
        yield _counter("edgewatch_mqtt_connect_failures", "Refused or failed connection attempts", b.connect_failures)
        yield _counter("edgewatch_mqtt_disconnects", "Connections lost", b.disconnects)
        yield _counter("edgewatch_published", "Publications handed to the MQTT client", b.published)
        yield _counter("edgewatch_outgoing_dropped", "Publications dropped: outbox full", b.dropped_outgoing)
        yield _counter("edgewatch_outgoing_dropped_bytes", "Bytes of dropped publications", b.dropped_outgoing_bytes)
        yield _counter(
            "edgewatch_outgoing_dropped_urgent",
            "Of the dropped publications: alerts and availability",
            b.dropped_urgent,
        )
        yield _counter(
            "edgewatch_mqtt_ack_timeouts",
            "Connections dropped: a publication unacknowledged past broker.ack_timeout_s",
            b.ack_timeouts,
        )
        yield _counter(
            "edgewatch_mqtt_session_takeovers", "Our session handed to another client with our client id", b.takeovers
        )
        yield _counter(
            "edgewatch_mqtt_fresh_sessions",
            "Accepted connections where the broker held no session for us",
            b.fresh_sessions,
        )
        yield _counter(
            "edgewatch_deliveries_deferred",
            "Deliveries left unacknowledged at stop (redelivered next session)",
            b.deferred,
        )
        if self._checkpoints is not None:
            k = self._checkpoints()
            yield _counter("edgewatch_checkpoints_written", "State checkpoints written", k.written)
            yield _counter("edgewatch_checkpoints_failed", "State checkpoint writes that failed", k.failed)
            yield _counter(
                "edgewatch_checkpoints_superseded", "Snapshots replaced by a newer one before their write", k.superseded
            )
            yield _counter("edgewatch_checkpoint_bytes", "Bytes of the checkpoints written", k.bytes)
            yield _counter("edgewatch_checkpoint_write_seconds", "Time encoding and writing checkpoints", k.seconds)
            yield GaugeMetricFamily(
                "edgewatch_checkpoint_last_bytes", "Size of the last checkpoint written", value=k.last_bytes
            )
            yield GaugeMetricFamily(
                "edgewatch_checkpoint_failing",
                "1 while the last checkpoint write failed",
                value=int(k.failing is not None),
            )
            yield GaugeMetricFamily(
                "edgewatch_checkpoint_last_write_seconds", "Time the last checkpoint write took", value=k.last_seconds
            )
        messages, size = self._outbox()
        yield GaugeMetricFamily(
            "edgewatch_outbox_messages", "Publications not yet confirmed by the broker", value=messages
        )
        yield GaugeMetricFamily("edgewatch_outbox_bytes", "Bytes of publications not yet confirmed", value=size)


class BatchHistogram(Collector):
    """A Prometheus histogram observed a batch at a time: one numpy call and one lock per batch,
    where prometheus_client's Histogram takes a lock and a bucket search per value (~8 µs per
    message of the worker's GIL time at 12k msg/s, py-spy). Exposed like a Histogram."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self._name, self._doc = name, doc
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        """Count every value of a float64 array (seconds, or whatever unit the buckets are in)."""
        if not len(values):
            return
        # bucket i counts values <= bound i (Prometheus `le`): side="left" finds that i
        per_bucket = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += per_bucket
            self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many(np.array([value], dtype=np.float64))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        bounds = [*(repr(float(b)) for b in self._bounds), "+Inf"]
        family = HistogramMetricFamily(self._name, self._doc)
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), sum_value=total)
        yield family


class Metrics:
    """The histograms and gauges of one service; counters come from `watch(...)`. One per service."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "edgewatch_batch_messages", "Messages per engine call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.latency = BatchHistogram(
            "edgewatch_step_latency_seconds",
            "From a message's arrival to its alerts handed to the MQTT client",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("edgewatch_queue_depth", "Input messages waiting for the worker", registry=r)
        self.active_streams = Gauge("edgewatch_active_streams", "Streams holding state", registry=r)
        self.learning_streams = Gauge("edgewatch_streams_learning", "Streams still learning their baseline", registry=r)
        self.out_of_range_streams = Gauge(
            "edgewatch_streams_out_of_range", "Streams whose baseline is out of the model's range", registry=r
        )
        self.provider_nodes = Gauge(
            "edgewatch_provider_nodes",
            "Graph nodes assigned to each execution provider",
            ["model", "provider"],
            registry=r,
        )
        self.ready = Gauge("edgewatch_ready", "1 when models are loaded and the broker accepted us", registry=r)
        self.snapshot_seconds = Gauge(
            "edgewatch_checkpoint_snapshot_seconds", "Time the last checkpoint snapshot held the worker", registry=r
        )

    def watch(
        self,
        service: Callable[[], Counts],
        bus: Callable[[], BusCounts],
        outbox: Callable[[], tuple[int, int]],
        checkpoints: Callable[[], CheckpointStats] | None = None,
    ) -> None:
        self.registry.register(_Counters(service, bus, outbox, checkpoints))

    def providers(self, model: str, nodes_by_provider: Mapping[str, Mapping[str, int]]) -> None:
        """The graph nodes each execution provider runs for `model` (at start and after a reload)."""
        for provider, ops in nodes_by_provider.items():
            self.provider_nodes.labels(model, provider).set(sum(ops.values()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' (IPv6 in brackets) → (host, port); ConfigError when malformed."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{address!r} is not host:port")
    return host, int(port)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_handlers` at once: beyond that a connection is closed
    at once (a scraper retries), so idle or slow clients cannot pile up threads."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog (socketserver: 5); refusals are quick, it drains fast

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, max_handlers: int) -> None:
        self._slots = threading.BoundedSemaphore(max_handlers)
        super().__init__(address, handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """`GET /metrics` (Prometheus text) and `GET /healthz` (200 ready / 503 not ready) on a daemon thread.

    At most `max_handlers` requests are served at once (more connections are closed unanswered),
    and a connection that sends nothing for `request_timeout_s` is dropped: 2,000 half-open
    requests once made 370 threads that never ended."""

    def __init__(
        self,
        address: str,
        metrics: Metrics,
        health: Callable[[], tuple[bool, str]],
        *,
        max_handlers: int = 8,
        request_timeout_s: float = 5.0,
    ) -> None:
        host, port = parse_address(address)

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout_s  # per socket operation (StreamRequestHandler.setup)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    ok, why = health()
                    self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape every few seconds would drown the service log

        server_class = (
            type("Server", (_BoundedServer,), {"address_family": socket.AF_INET6}) if ":" in host else _BoundedServer
        )
        try:
            self._server = server_class((host, port), Handler, max_handlers=max_handlers)
        except OSError as exc:
            raise ConfigError(f"runtime.metrics_address {address}: cannot listen: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgewatch-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
