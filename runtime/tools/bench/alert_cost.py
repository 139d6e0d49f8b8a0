"""Section 2, the alert flood's own limit: the service's CPU per message when every message alerts.

In process, one core: decode_samples + Engine.process with the alert flood's policy (every
scored step raises or updates an alert) + Publisher.outcome into a bus that takes every
publication at once (no network). Batches of `batch` messages, one per stream, round-robin. The
inverse is the most messages per second a service can answer with an alert each, before paho
and the broker: above it, publish → alert latency is queueing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from runtime.engine.types import Message
from runtime.ingest.payload import decode_samples
from runtime.mqtt.protocol import BusCounts
from runtime.mqtt.topics import OutputTopics
from runtime.ops.counts import Counts
from runtime.service.publisher import Publisher
from runtime.tools.bench.engines import open_engine
from runtime.tools.bench.latency import EVERY_STEP_ALERTS
from runtime.tools.bench.workload import Workload, stream_names

__all__ = ["AlertCost", "measure_alert_cost"]


@dataclass(frozen=True)
class AlertCost:
    streams: int
    batch: int
    messages: int
    us_per_message: float
    """decode + step + every alert built, encoded and handed to the (null) bus."""
    max_msg_per_s: float
    alerts: int


class _NullBus:
    """Takes every publication at once: what is measured is the service's side only."""

    problem = None
    bulk_room = 1 << 30

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False, urgent: bool = False) -> bool:
        return True

    def snapshot(self) -> BusCounts:
        return BusCounts()


def measure_alert_cost(artifact: Path, *, streams: int = 1000, batch: int = 20, rounds: int = 3) -> AlertCost:
    bench = open_engine(artifact, alerts=EVERY_STEP_ALERTS, threshold=-1.0)
    publisher = Publisher(_NullBus(), OutputTopics("bench"), qos=1)  # type: ignore[arg-type]
    workload, names = Workload(), stream_names(streams, prefix="alert-cost/")
    layout, limits, engine = bench.layout, bench.limits, bench.engine
    seconds, alerts, counts = 0.0, 0, Counts()
    for k in range(rounds + 2):
        if k == 2:  # every stream scored from here on
            seconds, alerts = 0.0, 0
        for start in range(0, streams, batch):
            payloads = [workload.payload(i, k) for i in range(start, min(streams, start + batch))]
            t0 = time.perf_counter()
            messages = []
            for i, payload in enumerate(payloads, start):
                values, seq, ts = decode_samples(payload, layout, limits)
                messages.append(Message(names[i], values, seq, ts))
            for outcome in engine.process(messages):
                publisher.outcome(outcome, counts)
                alerts += len(outcome.alerts)
            seconds += time.perf_counter() - t0
    per = seconds / (rounds * streams) * 1e6
    return AlertCost(streams, batch, rounds * streams, per, 1e6 / per, alerts)
