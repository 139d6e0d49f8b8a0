"""Exact service counters: the one source for the Prometheus endpoint and the `<prefix>/stats` message.

Two threads count (paho's network thread: received, rejected, dropped; the worker: the rest),
so every change goes through one lock. Prometheus reads a snapshot at scrape time instead of
keeping float copies that could drift from the stats message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

__all__ = ["CounterSnapshot", "ServiceCounters"]


@dataclass(slots=True)
class CounterSnapshot:
    received: int = 0
    """Input messages delivered by the broker (control messages excluded)."""
    processed: int = 0
    """Messages stepped through a model."""
    steps: int = 0
    """Samples stepped (a message can carry several)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """By reason (runtime.ingest.payload.REASONS, "stream-id", "topic-not-utf8", "unrouted", "engine-error")."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Valid but not stepped: "duplicate", "out-of-order"."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Dropped by the input queue policy: "drop-oldest", "drop-newest"."""
    alerts: dict[str, int] = field(default_factory=dict)
    """Alert messages published, by state: "raised", "update", "cleared"."""
    alerts_not_sent: int = 0
    """Alerts or statuses the bounded outbox refused (also in the bus's dropped_outgoing)."""
    resets: int = 0
    evicted: int = 0
    batches: int = 0
    restored: int = 0
    """Streams given their state back: from a checkpoint at start, or carried into a reloaded model."""
    rewarming: int = 0
    """Streams whose model state was lost and that warm up from zero: first seen with seq > 0
    (mid-sequence, no state held for them), or carried into a reloaded model of other state shapes."""
    reloads: dict[str, int] = field(default_factory=dict)
    """SIGHUP reloads by result: "ok" (applied, or nothing changed), "failed" (the old config serves on)."""

    def as_json_dict(self) -> dict[str, int | dict[str, int]]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ServiceCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = CounterSnapshot()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._c, name, getattr(self._c, name) + n)

    def add_reason(self, name: str, reason: str, n: int = 1) -> None:
        with self._lock:
            table: dict[str, int] = getattr(self._c, name)
            table[reason] = table.get(reason, 0) + n

    def merge(self, delta: CounterSnapshot) -> None:
        """Add a batch's worth of counts under one lock (the worker counts per batch, not per message)."""
        with self._lock:
            for f in fields(CounterSnapshot):
                mine, theirs = getattr(self._c, f.name), getattr(delta, f.name)
                if isinstance(theirs, dict):
                    for key, n in theirs.items():
                        mine[key] = mine.get(key, 0) + n
                elif theirs:
                    setattr(self._c, f.name, mine + theirs)

    def snapshot(self) -> CounterSnapshot:
        with self._lock:
            c = self._c
            return CounterSnapshot(
                **{
                    f.name: dict(value) if isinstance(value := getattr(c, f.name), dict) else value
                    for f in fields(CounterSnapshot)
                }
            )
