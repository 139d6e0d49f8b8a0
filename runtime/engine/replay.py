"""Replay recorded streams through the runtime's own Engine, as a gateway would see them.

Each stream's rows are cut into messages of `chunk` samples (seq = row index, ts from the
recording) and fed in time order; many streams go into one `Engine.process` call per
round, exactly the batched gateway path. Nothing from a stream's future reaches a step:
the Engine carries the recurrent state and the scorer's memory sample by sample, and the
alert decisions are the AlertTracker's (hysteresis included).

An Engine built with a `RecordedClock` (runtime.model.loading.load_model(clock=...)) runs on the
recording's time: `update_interval_s` then counts recorded seconds, as the daemon would count
them had the recording been published live, so a replay's updates do not depend on how fast the
machine replays it.

One replay path: `edgewatch score`, `edgewatch eval skab`, the demo's plots and the fleet
benchmark all call `replay`. No torch here: usable on a gateway image too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from runtime.engine.alerts import Alert
from runtime.engine.engine import Engine
from runtime.engine.types import Message

__all__ = ["RecordedClock", "Recording", "Replay", "alert_flags", "replay"]


@dataclass(frozen=True)
class Recording:
    """One stream's samples: values float32 [T, F] raw units, ts float64 [T] seconds (or None)."""

    values: np.ndarray
    ts: np.ndarray | None = None


class RecordedClock:
    """An Engine's clock (monotonic seconds) that `replay` sets to each round's recorded time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Replay:
    """What the Engine made of one stream: per-row scores, alerts, and the raised flags."""

    scores: np.ndarray
    """float64 [T]; NaN where the scorer had no prediction yet (the first row)."""
    alerts: list[Alert]
    raised: np.ndarray
    """bool [T]: an alert was open after the row was processed."""
    thresholds: np.ndarray
    """float64 [T]: the threshold the row's score was compared with (with per-stream baselines:
    the learning threshold while the stream learned, the model's after; a message of several
    rows: the one before its first row)."""


def alert_flags(alerts: list[Alert], rows: int, *, first_seq: int = 0) -> np.ndarray:
    """bool [rows] from a stream's alert events: True from a `raised` alert's seq up to (not
    including) the seq of the `cleared` one that closes it; rows are seq - first_seq."""
    flags = np.zeros(rows, dtype=bool)
    opened: int | None = None
    for alert in alerts:
        if alert.seq is None:
            raise ValueError("alert_flags needs alerts that carry a seq")
        row = alert.seq - first_seq
        if alert.state == "raised":
            opened = row
        elif alert.state == "cleared" and opened is not None:
            flags[opened:row] = True
            opened = None
    if opened is not None:
        flags[opened:] = True
    return flags


def replay(
    engine: Engine,
    recordings: Mapping[str, Recording],
    *,
    chunk: int = 1,
    stop: int | None = None,
    clock: RecordedClock | None = None,
) -> dict[str, Replay]:
    """Feed rows [0, stop) of every recording (keyed by stream id, new to `engine`) through it.

    Round r sends every stream's r-th message in one `process` call, so a round is one
    batched ORT call per distinct message length. clock: the engine's, set before each round to
    the latest recorded time of the round (ts, else the row index as seconds).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    names = list(recordings)
    ends = {n: len(recordings[n].values) if stop is None else min(stop, len(recordings[n].values)) for n in names}
    scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
    alerts: dict[str, list[Alert]] = {n: [] for n in names}
    thresholds: dict[str, list[np.ndarray]] = {n: [] for n in names}
    cursor = 0
    while True:
        batch = []
        for name in names:
            if cursor >= ends[name]:
                continue
            rec = recordings[name]
            end = min(cursor + chunk, ends[name])
            ts = None if rec.ts is None else np.asarray(rec.ts[cursor:end], dtype=np.float64)
            # Arrival = recording time: the engine's TTL and gap logic see the recorded pace.
            wall = float(ts[0]) if ts is not None else float(cursor)
            values = np.asarray(rec.values[cursor:end], dtype=np.float32)
            batch.append(Message(stream=name, values=values, seq=cursor, ts=ts, received=wall, received_wall=wall))
        if not batch:
            break
        if clock is not None:
            clock.now = max(clock.now, max(m.received for m in batch))
        before = _thresholds(engine, batch)
        for outcome in engine.process(batch):
            if outcome.status != "processed" or outcome.scores is None:
                raise RuntimeError(
                    f"stream {outcome.message.stream!r}: the engine answered {outcome.status!r} to a replayed message"
                )
            scores[outcome.message.stream].append(outcome.scores)
            alerts[outcome.message.stream].extend(outcome.alerts)
        after = _thresholds(engine, batch)  # a stream's first message: its threshold once it exists
        for m, pre, post in zip(batch, before, after, strict=True):
            thresholds[m.stream].append(np.full(len(m.values), post if np.isnan(pre) else pre))
        cursor += chunk
    return {
        name: Replay(
            np.concatenate(scores[name]) if scores[name] else np.empty(0),
            alerts[name],
            alert_flags(alerts[name], ends[name]),
            np.concatenate(thresholds[name]) if thresholds[name] else np.empty(0),
        )
        for name in names
    }


def _thresholds(engine: Engine, batch: list[Message]) -> list[float]:
    """Each message's stream's threshold now (NaN: a stream the engine does not know yet)."""
    slots = [engine.store.slot(m.stream) for m in batch]
    known = np.array([s for s in slots if s is not None], dtype=np.int64)
    values = iter(engine.baselines.thresholds(known).tolist())
    return [float("nan") if s is None else next(values) for s in slots]
