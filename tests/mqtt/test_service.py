"""The daemon end to end through a real mosquitto: alerts, parity with step-by-step ORT,
multi-sample messages, duplicates, hostile input, control resets, stats and metrics."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_config.schema import AlertPolicy
from runtime.model.artifact import load_artifact
from runtime.service import Service
from runtime.tools.local_broker import Broker, free_port
from tests.support.mqtt_helpers import Collector, publish_many, raw_publish, retained
from tests.support.onnx_artifacts import write_lstm_artifact, write_persistence_artifact
from tests.support.service_helpers import Outcomes, gateway_config, started, wait_counters

pytestmark = pytest.mark.mqtt


def _sample(seq: int, values: list[float] | list[list[float]], ts: float | list[float] | None = None) -> bytes:
    doc: dict[str, object] = {"seq": seq, "values": values}
    if ts is not None:
        doc["ts"] = ts
    return json.dumps(doc).encode()


def test_a_fault_raises_one_alert_and_clears_it_healthy_streams_stay_quiet(broker: Broker, tmp_path: Path) -> None:
    artifact = write_persistence_artifact(tmp_path / "persist", features=3, threshold=1.0, ewma_alpha=0.5)
    policy = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3)
    service = started(Service(gateway_config(broker, artifact, alerts=policy)))
    alerts = Collector(broker, "edgewatch/alerts/#")
    try:
        healthy = [f"m{i}" for i in range(5)]
        items = []
        for t in range(60):
            drift = [1.0 + 0.001 * t, 2.0, -0.5 * 0.001 * t]  # slow drifts: next-step error ~1e-3
            items.extend((f"plant/{name}/telemetry", _sample(t, drift)) for name in healthy)
            faulty = [5.0 * (-1) ** t, 0.0, 0.0] if 20 <= t < 30 else [0.0, 0.0, 0.0]
            items.append(("plant/bad/telemetry", _sample(t, faulty)))
        publish_many(broker, items)
        wait_counters(service, lambda c: c.processed == len(items))
        got = alerts.wait_for(lambda m: len(m) >= 2, timeout=10)
        docs = [json.loads(m.payload) for m in got]
        assert [(d["stream"], d["state"]) for d in docs] == [("bad", "raised"), ("bad", "cleared")]
        assert [m.topic for m in got] == ["edgewatch/alerts/bad"] * 2
        assert not any(m.retain for m in got)
        assert docs[0]["id"] == docs[1]["id"]
        assert 20 <= docs[0]["seq"] < 30
        assert docs[1]["seq"] >= 30
        assert docs[0]["score"] > docs[0]["threshold"] == 1.0
        assert retained(broker, "edgewatch/status/bad") == b"ok"
        assert retained(broker, "edgewatch/status/m0") == b"ok"
        assert service.tally.snapshot().alerts == {"raised": 1, "cleared": 1}
    finally:
        alerts.close()
        service.stop()


def _reference_outputs(artifact_dir: Path, samples: np.ndarray) -> np.ndarray:
    """One stream alone through ORT, one step per call, state carried by hand."""
    artifact = load_artifact(artifact_dir)
    session = ort.InferenceSession(artifact.model_bytes, providers=["CPUExecutionProvider"])
    m = artifact.manifest
    state = {s.input: np.zeros((s.layers, 1, s.hidden), np.float32) for s in m.state}
    outs = []
    for row in samples:
        result = session.run(None, {m.input: row[None, None, :].astype(np.float32), **state})
        outs.append(result[0][0, 0])
        state = {s.input: result[m.outputs.index(s.output)] for s in m.state}
    return np.stack(outs)


def test_200_interleaved_streams_match_each_stream_alone(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, hidden=8, layers=2, threshold=1e6)
    hook = Outcomes()
    service = started(Service(gateway_config(broker, artifact), outcome_hook=hook))
    try:
        rng = np.random.default_rng(1)
        streams = [f"s{i:03d}" for i in range(200)]
        data = {s: rng.normal(size=(8, 4)).astype(np.float32) for s in streams}
        order = random.Random(2)
        items = []
        for t in range(8):
            items.extend(
                (f"plant/{s}/telemetry", _sample(t, data[s][t].tolist())) for s in order.sample(streams, len(streams))
            )
        publish_many(broker, items)
        snap = wait_counters(service, lambda c: c.processed == len(items))
        assert snap.steps == len(items)
        assert not snap.rejected
        assert not snap.skipped
        assert service.tally.snapshot().batches < len(items)  # it did batch across streams
        for s in random.Random(3).sample(streams, 40):
            np.testing.assert_allclose(hook.outputs(s), _reference_outputs(artifact, data[s]), atol=1e-5)
    finally:
        service.stop()


def test_multi_sample_messages_equal_the_same_samples_one_by_one(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    hook = Outcomes()
    service = started(Service(gateway_config(broker, artifact), outcome_hook=hook))
    try:
        x = np.random.default_rng(4).normal(size=(24, 4)).round(4)
        # ts: seconds since the epoch, after 2000 (runtime.max_ts_future_s rejects older ones)
        items = [("plant/single/telemetry", _sample(t, x[t].tolist(), 1.7e9 + t)) for t in range(24)]
        t = 0
        for size in (1, 3, 5, 7, 8):
            items.append(
                (
                    "plant/multi/telemetry",
                    _sample(t, x[t : t + size].tolist(), [1.7e9 + k for k in range(t, t + size)]),
                )
            )
            t += size
        publish_many(broker, items)
        wait_counters(service, lambda c: c.steps == 48)
        np.testing.assert_allclose(hook.outputs("multi"), hook.outputs("single"), atol=1e-5)
        np.testing.assert_allclose(hook.scores("multi"), hook.scores("single"), atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(hook.outputs("single"), _reference_outputs(artifact, x), atol=1e-5)
    finally:
        service.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_duplicates_and_out_of_order_are_dropped_and_counted(broker: Broker, tmp_path: Path, protocol: str) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    hook = Outcomes()
    config = gateway_config(broker, artifact)
    config.broker.protocol = protocol  # type: ignore[assignment]
    service = started(Service(config, outcome_hook=hook))
    try:
        v = [0.1, 0.2, 0.3, 0.4]
        seqs = [0, 1, 2, 3, 2, 10, 3, 7, 11]  # 2 and 3 again: duplicates; 7 behind 10, never seen: late
        publish_many(broker, [("plant/a/telemetry", _sample(s, v)) for s in seqs])
        snap = wait_counters(service, lambda c: c.processed + sum(c.skipped.values()) == len(seqs))
        assert snap.skipped == {"duplicate": 2, "out-of-order": 1}
        assert snap.processed == 6
        assert [o.status for o in hook.by_stream["a"]] == [
            "processed",
            "processed",
            "processed",
            "processed",
            "duplicate",
            "processed",
            "duplicate",
            "out-of-order",
            "processed",
        ]
    finally:
        service.stop()


def test_hostile_input_is_rejected_and_counted_while_other_streams_are_served(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    hook = Outcomes()
    service = started(Service(gateway_config(broker, artifact, max_payload_bytes=262_144), outcome_hook=hook))
    try:
        good = [0.1, 0.2, 0.3, 0.4]
        hostile = [
            ("plant/x/telemetry", b"not json"),
            ("plant/x/telemetry", b'{"values": [NaN, 1, 2, 3]}'),
            ("plant/x/telemetry", b'{"values": [1e999, 1, 2, 3]}'),
            ("plant/x/telemetry", b'{"values": [1, 2, 3]}'),
            ("plant/x/telemetry", b"[" * 100_000 + b"]" * 100_000),
            ("plant/x/telemetry", b'{"values": [' + b"1" * 5000 + b", 1, 2, 3]}"),
            ("plant/x/telemetry", b'{"values": [1, 2, 3, 4], "values": [1, 2, 3, 4]}'),
            ("plant/x/telemetry", b'{"values": [1, 2, 3, 4], "pad": "' + b"a" * 1_000_000 + b'"}'),
            ("plant/x/telemetry", b"\xff\xfe{}"),
            ("plant/$x/telemetry", _sample(0, good)),
            ("plant/../telemetry", _sample(0, good)),
            ("plant//telemetry", _sample(0, good)),
        ]
        items = []
        for i, bad in enumerate(hostile):
            items += [("plant/ok/telemetry", _sample(i, good)), bad]
        publish_many(broker, items)
        # mosquitto itself refuses a non-UTF-8 topic (it closes the publisher's connection) ...
        assert raw_publish(broker, b"plant/\xff/telemetry", _sample(0, good)) == b""
        # ... the service's own guard for one is tested through the bus seam (tests/unit/test_service_routing.py)
        publish_many(broker, [("plant/ok/telemetry", _sample(len(hostile), good))])  # the next seq (no jump)
        snap = wait_counters(service, lambda c: c.processed == len(hostile) + 1 and sum(c.rejected.values()) == 12)
        assert snap.rejected == {
            "not-json": 1,
            "non-finite": 2,
            "wrong-arity": 1,
            "too-deep": 1,
            "bad-number": 1,
            "duplicate-key": 1,
            "too-large": 1,
            "not-utf8": 1,
            "stream-id": 3,
        }
        assert snap.received == len(items) + 1
        assert "x" not in hook.by_stream
        assert service.bus.snapshot().handler_errors == 0
        assert service.health() == (True, "ready")
    finally:
        service.stop()


def test_control_reset_restarts_a_stream(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    hook = Outcomes()
    service = started(Service(gateway_config(broker, artifact), outcome_hook=hook))
    try:
        v = [0.1, 0.2, 0.3, 0.4]
        publish_many(broker, [("plant/a/telemetry", _sample(s, v)) for s in range(5)])
        wait_counters(service, lambda c: c.processed == 5)
        publish_many(
            broker,
            [
                ("edgewatch/control/a/reset", b""),
                ("edgewatch/control/nobody/reset", b""),
                ("edgewatch/control/a/explode", b""),
                ("plant/a/telemetry", _sample(0, v)),
            ],
        )
        snap = wait_counters(service, lambda c: c.processed == 6)
        assert snap.resets == 1
        assert snap.rejected == {"control-unknown": 1}
        assert not snap.skipped
        # after the reset the stream starts over: the same output as its very first step
        first, again = hook.by_stream["a"][0].outputs, hook.by_stream["a"][-1].outputs
        assert first is not None
        assert again is not None
        np.testing.assert_allclose(again, first, atol=1e-6)
    finally:
        service.stop()


def test_stats_message_metrics_and_health(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    port = free_port()
    service = started(
        Service(gateway_config(broker, artifact, stats_interval_s=0.2, metrics_address=f"127.0.0.1:{port}"))
    )
    stats = Collector(broker, "edgewatch/stats")
    try:
        publish_many(broker, [("plant/a/telemetry", _sample(0, [0.1, 0.2, 0.3, 0.4])), ("plant/a/telemetry", b"oops")])
        wait_counters(service, lambda c: c.processed == 1)
        got = stats.wait_for(lambda m: any(json.loads(x.payload)["processed"] == 1 for x in m), timeout=5)
        doc = json.loads(got[-1].payload)
        assert doc["received"] == 2
        assert doc["rejected"] == {"not-json": 1}
        assert doc["connected"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "edgewatch_messages_received_total 2.0" in text
        assert 'edgewatch_messages_rejected_total{reason="not-json"} 1.0' in text
        assert 'edgewatch_provider_nodes{model="det",provider="CPUExecutionProvider"}' in text
        assert "edgewatch_step_latency_seconds_count 1.0" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        stats.close()
        service.stop()


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest", "block"])
def test_queue_policy_counts_exactly_and_acks_what_it_drops(broker: Broker, tmp_path: Path, policy: str) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    depths: list[int] = []

    def slow(_model: str, _outcome: object) -> None:
        depths.append(len(service.queue))
        time.sleep(0.01)  # a worker slower than the input: the queue overflows

    config = gateway_config(broker, artifact, queue_max=2, drop_policy=policy, max_batch=1, max_wait_ms=0)
    service = started(Service(config, outcome_hook=slow))
    try:
        n = 60
        publish_many(broker, [(f"plant/s{i % 3}/telemetry", _sample(i // 3, [0.1, 0.2, 0.3, 0.4])) for i in range(n)])
        snap = wait_counters(service, lambda c: c.processed + sum(c.dropped.values()) == n)
        time.sleep(0.3)
        snap = service.tally.snapshot()
        assert snap.received == n
        assert snap.processed + sum(snap.dropped.values()) == n
        assert max(depths) <= 2
        if policy == "block":
            assert snap.processed == n
            assert not snap.dropped
        else:
            assert snap.dropped.get(policy, 0) > 0
            assert set(snap.dropped) == {policy}
    finally:
        service.stop()
    # Everything was acknowledged, dropped messages included: the broker redelivers nothing
    # to the next session with the same client id.
    again = Service(config)
    again.start()
    try:
        assert again.bus.wait_connected(10)
        time.sleep(1.0)
        assert again.tally.snapshot().received == 0
    finally:
        again.stop()


def test_idle_streams_are_evicted(broker: Broker, tmp_path: Path) -> None:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    service = started(Service(gateway_config(broker, artifact, idle_ttl_s=0.3)))
    try:
        publish_many(broker, [(f"plant/s{i}/telemetry", _sample(0, [0.1, 0.2, 0.3, 0.4])) for i in range(3)])
        wait_counters(service, lambda c: c.processed == 3)
        snap = wait_counters(service, lambda c: c.evicted == 3, timeout=5)
        assert snap.evicted == 3
        assert len(service.engines["det"].store) == 0
    finally:
        service.stop()
