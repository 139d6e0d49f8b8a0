"""Fault (c): 5,000 hostile publications mixed into 5,000 valid messages of 20 streams.

Hostile payloads go to the valid streams' own topics (they must not touch those streams'
state); hostile topics are the ones a client can actually publish (no + or #: paho and the
broker refuse them; a topic that is not UTF-8 makes mosquitto drop the client, so it cannot
reach a subscriber): a `$` level inside the topic, `..` and empty levels, a 300-byte level, more
levels than the `#` filter allows, a `$`-prefixed first level (never delivered to a `plant/...`
or `#` subscription), and control topics (unknown command, retained reset).

Expected: no crash and no handler error; every reject counted under the reason it was sent
for, exactly (`received`, `processed` and `rejected{reason}` compared with what was sent);
the valid streams' outputs, scores and alerts equal a clean run of the valid messages alone.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import AlertPolicy
from runtime.engine.types import Outcome
from runtime.service import Service
from runtime.tools.local_broker import Broker
from tests.support.fault_helpers import reference_run, report
from tests.support.fault_traffic import ReliablePublisher, stream_items, topic
from tests.support.service_helpers import gateway_config, started, wait_counters

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, SEQS, FAULTY = 20, 250, 4  # 5,000 valid messages
RATE = 1000.0
POLICY = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3)
DEEP = b'{"values":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DIGITS = b'{"values":[' + b"7" * 5000 + b",1,2]}"
OVERSIZE = b'{"values":[1,2,3],"pad":"' + b"x" * 300_000 + b'"}'
MANY = json.dumps({"values": [[1, 2, 3]] * 300}).encode()
VALID = b'{"values":[1,2,3]}'

# (count, reason or None when never delivered, topic kind, payload)
HOSTILE: list[tuple[int, str | None, str, bytes]] = [
    (400, "non-finite", "stream", b'{"seq":1,"values":[NaN,1,2]}'),
    (300, "non-finite", "stream", b'{"values":[Infinity,1,2]}'),
    (100, "non-finite", "stream", b'{"values":[-Infinity,1,2]}'),
    (200, "non-finite", "stream", b'{"values":[1e39,1,2]}'),  # beyond float32
    (300, "bad-number", "stream", DIGITS),  # a 5,000-digit number
    (20, "too-deep", "stream", DEEP),  # 100,000-deep nesting (200 kB)
    (280, "too-deep", "stream", b'{"values":[[[[[[[[[1]]]]]]]]]}'),
    (200, "wrong-arity", "stream", b'{"values":[1,2]}'),
    (200, "wrong-arity", "stream", b'{"values":[1,2,3,4]}'),
    (20, "too-large", "stream", OVERSIZE),  # 300 kB over the 256 kB limit
    (300, "not-utf8", "stream", b'{"values":[1,2,3],"x":"\xff\xfe"}'),
    (400, "duplicate-key", "stream", b'{"values":[1,2,3],"values":[1,2,3]}'),
    (200, "not-json", "stream", b'{"values":[1,2,3]'),
    (100, "not-json", "stream", b""),
    (150, "bad-structure", "stream", b"[1,2,3]"),
    (150, "bad-structure", "stream", b'{"values":[1,2,3],"sequence":3}'),
    (200, "bad-value", "stream", b'{"values":[true,1,2]}'),
    (200, "bad-seq", "stream", b'{"seq":-1,"values":[1,2,3]}'),
    (100, "bad-ts", "stream", b'{"ts":1.7e12,"values":[1,2,3]}'),  # milliseconds
    (100, "ts-range", "stream", b'{"ts":9.9e10,"values":[1,2,3]}'),  # year ~5100: was accepted
    (100, "ts-range", "stream", b'{"ts":86400,"values":[1,2,3]}'),  # 1970-01-02: before 2000
    (50, "too-many-samples", "stream", MANY),
    (100, "unknown-feature", "stream", b'{"values":{"f0":1,"f1":2,"zz":3}}'),
    (100, "missing-feature", "stream", b'{"values":{"f0":1,"f1":2}}'),
    (150, "stream-id", "plant/$SYS/telemetry", VALID),
    (150, "stream-id", "plant/../telemetry", VALID),
    (50, "stream-id", "plant//telemetry", VALID),
    (150, "stream-id", "plant/" + "x" * 300 + "/telemetry", VALID),
    (150, "stream-id", "site/" + "/".join("abcdefghi"), VALID),  # 9 levels under a # filter (8 allowed)
    (40, "control-unknown", "edgewatch/control/m001/explode", b""),
    (20, "control-retained", "edgewatch/control/m001/reset|retain", b""),
    (20, None, "$plant/m001/telemetry", VALID),  # $-topics never match + or # at the first level
]


class Hook:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_stream: dict[str, list[Outcome]] = {}

    def __call__(self, _model: str, outcome: Outcome) -> None:
        with self.lock:
            self.by_stream.setdefault(outcome.message.stream, []).append(outcome)


def _hostile_items(rng: random.Random) -> list[tuple[str, bytes, bool]]:
    items = []
    for count, _reason, kind, data in HOSTILE:
        for _ in range(count):
            if kind == "stream":
                items.append((topic(rng.randrange(STREAMS)), data, False))
            else:
                name, _, flag = kind.partition("|")
                items.append((name, data, flag == "retain"))
    return items


def test_5000_hostile_publications_are_counted_exactly_and_change_no_valid_stream(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started_at = time.monotonic()
    from tests.support.onnx_artifacts import write_persistence_artifact

    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    rng = random.Random(5)
    valid = [(t, p, False) for t, p in stream_items(STREAMS, range(SEQS), FAULTY)]
    hostile = _hostile_items(rng)
    assert len(hostile) == 5000
    mixed = list(valid)
    for item in hostile:  # random places, the valid messages keep their order
        mixed.insert(rng.randrange(len(mixed) + 1), item)
    hook = Hook()
    config = gateway_config(
        broker, art, topics=("plant/+/telemetry", "site/#"), alerts=POLICY, max_payload_bytes=262_144
    )
    service = started(Service(config, outcome_hook=hook))
    publisher = ReliablePublisher(broker.host, broker.port, "fault-c-pub")
    try:
        seconds = publisher.publish_paced(mixed, RATE)
        publisher.confirm_all(60)
        delivered = len(valid) + sum(n for n, reason, _, _ in HOSTILE if reason and not reason.startswith("control"))
        wait_counters(service, lambda c: c.received == delivered and c.processed == len(valid), timeout=60)
        time.sleep(0.5)  # anything more (there must be nothing) would be counted by now
        counters = service.tally.snapshot()
        bus = service.bus.snapshot()
        alive = service.health()
    finally:
        publisher.close()
        service.stop()
    expected: Counter[str] = Counter()
    for count, reason, _, _ in HOSTILE:
        if reason is not None:
            expected[reason] += count
    reference = reference_run(art, POLICY, STREAMS, range(SEQS), FAULTY)
    got_alerts: set[tuple[str, str]] = set()
    for s in range(STREAMS):
        outcomes = hook.by_stream[f"m{s:03d}"]
        assert [o.status for o in outcomes] == ["processed"] * SEQS
        np.testing.assert_array_equal(np.concatenate([o.outputs for o in outcomes]), reference.outputs[f"m{s:03d}"])
        np.testing.assert_array_equal(np.concatenate([o.scores for o in outcomes]), reference.scores[f"m{s:03d}"])
        got_alerts |= {(a.id, a.state) for o in outcomes for a in o.alerts}
    reject_lines = [r for r in caplog.records if "rejected a message" in r.getMessage()]
    report(
        tmp_path,
        "c_hostile",
        valid_messages=len(valid),
        hostile_publications=len(hostile),
        hostile_delivered=sum(expected.values()),
        hostile_not_delivered=len(hostile) - sum(expected.values()),
        rejected_by_reason=dict(sorted(counters.rejected.items())),
        received=counters.received,
        processed=counters.processed,
        handler_errors=bus.handler_errors,
        republished=publisher.republished,
        reject_log_lines=len(reject_lines),
        alerts=len(got_alerts),
        publish_seconds=round(seconds, 1),
        seconds=round(time.monotonic() - started_at, 1),
    )
    assert alive == (True, "ready")
    assert bus.handler_errors == 0
    assert publisher.republished == 0
    assert counters.rejected == dict(expected)
    assert counters.processed == len(valid)
    assert counters.skipped == {}
    assert counters.dropped == {}
    assert got_alerts == reference.alerts
    assert len(reference.alerts) == 2 * FAULTY
    assert len(reject_lines) <= 2 * len(expected)  # a flood is summarized, not logged per message
    assert set(hook.by_stream) == {f"m{s:03d}" for s in range(STREAMS)}  # no hostile topic made a stream
