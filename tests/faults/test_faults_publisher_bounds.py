"""Fault: what one publisher can do to a stream, against `edgewatch serve` and mosquitto (issue 12).

    seq jump     one forged message with seq = last + 1000 in the middle of a faulty stream
    reset storm  a reset command every 6 samples (warmup_steps 10), before and during a sustained fault
    all rejected a stream whose every message is rejected after it reported `ok`

Before: the forged seq made every later real sample drop as out-of-order (no alert); the resets
kept the stream warming up (no alert); the rejected stream kept `ok`. Now the jump is refused
(seq-jump), resets after the first are refused within reset_min_interval_s (reset-rate), so
both faults raise their alert, and the rejected stream's retained status turns `stale`.
The time scale is compressed (20 samples/s) so that the test stays short.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import Daemon, metric, report, wait_healthy
from tests.support.mqtt_helpers import Collector
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
POLICY = {"raise_k": 3, "raise_n": 3, "clear_m": 50, "warmup_steps": 10}


def _sample(seq: int, value: float, **extra: object) -> bytes:
    return json.dumps({"seq": seq, "values": [value, 0.0, 0.0], **extra}).encode()


def test_seq_jump_reset_storm_and_all_rejected(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=1.0)
    port = free_port()
    config = write_config(
        tmp_path / "gw.yaml",
        broker,
        art,
        alerts=POLICY,
        metrics_address=f"127.0.0.1:{port}",
        reset_min_interval_s=60.0,
        stale_after_s=1.0,
    )
    daemon = Daemon(config, tmp_path / "serve.log")
    alerts = Collector(broker, "edgewatch/alerts/#")
    statuses = Collector(broker, "edgewatch/status/#")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:
        daemon.start()
        wait_healthy(daemon, port)
        client.connect(broker.host, broker.port)
        client.loop_start()

        def send(stream: str, payload: bytes) -> None:
            client.publish(f"plant/{stream}/telemetry", payload, qos=1).wait_for_publish(5)

        def storm(seq: int) -> None:  # a reset every 6 samples: fewer than warmup_steps apart
            if seq % 6 == 0:
                client.publish("edgewatch/control/storm/reset", b"", qos=1).wait_for_publish(5)

        for seq in range(20):  # healthy: a flat signal
            for stream in ("jump", "storm", "blind"):
                send(stream, _sample(seq, 0.0))
            storm(seq)
            time.sleep(0.02)
        statuses.wait_for(lambda got: any(m.payload == b"ok" and "blind" in m.topic for m in got), 10)
        send("jump", _sample(19 + 1000, 0.0))  # forged, one message
        started = time.monotonic()
        for seq in range(20, 80):  # a sustained fault: the value alternates, every step is off
            value = 5.0 * (seq % 2)
            send("jump", _sample(seq, value))
            send("storm", _sample(seq, value))
            send("blind", _sample(seq, value, ts=9.9e10))  # rejected: ts-range
            storm(seq)
            time.sleep(0.05)
        raised = alerts.wait_for(
            lambda got: {m.topic for m in got} >= {"edgewatch/alerts/jump", "edgewatch/alerts/storm"}, 10
        )
        latency = time.monotonic() - started
        stale = statuses.wait_for(lambda got: any(m.payload == b"stale" and "blind" in m.topic for m in got), 10)
        rejected_jump = metric(port, 'edgewatch_messages_rejected_total{reason="seq-jump"}')
        rejected_reset = metric(port, 'edgewatch_messages_rejected_total{reason="reset-rate"}')
        out_of_order = metric(port, 'edgewatch_samples_skipped_total{reason="out-of-order"}')
        assert daemon.stop() == 0
    finally:
        client.loop_stop()
        client.disconnect()
        daemon.kill()
        alerts.close()
        statuses.close()
    states = [(m.topic.rsplit("/", 1)[-1], json.loads(m.payload)["state"]) for m in raised]
    assert ("jump", "raised") in states
    assert ("storm", "raised") in states
    assert any("blind" in m.topic for m in stale)
    assert rejected_jump == 1
    assert rejected_reset == 13  # 14 reset commands, the first applied
    assert out_of_order == 0
    report(
        tmp_path,
        "publisher_bounds",
        rejected_seq_jump=int(rejected_jump),
        rejected_reset_rate=int(rejected_reset),
        out_of_order_samples=int(out_of_order),
        both_raised_within_s=round(latency, 2),
    )
