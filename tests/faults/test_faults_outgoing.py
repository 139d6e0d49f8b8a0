"""Fault (g): the outgoing path stalls while the connection looks alive.

1. PUBACKs stop (a loopback proxy swallows them: what mosquitto 2.0.11's in-flight accounting
   did after a long flood): a burst of new streams fills the 20-publication window with statuses,
   then 10 streams go faulty. Before the liveness rule the raised alerts waited behind the
   unacknowledged window forever, /healthz said ready. Expected: /healthz not ready within
   broker.ack_timeout_s (+ the watch's tick and the burst), one reconnect counted and logged,
   and every raised alert delivered after it.
2. The broker freezes (SIGSTOP): the TCP connection stays open and nothing answers. Before, /healthz
   said ready until paho's keepalive gave up (30-60 s). Expected: not ready within
   1.5 x ack_timeout_s + 0.5 s (the idle probe, its timeout, two turns of the 0.25 s watch), ready
   again after SIGCONT.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

import pytest

from edge_config.schema import AlertPolicy, GatewayConfig
from runtime.service import Service
from runtime.tools.local_broker import Broker, free_port, start_broker
from tests.support.fault_helpers import healthy, report
from tests.support.fault_traffic import AlertLog, stream_items
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.mqtt_proxy import PubackProxy
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import gateway_config, started

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, FAULTY = 30, 10
ACK_TIMEOUT_S = 2.0
POLICY = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3)


def _with_broker(config: GatewayConfig, **broker: object) -> GatewayConfig:
    return config.model_copy(update={"broker": config.broker.model_copy(update=broker)})


class HealthLog:
    """Polls Service.health() every 20 ms; keeps each change (monotonic time, ready, why)."""

    def __init__(self, service: Service) -> None:
        self.changes: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._service = service
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            ok, why = self._service.health()
            if not self.changes or self.changes[-1][1:] != (ok, why):
                self.changes.append((time.monotonic(), ok, why))

    def first(self, ready: bool, after: float) -> float | None:
        return next((t for t, ok, _ in list(self.changes) if ok == ready and t >= after), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def test_unacknowledged_publications_reconnect_and_the_alerts_arrive(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    proxy = PubackProxy(broker.host, broker.port)
    config = _with_broker(gateway_config(broker, art, alerts=POLICY), port=proxy.port, ack_timeout_s=ACK_TIMEOUT_S)
    alerts = AlertLog(broker.host, broker.port, "fault-g-alerts")
    service = started(Service(config))
    health = HealthLog(service)
    available = Collector(broker, "edgewatch/available")
    try:
        publish_many(broker, stream_items(STREAMS, range(80), FAULTY))  # warm, before the fault window
        deadline = time.monotonic() + 20
        while service.tally.snapshot().processed < STREAMS * 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="edgewatch.bus"):
            proxy.block_pubacks()
            blocked_at = time.monotonic()
            burst = [
                (f"plant/new{i:04d}/telemetry", json.dumps({"seq": 0, "values": [0, 0, 0]}).encode())
                for i in range(200)
            ]
            publish_many(broker, burst)  # 200 `warming-up` statuses: the window of 20 fills, unacknowledged
            publish_many(broker, stream_items(STREAMS, range(80, 140), FAULTY))  # seq 100-119: the fault
            got = alerts.wait_for(
                lambda a: (
                    {str(d["stream"]) for d in a if d["state"] == "raised"} >= {f"m{s:03d}" for s in range(FAULTY)}
                ),
                timeout=30,
            )
        not_ready_at = health.first(False, blocked_at)
        ready_again_at = health.first(True, not_ready_at or blocked_at)
        bus = service.bus.snapshot()
        warnings = [r.getMessage() for r in caplog.records if "confirmed no publication" in r.getMessage()]
        reasons = {why for _, ok, why in health.changes if not ok}
        availability = available.wait_for(lambda m: [x.payload for x in m][-2:] == [b"offline", b"online"], 10)
    finally:
        available.close()
        health.close()
        service.stop()
        alerts.close()
        proxy.close()
    raised = {str(d["stream"]) for d in got if d["state"] == "raised"}
    report(
        tmp_path,
        "g_outgoing_stall",
        pubacks_swallowed=proxy.swallowed,
        raised_alerts_delivered=len(raised),
        raised_alerts_expected=FAULTY,
        not_ready_after_s=None if not_ready_at is None else round(not_ready_at - blocked_at, 2),
        ready_again_after_s=None
        if ready_again_at is None or not_ready_at is None
        else round(ready_again_at - not_ready_at, 2),
        ack_timeouts=bus.ack_timeouts,
        connects=bus.connects,
        proxy_connections=proxy.connections,
        availability=[m.payload.decode() for m in availability],
    )
    assert raised == {f"m{s:03d}" for s in range(FAULTY)}
    assert proxy.swallowed >= 20
    assert bus.ack_timeouts >= 1
    assert len(warnings) == bus.ack_timeouts
    assert not_ready_at is not None
    assert not_ready_at - blocked_at <= ACK_TIMEOUT_S + 5.0  # the burst's publications, then the bound
    assert any("confirmed no publication" in why for why in reasons)
    assert ready_again_at is not None
    assert [m.payload for m in availability][-2:] == [b"offline", b"online"]  # the last will while it was broken


def test_a_frozen_broker_makes_healthz_not_ready_within_the_bound(tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    broker = start_broker(tmp_path / "broker")
    port = free_port()
    config = _with_broker(gateway_config(broker, art, metrics_address=f"127.0.0.1:{port}"), ack_timeout_s=ACK_TIMEOUT_S)
    service = started(Service(config))
    health = HealthLog(service)
    frozen = False
    try:
        assert healthy(port)
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)
        frozen, frozen_at = True, time.monotonic()
        deadline = frozen_at + 1.5 * ACK_TIMEOUT_S + 5.0
        while health.first(False, frozen_at) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        not_ready_at = health.first(False, frozen_at)
        http_503 = not healthy(port)
        broker.process.send_signal(signal.SIGCONT)
        frozen, resumed_at = False, time.monotonic()
        deadline = resumed_at + 20
        while health.first(True, resumed_at) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ready_at = health.first(True, resumed_at)
        bus = service.bus.snapshot()
        why = next((w for t, ok, w in health.changes if not ok and t >= frozen_at), "")
    finally:
        if frozen and broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)
        health.close()
        service.stop()
        broker.stop()
    report(
        tmp_path,
        "g_frozen_broker",
        not_ready_after_s=None if not_ready_at is None else round(not_ready_at - frozen_at, 2),
        bound_s=1.5 * ACK_TIMEOUT_S + 0.5,
        ready_after_sigcont_s=None if ready_at is None else round(ready_at - resumed_at, 2),
        ack_timeouts=bus.ack_timeouts,
        reason=why,
    )
    assert not_ready_at is not None, "still ready with a frozen broker"
    assert not_ready_at - frozen_at <= 1.5 * ACK_TIMEOUT_S + 1.0  # the documented + 0.5 s, and scheduling
    assert http_503
    assert bus.ack_timeouts == 1
    assert "confirmed no publication" in why
    assert ready_at is not None
