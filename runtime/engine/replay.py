"""Replay recorded streams through the runtime's own Engine, as a gateway would see them.

Each stream's rows are cut into messages of `chunk` samples (seq = row index, ts from the
recording) and fed in time order; many streams go into one `Engine.process` call per
round, exactly the batched gateway path. Nothing from a stream's future reaches a step:
the Engine carries the recurrent state and the scorer's memory sample by sample, and the
alert decisions are the AlertTracker's (hysteresis included).

No torch here: this is the runtime side of evaluation, usable on a gateway image too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from runtime.engine.alerts import Alert
from runtime.engine.engine import Engine
from runtime.engine.types import Message

__all__ = ["Recording", "Replay", "alert_flags", "replay"]


@dataclass(frozen=True)
class Recording:
    """One stream's samples: values float32 [T, F] raw units, ts float64 [T] seconds (or None)."""

    values: np.ndarray
    ts: np.ndarray | None = None


@dataclass
class Replay:
    """What the Engine made of one stream: per-row scores, alerts, and the raised flags."""

    scores: np.ndarray
    """float64 [T]; NaN where the scorer had no prediction yet (the first row)."""
    alerts: list[Alert]
    raised: np.ndarray
    """bool [T]: an alert was open after the row was processed."""


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
    engine: Engine, recordings: Mapping[str, Recording], *, chunk: int = 1, stop: int | None = None
) -> dict[str, Replay]:
    """Feed rows [0, stop) of every recording (keyed by stream id, new to `engine`) through it.

    Round r sends every stream's r-th message in one `process` call, so a round is one
    batched ORT call per distinct message length.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    names = list(recordings)
    ends = {n: len(recordings[n].values) if stop is None else min(stop, len(recordings[n].values)) for n in names}
    scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
    alerts: dict[str, list[Alert]] = {n: [] for n in names}
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
        for outcome in engine.process(batch):
            if outcome.status != "processed" or outcome.scores is None:
                raise RuntimeError(
                    f"stream {outcome.message.stream!r}: the engine answered {outcome.status!r} to a replayed message"
                )
            scores[outcome.message.stream].append(outcome.scores)
            alerts[outcome.message.stream].extend(outcome.alerts)
        cursor += chunk
    return {
        name: Replay(
            np.concatenate(scores[name]) if scores[name] else np.empty(0),
            alerts[name],
            alert_flags(alerts[name], ends[name]),
        )
        for name in names
    }
