"""What happened, counted exactly: one `Counts` value type, and the `Tally` that sums them.

Everything that counts fills a `Counts`: the intake on paho's network thread (received,
rejected, dropped), the engine per `process` call (steps, ORT calls, what admission skipped,
gaps), the publisher (alerts sent or not), the worker (batches, resets, evictions, reloads).
The worker merges one `Counts` per batch into the service's `Tally`; the Prometheus endpoint
and the `<prefix>/stats` message both read `Tally.snapshot()` (runtime.ops.metrics maps it to
metric names in one place), so they never disagree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = ["CountName", "Counts", "ReasonTable", "Tally"]

CountName = Literal[
    "received",
    "processed",
    "steps",
    "ort_calls",
    "batches",
    "duplicate_samples",
    "out_of_order_samples",
    "gaps",
    "seq_gap_samples",
    "stale",
    "seq_restarts",
    "model_resets",
    "non_finite_resets",
    "clipped_samples",
    "resets",
    "evicted",
    "restored",
    "rewarming",
    "baselines_learned",
    "baselines_out_of_range",
    "level_shifts",
    "alerts_not_sent",
    "statuses_not_sent",
    "statuses_resent",
]
ReasonTable = Literal["rejected", "skipped", "dropped", "alerts", "reloads"]


@dataclass(slots=True)
class Counts:
    """Exact counts of one batch, one engine call, or since start (a Tally's snapshot)."""

    received: int = 0
    """Input messages delivered by the broker (control messages excluded)."""
    processed: int = 0
    """Messages stepped through a model."""
    steps: int = 0
    """Samples stepped (a message can carry several)."""
    ort_calls: int = 0
    """ONNX Runtime calls (one per distinct message length per round of a batch)."""
    batches: int = 0
    """Batches the worker took from the input queue."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Messages rejected, by reason (runtime.ingest.payload.REASONS, "stream-id", "topic-not-utf8",
    "unrouted", "control-*", "max-streams", "seq-jump", "reset-rate", "ts-range", "engine-error", "handler-error")."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Valid messages not stepped: "duplicate", "out-of-order" (every sample seen or too late)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Dropped by the input queue policy: "drop-oldest", "drop-newest"."""
    duplicate_samples: int = 0
    """Samples at or before their stream's last seq, already stepped (redeliveries)."""
    out_of_order_samples: int = 0
    """Samples older than their stream's last seq that were never stepped (late: dropped)."""
    gaps: int = 0
    """Sequence or time gaps found between or inside messages."""
    stale: int = 0
    """Times a stream's retained status turned `stale` (runtime.stale_after_s without a stepped sample)."""
    seq_gap_samples: int = 0
    """Samples missing in accepted seq gaps (seq - last - 1 summed): what the sensor skipped or the
    network lost."""
    seq_restarts: int = 0
    """A stream's seq went far back: its sensor restarted its counter (state reset, accepted)."""
    model_resets: int = 0
    """Streams whose model state was zeroed: gaps with on_gap=reset, seq restarts, reset commands,
    non-finite state."""
    non_finite_resets: int = 0
    """Streams whose model state, output or score went non-finite: state zeroed, warming up again."""
    clipped_samples: int = 0
    """Samples with a normalized value beyond ±1,000 std, clipped to it (docs/INPUT.md)."""
    resets: int = 0
    """Reset commands applied (the control topic)."""
    evicted: int = 0
    """Streams forgotten after the idle TTL."""
    restored: int = 0
    """Streams given their state back: from a checkpoint at start, or carried into a reloaded model."""
    rewarming: int = 0
    """Streams whose model state was lost and that warm up from zero: first seen with seq > 0
    (mid-sequence, no state held for them), a checkpoint older than their next seq, or carried
    into a reloaded model that cannot take their state."""
    baselines_learned: int = 0
    """Streams that finished learning their own baseline (runtime.engine.baseline)."""
    baselines_out_of_range: int = 0
    """Streams whose baseline came out far above the calibration data's: not learned as normal."""
    level_shifts: int = 0
    """Steps at which a stream's CUSUM against its own level crossed h (a persistent shift)."""
    alerts: dict[str, int] = field(default_factory=dict)
    """Alert messages handed to the MQTT client, by state: "raised", "update", "cleared"."""
    alerts_not_sent: int = 0
    """Alerts the bounded outbox refused (also in the bus's dropped_outgoing)."""
    statuses_not_sent: int = 0
    """Retained statuses (and eviction clears) the outbox refused: kept as the stream's latest and
    published again once the outbox has room (statuses_resent)."""
    statuses_resent: int = 0
    """Retained statuses published again: refused ones once the outbox had room, and every known
    stream's after the broker lost our session (its retained messages may be gone too)."""
    reloads: dict[str, int] = field(default_factory=dict)
    """SIGHUP reloads by result: "ok" (applied, or nothing changed), "failed" (the old config serves on)."""

    def add(self, name: CountName, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def add_reason(self, table: ReasonTable, reason: str, n: int = 1) -> None:
        counts: dict[str, int] = getattr(self, table)
        counts[reason] = counts.get(reason, 0) + n

    def merge(self, other: Counts) -> None:
        """Add every count of `other` to this one (runs a few times per batch: the field names
        are looked up once, below the class, not through dataclasses.fields each time)."""
        for name in _NUMBERS:
            theirs = getattr(other, name)
            if theirs:
                setattr(self, name, getattr(self, name) + theirs)
        for name in _TABLES:
            table: dict[str, int] = getattr(other, name)
            if table:
                mine: dict[str, int] = getattr(self, name)
                for key, n in table.items():
                    mine[key] = mine.get(key, 0) + n

    def copy(self) -> Counts:
        copied = Counts()
        copied.merge(self)
        return copied

    def as_json_dict(self) -> dict[str, int | dict[str, int]]:
        return {f.name: getattr(self, f.name) for f in fields(Counts)}


_TABLES = tuple(f.name for f in fields(Counts) if f.default_factory is dict)
"""The fields that count per reason or state (dict[str, int]); every other field is an int."""
_NUMBERS = tuple(f.name for f in fields(Counts) if f.name not in _TABLES)


class Tally:
    """Counts since start, shared by paho's network thread and the worker (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()

    def add(self, name: CountName, n: int = 1) -> None:
        with self._lock:
            self._counts.add(name, n)

    def add_reason(self, table: ReasonTable, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts.add_reason(table, reason, n)

    def merge(self, counts: Counts) -> None:
        """A batch's worth of counts under one lock (the worker counts per batch, not per message)."""
        with self._lock:
            self._counts.merge(counts)

    def snapshot(self) -> Counts:
        with self._lock:
            return self._counts.copy()
