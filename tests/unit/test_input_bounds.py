"""Bounds on what one publisher can do to a stream (issue 12), through the service on the
in-memory bus: a forged seq jump, a reset storm, an implausible ts.

Before: one message with seq = last + 1000 made the next real samples drop as out-of-order; every
reset command applied; a ts up to the year 5138 was accepted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.schema import BaselineConfig, ModelConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.mqtt.fake import FakeBus
from runtime.service import Service
from tests.support.core_artifacts import session, write_variant
from tests.support.onnx_artifacts import write_lstm_artifact
from tests.support.service_helpers import gateway_config

GOOD = [0.1, 0.2, 0.3, 0.4]
TOPIC = "plant/a/telemetry"


@dataclass(frozen=True)
class _Address:
    host: str = "127.0.0.1"
    port: int = 1


def _service(tmp_path: Path, **rt: object) -> tuple[Service, FakeBus]:
    artifact = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1e6)
    service = Service(gateway_config(_Address(), artifact, **rt), bus_factory=FakeBus)  # type: ignore[arg-type]
    assert isinstance(service.bus, FakeBus)
    service.bus.start()
    return service, service.bus


def _run(service: Service) -> None:
    service.worker.process(service.queue.get_batch(10_000, 0, 0.1))


def _send(bus: FakeBus, seq: int, **extra: object) -> None:
    bus.deliver(TOPIC, json.dumps({"seq": seq, "values": GOOD, **extra}).encode())


def test_a_forged_seq_jump_is_refused_and_the_real_samples_go_on(tmp_path: Path) -> None:
    service, bus = _service(tmp_path)
    for seq in range(10):
        _send(bus, seq)
    _send(bus, 9 + 1000)  # forged: 1,000 ahead
    for seq in range(10, 40):
        _send(bus, seq)
    _run(service)
    counts = service.tally.snapshot()
    assert counts.rejected == {"seq-jump": 1}
    assert counts.processed == 40
    assert counts.skipped == {}
    assert counts.out_of_order_samples == 0


def test_a_real_jump_is_confirmed_by_the_next_message_and_counted_as_a_gap(tmp_path: Path) -> None:
    service, bus = _service(tmp_path)
    for seq in (0, 1, 5000, 5001, 5002):  # the sensor skipped ahead: one message lost to the check
        _send(bus, seq)
    _run(service)
    counts = service.tally.snapshot()
    assert counts.rejected == {"seq-jump": 1}
    assert counts.processed == 4
    assert counts.gaps == 1
    assert counts.seq_gap_samples == 5001 - 1 - 1  # seqs 2..5000 never stepped (5000 was refused)


def test_small_gaps_count_their_missing_samples(tmp_path: Path) -> None:
    service, bus = _service(tmp_path, max_seq_jump=None)
    for seq in (0, 3, 10, 2000):
        _send(bus, seq)
    _run(service)
    counts = service.tally.snapshot()
    assert counts.rejected == {}
    assert (counts.gaps, counts.seq_gap_samples) == (3, 2 + 6 + 1989)


def test_resets_closer_than_the_interval_are_rejected_and_counted(tmp_path: Path) -> None:
    service, bus = _service(tmp_path, reset_min_interval_s=60.0)
    _send(bus, 0)
    for _ in range(5):
        bus.deliver("edgewatch/control/a/reset", b"")
    bus.deliver("edgewatch/control/b/reset", b"")  # another stream has its own budget
    _run(service)
    counts = service.tally.snapshot()
    assert counts.rejected == {"reset-rate": 4}
    assert counts.resets == 1  # b is unknown: accepted by the limiter, ignored by the engines


def test_implausible_ts_is_rejected_with_its_reason(tmp_path: Path) -> None:
    service, bus = _service(tmp_path)
    now = time.time()
    _send(bus, 0, ts=now)
    _send(bus, 1, ts=now + 3600)  # a sensor clock an hour ahead (time zone): accepted
    _send(bus, 2, ts=9.9e10)  # year ~5100: was accepted
    _send(bus, 3, ts=now + 2 * 86400)
    _send(bus, 4, ts=123456.0)  # 1970
    bus.deliver(TOPIC, json.dumps({"seq": 5, "ts": [now, 1.0], "values": [GOOD, GOOD]}).encode())
    _run(service)
    counts = service.tally.snapshot()
    assert counts.rejected == {"ts-range": 4}
    assert counts.processed == 2
    relaxed, relaxed_bus = _service(tmp_path / "relaxed", max_ts_future_s=None)
    _send(relaxed_bus, 0, ts=9.9e10)
    _run(relaxed)
    assert relaxed.tally.snapshot().rejected == {}


def test_a_stream_restored_after_a_restart_may_jump_ahead_once(tmp_path: Path) -> None:
    """Samples acked after the last checkpoint make the first seq after a restart jump far ahead:
    expected, so not refused (the stream re-warms, counted in `rewarming`)."""
    artifact = write_variant(tmp_path, threshold=1.0)
    model = ModelConfig(path=artifact.directory, target="cpu", baseline=BaselineConfig(learn_steps=0))

    def engine() -> Engine:
        return Engine(artifact, session(artifact), model, name="m", max_seq_jump=64)

    def msg(seq: int) -> Message:
        return Message("s", np.zeros((1, 4), np.float32), seq, None)

    before = engine()
    before.process([msg(0), msg(1)])
    after = engine()
    streams, columns = before.store.export()
    after.store.restore(streams, columns, now=0.0)
    after.resume(streams)
    assert [o.status for o in after.process([msg(900), msg(901)])] == ["processed", "processed"]
    assert before.process([msg(900)])[0].status == "seq-jump"  # no restart in between: refused
