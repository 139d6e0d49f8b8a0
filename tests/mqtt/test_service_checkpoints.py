"""The daemon's checkpoints, evictions and reloads, in process, through a real mosquitto."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge_config.loading import load_config
from edge_config.schema import AlertPolicy, ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.service import Service
from runtime.tools.local_broker import Broker
from tests.support.mqtt_helpers import Collector, publish_many, retained, wait_retained
from tests.support.onnx_artifacts import write_lstm_artifact, write_persistence_artifact
from tests.support.service_helpers import Outcomes, gateway_config, started, wait_counters, write_config

pytestmark = pytest.mark.mqtt
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "alert.schema.json").read_text())


def _values(stream: int, seq: int) -> list[float]:
    rng = np.random.default_rng(1000 * stream + seq)
    return [round(float(v), 4) for v in rng.normal(size=3)]


def _items(streams: int, seqs: range) -> list[tuple[str, bytes]]:
    return [
        (f"plant/s{i}/telemetry", json.dumps({"seq": q, "values": _values(i, q)}).encode())
        for q in seqs
        for i in range(streams)
    ]


def test_a_clean_stop_checkpoints_and_the_next_start_continues_every_stream(broker: Broker, tmp_path: Path) -> None:
    art = write_lstm_artifact(tmp_path / "lstm", features=3, hidden=8, threshold=1e6)
    config = gateway_config(
        broker, art, checkpoint_path=tmp_path / "state" / "state.ckpt", checkpoint_interval_s=3600.0
    )
    (tmp_path / "state").mkdir()
    first = started(Service(config))
    try:
        publish_many(broker, _items(3, range(25)))
        wait_counters(first, lambda c: c.processed == 75)
    finally:
        first.stop()
    assert first.checkpoints is not None
    assert first.checkpoints.stats().written == 1
    assert (tmp_path / "state" / "state.det.ckpt").is_file()
    hook = Outcomes()
    second = Service(config, outcome_hook=hook)
    assert second.tally.snapshot().restored == 3
    started(second)
    try:
        publish_many(broker, _items(3, range(25, 50)))
        wait_counters(second, lambda c: c.processed == 75)
        assert retained(broker, "edgewatch/status/s0") == b"ok"  # republished at the first step
    finally:
        second.stop()
    artifact = load_artifact(art)
    reference = Engine(
        artifact,
        create_session(artifact, TargetConfig(type="cpu"), name="r")[0],
        ModelConfig(path=art, target="cpu"),
        name="r",
    )
    for seq in range(50):  # the same samples without a restart
        out = reference.process(
            [Message(f"s{i}", np.array([_values(i, seq)], np.float32), seq, None) for i in range(3)]
        )
        if seq >= 25:
            for o in out:
                hook.by_stream.setdefault("ref-" + o.message.stream, []).append(o)
    for i in range(3):
        np.testing.assert_allclose(hook.outputs(f"s{i}"), hook.outputs(f"ref-s{i}"), rtol=0, atol=1e-5)
    first_after = hook.by_stream["s0"][0]
    assert first_after.stream_status == "ok"
    assert second.tally.snapshot().rewarming == 0


def test_periodic_checkpoints_skip_unchanged_state_and_show_in_metrics(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "p", features=3, threshold=1e6)
    service = started(
        Service(gateway_config(broker, art, checkpoint_path=tmp_path / "state.ckpt", checkpoint_interval_s=0.2))
    )
    try:
        publish_many(broker, _items(4, range(5)))
        wait_counters(service, lambda c: c.processed == 20)
        assert service.checkpoints is not None
        deadline = time.monotonic() + 10
        while service.checkpoints.stats().written < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more intervals: the state did not change, nothing is written
        before = service.checkpoints.stats()
        time.sleep(1.0)
        after = service.checkpoints.stats()
        assert before.written == after.written >= 1
        assert after.failed == 0
        text = service.metrics.exposition().decode()
        assert f"edgewatch_checkpoints_written_total {float(after.written)}" in text
        assert f"edgewatch_checkpoint_bytes_total {float(after.bytes)}" in text
        assert f"edgewatch_checkpoint_last_bytes {float(after.last_bytes)}" in text
    finally:
        service.stop()


def test_a_failing_checkpoint_write_is_counted_logged_once_and_serving_goes_on(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    art = write_persistence_artifact(tmp_path / "p", features=3, threshold=1e6)
    config = gateway_config(broker, art, checkpoint_path=tmp_path / "missing" / "state.ckpt", checkpoint_interval_s=0.1)
    service = started(Service(config))
    try:
        for n in range(4):  # state changes every round, so every round tries to write
            publish_many(broker, _items(2, range(n * 3, n * 3 + 3)))
            wait_counters(service, lambda c, n=n: c.processed == (n + 1) * 6)
            time.sleep(0.3)
        assert service.checkpoints is not None
        stats = service.checkpoints.stats()
        assert stats.failed >= 3
        assert stats.written == 0
        ready, why = service.health()  # issue 12: visible in /healthz (still serving) and a gauge
        assert ready
        assert why.startswith("ready, degraded: checkpoint writes failing:")
        assert "missing" in why
        assert "edgewatch_checkpoint_failing 1.0" in service.metrics.exposition().decode()
    finally:
        service.stop()
    errors = [r for r in caplog.records if r.name == "edgewatch.checkpoint" and r.levelname == "ERROR"]
    assert len(errors) == 2  # once while serving, once at the stop (issue 12: the files on disk are older)
    assert "missing" in errors[0].getMessage()
    assert errors[1].getMessage().startswith("stopping with checkpoint writes failing")


def test_eviction_clears_an_open_alert_and_removes_its_retained_status(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "p", features=3, threshold=1.0, ewma_alpha=1.0)
    policy = AlertPolicy(raise_k=1, raise_n=1, clear_m=5, warmup_steps=0)
    service = started(Service(gateway_config(broker, art, alerts=policy, idle_ttl_s=1.0)))
    alerts = Collector(broker, "edgewatch/alerts/#")
    try:
        items = [("plant/loud/telemetry", json.dumps({"seq": q, "values": [5.0 * q, 0, 0]}).encode()) for q in range(3)]
        items += [("plant/calm/telemetry", json.dumps({"seq": q, "values": [0, 0, 0]}).encode()) for q in range(3)]
        publish_many(broker, items)
        raised = json.loads(alerts.wait_for(lambda m: len(m) >= 1)[0].payload)
        # the status follows its alert on another topic: poll (before the 1 s idle TTL evicts it)
        wait_retained(broker, "edgewatch/status/loud", b"alert", timeout=0.9)
        got = alerts.wait_for(lambda m: len(m) >= 2, timeout=10)
        cleared = json.loads(got[1].payload)
        jsonschema.validate(cleared, SCHEMA)
        assert (cleared["id"], cleared["state"], cleared["reason"], cleared["seq"]) == (
            raised["id"],
            "cleared",
            "evicted",
            None,
        )
        assert "reason" not in raised
        assert len(got) == 2
        wait_counters(service, lambda c: c.evicted == 2)
        assert retained(broker, "edgewatch/status/loud") is None
        # Issue 12: every evicted stream's retained status is removed, open alert or not (a status
        # nobody updates would stay on the broker forever; a stream-id flood left 143,745 of them).
        assert retained(broker, "edgewatch/status/calm") is None
        assert service.tally.snapshot().alerts == {"raised": 1, "cleared": 1}
    finally:
        alerts.close()
        service.stop()


def test_reload_swaps_a_verified_model_keeps_state_and_a_bad_config_changes_nothing(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    art = write_lstm_artifact(tmp_path / "model", features=3, hidden=4, layers=1, seed=1, threshold=1e6)
    path = write_config(tmp_path / "gw.yaml", broker, art)
    service = started(Service(load_config(path), config_path=path))
    try:
        publish_many(broker, _items(2, range(5)))
        wait_counters(service, lambda c: c.processed == 10)
        old_sha = service.engines["det"].artifact.sha256
        write_lstm_artifact(art, features=3, hidden=4, layers=1, seed=2, threshold=1e6)  # same shapes
        assert service.reload()
        engine = service.engines["det"]
        assert engine.artifact.sha256 != old_sha
        assert len(engine.store) == 2
        assert engine.store.last_seq[engine.store.slot("s0")] == 4
        good = path.read_text()
        path.write_text(good.replace('"max_wait_ms": 2.0', '"max_wait_ms": 5.0'))
        with caplog.at_level(logging.INFO, logger="edgewatch.service"):
            assert service.reload()  # nothing to swap; the runtime change is reported, not applied
        assert service.engines["det"] is engine
        assert service.config.runtime.max_wait_ms == 2.0
        assert any("changes to runtime need a restart" in r.getMessage() for r in caplog.records)
        path.write_text(good.replace('"target": "cpu"', '"target": "gpu"'))  # undefined target
        with caplog.at_level(logging.ERROR, logger="edgewatch.service"):
            assert not service.reload()
        assert service.engines["det"] is engine
        assert any("reload failed" in r.getMessage() and "gpu" in r.getMessage() for r in caplog.records)
        publish_many(broker, _items(2, range(5, 8)))  # the swapped model serves on, seq continues
        snap = wait_counters(service, lambda c: c.processed == 16)
        assert snap.skipped == {}
        assert snap.reloads == {"ok": 2, "failed": 1}
        assert snap.restored == 2
        assert snap.rewarming == 2  # other weights: the streams re-warm, seq and alerts kept
    finally:
        service.stop()


def test_reload_tells_systemd_reloading_then_ready(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    address = str(tmp_path / "notify.sock")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(address)
    systemd.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    path = write_config(tmp_path / "gw.yaml", broker, art)
    service = started(Service(load_config(path), config_path=path))
    try:
        assert systemd.recv(4096).startswith(b"READY=1")
        path.write_text("streams: [")  # a YAML error: the reload fails, systemd hears READY again
        assert not service.reload()
        first, second = systemd.recv(4096).decode(), systemd.recv(4096).decode()
        assert first.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert second.startswith("READY=1\nSTATUS=reload failed")
    finally:
        service.stop()
        systemd.close()
