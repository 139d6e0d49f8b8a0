"""Per-stream state in preallocated slabs: one slot per stream, one source of truth for its lifecycle.

Every per-stream quantity is a *column* of the store, indexed by slot: the recurrent state
slabs `[layers, capacity, hidden]` (slot axis 1, the graph's batch axis), the bookkeeping below,
and whatever the scorer and alert tracker register. Columns grow together (capacity by a
quarter, up to `max_streams`), and a slot handed to a new stream is reset in all of them at once, so
no module can forget to clear something when a slot is reused.

Three reset scopes:
- "model": the model state and what depends on it (h/c, steps since reset, the scorer's last
  prediction) — cleared by `reset_model` (a gap, a reset command) and on slot reuse;
- "baseline": what the stream learned of its own normal scores (runtime.engine.baseline) —
  survives gaps, cleared by `reset_baseline` (a reset command) and on slot reuse;
- "stream": what survives both (seq/ts tracking, the alert's hysteresis) — cleared only when
  the slot is given to another stream.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from edge_config.errors import ConfigError
from edge_config.manifest import StateSpec

__all__ = ["ResetScope", "StateStore", "no_hugepage_slabs"]

ResetScope = Literal["model", "baseline", "stream"]
NO_SEQ = -1
"""last_seq of a stream that has not sent a seq yet (seq is >= 0 by the input contract)."""


@dataclass(slots=True)
class _Column:
    array: np.ndarray
    axis: int  # the slot axis: 0, or 1 for [layers, slots, hidden] slabs
    fill: object
    scope: ResetScope
    portable: bool  # False: monotonic-clock values, meaningless in another process

    def index(self, slots: np.ndarray | int) -> tuple[slice | np.ndarray | int, ...]:
        return (slice(None),) * self.axis + (slots,)


class StateStore:
    """Stream id → slot, and every per-slot column.

    Built-in columns (arrays indexed by slot; re-read them after `open`, which may grow them):
    `steps` int64 (samples since the last model reset), `last_seq` int64 (NO_SEQ: none),
    `seq_window` uint64 (bit i: seq last_seq - i was seen), `last_ts` float64 (payload ts of the
    last sample, NaN: none), `last_seen` float64 (monotonic s of the last processed message).
    """

    def __init__(self, state: Sequence[StateSpec], *, max_streams: int, initial_capacity: int = 64) -> None:
        if max_streams < 1:
            raise ConfigError(f"max_streams must be >= 1, got {max_streams}")
        for spec in state:
            if spec.batch_axis != 1 or len(spec.shape) != 3:
                raise ConfigError(f"state {spec.input!r}: expected [layers, batch, hidden] with batch axis 1")
        self.max_streams = max_streams
        self._capacity = max(1, min(initial_capacity, max_streams))
        self._columns: dict[str, _Column] = {}
        self._slot_of: dict[str, int] = {}
        self._stream_of: list[str | None] = [None] * self._capacity
        self._free: list[int] = list(range(self._capacity - 1, -1, -1))  # pop() hands out slot 0 first
        self._opened: list[str] = []  # new streams since the last take_opened() (rare: read per batch)
        self._state = tuple(state)
        for spec in self._state:
            self.add_column(spec.input, (spec.layers, spec.hidden), np.float32, 0.0, scope="model", axis=1)
        self.add_column("steps", (), np.int64, 0, scope="model")
        self.add_column("last_seq", (), np.int64, NO_SEQ, scope="stream")
        self.add_column("seq_window", (), np.uint64, 0, scope="stream")
        self.add_column("last_ts", (), np.float64, np.nan, scope="stream")
        self.add_column("last_seen", (), np.float64, -np.inf, scope="stream", portable=False)

    # --- columns -------------------------------------------------------------------------
    def add_column(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: type | np.dtype,
        fill: object,
        *,
        scope: ResetScope,
        axis: int = 0,
        portable: bool = True,
    ) -> None:
        """Register a per-slot array: shape is the per-slot part; axis 1 puts the slots second.

        portable=False: monotonic-clock values, left out of `export` (they mean nothing after a restart)."""
        if name in self._columns:
            raise ValueError(f"column {name!r} already exists")
        full = list(shape)
        full.insert(axis, self._capacity)
        self._columns[name] = _Column(np.full(full, fill, dtype=dtype), axis, fill, scope, portable)

    def column(self, name: str) -> np.ndarray:
        return self._columns[name].array

    def scope(self, name: str) -> ResetScope:
        return self._columns[name].scope

    def misfit(self, name: str, values: np.ndarray) -> str | None:
        """Why `values` (rows of the column as `export` gives them) cannot be restored, or None."""
        column = self._columns.get(name)
        if column is None:
            return f"no column {name!r} in this store"
        if np.ndim(values) != column.array.ndim:
            return f"column {name!r} has {np.ndim(values)} dimensions, expected {column.array.ndim}"
        expected = list(column.array.shape)
        expected[column.axis] = np.shape(values)[column.axis]
        if tuple(expected) != np.shape(values):
            return f"column {name!r} is {list(np.shape(values))}, expected {expected}"
        return None

    @property
    def steps(self) -> np.ndarray:
        return self._columns["steps"].array

    @property
    def last_seq(self) -> np.ndarray:
        return self._columns["last_seq"].array

    @property
    def seq_window(self) -> np.ndarray:
        return self._columns["seq_window"].array

    @property
    def last_ts(self) -> np.ndarray:
        return self._columns["last_ts"].array

    @property
    def last_seen(self) -> np.ndarray:
        return self._columns["last_seen"].array

    # --- streams and slots -----------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, stream: object) -> bool:
        return stream in self._slot_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._slot_of)

    @property
    def slots(self) -> Mapping[str, int]:
        """Stream id → slot of every active stream (a live read-only view)."""
        return MappingProxyType(self._slot_of)

    def slot(self, stream: str) -> int | None:
        return self._slot_of.get(stream)

    def stream_of(self, slot: int) -> str:
        stream = self._stream_of[slot]
        if stream is None:
            raise KeyError(f"slot {slot} is free")
        return stream

    def open(self, stream: str, now: float) -> int | None:
        """The stream's slot, assigning a fresh one to a new stream; None when full (max_streams)."""
        slot = self._slot_of.get(stream)
        if slot is not None:
            return slot
        if not self._free:
            if self._capacity >= self.max_streams:
                return None
            self._grow()
        slot = self._free.pop()
        self._reset_slot(slot, ("model", "baseline", "stream"))
        self._slot_of[stream] = slot
        self._stream_of[slot] = stream
        self.last_seen[slot] = now
        self._opened.append(stream)
        return slot

    def take_opened(self) -> list[str]:
        """The streams given a fresh slot since the last call (without state), oldest first."""
        opened, self._opened = self._opened, []
        return opened

    def open_many(self, streams: Sequence[str], now: np.ndarray) -> np.ndarray:
        """`open` for a batch: int64 slots, -1 where a new stream was refused. now: monotonic s [N]."""
        get = self._slot_of.get
        found = [get(stream) for stream in streams]
        if None in found:  # new streams (or refusals): the slow path, in order
            for i, slot in enumerate(found):
                if slot is None:
                    opened = self.open(streams[i], float(now[i]))
                    found[i] = -1 if opened is None else opened
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def release(self, stream: str) -> bool:
        """Forget a stream; its slot is reused (and reset) by the next new stream."""
        slot = self._slot_of.pop(stream, None)
        if slot is None:
            return False
        self._stream_of[slot] = None
        self._free.append(slot)
        return True

    def reset_model(self, slots: np.ndarray | int) -> None:
        """Back to the initial model state (zeros) for these slots; stream-scope columns are kept."""
        self._reset_slot(slots, ("model",))

    def reset_baseline(self, slots: np.ndarray | int) -> None:
        """Forget what these streams learned of their normal scores: they learn again."""
        self._reset_slot(slots, ("baseline",))

    def forget_sequence(self, slot: int) -> None:
        """Accept any seq/ts again (after a reset command: the sensor may have restarted its counter)."""
        for name in ("last_seq", "seq_window", "last_ts"):
            column = self._columns[name]
            column.array[slot] = column.fill

    def idle(self, now: float, ttl: float) -> list[str]:
        """The streams whose last message is more than ttl seconds (monotonic) before now."""
        active = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
        return [self.stream_of(int(slot)) for slot in active[self.last_seen[active] < now - ttl]]

    def evict_idle(self, now: float, ttl: float) -> list[str]:
        """Release every stream whose last message is more than ttl seconds (monotonic) before now."""
        streams = self.idle(now, ttl)
        for stream in streams:
            self.release(stream)
        return streams

    # --- checkpoints -------------------------------------------------------------------------
    def export(self) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
        """Every active stream, and every portable column's rows for them (copies, slot axis as
        stored: 1 for state slabs, else 0). Object columns stay object arrays (None = fill)."""
        streams = tuple(self._slot_of)
        slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(streams))
        columns = {name: c.array.take(slots, axis=c.axis) for name, c in self._columns.items() if c.portable}
        return streams, columns

    def restore(self, streams: Sequence[str], columns: Mapping[str, np.ndarray], now: float) -> list[str]:
        """Give each stream a slot and set the given columns' rows (shaped as `export` gives them;
        "" in an object column means its fill). Columns not given keep their initial values;
        last_seen becomes `now`. Raises ValueError, before changing anything, on an unknown column
        or a shape that does not fit (e.g. another model). Returns the streams refused at max_streams."""
        n = len(streams)
        for name, values in columns.items():
            why = self.misfit(name, values)
            if why is None and np.shape(values)[self._columns[name].axis] != n:
                why = f"column {name!r} has {np.shape(values)[self._columns[name].axis]} rows for {n} streams"
            if why is not None:
                raise ValueError(f"restore: {why}")
        refused = []
        slots = []
        for stream in streams:
            slot = self.open(stream, now)
            if slot is None:
                refused.append(stream)
            slots.append(-1 if slot is None else slot)
        rows = np.asarray(slots, dtype=np.int64)
        keep = rows >= 0
        for name, values in columns.items():
            column = self._columns[name]
            values = np.asarray(values).take(np.flatnonzero(keep), axis=column.axis)
            if column.array.dtype == object:
                flat = [column.fill if v == "" else v for v in values.ravel()]
                values = np.array(flat, dtype=object).reshape(values.shape)
            column.array[column.index(rows[keep])] = values
        return refused

    # --- the model's state -----------------------------------------------------------------
    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Graph inputs {spec.input: float32 [layers, len(slots), hidden]} (contiguous copies)."""
        return {spec.input: self._columns[spec.input].array.take(slots, axis=1) for spec in self._state}

    def scatter(self, slots: np.ndarray, outputs: Mapping[str, np.ndarray]) -> None:
        """Store the graph's state outputs {spec.output: [layers, len(slots), hidden]}; slots must be distinct."""
        for spec in self._state:
            self._columns[spec.input].array[:, slots, :] = outputs[spec.output]

    # --- internals -------------------------------------------------------------------------
    def _reset_slot(self, slots: np.ndarray | int, scopes: tuple[ResetScope, ...]) -> None:
        for column in self._columns.values():
            if column.scope in scopes:
                column.array[column.index(slots)] = column.fill

    def _grow(self) -> None:
        old = self._capacity
        # A quarter, not double: at 10k idle streams the slack is <= 25% of the slabs instead of up
        # to 100% (bench: 2,424 -> 1,670 B of RSS per stream); still geometric, so the copies stay
        # amortized O(1) per stream.
        new = min(old + max(old // 4, 16), self.max_streams)
        for column in self._columns.values():
            shape = list(column.array.shape)
            shape[column.axis] = new
            # np.empty, not np.full: the new slots' pages are not touched (no RSS) until a stream
            # takes one, and `open` fills every scope of a slot it hands out (bench, 10k idle
            # streams: the slack of the last growth no longer counts).
            grown = np.empty(shape, dtype=column.array.dtype)
            kept: list[slice] = [slice(None)] * grown.ndim
            kept[column.axis] = slice(0, old)
            grown[tuple(kept)] = column.array
            column.array = grown
        self._stream_of.extend([None] * (new - old))
        self._free.extend(range(new - 1, old - 1, -1))
        self._capacity = new
        _trim_heap()


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def _trim_heap() -> None:
    """Hand the old slabs' pages back to the OS after a growth. glibc serves slabs of a few MB from
    its heap once one such block was freed (its mmap threshold adapts), and keeps what is freed
    there: the copies left behind by growing a quarter at a time stayed resident (bench, 10k idle
    streams: 2.8-3.9 KB per stream without this, 2.0 KB with it). Growth is rare, the call cheap."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def no_hugepage_slabs() -> bool:
    """Ask numpy not to madvise(MADV_HUGEPAGE) the arrays it allocates (its default on Linux >= 4.6
    for arrays >= 4 MB). A state slab's tail of slots not handed out yet is never written (see
    `_grow`); with transparent hugepages in `madvise` mode, the first stream that touches it
    faults in 2 MB at once (bench, 10k idle streams: 2,095 B per stream with the hint, 1,929
    without). The slabs are read by gather/take a row per stream, where 4 KB pages cost a TLB
    miss per row at most. Process-wide; called by the Service. Returns False when this numpy
    has no such switch."""
    switch = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        return False
    switch(False)
    return True
