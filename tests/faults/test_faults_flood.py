"""Fault (h): a stream-id flood with real faults during it.

A process publishes 6,000 one-message stream ids (QoS 0, 3,000/s: a `warming-up` status each)
while 20 real streams (10 of them going faulty at seq 100) publish on, through a gateway whose
outbox holds 200 publications and whose stream cap is 2,000, connected through a loopback proxy
that holds the broker's PUBACKs 50 ms during the flood (20 in flight: at most 400 confirmations
a second, so the statuses fill the outbox on any machine; without it a quiet machine's broker kept
up and nothing was refused). Before issue 12 the statuses filled the outbox and the raised
alerts behind them were dropped (counted, not logged).
Expected: every raised alert reaches a subscriber; statuses refused instead (counted apart,
logged once); the stream cap logged once; after everything went idle, eviction has removed every
retained status it published (the flood once left 143,745 on the broker).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_config.schema import AlertPolicy
from runtime.service import Service
from runtime.tools.local_broker import Broker
from tests.support.fault_helpers import REPO, report
from tests.support.fault_traffic import AlertLog, ReliablePublisher, stream_items
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.mqtt_proxy import PubackProxy
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import gateway_config, started, wait_counters

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, FAULTY = 20, 10
FLOOD, FLOOD_RATE = 6000, 3000.0
POLICY = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3)


def test_a_stream_id_flood_drops_statuses_not_alerts(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    config = gateway_config(broker, art, alerts=POLICY, outgoing_max=200, max_streams=2000, idle_ttl_s=3.0)
    proxy = PubackProxy(broker.host, broker.port)
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"port": proxy.port})})
    alerts = AlertLog(broker.host, broker.port, "fault-h-alerts")
    service = started(Service(config))
    publisher = ReliablePublisher(broker.host, broker.port, "fault-h-pub")
    caplog.set_level(logging.WARNING)
    try:
        publish_many(broker, stream_items(STREAMS, range(90), FAULTY))  # warm, before the faults
        wait_counters(service, lambda c: c.processed == STREAMS * 90)
        proxy.delay_pubacks(0.05)
        flood = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.flood",
                *("--port", str(broker.port), "--count", str(FLOOD)),
                *("--rate", str(FLOOD_RATE)),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # the flood is on
        real = threading.Thread(
            target=publisher.publish_paced, args=(stream_items(STREAMS, range(90, 140), FAULTY), 400.0), daemon=True
        )
        real.start()  # seq 100-119 of streams m000-m009: the fault, during the flood
        out, err = flood.communicate(timeout=60)
        assert flood.returncode == 0, err
        proxy.delay_pubacks(0.0)  # the flood is over: the broker answers at once again
        real.join(30)
        publisher.confirm_all(30)
        expected = {f"m{s:03d}" for s in range(FAULTY)}
        alerts.wait_for(lambda a: {str(d["stream"]) for d in a if d["state"] == "raised"} >= expected, timeout=20)
        during = service.tally.snapshot()
        bus = service.bus.snapshot()
        # Everything goes idle: after idle_ttl_s every stream is evicted and its retained status removed.
        wait_counters(service, lambda c: c.evicted > 0 and len(service.engines["det"].store) == 0, 30)
        deadline = time.monotonic() + 20
        while service.publisher.unsent and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        statuses = Collector(broker, "edgewatch/status/#")
        time.sleep(1.5)  # every retained status still on the broker arrives at once
        left = len(statuses.messages)
        statuses.close()
        after = service.tally.snapshot()
    finally:
        publisher.close()
        service.stop()
        alerts.close()
        proxy.close()
    raised = {str(d["stream"]) for d in alerts.received if d["state"] == "raised"}
    outbox_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox full")]
    cap_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stream cap reached")]
    report(
        tmp_path,
        "h_stream_id_flood",
        flood_streams=FLOOD,
        flood=json.loads(out.strip().splitlines()[-1]),
        raised_alerts_delivered=len(raised & expected),
        raised_alerts_expected=FAULTY,
        alerts_not_sent=during.alerts_not_sent,
        statuses_not_sent=during.statuses_not_sent,
        statuses_resent=after.statuses_resent,
        urgent_dropped=bus.dropped_urgent,
        rejected_max_streams=during.rejected.get("max-streams", 0),
        outbox_log_lines=len(outbox_lines),
        cap_log_lines=len(cap_lines),
        evicted=after.evicted,
        retained_statuses_left=left,
    )
    assert raised >= expected
    assert during.alerts_not_sent == 0
    assert bus.dropped_urgent == 0
    assert during.statuses_not_sent > 0  # the outbox was full: statuses gave way
    assert len(outbox_lines) == 1  # at most one line a minute
    assert during.rejected.get("max-streams", 0) > 0
    assert len(cap_lines) == 1
    assert left == 0
