"""Which samples of a batch of Messages run, in which ORT call: the engine's plan, vectorized.

Per message (arrival order): its stream's slot (or refused, at max_streams); seq deduplication
— samples at or before the stream's last seq are dropped, so a message overlapping it loses only
its seen prefix; gap detection (a seq jump, a ts or arrival-time gap beyond max_gap_s, a seq
restart) and whether it resets the model state.

A seq more than `max_seq_jump` ahead of the stream's last one is not trusted on its own word: the
message is refused (verdict SEQ_JUMP, counted as rejected "seq-jump") and the stream's seq stays
where it was, so one forged message cannot make the real samples after it look late. Its last
seq is remembered (column PENDING_SEQ): a next message that continues from it (at most
`max_seq_jump` further on) confirms the jump — a sensor that really skipped ahead loses one
message — and is accepted as a gap; any other accepted message forgets it. The kept samples become *units* — the message
(or the pieces between gaps inside it), or one unit per sample for graphs that take one step per
call — and a stream's k-th unit goes to round k: a stream appears once per ORT call, in order.
Each round makes one call per distinct unit length T.

A stream's several messages in one batch are admitted round by round (its k-th message in round k),
so each round is a vectorized pass over distinct streams; the common batch, one message per stream,
is a single pass whose only per-message Python work is reading the messages' fields.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from operator import attrgetter
from typing import Literal

import numpy as np

from edge_config.errors import BatchError
from runtime.engine.streams import NO_SEQ, StateStore
from runtime.engine.types import Message, OutcomeStatus
from runtime.ops.counts import Counts

__all__ = ["PENDING_SEQ", "GapPolicy", "Plan", "Verdict", "add_columns", "admit"]


class Verdict(IntEnum):
    """What admission decided for a message (int8 codes in Plan.status, for vectorized work)."""

    KEEP = 0
    """Some samples run (its seen prefix, if any, was dropped)."""
    DUPLICATE = 1
    OUT_OF_ORDER = 2
    REFUSED = 3
    SEQ_JUMP = 4
    """seq too far ahead of the stream's last one, not (yet) confirmed by a following message."""

    @property
    def status(self) -> OutcomeStatus:
        return _STATUS[self]


_STATUS: dict[Verdict, OutcomeStatus] = {
    Verdict.KEEP: "processed",
    Verdict.DUPLICATE: "duplicate",
    Verdict.OUT_OF_ORDER: "out-of-order",
    Verdict.REFUSED: "refused",
    Verdict.SEQ_JUMP: "seq-jump",
}
KEEP, DUPLICATE, OUT_OF_ORDER, REFUSED = Verdict.KEEP, Verdict.DUPLICATE, Verdict.OUT_OF_ORDER, Verdict.REFUSED
SEQ_JUMP = Verdict.SEQ_JUMP
# The same codes as plain ints for numpy: an IntEnum operand costs numpy ~3 µs of attribute probing.
_KEEP, _DUPLICATE, _OUT_OF_ORDER, _REFUSED, _SEQ_JUMP = (int(v) for v in Verdict)
PENDING_SEQ = "seq.pending"
"""Stream column (int64, NO_SEQ: none): last seq of a refused jump, confirmed by a message continuing it."""
_WINDOW_BITS = 64  # seqs remembered behind the last one, to tell a duplicate from a late sample
_ALL_BITS = np.uint64((1 << _WINDOW_BITS) - 1)
_U1 = np.uint64(1)


@dataclass(frozen=True, slots=True)
class GapPolicy:
    """ModelConfig.on_gap / max_gap_s (seconds), and the engine's seq restart window (samples)."""

    on_gap: Literal["ignore", "reset"] = "ignore"
    max_gap_s: float | None = None
    seq_restart_window: int | None = 1024
    """A seq this far behind the stream's last one is a restarted sensor counter (reset, accept)."""
    max_seq_jump: int | None = None
    """A seq more than this far ahead of the stream's last one is refused unless the next message
    continues from it (see the module doc); None: any jump is a gap."""


@dataclass(slots=True)
class Plan:
    """The batch's samples and the ORT calls to run them in; unit arrays are sorted by (message, start)."""

    values: np.ndarray
    """float32 [sum of T, F]: every message's samples, concatenated in message order."""
    offsets: np.ndarray
    """int64 [M]: row in `values` of each message's first sample."""
    status: np.ndarray
    """int8 [M]: a Verdict per message."""
    unit_slot: np.ndarray
    """int64 [U]: the unit's stream slot."""
    unit_message: np.ndarray
    """int64 [U]: the unit's message (index in the batch)."""
    unit_start: np.ndarray
    unit_stop: np.ndarray
    """int64 [U]: the unit is samples [start, stop) of its message."""
    unit_reset: np.ndarray
    """bool [U]: reset the stream's model state before this unit."""
    unit_last: np.ndarray
    """bool [U]: the message's last unit (its stream status is reported after it)."""
    calls: list[np.ndarray]
    """Unit indices of each ORT call, in execution order (round, then T); same T within a call."""
    counts: Counts = field(default_factory=Counts)
    """What admission dropped and found: samples skipped, gaps, seq restarts, model resets."""


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key (0 for the first)."""
    if len(keys) < 2 or len(set(keys.tolist())) == len(keys):  # distinct keys: the common batch
        return np.zeros(len(keys), dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    positions = np.arange(len(keys))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = positions - np.maximum.accumulate(np.where(first, positions, 0))
    return rank


_stream, _values_of, _received, _seq = (attrgetter(name) for name in ("stream", "values", "received", "seq"))


def _shape(values: np.ndarray | list[float]) -> tuple[int, ...]:
    return (1, len(values)) if type(values) is list else np.shape(values)


def _values(messages: Sequence[Message], features: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values float32 [sum of T, F], T int64 [M], whether every message is one sample)."""
    arrays = list(map(_values_of, messages))
    single = False
    try:
        if type(arrays[0]) is list and all(type(a) is list for a in arrays):
            # The intake's single samples (lists of F floats): the whole batch in one numpy call.
            values = np.array(arrays, dtype=np.float32)
            counts = np.ones(len(arrays), dtype=np.int64)
            single = True
        else:
            values = np.concatenate(
                [np.array([a], dtype=np.float32) if type(a) is list else a for a in arrays], dtype=np.float32
            )
            counts = np.fromiter((1 if type(a) is list else len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    except ValueError as exc:
        raise BatchError(f"message values must be float32 [T, {features}] arrays: {exc}") from None
    if values.ndim != 2 or values.shape[1] != features or np.count_nonzero(counts) < len(counts):
        bad = next(
            m
            for m in messages
            if len(_shape(m.values)) != 2 or _shape(m.values)[1:] != (features,) or not len(m.values)
        )
        raise BatchError(f"stream {bad.stream!r}: values {_shape(bad.values)}, expected [T>=1, {features}]")
    return values, counts, single and len(values) == len(arrays)


def _seqs(messages: Sequence[Message]) -> tuple[np.ndarray, bool]:
    """(seq int64 [M], NO_SEQ where none; whether every message has one)."""
    seqs = list(map(_seq, messages))
    if None in seqs:
        return np.array([NO_SEQ if s is None else s for s in seqs], dtype=np.int64), False
    return np.array(seqs, dtype=np.int64), True


class _Admission:
    """One batch's admission: per-message arrays, filled round by round."""

    def __init__(
        self, messages: Sequence[Message], store: StateStore, policy: GapPolicy, features: int, counts: Counts
    ) -> None:
        self.messages, self.store, self.policy = messages, store, policy
        self.counts = counts
        self.values, self.sizes, single = _values(messages, features)
        n = len(messages)
        self.everyone = np.arange(n)
        if single:  # one sample each: message i's sample is row i
            self.offsets = self.everyone
        else:
            self.offsets = np.zeros(n, dtype=np.int64)
            np.cumsum(self.sizes[:-1], out=self.offsets[1:])
        self.received = np.fromiter(map(_received, messages), dtype=np.float64, count=n)
        self.slots = store.open_many(list(map(_stream, messages)), self.received)
        self.seqs, self.all_seq = _seqs(messages)
        self.valid = self.slots >= 0
        self.all_valid = np.count_nonzero(self.valid) == n
        self.status = np.zeros(n, dtype=np.int8)
        if not self.all_valid:
            self.status[~self.valid] = _REFUSED
        self.rank = _rank_within(self.slots)
        self.start = np.zeros(n, dtype=np.int64)
        self.gap = np.zeros(n, dtype=bool)
        self.restart = np.zeros(n, dtype=bool)
        if policy.max_gap_s is not None:  # ts is only needed to find time gaps
            self.ts_first = np.fromiter((np.nan if m.ts is None else m.ts[0] for m in messages), np.float64, n)
            self.ts_last = np.fromiter((np.nan if m.ts is None else m.ts[-1] for m in messages), np.float64, n)

    def run(self) -> None:
        rank = self.rank
        if self.all_valid and not np.count_nonzero(rank):  # the common batch: one round, every message
            rounds: list[np.ndarray] = [self.everyone]
        else:
            valid = self.valid
            rounds = [(valid & (rank == r)).nonzero()[0] for r in range(int(rank[valid].max(initial=-1)) + 1)]
        for rows in rounds:
            steady = self._sequence(rows if self.all_seq else rows[self.seqs[rows] != NO_SEQ])
            kept = rows if steady else rows[self.status[rows] == _KEEP]
            if self.policy.max_gap_s is not None:
                self._time_gaps(kept, self.policy.max_gap_s)
            self.store.last_seen[self.slots[kept]] = self.received[kept]

    def _sequence(self, rows: np.ndarray) -> bool:
        """Deduplicate rows of distinct streams by seq; update their last seq and seen-window.
        True: the steady state (each row the next single sample of its stream: nothing dropped)."""
        if rows.size == 0:
            return False
        store, slots = self.store, self.slots[rows]
        seq, size = self.seqs[rows], self.sizes[rows]
        last, window = store.last_seq[slots], store.seq_window[slots]
        pending = store.column(PENDING_SEQ)
        n = len(rows)
        if (
            np.count_nonzero(seq - last == 1) == n
            and np.count_nonzero(size == 1) == n
            and not np.count_nonzero(last == NO_SEQ)
        ):
            # The steady state: every stream's next single sample. Nothing dropped, no gap.
            store.seq_window[slots] = (window << _U1) | _U1
            store.last_seq[slots] = seq
            pending[slots] = NO_SEQ
            return True
        known = last != NO_SEQ
        jumped = self._jumps(rows, known, seq, last, size, pending[slots])
        if self.policy.seq_restart_window is not None:
            restart = known & (last - seq > self.policy.seq_restart_window)  # no overflow: both >= 0
            if restart.any():
                self.restart[rows[restart]] = True
                self.counts.seq_restarts += int(restart.sum())
                known &= ~restart
                window[restart] = 0
        behind = known & (seq <= last)
        start = np.where(behind, np.minimum(size, last - seq + 1), 0)
        self.start[rows] = start
        gap = known & (seq - last > 1) & ~jumped
        self.gap[rows] = gap
        self.counts.seq_gap_samples += int((seq - last - 1)[gap].sum())
        unseen = np.zeros(len(rows), dtype=bool)
        for k in np.flatnonzero(behind):  # rare: tell duplicates from late samples, sample by sample
            window[k], unseen[k] = self._classify(int(seq[k]), int(start[k]), int(last[k]), int(window[k]))
        dropped = start == size
        self.status[rows[dropped]] = np.where(unseen[dropped], _OUT_OF_ORDER, _DUPLICATE)
        kept = ~dropped & ~jumped
        pending[slots[kept]] = NO_SEQ
        end = (seq + size - 1)[kept]
        shift = np.where(known, seq + size - 1 - last, _WINDOW_BITS)[kept].astype(np.uint64)
        fresh = np.minimum(size - start, _WINDOW_BITS)[kept].astype(np.uint64)
        shifted = np.where(shift >= _WINDOW_BITS, np.uint64(0), window[kept] << np.minimum(shift, np.uint64(63)))
        low_bits = (np.uint64(1) << np.minimum(fresh, np.uint64(63))) - np.uint64(1)
        ones = np.where(fresh >= _WINDOW_BITS, _ALL_BITS, low_bits)
        window[kept] = shifted | ones
        store.seq_window[slots] = window
        store.last_seq[slots[kept]] = end
        return False

    def _jumps(
        self,
        rows: np.ndarray,
        known: np.ndarray,
        seq: np.ndarray,
        last: np.ndarray,
        size: np.ndarray,
        pending: np.ndarray,
    ) -> np.ndarray:
        """Refuse the rows whose seq jumps more than max_seq_jump ahead, unless they continue a jump
        refused before (then the jump is confirmed: accepted as a gap). Returns the refused rows' mask."""
        bound = self.policy.max_seq_jump
        if bound is None:
            return np.zeros(len(rows), dtype=bool)
        jump: np.ndarray = known & (seq - last > bound)
        if not jump.any():
            return jump
        confirmed = jump & (pending != NO_SEQ) & (seq > pending) & (seq - pending <= bound)
        refused: np.ndarray = jump & ~confirmed
        self.store.column(PENDING_SEQ)[self.slots[rows[refused]]] = (seq + size - 1)[refused]
        self.status[rows[refused]] = _SEQ_JUMP
        return refused

    def _classify(self, seq: int, dropped: int, last: int, window: int) -> tuple[int, bool]:
        """Count a message's `dropped` first samples as duplicates (seq seen) or late (never seen).

        Returns the updated seen-window and whether any sample was late."""
        late = 0
        for s in range(seq, seq + dropped):
            back = last - s
            if back >= _WINDOW_BITS or not (window >> back) & 1:
                late += 1
                if back < _WINDOW_BITS:
                    window |= 1 << back  # a second copy of this late sample is a duplicate
        self.counts.out_of_order_samples += late
        self.counts.duplicate_samples += dropped - late
        return window, late > 0

    def _time_gaps(self, rows: np.ndarray, max_gap: float) -> None:
        """A gap: between the stream's last ts and the first kept one, or (no ts) between arrivals."""
        store, slots = self.store, self.slots[rows]
        first = self.ts_first[rows]
        for k in np.flatnonzero(self.start[rows] > 0):  # a dropped prefix: the first kept sample's ts
            ts = self.messages[int(rows[k])].ts
            if ts is not None:
                first[k] = ts[self.start[rows[k]]]
        last_ts = store.last_ts[slots]
        no_ts = np.isnan(first)
        by_ts = ~no_ts & ~np.isnan(last_ts) & (first - last_ts > max_gap)
        # Arrival times are on the monotonic clock: a wall-clock jump is never a gap.
        by_arrival = no_ts & (self.received[rows] - store.last_seen[slots] > max_gap)
        self.gap[rows] |= by_ts | by_arrival
        store.last_ts[slots] = self.ts_last[rows]

    def plan(self, stepwise: bool) -> Plan:
        irregular = np.count_nonzero(self.status) or np.count_nonzero(self.gap) or np.count_nonzero(self.restart)
        if not (stepwise or self.policy.max_gap_s is not None or irregular):
            return self._plan_whole_messages()
        keep = (self.status == _KEEP).nonzero()[0]
        reset_on_gap = self.policy.on_gap == "reset"
        gap = self.gap[keep]
        seg_reset = (gap & reset_on_gap) | self.restart[keep]
        self.counts.gaps += int(gap.sum())
        self.counts.model_resets += int(seg_reset.sum())
        seg_msg, seg_start, seg_stop = keep, self.start[keep], self.sizes[keep].copy()
        if self.policy.max_gap_s is not None:
            seg_msg, seg_start, seg_stop, seg_reset = self._inner_gaps(
                seg_msg, seg_start, seg_stop, seg_reset, reset_on_gap
            )
        seg_last = seg_stop == self.sizes[seg_msg]
        if stepwise:
            n = seg_stop - seg_start
            first = np.repeat(np.cumsum(n) - n, n)
            within = np.arange(int(n.sum())) - first
            unit_msg = np.repeat(seg_msg, n)
            unit_start = np.repeat(seg_start, n) + within
            unit_stop = unit_start + 1
            unit_reset = np.repeat(seg_reset, n) & (within == 0)
            unit_last = np.repeat(seg_last, n) & (within == np.repeat(n, n) - 1)
        else:
            unit_msg, unit_start, unit_stop, unit_reset, unit_last = seg_msg, seg_start, seg_stop, seg_reset, seg_last
        unit_slot = self.slots[unit_msg]
        return Plan(
            values=self.values,
            offsets=self.offsets,
            status=self.status,
            unit_slot=unit_slot,
            unit_message=unit_msg,
            unit_start=unit_start,
            unit_stop=unit_stop,
            unit_reset=unit_reset,
            unit_last=unit_last,
            calls=_calls(_rank_within(unit_slot), unit_stop - unit_start),
            counts=self.counts,
        )

    def _plan_whole_messages(self) -> Plan:
        """The common batch: every message kept whole, no gap: one unit per message."""
        n = len(self.messages)
        return Plan(
            values=self.values,
            offsets=self.offsets,
            status=self.status,
            unit_slot=self.slots,
            unit_message=self.everyone,
            unit_start=self.start,
            unit_stop=self.sizes,
            unit_reset=np.zeros(n, dtype=bool),
            unit_last=np.ones(n, dtype=bool),
            calls=_calls(self.rank, self.sizes),
            counts=self.counts,
        )

    def _inner_gaps(
        self, msg: np.ndarray, start: np.ndarray, stop: np.ndarray, reset: np.ndarray, reset_on_gap: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Time gaps between consecutive samples of one message: counted, and cut at when they reset."""
        max_gap = self.policy.max_gap_s
        extra: list[tuple[int, int, int]] = []
        for k in np.flatnonzero(stop - start > 1):
            i = int(msg[k])
            ts = self.messages[i].ts
            if ts is None:
                continue
            cuts = (int(start[k]) + 1 + np.flatnonzero(np.diff(ts[start[k] :]) > max_gap)).tolist()
            self.counts.gaps += len(cuts)
            if cuts and reset_on_gap:
                self.counts.model_resets += len(cuts)
                bounds = [*cuts, int(stop[k])]
                stop[k] = cuts[0]
                extra.extend((i, a, b) for a, b in itertools.pairwise(bounds))
        if not extra:
            return msg, start, stop, reset
        more = np.array(extra, dtype=np.int64).reshape(-1, 3)
        msg = np.concatenate([msg, more[:, 0]])
        start = np.concatenate([start, more[:, 1]])
        stop = np.concatenate([stop, more[:, 2]])
        reset = np.concatenate([reset, np.ones(len(more), dtype=bool)])
        order = np.lexsort((start, msg))
        return msg[order], start[order], stop[order], reset[order]


def _calls(rounds: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Unit indices per ORT call: grouped by (round, T), rounds in order."""
    if rounds.size == 0:
        return []
    if not np.count_nonzero(rounds) and np.count_nonzero(lengths != lengths[0]) == 0:  # the common batch: one call
        return [np.arange(rounds.size)]
    order = np.lexsort((lengths, rounds))
    r, t = rounds[order], lengths[order]
    cuts = np.flatnonzero((r[1:] != r[:-1]) | (t[1:] != t[:-1])) + 1
    return np.split(order, cuts)


def add_columns(store: StateStore) -> None:
    """The stream columns admission keeps beyond the store's built-in ones (once per store)."""
    store.add_column(PENDING_SEQ, (), np.int64, NO_SEQ, scope="stream", portable=False)


def admit(
    messages: Sequence[Message],
    store: StateStore,
    policy: GapPolicy,
    *,
    features: int,
    stepwise: bool,
    counts: Counts | None = None,
) -> Plan:
    """Plan a non-empty batch: open slots, deduplicate, find gaps, split into units and calls.

    Updates the store's per-stream seq/ts/arrival tracking (not the model state: the engine
    resets and steps it while running the plan). counts: where to add what admission counts
    (Plan.counts is that object; default a fresh Counts)."""
    admission = _Admission(messages, store, policy, features, Counts() if counts is None else counts)
    admission.run()
    return admission.plan(stepwise)
