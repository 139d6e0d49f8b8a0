"""The service's routing, acks and publishing, against the in-memory bus (no broker, no threads).

Every delivery is settled exactly once, and only when its fate is decided: rejects and queue
drops at once, stepped messages after their alerts and status were handed to the bus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_config.schema import AlertPolicy
from runtime.mqtt.fake import FakeBus
from runtime.service import Service
from tests.support.onnx_artifacts import write_lstm_artifact
from tests.support.service_helpers import gateway_config

GOOD = [0.1, 0.2, 0.3, 0.4]


@dataclass(frozen=True)
class _Address:
    host: str = "127.0.0.1"
    port: int = 1


def _sample(seq: int, values: list[float] = GOOD) -> bytes:
    return json.dumps({"seq": seq, "values": values}).encode()


def _service(tmp_path: Path, *, threshold: float = 1e6, alerts: AlertPolicy | None = None, **rt: object) -> Service:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=threshold)
    config = gateway_config(_Address(), artifact, alerts=alerts, **rt)  # type: ignore[arg-type]
    service = Service(config, bus_factory=FakeBus)
    service.bus.start()
    return service


def _bus(service: Service) -> FakeBus:
    assert isinstance(service.bus, FakeBus)
    return service.bus


def _run_queue(service: Service) -> None:
    """What the worker thread does with everything queued: one batch."""
    service.worker.process(service.queue.get_batch(10_000, 0, 0.1))


def test_rejects_are_counted_and_settled_at_once_and_valid_input_only_after_its_step(tmp_path: Path) -> None:
    service = _service(tmp_path)
    bus = _bus(service)
    good = bus.deliver("plant/a/telemetry", _sample(0))
    rejected = [
        bus.deliver("plant/a/telemetry", b"not json"),
        bus.deliver("plant/a/telemetry", b'{"values": [1, 2, 3]}'),
        bus.deliver("elsewhere/a", _sample(0)),
        bus.deliver(b"plant/\xff/telemetry", _sample(0)),  # mosquitto refuses these; paho could hand one over
        bus.deliver("edgewatch/control/a/bogus", b""),
    ]
    own = bus.deliver("edgewatch/alerts/a", b"{}")  # our own publication seen through a wide filter
    assert bus.acked == [*rejected, own]  # at once, in order; the valid one waits for its step
    _run_queue(service)
    assert bus.acked == [*rejected, own, good]
    counts = service.tally.snapshot()
    assert counts.rejected == {
        "not-json": 1,
        "wrong-arity": 1,
        "unrouted": 1,
        "topic-not-utf8": 1,
        "control-unknown": 1,
    }
    assert counts.received == 5  # control and own topics are not input
    assert counts.processed == 1
    assert counts.steps == 1
    assert bus.snapshot().handler_errors == 0


def test_a_stepped_message_is_acked_after_its_alert_and_status_were_published(tmp_path: Path) -> None:
    service = _service(tmp_path, threshold=1e-6, alerts=AlertPolicy(warmup_steps=1, raise_k=1, raise_n=1, clear_m=2))
    bus = _bus(service)
    for seq in range(3):
        bus.deliver("plant/a/telemetry", _sample(seq, [seq * 10.0, -5.0, 3.0, 7.0]))
        _run_queue(service)
    alerts = bus.on("edgewatch/alerts/a")
    assert [json.loads(p.payload)["state"] for p in alerts] == ["raised"]
    statuses = [p.payload for p in bus.on("edgewatch/status/a")]
    assert statuses[-1] == b"alert"
    raised = bus.events.index(("publish", "edgewatch/alerts/a"))
    assert bus.events[raised + 1 :].count(("ack", bus.acked[-1].mid)) == 1  # acked after the alert
    assert service.tally.snapshot().alerts == {"raised": 1}


def test_queue_drops_are_counted_and_settled(tmp_path: Path) -> None:
    service = _service(tmp_path, queue_max=1, drop_policy="drop-newest")
    bus = _bus(service)
    kept, *dropped = (bus.deliver("plant/a/telemetry", _sample(seq)) for seq in range(3))
    assert bus.acked == dropped
    assert service.tally.snapshot().dropped == {"drop-newest": 2}
    _run_queue(service)
    assert bus.acked == [*dropped, kept]


def test_a_failing_router_counts_settles_and_keeps_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(tmp_path)
    bus = _bus(service)

    def boom(*_args: object) -> None:
        raise RecursionError("what json.loads does on deep nesting")

    monkeypatch.setattr(service.queue, "put", boom)
    delivery = bus.deliver("plant/a/telemetry", _sample(0))
    assert bus.acked == [delivery]
    assert service.tally.snapshot().rejected == {"handler-error": 1}


def test_a_reset_applies_between_messages_and_is_settled_after(tmp_path: Path) -> None:
    service = _service(tmp_path)
    bus = _bus(service)
    first = bus.deliver("plant/a/telemetry", _sample(5))
    reset = bus.deliver("edgewatch/control/a/reset", b"")
    again = bus.deliver("plant/a/telemetry", _sample(0))  # seq starts over: accepted after the reset
    _run_queue(service)
    assert bus.acked == [first, reset, again]
    counts = service.tally.snapshot()
    assert counts.resets == 1
    assert counts.processed == 2


def test_a_retained_reset_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path)
    bus = _bus(service)
    delivery = bus.deliver("edgewatch/control/a/reset", b"", retain=True)
    assert bus.acked == [delivery]
    assert service.tally.snapshot().rejected == {"control-retained": 1}


def test_a_full_outbox_counts_what_it_refused(tmp_path: Path) -> None:
    service = _service(
        tmp_path, threshold=1e-6, outgoing_max=1, alerts=AlertPolicy(warmup_steps=1, raise_k=1, raise_n=1)
    )
    bus = _bus(service)  # "online" already holds the one outbox slot
    for seq in range(3):
        bus.deliver("plant/a/telemetry", _sample(seq, [seq * 10.0, -5.0, 3.0, 7.0]))
        _run_queue(service)
    counts = service.tally.snapshot()
    assert counts.alerts_not_sent >= 1  # the raised alert ("online" holds the outbox)
    assert counts.statuses_not_sent >= 1  # statuses are refused first, and counted apart
    assert counts.alerts == {}
    assert counts.processed == 3
