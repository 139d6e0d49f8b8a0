"""A model's per-stream state out of an Engine (a checkpoint's StateSnapshot) and into another
Engine (restart from a checkpoint, or the new model of a SIGHUP reload).

What is carried is every portable StateStore column (runtime.engine.streams): the recurrent state
slabs, seq/ts tracking, the scorer's memory and the alert hysteresis. What does not fit the
receiving engine is dropped by group, never half-restored:

- the model scope (state slabs, steps since reset, the scorer's last prediction, warm flag):
  when the receiving engine runs other weights (another sha256: a retrained model, even of the
  same shapes) or the state shapes differ, the streams keep their seq tracking and open alerts
  but their model state starts from zero: they re-warm (counted by the caller). Another
  model's h/c are meaningless to these weights (measured: healthy streams raised false
  alerts after a swap that kept them), which is also why a restart refuses such a checkpoint;
- the raise window (runtime.engine.tracker.WINDOW_COLUMNS) when raise_n changed;
- any other column whose shape differs (e.g. a scorer of another feature count).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.engine.engine import Engine
from runtime.engine.tracker import WINDOW_COLUMNS
from runtime.state.format import StateSnapshot

__all__ = ["Restored", "restore_engine", "snapshot_columns", "snapshot_engine", "transfer_state"]

_FIXED = ("last_seq", "last_ts", "steps")
_STATUS = "alert.status"


@dataclass(frozen=True, slots=True)
class Restored:
    """What one restore did."""

    streams: int
    """Streams given a slot and (some of) their state."""
    refused: tuple[str, ...]
    """Streams left out: max_streams were already active."""
    model_state: bool
    """False: the state shapes differed, the streams re-warm from zero model state (the caller
    counts them in `rewarming`)."""
    dropped: tuple[str, ...]
    """Columns that did not fit this engine (their initial values are used)."""


def snapshot_engine(engine: Engine, created: float | None = None) -> StateSnapshot:
    """Every active stream's portable state (copies: the caller may hand it to another thread).

    Runs on the thread that owns the engine; costs a gather of every column (0.5-0.8 ms per
    1,000 streams of a 2x64 LSTM, docs/RELIABILITY.md)."""
    streams, columns = engine.store.export()
    states = {spec.input: columns.pop(spec.input) for spec in engine.artifact.manifest.state}
    fixed = {name: columns.pop(name) for name in _FIXED}
    for name, values in columns.items():
        if values.dtype == object:  # alert ids: the format takes "<U" strings, "" for none
            columns[name] = np.array(["" if v is None else str(v) for v in values], dtype=np.str_)
    return StateSnapshot(
        engine.artifact.sha256,
        streams,
        states,
        fixed["last_seq"],
        fixed["last_ts"],
        fixed["steps"],
        columns,
        created=time.time() if created is None else created,
    )


def snapshot_columns(snapshot: StateSnapshot) -> dict[str, np.ndarray]:
    """The snapshot as StateStore columns (the shape `StateStore.export` gives)."""
    columns = dict(snapshot.columns)
    columns.update(snapshot.states)
    columns.update(last_seq=snapshot.last_seq, last_ts=snapshot.last_ts, steps=snapshot.steps)
    return columns


def restore_engine(
    engine: Engine,
    streams: Sequence[str],
    columns: Mapping[str, np.ndarray],
    now: float,
    *,
    restart: bool,
    same_model: bool = True,
) -> Restored:
    """Give `streams` their state in `engine` (a fresh one: nothing else stepped yet).

    restart=True (a checkpoint after a restart, not a reload): each stream publishes its status
    again at its first step (the retained status on the broker may be newer than the
    checkpoint: an alert raised after it), and a stream whose first message shows a gap
    re-warms (Engine.resume).
    now: monotonic seconds, the streams' last_seen (the idle TTL starts over).
    same_model=False (the state comes from other weights): the model scope is dropped."""
    store = engine.store
    keep = {name: values for name, values in columns.items() if store.misfit(name, values) is None}
    dropped = set(columns) - set(keep)
    state_names = {spec.input for spec in engine.artifact.manifest.state}
    model_state = same_model and not (state_names - set(keep))
    if not model_state:  # another model's state: everything computed from it goes too
        dropped |= {name for name in keep if store.scope(name) == "model"}
    if not same_model:  # another model's scores: the streams learn their baselines again
        dropped |= {name for name in keep if store.scope(name) == "baseline"}
    if dropped & set(WINDOW_COLUMNS):
        dropped |= set(WINDOW_COLUMNS) & set(keep)
    if restart and _STATUS in keep:
        del keep[_STATUS]
    for name in dropped:
        keep.pop(name, None)
    refused = store.restore(streams, keep, now)
    store.take_opened()  # restored streams are not new ones (runtime.engine.engine counts re-warming)
    restored = len(streams) - len(refused)
    if model_state and restart:  # samples acked after the checkpoint may be missing
        engine.resume(streams)
    engine.version += 1
    return Restored(restored, tuple(refused), model_state, tuple(sorted(dropped)))


def transfer_state(old: Engine, new: Engine) -> Restored:
    """Carry every stream of `old` into `new` (a reload): the retained status stays as published;
    the recurrent state only when `new` runs the very same model bytes (sha256)."""
    streams, columns = old.store.export()
    same = old.artifact.sha256 == new.artifact.sha256
    return restore_engine(new, streams, columns, time.monotonic(), restart=False, same_model=same)
