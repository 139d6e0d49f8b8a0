"""A batch of Messages → one ONNX Runtime call per distinct T per round → Outcomes. Pure:
no threads, no MQTT; the service, the evaluation and the benchmark all drive this class.

Per `process` call:
1. admit (per message, in arrival order): the stream's slot; seq deduplication — samples at or
   before the stream's last seq are dropped, a message overlapping it loses only its seen prefix;
   gap detection (a seq jump, or a ts / arrival gap beyond `max_gap_s`) and `on_gap`; the
   message's samples become *units*: the whole message, or one unit per sample when the graph
   cannot take several steps at once (time_steps == 1, or output_kind "last", which would
   hide the per-step outputs the scorer needs).
2. schedule: a stream's k-th unit goes to round k, so a stream appears once per ORT call and
   its samples run in order; within a round, one call per distinct unit length T.
3. run each call: normalize, gather state (fancy indexing on the slab's axis 1), ORT, scatter,
   score, hysteresis — all vectorized over the call's streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np

from edge_config.manifest import Normalization
from edge_config.schema import ModelConfig
from runtime.alerts import Alert
from runtime.artifact import Artifact
from runtime.payload import Message
from runtime.scoring import AlertTracker, Scorer, resolve_score_settings, resolve_threshold
from runtime.streams import NO_SEQ, StateStore

__all__ = ["Engine", "EngineCounters", "InferenceBackend", "Outcome", "OutcomeStatus", "normalize"]

OutcomeStatus = Literal["processed", "duplicate", "out-of-order", "refused"]
_WINDOW_BITS = 64  # seqs remembered behind the last one, to tell a duplicate from a late sample
_WINDOW_MASK = (1 << _WINDOW_BITS) - 1


class InferenceBackend(Protocol):
    """The part of onnxruntime.InferenceSession the engine uses."""

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]: ...


@dataclass(slots=True)
class Outcome:
    """What became of one input Message (same order as the input)."""

    message: Message
    status: OutcomeStatus
    """refused: the stream is new and max_streams streams are active (nothing was stepped)."""
    steps: int
    """Samples stepped through the model (fewer than T when a seen prefix was dropped)."""
    outputs: np.ndarray | None
    """Raw model outputs [steps, output_size]."""
    scores: np.ndarray | None
    """float64 [steps]; NaN while the scorer has no prediction yet."""
    alerts: list[Alert] = field(default_factory=list)
    """To publish, in order."""
    stream_status: str | None = None
    """The stream's new retained status when it changed: "ok" | "alert" | "warming-up"."""


@dataclass(slots=True)
class EngineCounters:
    """Monotonic counts since the engine was built (metrics read them; the engine never resets them)."""

    messages: int = 0
    steps: int = 0
    ort_calls: int = 0
    duplicate_samples: int = 0
    out_of_order_samples: int = 0
    refused_messages: int = 0
    gaps: int = 0
    resets: int = 0
    """Model-state resets: gaps with on_gap=reset, seq restarts, reset commands."""
    seq_restarts: int = 0
    evicted: int = 0
    alerts_raised: int = 0
    alerts_updated: int = 0
    alerts_cleared: int = 0


def normalize(values: np.ndarray, normalization: Normalization | None) -> np.ndarray:
    """(x - mean) / std per feature, float32, any leading shape [..., F]."""
    values = np.asarray(values, dtype=np.float32)
    if normalization is None:
        return values
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    return (values - mean) / std


class _SeqCheck(NamedTuple):
    start: int  # first sample to keep (== T: the whole message is dropped)
    unseen: int  # dropped samples never seen before (late), the rest were duplicates
    gap: bool  # seq jumped past last + 1
    restarted: bool  # seq fell more than seq_restart_window behind: the sensor restarted


@dataclass(slots=True)
class _Unit:
    """Samples [start, stop) of one message, run in one ORT call."""

    slot: int
    message: int  # index in the batch
    start: int
    stop: int
    reset: bool  # reset the model state before this unit (gap / restart)
    last: bool  # the message's last unit: its stream status is reported after it


class Engine:
    """One model's streams: their state, batched steps, scores and alerts."""

    def __init__(
        self,
        artifact: Artifact,
        session: InferenceBackend,
        model: ModelConfig,
        *,
        name: str,
        max_streams: int = 100_000,
        idle_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        seq_restart_window: int | None = 1024,
    ) -> None:
        """seq_restart_window: a seq this far *behind* the stream's last one means the sensor
        restarted its counter (the state is reset and the message accepted), not a late message;
        None never assumes a restart (such a sensor is then silenced until reset())."""
        manifest = artifact.manifest
        self.name = name
        self.artifact = artifact
        self.model = model
        self.idle_ttl_s = idle_ttl_s
        self.seq_restart_window = seq_restart_window
        self.counters = EngineCounters()
        self.threshold = resolve_threshold(manifest, model, name)
        self.store = StateStore(manifest.state, max_streams=max_streams)
        self.scorer = Scorer(manifest.task, resolve_score_settings(manifest, model), manifest.features.names, self.store)
        self.tracker = AlertTracker(
            model.alerts,
            self.threshold,
            self.store,
            model=name,
            model_sha256=artifact.sha256,
            explain=self.scorer.top_features,
        )
        self._session = session
        self._clock = clock
        self._input = manifest.input
        self._features = manifest.features.count
        norm = manifest.normalization
        self._mean = None if norm is None else np.asarray(norm.mean, dtype=np.float32)
        self._std = None if norm is None else np.asarray(norm.std, dtype=np.float32)
        self._outputs = list(manifest.outputs)
        self._state_outputs = [(i, name) for i, name in enumerate(self._outputs) if i > 0]
        self._last_only = manifest.output_kind == "last"
        self._stepwise = manifest.time_steps == 1 or self._last_only

    # --- public ------------------------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> list[Outcome]:
        """Step every message's new samples through the model; one Outcome per message, in order."""
        for m in messages:
            if m.values.ndim != 2 or m.values.shape[1] != self._features or m.values.shape[0] == 0:
                raise ValueError(f"stream {m.stream!r}: values {m.values.shape}, expected [T>=1, {self._features}]")
        now = self._clock()
        outcomes: list[Outcome | None] = [None] * len(messages)
        groups: dict[tuple[int, int], list[_Unit]] = {}
        rounds: dict[int, int] = {}  # slot → its next round
        for i, m in enumerate(messages):
            dropped = self._admit(i, m, groups, rounds)
            if dropped is not None:
                outcomes[i] = Outcome(m, dropped, 0, None, None)
        self.counters.messages += len(messages)
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for key in sorted(groups):
            self._run(key[1], groups[key], messages, now, outcomes, pieces)
        for i, parts in pieces.items():
            outcome = outcomes[i]
            assert outcome is not None
            if len(parts) == 1:
                outcome.outputs, outcome.scores = parts[0]
            else:
                outcome.outputs = np.concatenate([p[0] for p in parts])
                outcome.scores = np.concatenate([p[1] for p in parts])
            outcome.steps = len(outcome.scores)
        return outcomes  # type: ignore[return-value]  # every slot was filled above

    def evict_idle(self) -> int:
        """Forget streams idle for more than idle_ttl_s (monotonic). An open alert of an evicted
        stream is not cleared: it went silent for the whole TTL."""
        evicted = len(self.store.evict_idle(self._clock(), self.idle_ttl_s))
        self.counters.evicted += evicted
        return evicted

    def reset(self, stream: str) -> bool:
        """Start the stream over (control command): zero state, warm up again, accept any seq.
        An open alert stays open until the stream is healthy again. False if the stream is unknown."""
        slot = self.store.slot(stream)
        if slot is None:
            return False
        self.store.reset_model(slot)
        self.store.forget_sequence(slot)
        self.counters.resets += 1
        return True

    # --- admission -------------------------------------------------------------------------------
    def _admit(
        self, index: int, m: Message, groups: dict[tuple[int, int], list[_Unit]], rounds: dict[int, int]
    ) -> OutcomeStatus | None:
        """Queue the message's new samples as units; the drop status when none are left."""
        store = self.store
        slot = store.open(m.stream, m.received)
        if slot is None:
            self.counters.refused_messages += 1
            return "refused"
        count = m.values.shape[0]
        check = self._check_seq(slot, m.seq, count) if m.seq is not None else _SeqCheck(0, 0, False, False)
        if check.start == count:
            return "out-of-order" if check.unseen else "duplicate"
        start, gap = check.start, check.gap
        ts = m.ts
        max_gap = self.model.max_gap_s
        if max_gap is not None and not gap:
            last_ts = store.last_ts[slot]
            if ts is not None and not np.isnan(last_ts):
                gap = bool(ts[start] - last_ts > max_gap)
            elif ts is None:  # arrival times, on the monotonic clock: a wall-clock jump is no gap
                gap = bool(m.received - store.last_seen[slot] > max_gap)
        cuts = [start]
        if max_gap is not None and ts is not None and count - start > 1:
            cuts.extend((start + 1 + np.flatnonzero(np.diff(ts[start:]) > max_gap)).tolist())
        self.counters.gaps += int(gap) + len(cuts) - 1
        reset_on_gap = self.model.on_gap == "reset"
        if not reset_on_gap:
            cuts = [start]  # a gap inside the message is counted, not cut at
        cuts.append(count)
        store.last_ts[slot] = ts[-1] if ts is not None else np.nan
        store.last_seen[slot] = m.received
        first_reset = (gap and reset_on_gap) or check.restarted
        self.counters.resets += len(cuts) - 2 + int(first_reset)
        for c, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            reset = first_reset if c == 0 else True
            bounds = [(j, j + 1) for j in range(a, b)] if self._stepwise else [(a, b)]
            for u, (ua, ub) in enumerate(bounds):
                r = rounds.get(slot, 0)
                rounds[slot] = r + 1
                unit = _Unit(slot, index, ua, ub, reset and u == 0, c == len(cuts) - 2 and u == len(bounds) - 1)
                groups.setdefault((r, ub - ua), []).append(unit)
        return None

    def _check_seq(self, slot: int, seq: int, count: int) -> _SeqCheck:
        """Drop the samples at or before the stream's last seq and update its seq tracking."""
        store = self.store
        last = int(store.last_seq[slot])
        window = int(store.seq_window[slot])
        end = seq + count - 1
        restarted = last != NO_SEQ and self.seq_restart_window is not None and seq + self.seq_restart_window < last
        if restarted:
            self.counters.seq_restarts += 1
            last, window = NO_SEQ, 0
        start, unseen = 0, 0
        if last != NO_SEQ and seq <= last:
            start = min(count, last - seq + 1)
            for s in range(seq, seq + start):  # only _WINDOW_BITS seqs are remembered; older ones count as late
                back = last - s
                if back >= _WINDOW_BITS or not (window >> back) & 1:
                    unseen += 1
                    if back < _WINDOW_BITS:
                        window |= 1 << back  # a second copy of this late sample counts as a duplicate
            self.counters.out_of_order_samples += unseen
            self.counters.duplicate_samples += start - unseen
            if start == count:
                store.seq_window[slot] = window
                return _SeqCheck(count, unseen, False, False)
        gap = last != NO_SEQ and seq > last + 1
        shift = end - last if last != NO_SEQ else _WINDOW_BITS
        kept = min(end - (seq + start) + 1, _WINDOW_BITS)
        window = (((window << shift) if shift < _WINDOW_BITS else 0) | ((1 << kept) - 1)) & _WINDOW_MASK
        store.last_seq[slot] = end
        store.seq_window[slot] = window
        return _SeqCheck(start, unseen, gap, restarted)

    # --- one ORT call ------------------------------------------------------------------------------
    def _run(
        self,
        steps: int,
        units: list[_Unit],
        messages: Sequence[Message],
        now: float,
        outcomes: list[Outcome | None],
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]],
    ) -> None:
        store = self.store
        slots = np.fromiter((u.slot for u in units), dtype=np.int64, count=len(units))
        raw = np.stack([messages[u.message].values[u.start : u.stop] for u in units])
        x = raw if self._mean is None else (raw - self._mean) / self._std  # = normalize(), constants cached
        resets = [u.slot for u in units if u.reset]
        if resets:
            store.reset_model(np.asarray(resets, dtype=np.int64))
        feeds = store.gather(slots)
        feeds[self._input] = x
        results = self._session.run(self._outputs, feeds)
        self.counters.ort_calls += 1
        store.scatter(slots, {name: results[i] for i, name in self._state_outputs})
        y = results[0][:, None, :] if self._last_only else results[0]
        steps_before = store.steps[slots]
        store.steps[slots] = steps_before + steps
        self.counters.steps += len(units) * steps
        scores = self.scorer.step(slots, x, y)
        for t in range(steps):

            def locate(row: int, t: int = t) -> tuple[int | None, float]:
                u = units[row]
                m = messages[u.message]
                j = u.start + t
                return (m.seq + j if m.seq is not None else None, float(m.ts[j]) if m.ts is not None else m.received_wall)

            for row, alert in self.tracker.observe(slots, scores[:, t], steps_before + t, now, locate):
                self._count(alert)
                self._outcome(outcomes, messages, units[row].message).alerts.append(alert)
        for row, u in enumerate(units):
            self._outcome(outcomes, messages, u.message)
            pieces.setdefault(u.message, []).append((y[row], scores[row]))
        last_rows = [row for row, u in enumerate(units) if u.last]
        if last_rows:
            rows = np.asarray(last_rows, dtype=np.int64)
            for k, status in self.tracker.status_changes(slots[rows]):
                outcome = outcomes[units[last_rows[k]].message]
                assert outcome is not None
                outcome.stream_status = status

    @staticmethod
    def _outcome(outcomes: list[Outcome | None], messages: Sequence[Message], index: int) -> Outcome:
        outcome = outcomes[index]
        if outcome is None:
            outcome = outcomes[index] = Outcome(messages[index], "processed", 0, None, None)
        return outcome

    def _count(self, alert: Alert) -> None:
        if alert.state == "raised":
            self.counters.alerts_raised += 1
        elif alert.state == "cleared":
            self.counters.alerts_cleared += 1
        else:
            self.counters.alerts_updated += 1
