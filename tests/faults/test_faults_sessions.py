"""Fault (i): the gateway's MQTT session — a clean restart under traffic, a second gateway with the
same client id, and a broker that lost our session and its retained messages.

1. `edgewatch serve` is stopped with SIGTERM in the middle of a paced QoS 1 stream and started
   again 2 s later. Before issue 12 the stop unsubscribed, so what was published while it was
   down never reached it (200 of 200 lost once). Expected: every message processed.
2. A second gateway starts with the first one's client id. Before, both flapped silently and,
   once the second had stopped (unsubscribing in the shared session), the first reconnected with
   the session present, never subscribed again and received nothing. Expected: the first logs
   the takeover, /healthz says so; after the second left it is ready and receives again.
3. mosquitto without persistence restarts: our session and every retained status are gone.
   Before, statuses were published only on change, so they stayed gone. Expected: every known
   stream's status is on the broker again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

import pytest

from runtime.service import Service
from runtime.tools.local_broker import Broker, free_port, start_broker
from tests.support.fault_helpers import Daemon, report, wait_healthy
from tests.support.fault_traffic import ReliablePublisher, stream_items
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import gateway_config, started, wait_counters, write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, SEQS, RATE = 20, 150, 300.0  # 3,000 messages, 10 s


def test_a_clean_restart_under_traffic_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    port = free_port()
    config = write_config(
        tmp_path / "gw.yaml", broker, art, client_id="fault-i-daemon", metrics_address=f"127.0.0.1:{port}"
    )
    daemon = Daemon(config, tmp_path / "serve.log", trace_outcomes=True)
    publisher = ReliablePublisher(broker.host, broker.port, "fault-i-pub")
    progress = [0]
    try:
        daemon.start()
        wait_healthy(daemon, port)
        sender = threading.Thread(
            target=publisher.publish_paced,
            kwargs={
                "items": stream_items(STREAMS, range(SEQS), 0),
                "rate": RATE,
                "on_progress": lambda n: progress.__setitem__(0, n),
            },
            daemon=True,
        )
        sender.start()
        while progress[0] < STREAMS * SEQS * 0.3:
            time.sleep(0.02)
        assert daemon.stop() == 0  # SIGTERM: drain, checkpoint-less, clean disconnect
        stopped_at_progress = progress[0]
        time.sleep(2.0)  # the publisher goes on: the broker must keep this for our session
        published_while_stopped = progress[0] - stopped_at_progress
        offset = len(daemon.text())
        daemon.start()
        wait_healthy(daemon, port)
        sender.join(60)
        publisher.confirm_all(60)
        deadline = time.monotonic() + 30
        expected = {(f"m{s:03d}", q) for s in range(STREAMS) for q in range(SEQS)}
        while time.monotonic() < deadline:
            done = {(s, q) for s, q, status in daemon.outcomes() if status == "processed"}
            if done >= expected:
                break
            time.sleep(0.2)
        second_run = [o for o in daemon.outcomes() if o[2] == "processed"]
        redelivered = len(re.findall(r"status=duplicate", daemon.text()[offset:]))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        publisher.close()
    done = {(s, q) for s, q, status in daemon.outcomes() if status == "processed"}
    missing = expected - done
    report(
        tmp_path,
        "i_clean_restart",
        messages=len(expected),
        published_while_stopped=published_while_stopped,
        processed=len(second_run),
        duplicates_skipped=redelivered,
        lost=len(missing),
    )
    assert published_while_stopped > 0
    assert missing == set()


def test_a_second_gateway_with_our_client_id_is_reported_and_the_first_receives_after_it_left(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    config = gateway_config(broker, art)
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"client_id": "twin"})})
    caplog.set_level(logging.INFO, logger="edgewatch.bus")
    first = started(Service(config))
    second = Daemon(write_config(tmp_path / "gw2.yaml", broker, art, client_id="twin"), tmp_path / "second.log")
    try:
        publish_many(
            broker, [("plant/a/telemetry", json.dumps({"seq": q, "values": [0, 0, 0]}).encode()) for q in range(3)]
        )
        wait_counters(first, lambda c: c.processed == 3)
        second.start()
        second.wait_line(r"connected to 127\.0\.0\.1", 20)
        deadline = time.monotonic() + 15
        reasons: set[str] = set()
        while time.monotonic() < deadline and not any("client id 'twin'" in r for r in reasons):
            ready, why = first.health()
            if not ready:
                reasons.add(why)
            time.sleep(0.02)
        takeovers = first.bus.snapshot().takeovers
        assert second.stop() == 0
        left_at = time.monotonic()
        deadline = left_at + 20
        while not first.health()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        ready_after_s = time.monotonic() - left_at
        ready = first.health()
        publish_many(
            broker, [("plant/a/telemetry", json.dumps({"seq": q, "values": [0, 0, 0]}).encode()) for q in range(3, 23)]
        )
        received = wait_counters(first, lambda c: c.processed >= 20, timeout=15).processed
    finally:
        second.kill()
        first.stop()
    lines = [r.getMessage() for r in caplog.records if "another client with our client id" in r.getMessage()]
    report(
        tmp_path,
        "i_two_gateways_one_client_id",
        takeovers_seen_by_first=takeovers,
        takeover_log_lines=len(lines),
        ready_after_second_left_s=round(ready_after_s, 2),
        processed_by_first_after=received - 3,
    )
    assert takeovers >= 1
    assert len(lines) >= 1
    assert any("client id 'twin'" in why for why in reasons)
    assert ready == (True, "ready")
    assert received >= 20


def test_a_broker_that_lost_our_session_gets_every_retained_status_again(tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    broker = start_broker(tmp_path / "broker")  # no persistence: a restart forgets sessions and retained messages
    service = started(Service(gateway_config(broker, art)))
    try:
        publish_many(broker, stream_items(STREAMS, range(10), 0))
        wait_counters(service, lambda c: c.processed == STREAMS * 10)
        before = _retained_statuses(broker)
        broker.restart()
        assert _retained_statuses(broker) == {}
        deadline = time.monotonic() + 15
        after: dict[str, bytes] = {}
        while time.monotonic() < deadline and after != before:
            time.sleep(0.3)
            after = _retained_statuses(broker)
        resent = service.tally.snapshot().statuses_resent
        fresh = service.bus.snapshot().fresh_sessions
    finally:
        service.stop()
        broker.stop()
    report(
        tmp_path,
        "i_session_lost",
        retained_statuses_before=len(before),
        retained_statuses_after=len(after),
        statuses_resent=resent,
        fresh_sessions=fresh,
    )
    assert len(before) == STREAMS
    assert after == before
    assert resent == STREAMS
    assert fresh == 2


def _retained_statuses(broker: Broker) -> dict[str, bytes]:
    collector = Collector(broker, "edgewatch/status/#")
    time.sleep(0.5)  # retained messages arrive right after the SUBACK
    collector.close()
    return {m.topic: m.payload for m in collector.messages if m.retain}
