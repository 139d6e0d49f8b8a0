from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from edge_config.errors import ConfigError
from runtime.mqtt.protocol import BusCounts
from runtime.ops.counts import Tally
from runtime.ops.metrics import HealthServer, Metrics, parse_address


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_read_exact_counters_and_health_follows_the_service() -> None:
    counters = Tally()
    counters.add("received", 5)
    counters.add_reason("rejected", "not-json", 2)
    counters.add_reason("rejected", "stream-id")
    counters.add_reason("alerts", "raised")
    bus = BusCounts(dropped_outgoing=3)
    metrics = Metrics()
    metrics.watch(counters.snapshot, lambda: bus, lambda: (1, 120))
    metrics.latency.observe(0.003)
    state = {"ok": False}
    server = HealthServer("127.0.0.1:0", metrics, lambda: (state["ok"], "ready" if state["ok"] else "not connected"))
    server.start()
    try:
        code, text = _get(server.port, "/metrics")
        assert code == 200
        assert "edgewatch_messages_received_total 5.0" in text
        assert 'edgewatch_messages_rejected_total{reason="not-json"} 2.0' in text
        assert 'edgewatch_messages_rejected_total{reason="stream-id"} 1.0' in text
        assert 'edgewatch_alerts_total{state="raised"} 1.0' in text
        assert "edgewatch_outgoing_dropped_total 3.0" in text
        assert "edgewatch_outbox_bytes 120.0" in text
        assert "edgewatch_step_latency_seconds_bucket" in text
        assert _get(server.port, "/healthz") == (503, "not connected\n")
        state["ok"] = True
        assert _get(server.port, "/healthz") == (200, "ready\n")
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_two_services_have_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    a.queue_depth.set(3)
    assert b"edgewatch_queue_depth 0.0" in b.exposition()
    assert b"edgewatch_queue_depth 3.0" in a.exposition()


@pytest.mark.parametrize("bad", ["9108", "host:", ":80", "h:99999", "h:x"])
def test_parse_address_rejects_malformed(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(bad)


def test_parse_address_ipv6() -> None:
    assert parse_address("[::1]:9108") == ("::1", 9108)


def test_health_server_on_ipv6_loopback() -> None:
    server = HealthServer("[::1]:0", Metrics(), lambda: (True, "ready"))
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()


def test_counters_merge_adds_a_batch_delta() -> None:
    from runtime.ops.counts import Counts

    counters = Tally()
    counters.add_reason("skipped", "duplicate")
    counters.merge(Counts(processed=3, steps=7, skipped={"duplicate": 2, "out-of-order": 1}, alerts={"raised": 1}))
    counters.merge(Counts(processed=1, steps=1))
    snap = counters.snapshot()
    assert (snap.processed, snap.steps) == (4, 8)
    assert snap.skipped == {"duplicate": 3, "out-of-order": 1}
    assert snap.alerts == {"raised": 1}


def test_half_open_connections_leave_threads_bounded_and_healthz_answering() -> None:
    """A slow-loris (connections that send half a request and wait) made a thread each, forever."""
    server = HealthServer("127.0.0.1:0", Metrics(), lambda: (True, "ready"), max_handlers=4, request_timeout_s=0.5)
    server.start()
    before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line that ends it
            idle.append(s)
        time.sleep(0.2)
        assert threading.active_count() <= before + 4
        deadline = time.monotonic() + 10
        while True:  # refused while every handler is taken; answered once the idle ones time out
            try:
                assert _get(server.port, "/healthz") == (200, "ready\n")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "/healthz never answered"
                time.sleep(0.1)
        assert threading.active_count() <= before + 4
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_a_batch_histogram_exposes_what_prometheus_clients_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from runtime.ops.metrics import BatchHistogram

    bounds = (0.001, 0.002, 0.005, 0.01)
    values = [0.0005, 0.001, 0.0015, 0.002, 0.004, 0.005, 0.0051, 0.01, 0.5, 3.0, 0.0]  # bounds themselves included
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lat_seconds", "doc", bounds, ours_registry)
    theirs = Histogram("lat_seconds", "doc", buckets=bounds, registry=theirs_registry)
    ours.observe_many(np.array(values[:6]))
    ours.observe_many(np.array([], dtype=np.float64))
    for v in values[6:]:
        ours.observe(v)
    for v in values:
        theirs.observe(v)

    def samples(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return sorted(line for line in lines if line.startswith("lat_seconds_") and "_created" not in line)

    assert samples(ours_registry) == samples(theirs_registry)
