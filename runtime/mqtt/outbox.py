"""The bus's bounded outbox: what paho holds until the broker confirms it, which publications it
still takes (alerts before statuses), how long it went without a confirmation, and its drops.

- Held: bytes and QoS per publication mid, from `publish()` until paho's on_publish (QoS 1: the
  PUBACK; QoS 0: written to the socket).
- Admission: an urgent publication (an alert, availability) may fill the whole outbox; any other
  (statuses, stats) only `1 - URGENT_SHARE` of it, so statuses are refused first and a flood of
  new streams cannot crowd out an alert (one once dropped all 20 real alerts).
- Progress: the last confirmation, or when the outbox last went from empty to holding something;
  the bus's liveness rule reads it (runtime.mqtt.bus).
- Drops: counted by the caller, and logged here at most once a minute (the first at once) with
  what was dropped since the last line.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from runtime.mqtt.protocol import OutboxLimits

__all__ = ["DropLog", "Outbox"]

log = logging.getLogger("edgewatch.bus")

_DROP_LOG_EVERY_S = 60.0


@dataclass(slots=True)
class Outbox:
    limits: OutboxLimits
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[int, tuple[int, int]] = field(default_factory=dict)  # mid → (bytes, qos)
    done_early: set[int] = field(default_factory=set)  # on_publish ran before publish() returned
    bytes: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    """time.monotonic() of the last confirmation, or of the last time the outbox became non-empty."""

    def admits(self, size: int, *, urgent: bool) -> bool:
        """Whether a publication of `size` bytes fits (paho itself bounds the QoS 1 message count)."""
        if urgent:
            return self.bytes + size <= self.limits.max_bytes
        messages, room = self.limits.bulk_room(len(self.pending), self.bytes)
        return messages >= 1 and room >= size

    def bulk_room(self) -> int:
        messages, room = self.limits.bulk_room(len(self.pending), self.bytes)
        return max(0, min(messages, room // 64))  # a status or an empty retained payload: ~64 bytes

    def add(self, mid: int, size: int, qos: int) -> None:
        with self.lock:
            if mid in self.done_early:
                self.done_early.discard(mid)
                return
            if not self.pending:
                self.progress_at = time.monotonic()
            self.pending[mid] = (size, qos)
            self.bytes += size

    def confirm(self, mid: int) -> None:
        """paho's on_publish for `mid`: the broker has it (QoS 1) or it was sent (QoS 0)."""
        with self.lock:
            self.progress_at = time.monotonic()
            entry = self.pending.pop(mid, None)
            if entry is None:
                self.done_early.add(mid)
            else:
                self.bytes -= entry[0]

    def restart_clock(self) -> None:
        """A new connection: paho resends what it holds, the wait for confirmations starts over."""
        with self.lock:
            self.progress_at = time.monotonic()

    def waiting(self, now: float) -> tuple[int, float]:
        """(publications held, seconds since the last progress)."""
        with self.lock:
            return len(self.pending), now - self.progress_at

    def forget_qos0(self) -> tuple[int, int]:
        """Drop QoS 0 entries (paho discards unsent QoS 0 packets on reconnect); return (count, bytes)."""
        with self.lock:
            lost = [mid for mid, (_, qos) in self.pending.items() if qos == 0]
            size = sum(self.pending.pop(mid)[0] for mid in lost)
            self.bytes -= size
            return len(lost), size


class DropLog:
    """One warning line for the first dropped publication, then at most one a minute saying how
    many were dropped since the last line (alerts and availability apart from statuses and stats)."""

    def __init__(self, limits: OutboxLimits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._urgent = self._bulk = 0
        self._since = time.monotonic()
        self._logged_at = -_DROP_LOG_EVERY_S

    def dropped(self, *, urgent: bool, held: int, held_bytes: int) -> None:
        with self._lock:
            if urgent:
                self._urgent += 1
            else:
                self._bulk += 1
        self.flush(held, held_bytes)

    def flush(self, held: int, held_bytes: int) -> None:
        """Log what was dropped since the last line, if a line is due (the bus's watch calls it)."""
        now = time.monotonic()
        with self._lock:
            if not (self._urgent or self._bulk) or now - self._logged_at < _DROP_LOG_EVERY_S:
                return
            urgent, bulk, since = self._urgent, self._bulk, self._since
            self._urgent = self._bulk = 0
            self._since = self._logged_at = now
        log.warning(
            "outbox full: %d alert/availability and %d status/stats publications dropped in the last %.0f s "
            "(holding %d publications, %d bytes; limits runtime.outgoing_max %d, outgoing_max_bytes %d; "
            "statuses are refused first; counted in edgewatch_outgoing_dropped_total)",
            urgent,
            bulk,
            now - since,
            held,
            held_bytes,
            self._limits.max_messages,
            self._limits.max_bytes,
        )
