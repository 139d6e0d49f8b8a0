"""`config check` refuses stream entries whose topic filters overlap (issue 12): a message goes to
the first matching entry only, so the second entry's model silently never saw those topics.
Unless the second is declared a shadow: its model then gets every message too (A/B)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_config.schema import (
    AlertPolicy,
    BaselineConfig,
    BrokerConfig,
    GatewayConfig,
    ModelConfig,
    RuntimeConfig,
    StreamConfig,
    filters_overlap,
)
from runtime.mqtt.fake import FakeBus
from runtime.service import Service
from tests.support.onnx_artifacts import write_lstm_artifact


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("plant/+/telemetry", "plant/line1/telemetry", True),
        ("plant/#", "plant", True),  # '#' matches the parent level too
        ("plant/+/telemetry", "plant/#", True),
        ("+/b", "a/+", True),
        ("plant/+/telemetry", "plant/+/status", False),
        ("plant/+", "plant/a/b", False),
        ("plant", "plant/a", False),
    ],
)
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def _config(*topics: list[str]) -> dict[str, object]:
    return {
        "streams": [{"name": f"s{i}", "topics": t, "model": "m"} for i, t in enumerate(topics)],
        "models": {"m": {"path": "model", "target": "cpu"}},
    }


def test_two_stream_entries_on_the_same_topics_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(_config(["plant/+/telemetry"], ["other/x", "plant/pump1/telemetry"]))
    message = str(info.value)
    assert "streams[1].topics" in message
    assert "'plant/pump1/telemetry' overlaps 'plant/+/telemetry' of streams[0] ('s0')" in message
    GatewayConfig.model_validate(_config(["plant/+/telemetry"], ["plant/+/status"]))  # disjoint: fine


def test_a_shadow_entry_needs_a_primary_to_shadow_and_a_model_of_its_own() -> None:
    config = _config(["plant/+/telemetry"], ["plant/+/telemetry"])
    config["models"] = {"m": {"path": "model", "target": "cpu"}, "b": {"path": "b", "target": "cpu"}}
    shadow = config["streams"][1]  # type: ignore[index]
    shadow.update(shadow=True, model="b")
    GatewayConfig.model_validate(config)  # declared as a shadow with its own model: fine
    shadow["model"] = "m"
    with pytest.raises(ValidationError, match="also serves a primary stream entry"):
        GatewayConfig.model_validate(config)
    shadow.update(model="b", topics=["other/+"])
    with pytest.raises(ValidationError, match="must overlap a primary"):
        GatewayConfig.model_validate(config)


def test_a_shadow_model_gets_every_message_and_alerts_on_its_own_topics(tmp_path: Path) -> None:
    primary = write_lstm_artifact(tmp_path / "primary", features=4, threshold=1e6)  # never alerts
    candidate = write_lstm_artifact(tmp_path / "candidate", features=4, threshold=1e-9)  # always alerts
    policy = AlertPolicy(raise_k=1, raise_n=1, clear_m=5, warmup_steps=0)
    config = GatewayConfig(
        broker=BrokerConfig(port=1),
        streams=[
            StreamConfig(name="machines", topics=["plant/+/telemetry"], model="det"),
            StreamConfig(name="candidate", topics=["plant/+/telemetry"], model="cand", shadow=True),
        ],
        models={
            "det": ModelConfig(path=primary, target="cpu", alerts=policy, baseline=BaselineConfig(learn_steps=0)),
            "cand": ModelConfig(path=candidate, target="cpu", alerts=policy, baseline=BaselineConfig(learn_steps=0)),
        },
        runtime=RuntimeConfig(metrics_address=None, stats_interval_s=None),
    )
    service = Service(config, bus_factory=FakeBus)
    bus = service.bus
    assert isinstance(bus, FakeBus)
    bus.start()
    deliveries = [
        bus.deliver("plant/a/telemetry", json.dumps({"seq": s, "values": [0.1] * 4}).encode()) for s in range(3)
    ]
    service.worker.process(service.queue.get_batch(10_000, 0, 0.1))
    counts = service.tally.snapshot()
    assert counts.processed == 6  # each message stepped by both models
    assert bus.acked == deliveries  # each delivery acknowledged once, by the primary
    assert bus.on("edgewatch/alerts/") == []
    shadow_alerts = bus.on("edgewatch/shadow/cand/alerts/a")
    assert [json.loads(p.payload)["model"] for p in shadow_alerts] == ["cand"]
    statuses = bus.on("edgewatch/status/a")
    assert statuses
    assert all(p.payload != b"alert" for p in statuses)  # the stream's status is the primary's
