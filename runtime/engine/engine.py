"""A batch of Messages → one ONNX Runtime call per distinct T per round → Outcomes. Pure:
no threads, no MQTT; the service, the evaluation and the benchmark all drive this class.

runtime.engine.admission decides which samples run in which call (deduplication, gaps, rounds: a
stream appears once per call, its samples in order); here each call runs vectorized over its
streams: normalize, gather the state (fancy indexing on the slab's axis 1), ORT, scatter, score,
hysteresis. Outcomes are assembled at the end, in input order.

Graphs that take one step per call (time_steps == 1), and graphs with output_kind "last", are
stepped sample by sample: a "last" graph run on T > 1 samples would return only the last step's
output, and the scorer and the hysteresis need every step's.

Finite guards (docs/INPUT.md): a normalized value beyond ±CLIP_STD standard deviations is clipped
to it (a legal float32 such as 3e38 would overflow to inf and poison the recurrent state); a
stream whose new state, output or score is still non-finite has its model state reset and
warms up again (counted in `non_finite_resets` and `model_resets`, logged at most once a minute).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from edge_config.schema import ModelConfig
from runtime.engine.admission import KEEP, PENDING_SEQ, GapPolicy, Plan, Verdict, add_columns, admit
from runtime.engine.alerts import Alert
from runtime.engine.baseline import Baselines, enabled_for
from runtime.engine.scoring import AlertTracker, Scorer, resolve_score_settings, resolve_threshold
from runtime.engine.streams import NO_SEQ, StateStore
from runtime.engine.types import Eviction, InferenceBackend, Message, Outcome, StreamStatus
from runtime.ops.counts import Counts

if TYPE_CHECKING:  # only a type here: runtime.model imports the engine
    from runtime.model.artifact import Artifact

__all__ = ["CLIP_STD", "Engine"]

log = logging.getLogger("edgewatch.engine")

CLIP_STD = 1e3
"""Normalized inputs are clipped to [-CLIP_STD, CLIP_STD]: a gross fault, still finite in the graph."""
_WARN_EVERY_S = 60.0


@dataclass(slots=True)
class _Call:
    """What one ORT call produced: per unit (row) outputs and scores, and what the tracker said."""

    y: np.ndarray
    """[B, T, n] raw outputs."""
    scores: np.ndarray
    """[B, T]."""
    alerts: list[tuple[int, Alert]]
    """(message index, alert), in step order."""
    statuses: list[tuple[int, StreamStatus]]
    """(message index, new stream status)."""


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
        max_seq_jump: int | None = None,
        stale_after_s: float | None = None,
    ) -> None:
        """seq_restart_window: a seq this far *behind* the stream's last one means the sensor
        restarted its counter (the state is reset and the message accepted), not a late message;
        None never assumes a restart (such a sensor is then silenced until reset()).
        max_seq_jump: a seq further *ahead* is refused until a next message confirms it
        (runtime.engine.admission; RuntimeConfig.max_seq_jump); None: any jump is a gap.
        stale_after_s: see stale_statuses(); None: never stale."""
        manifest = artifact.manifest
        self.name = name
        self.artifact = artifact
        self.model = model
        self.idle_ttl_s = idle_ttl_s
        self.stale_after_s = stale_after_s
        self._counts = Counts()
        self.version = 0
        """Changes whenever the streams' state may have: a step, an eviction, a reset, a restore."""
        self.threshold = resolve_threshold(manifest, model, name)
        self.store = StateStore(manifest.state, max_streams=max_streams)
        settings = resolve_score_settings(manifest, model)
        learns = enabled_for(model.baseline, manifest.calibration, manifest.task)
        self.scorer = Scorer(
            manifest.task,
            settings,
            manifest.features.names,
            self.store,
            per_stream_scale=learns,
            normalization=manifest.normalization,
        )
        self.baselines = Baselines(model.baseline, self.threshold, manifest.calibration, manifest.task, self.store)
        self.tracker = AlertTracker(
            model.alerts,
            self.threshold,
            self.store,
            model=name,
            model_sha256=artifact.sha256,
            explain=self.scorer.explain,
            baselines=self.baselines,
            model_name=manifest.name,
            probability=manifest.task == "probability",
        )
        self._gaps = GapPolicy(
            on_gap=model.on_gap,
            max_gap_s=model.max_gap_s,
            seq_restart_window=seq_restart_window,
            max_seq_jump=max_seq_jump,
        )
        add_columns(self.store)
        self._session = session
        self._clock = clock
        self._input = manifest.input
        self._features = manifest.features.count
        norm = manifest.normalization
        self._mean = None if norm is None else np.asarray(norm.mean, dtype=np.float32)
        self._std = None if norm is None else np.asarray(norm.std, dtype=np.float32)
        self._outputs = list(manifest.outputs)
        self._state_outputs = [(i, output) for i, output in enumerate(self._outputs) if i > 0]
        self._last_only = manifest.output_kind == "last"
        self._stepwise = manifest.time_steps == 1 or self._last_only
        self._max_gap_s = model.max_gap_s
        self._resuming: set[str] = set()  # restored after a restart, not stepped since (see resume())
        self._warned_at = -np.inf  # monotonic s of the last non-finite warning (rate limit)
        self._unwarned = 0  # non-finite resets since that warning

    # --- public ------------------------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> list[Outcome]:
        """Step every message's new samples through the model; one Outcome per message, in order.

        Raises BatchError (before touching any state) when a message's values are not [T>=1, F]."""
        if not messages:
            return []
        if self._resuming:
            self._check_resumed(messages)
        plan = admit(
            messages, self.store, self._gaps, features=self._features, stepwise=self._stepwise, counts=self._counts
        )
        opened = self.store.take_opened()
        if opened:
            self._counts.rewarming += _mid_sequence(opened, messages)
        now = self._clock()
        calls = [self._run(plan, units, messages, now) for units in plan.calls]
        self.version += 1
        return self._outcomes(messages, plan, calls)

    def take_counts(self) -> Counts:
        """What happened since the last call (steps, ORT calls, messages by outcome, skipped samples,
        gaps, resets, evictions, re-warming streams); the caller merges it into its tally."""
        counts, self._counts = self._counts, Counts()
        counts.baselines_learned += self.baselines.learned
        counts.baselines_out_of_range += self.baselines.out_of_range
        counts.level_shifts += self.baselines.shifts
        self.baselines.learned = self.baselines.out_of_range = self.baselines.shifts = 0
        return counts

    def evict_idle(self, wall_now: float | None = None) -> list[Eviction]:
        """Forget streams idle for more than idle_ttl_s (monotonic). An open alert of an evicted
        stream is cleared (reason "evicted", ts = wall_now, default time.time()): nobody else
        would ever clear it."""
        idle = self.store.idle(self._clock(), self.idle_ttl_s)
        if not idle:
            return []
        ts = time.time() if wall_now is None else wall_now
        evictions = []
        for stream in idle:
            slot = self.store.slot(stream)
            assert slot is not None
            evictions.append(Eviction(stream, self.tracker.clear_evicted(slot, ts)))
            self.store.release(stream)
            self._resuming.discard(stream)
        self._counts.evicted += len(idle)
        self.version += 1
        return evictions

    def stale_statuses(self) -> list[tuple[str, StreamStatus]]:
        """Streams with no sample stepped for stale_after_s (monotonic: silent, or every message
        rejected, refused or skipped) whose status now turns `stale` (AlertTracker.mark_stale:
        not while an alert is open); their next stepped sample reports the real status again."""
        if self.stale_after_s is None:
            return []
        idle = self.store.idle(self._clock(), self.stale_after_s)
        if not idle:
            return []
        slots = np.array([self.store.slot(stream) for stream in idle], dtype=np.int64)
        turned = self.tracker.mark_stale(slots)
        self._counts.stale += len(turned)
        return [(self.store.stream_of(int(slot)), "stale") for slot in turned]

    def resume(self, streams: Sequence[str]) -> None:
        """Mark streams just restored from a checkpoint after a restart. At its first message, a
        stream whose seq (or, with max_gap_s, its ts) shows that samples were acked after the
        checkpoint and lost re-warms from zero model state, whatever on_gap says: the restored
        state and prediction are from before the gap, and comparing that prediction with a much
        later sample raised false alerts (benchmarks/measure_power_cut.py). Seq tracking and the
        alert hysteresis are kept, so an open alert goes on under its id. Counted in `rewarming`."""
        self._resuming.update(s for s in streams if s in self.store)

    def _check_resumed(self, messages: Sequence[Message]) -> None:
        store = self.store
        for m in messages:
            if m.stream not in self._resuming:
                continue
            self._resuming.discard(m.stream)
            slot = store.slot(m.stream)
            if slot is None:
                continue
            last_seq, last_ts = int(store.last_seq[slot]), float(store.last_ts[slot])
            by_seq = m.seq is not None and last_seq != NO_SEQ and m.seq > last_seq + 1
            by_ts = (
                self._max_gap_s is not None
                and m.ts is not None
                and not np.isnan(last_ts)
                and float(m.ts[0]) - last_ts > self._max_gap_s
            )
            if by_seq or by_ts:
                store.reset_model(slot)
                self._counts.rewarming += 1
            if by_seq and m.seq is not None:  # acked after the checkpoint: an expected jump, not refused
                store.column(PENDING_SEQ)[slot] = m.seq - 1

    def reset(self, stream: str) -> bool:
        """Start the stream over (control command): zero state, warm up again, accept any seq.
        An open alert stays open until the stream is healthy again. False if the stream is unknown."""
        slot = self.store.slot(stream)
        if slot is None:
            return False
        self.store.reset_model(slot)
        self.store.reset_baseline(slot)
        self.store.forget_sequence(slot)
        self._counts.model_resets += 1
        self.version += 1
        return True

    # --- one ORT call ------------------------------------------------------------------------------
    def _run(self, plan: Plan, units: np.ndarray, messages: Sequence[Message], now: float) -> _Call:
        """Run one call's units (distinct streams, same T)."""
        store = self.store
        steps = int(plan.unit_stop[units[0]] - plan.unit_start[units[0]])
        if len(units) == len(plan.unit_slot) and len(plan.values) == len(units) * steps:
            # The common batch: every sample of every message in this one call, in order.
            slots, unit_message = plan.unit_slot, plan.unit_message
            raw = plan.values.reshape(len(units), steps, -1)
        else:
            slots, unit_message = plan.unit_slot[units], plan.unit_message[units]
            first = plan.offsets[unit_message] + plan.unit_start[units]
            raw = plan.values[first[:, None] + np.arange(steps)]  # [B, T, F]
        x = raw if self._mean is None or self._std is None else self._normalize(raw)
        resets = plan.unit_reset[units]
        if np.count_nonzero(resets):
            store.reset_model(slots[resets])
        feeds = store.gather(slots)
        feeds[self._input] = x
        outputs = self._session.run(self._outputs, feeds)
        store.scatter(slots, {name: outputs[i] for i, name in self._state_outputs})
        y = outputs[0][:, None, :] if self._last_only else outputs[0]
        steps_before = store.steps[slots]
        store.steps[slots] = steps_before + steps
        self._counts.ort_calls += 1
        self._counts.steps += len(units) * steps
        learning = self.baselines.needs_squares(slots)
        squares = np.empty((len(units), steps, self._features)) if learning else None
        errors = np.empty((len(units), steps, self._features)) if self.baselines.bias is not None else None
        scores = self.scorer.step(slots, x, y, squares, errors)
        self._guard_finite(slots, outputs, scores, now)
        alerts: list[tuple[int, Alert]] = []
        t = 0

        def locate(row: int) -> tuple[int | None, float]:
            """(seq, ts) of the row's sample at step t (observe calls it during step t only)."""
            m = messages[int(unit_message[row])]
            j = int(plan.unit_start[units[row]]) + t
            ts = float(m.ts[j]) if m.ts is not None else m.received_wall
            return (m.seq + j if m.seq is not None else None, ts)

        observe = self.tracker.observe
        for t in range(steps):
            found = observe(
                slots,
                scores[:, t],
                steps_before + t,
                now,
                locate,
                None if squares is None else squares[:, t],
                None if errors is None else errors[:, t],
            )
            if found:
                alerts.extend((int(unit_message[row]), alert) for row, alert in found)
        statuses: list[tuple[int, StreamStatus]] = []
        last_units = plan.unit_last[units]
        if np.count_nonzero(last_units) == len(units):  # every unit ends its message: the common batch
            statuses = [(int(unit_message[row]), status) for row, status in self.tracker.status_changes(slots)]
        else:
            last = last_units.nonzero()[0]
            if last.size:
                changes = self.tracker.status_changes(slots[last])
                statuses = [(int(unit_message[last[row]]), status) for row, status in changes]
        return _Call(y, scores, alerts, statuses)

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        """= Normalization.apply with the constants cached, clipped to ±CLIP_STD (see the module doc)."""
        assert self._mean is not None
        assert self._std is not None
        with np.errstate(over="ignore"):  # an overflow becomes inf, clipped just below
            x = (raw - self._mean) / self._std
        inside = np.abs(x) <= CLIP_STD
        if np.count_nonzero(inside) < inside.size:
            self._counts.clipped_samples += int(np.count_nonzero(~inside.all(axis=-1)))
            np.clip(x, -CLIP_STD, CLIP_STD, out=x)
        return x

    def _guard_finite(self, slots: np.ndarray, outputs: list[np.ndarray], scores: np.ndarray, now: float) -> None:
        """Reset the model state of the rows whose new state, output or score is non-finite (a NaN
        score is legitimate: no prediction yet); their scores become NaN (warming up)."""
        # A finite sum means every term is finite (a NaN or an inf makes the sum one): one reduction
        # per array in the common case, the exact per-row test only when a sum is not finite.
        if all(math.isfinite(np.add.reduce(output, axis=None)) for output in outputs) and not np.count_nonzero(
            np.isinf(scores)
        ):
            return
        rows = len(slots)
        finite = np.isfinite(outputs[0].reshape(rows, -1)).all(axis=1) & ~np.isinf(scores).any(axis=1)
        for i, _ in self._state_outputs:
            finite &= np.isfinite(outputs[i]).all(axis=(0, 2))  # [layers, B, hidden]
        if finite.all():
            return
        bad = ~finite
        self.store.reset_model(slots[bad])
        scores[bad] = np.nan
        n = int(np.count_nonzero(bad))
        self._counts.non_finite_resets += n
        self._counts.model_resets += n
        self._unwarned += n
        if now - self._warned_at >= _WARN_EVERY_S:
            streams = [self.store.stream_of(int(s)) for s in slots[bad][:3]]
            log.warning(
                "model %s: %d stream(s) went non-finite and were reset (e.g. %s); at most one such line a minute",
                self.name,
                self._unwarned,
                ", ".join(map(repr, streams)),
            )
            self._warned_at, self._unwarned = now, 0

    # --- outcomes ------------------------------------------------------------------------------------
    def _outcomes(self, messages: Sequence[Message], plan: Plan, calls: list[_Call]) -> list[Outcome]:
        """One Outcome per message: its outputs and scores from its units, its alerts and status."""
        self._count_verdicts(plan)
        units = len(plan.unit_slot)
        if len(calls) == 1 and units and plan.calls[0][-1] == units - 1:  # one call, units in order
            outputs, scores = list(calls[0].y), list(calls[0].scores)
        else:
            outputs, scores = [np.empty(0)] * units, [np.empty(0)] * units
            for unit_ids, call in zip(plan.calls, calls, strict=True):
                for u, out, score in zip(unit_ids.tolist(), call.y, call.scores, strict=True):
                    outputs[u], scores[u] = out, score
        if units == len(messages):  # every message kept, one unit each: the common batch
            steps = plan.unit_stop - plan.unit_start
            if np.count_nonzero(steps != steps[0]) == 0:  # one length: map() builds the Outcomes from C
                # iter(list, None) hands each Outcome a fresh empty alerts list
                alerts: Iterator[list[Alert]] = iter(list, None)
                n = repeat(int(steps[0]))
                result = list(map(Outcome, messages, repeat("processed"), n, outputs, scores, alerts, repeat(None)))
            else:
                result = [
                    Outcome(m, "processed", len(s), o, s, [], None)
                    for m, o, s in zip(messages, outputs, scores, strict=True)
                ]
        else:
            result = self._outcomes_by_unit(messages, plan, outputs, scores)
        for call in calls:
            for i, alert in call.alerts:
                result[i].alerts.append(alert)
            for i, status in call.statuses:
                result[i].stream_status = status
        return result

    @staticmethod
    def _outcomes_by_unit(
        messages: Sequence[Message], plan: Plan, outputs: list[np.ndarray], scores: list[np.ndarray]
    ) -> list[Outcome]:
        # Units are sorted by message: message i's units are first[i]:first[i + 1].
        first = np.searchsorted(plan.unit_message, np.arange(len(messages) + 1)).tolist()
        verdicts = plan.status.tolist()
        result: list[Outcome] = []
        for i, m in enumerate(messages):
            a, b = first[i], first[i + 1]
            if verdicts[i] != KEEP:
                result.append(Outcome(m, Verdict(verdicts[i]).status, 0, None, None, [], None))
            elif b - a == 1:
                result.append(Outcome(m, "processed", len(scores[a]), outputs[a], scores[a], [], None))
            else:
                sc = np.concatenate(scores[a:b])
                result.append(Outcome(m, "processed", len(sc), np.concatenate(outputs[a:b]), sc, [], None))
        return result

    def _count_verdicts(self, plan: Plan) -> None:
        if not np.count_nonzero(plan.status):  # every message kept
            self._counts.processed += len(plan.status)
            return
        per_verdict = np.bincount(plan.status, minlength=len(Verdict)).tolist()
        c = self._counts
        c.processed += per_verdict[Verdict.KEEP]
        for verdict in (Verdict.DUPLICATE, Verdict.OUT_OF_ORDER):
            if per_verdict[verdict]:
                c.add_reason("skipped", verdict.status, per_verdict[verdict])
        if per_verdict[Verdict.REFUSED]:
            c.add_reason("rejected", "max-streams", per_verdict[Verdict.REFUSED])
        if per_verdict[Verdict.SEQ_JUMP]:
            c.add_reason("rejected", "seq-jump", per_verdict[Verdict.SEQ_JUMP])


def _mid_sequence(opened: list[str], messages: Sequence[Message]) -> int:
    """How many of the newly opened streams arrived with a first seq > 0 (runs only when new
    streams appeared in the batch: rare after warm-up)."""
    first: dict[str, int | None] = {}
    new = set(opened)
    for m in messages:
        if m.stream in new and m.stream not in first:
            first[m.stream] = m.seq
    return sum(1 for seq in first.values() if seq is not None and seq > 0)
