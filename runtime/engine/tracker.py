"""Hysteresis per stream (AlertPolicy): raise after k of the last n scored steps above the
threshold, clear after m consecutive ones below; report each stream's status when it changes.

Re-exported by runtime.engine.scoring (the documented home of AlertTracker).

A step counts only when it is *warm*: at least `warmup_steps` samples since the stream's last
model reset, and a finite score. Warming-up steps neither raise nor clear, so an alert raised
before a reset (a gap) stays raised until the stream shows m healthy steps again. The hysteresis
lives in stream-scope columns of the StateStore (it survives model resets, not slot reuse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from edge_config.schema import AlertPolicy
from runtime.engine.alerts import Alert, AlertState, ClearReason, TopFeature, alert_id
from runtime.engine.baseline import LEARNED, LEARNING, OUT_OF_RANGE, Baselines
from runtime.engine.streams import StateStore
from runtime.engine.types import StreamStatus

__all__ = ["WINDOW_COLUMNS", "AlertTracker", "Explain", "Locate"]

"""Status codes stored per slot; 0 means nothing reported yet."""
_WARMING, _OK, _ALERT, _LEARNING, _OUT_OF_RANGE, _STALE = 1, 2, 3, 4, 5, 6
_REPORTED: dict[int, StreamStatus] = {
    _WARMING: "warming-up",
    _OK: "ok",
    _ALERT: "alert",
    _LEARNING: "learning",
    _OUT_OF_RANGE: "out-of-range",
    _STALE: "stale",
}
_STATUS_OF = np.full((2, 2, 256), _OK, dtype=np.int8)
"""The status to report by [raised, warm, baseline state (int8 read as uint8)]: alert while raised,
else warming-up until warm, else the baseline's state (learning, out-of-range; any other: ok)."""
_STATUS_OF[1] = _ALERT
_STATUS_OF[0, 0] = _WARMING
_STATUS_OF[0, 1, LEARNING] = _LEARNING
_STATUS_OF[0, 1, OUT_OF_RANGE] = _OUT_OF_RANGE
WINDOW_COLUMNS = ("alert.ring", "alert.pos", "alert.above")
"""The raise window: sized by raise_n and consistent only together (above = True entries of
the ring, pos < raise_n). State carried into a tracker with another raise_n drops all three."""

Locate = Callable[[int], tuple[int | None, float]]
"""Row of the batch → (seq, ts in seconds since the epoch) of the step being observed."""
Explain = Callable[[int, int], tuple[TopFeature, ...]]
"""(slot, k) → the k features contributing most to the slot's score."""


class AlertTracker:
    """Turns per-step scores into Alerts (raised / update / cleared) and status changes."""

    def __init__(
        self,
        policy: AlertPolicy,
        threshold: float,
        store: StateStore,
        *,
        model: str,
        model_sha256: str,
        explain: Explain,
        baselines: Baselines | None = None,
        model_name: str = "",
        probability: bool = False,
    ) -> None:
        """baselines: per-stream thresholds (runtime.engine.baseline); None: `threshold` for every stream.
        model_name: the artifact's own name; probability: severities compare odds (runtime.engine.alerts)."""
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        self.policy = policy
        self.threshold = float(threshold)
        self.model = model
        self.model_sha256 = model_sha256
        self.model_name = model_name
        self.probability = probability
        self._store = store
        self._explain = explain
        self.baselines = baselines
        n = policy.raise_n
        store.add_column("alert.ring", (n,), np.bool_, False, scope="stream")  # last n warm steps above?
        store.add_column("alert.pos", (), np.int64, 0, scope="stream")
        store.add_column("alert.above", (), np.int64, 0, scope="stream")  # True entries in the ring
        store.add_column("alert.below", (), np.int64, 0, scope="stream")  # consecutive below while raised
        store.add_column("alert.raised", (), np.bool_, False, scope="stream")
        store.add_column("alert.id", (), object, None, scope="stream")
        store.add_column("alert.started", (), np.float64, np.nan, scope="stream")
        store.add_column("alert.last_update", (), np.float64, -np.inf, scope="stream", portable=False)  # monotonic s
        store.add_column("alert.status", (), np.int8, 0, scope="stream")  # last reported (_REPORTED; 0: none)
        store.add_column("alert.last_score", (), np.float64, np.nan, scope="stream")  # of the last active step
        store.add_column("alert.warm", (), np.bool_, False, scope="model")  # was the last step warm?
        store.add_column("alert.last_ts", (), np.float64, np.nan, scope="stream")  # ts of the last raised/update

    def observe(
        self,
        slots: np.ndarray,
        scores: np.ndarray,
        step_index: np.ndarray,
        now: float,
        locate: Locate,
        squares: np.ndarray | None = None,
        errors: np.ndarray | None = None,
    ) -> list[tuple[int, Alert]]:
        """One time step of B distinct streams.

        slots int64 [B]; scores float64 [B]; step_index int64 [B]: samples since the model reset
        before this one; now: monotonic s (rate limit of updates); squares float64 [B, F]: the
        step's squared errors, for the baselines to learn from; errors float64 [B, F]: its signed
        errors, for the step-change detector. Returns (row, Alert) in row order.
        """
        col = self._store.column
        warm = (step_index >= self.policy.warmup_steps) & np.isfinite(scores)
        col("alert.warm")[slots] = warm
        if self.baselines is None:
            above_all = scores > self.threshold
        else:  # the stream's own threshold, or a persistent shift, counts as a step above
            above_all = self.baselines.step(slots, scores, warm, squares, errors)
        count = col("alert.above")
        # A quiet stream (ring all below, not raised) that stays below has nothing to update: the
        # ring's position does not matter while it holds only "below". Skipping it keeps the
        # healthy steady state at a handful of array operations.
        active = warm & (above_all | (count[slots] > 0) | col("alert.raised")[slots])
        if not np.count_nonzero(active):
            return []
        rows = active.nonzero()[0]
        s = slots[rows]
        above = above_all[rows]
        col("alert.last_score")[s] = scores[rows]  # what a `cleared` on eviction reports
        ring, pos = col("alert.ring"), col("alert.pos")
        p = pos[s]
        count[s] += above.astype(np.int64) - ring[s, p]
        ring[s, p] = above
        pos[s] = (p + 1) % self.policy.raise_n
        raised = col("alert.raised")[s]
        below = np.where(raised & ~above, col("alert.below")[s] + 1, 0)
        col("alert.below")[s] = below
        to_raise = ~raised & (count[s] >= self.policy.raise_k)
        to_clear = raised & (below >= self.policy.clear_m)
        events = to_raise | to_clear
        interval = self.policy.update_interval_s
        if interval is not None:
            last = col("alert.last_update")[s]
            # -inf: restored from a checkpoint (a monotonic time means nothing after a restart), the
            # interval starts now rather than an update going out at once.
            last[last == -np.inf] = now  # (np.isneginf: the same test through a Python wrapper)
            col("alert.last_update")[s] = last
            events |= raised & ~to_clear & (now - last >= interval)
        out: list[tuple[int, Alert]] = []
        for i in events.nonzero()[0]:  # events are rare: a Python loop over them is cheap
            row, slot = int(rows[i]), int(s[i])
            state: AlertState = "raised" if to_raise[i] else "cleared" if to_clear[i] else "update"
            out.append((row, self._transition(slot, state, float(scores[row]), now, *locate(row))))
        return out

    def clear_evicted(self, slot: int, ts: float) -> Alert | None:
        """The `cleared` (reason "evicted") of the slot's open alert, if any, before the stream
        is forgotten: otherwise a consumer would hold that alert open forever. ts: wall seconds."""
        if not self.is_raised(slot):
            return None
        score = float(self._store.column("alert.last_score")[slot])
        last = float(self._store.column("alert.last_ts")[slot])
        started = float(self._store.column("alert.started")[slot])
        # ts on the clock of `started`: the alert's last raised/update (recording every step's ts would
        # cost a Python call per open alert per step); the gateway's clock goes in evicted_at.
        step_ts = last if np.isfinite(last) else started if np.isfinite(started) else ts
        # A raised stream was observed with a finite score; 0.0 only guards an inconsistent state.
        cleared = self._transition(slot, "cleared", score if np.isfinite(score) else 0.0, 0.0, None, step_ts, "evicted")
        return dataclasses.replace(cleared, evicted_at=ts)

    def _transition(
        self,
        slot: int,
        state: AlertState,
        score: float,
        now: float,
        seq: int | None,
        ts: float,
        reason: ClearReason | None = None,
    ) -> Alert:
        col = self._store.column
        stream = self._store.stream_of(slot)
        if state == "raised":
            col("alert.raised")[slot] = True
            col("alert.id")[slot] = alert_id(stream, seq, ts, self.model_sha256)
            col("alert.started")[slot] = ts
            col("alert.below")[slot] = 0
        col("alert.last_update")[slot] = now
        col("alert.last_ts")[slot] = ts
        alert = Alert(
            id=str(col("alert.id")[slot]),
            stream=stream,
            state=state,
            score=score,
            threshold=self.threshold if self.baselines is None else self.baselines.threshold_of(slot),
            started=float(col("alert.started")[slot]),
            ts=ts,
            seq=seq,
            model=self.model,
            model_sha256=self.model_sha256,
            top_features=self._explain(slot, self.policy.top_features) if reason is None else (),
            reason=reason,
            model_name=self.model_name,
            probability=self.probability,
            shift=None if self.baselines is None or reason is not None else self.baselines.shift_of(slot),
        )
        if state == "cleared":
            # A fresh history: stale above-threshold steps must not re-raise at once.
            col("alert.raised")[slot] = False
            col("alert.ring")[slot] = False
            col("alert.above")[slot] = 0
            col("alert.below")[slot] = 0
            col("alert.id")[slot] = None
            col("alert.started")[slot] = np.nan
            col("alert.last_ts")[slot] = np.nan
        return alert

    def status_changes(self, slots: np.ndarray) -> list[tuple[int, StreamStatus]]:
        """(row, new status) for the streams whose status differs from the last one reported."""
        col = self._store.column
        raised, warm = col("alert.raised")[slots].view(np.uint8), col("alert.warm")[slots].view(np.uint8)
        if self.baselines is None:
            status = _STATUS_OF[raised, warm, LEARNED]
        else:
            status = _STATUS_OF[raised, warm, self.baselines.states(slots).view(np.uint8)]
        reported = col("alert.status")
        changed = (status != reported[slots]).nonzero()[0]
        if changed.size == 0:
            return []
        reported[slots[changed]] = status[changed]
        return [(int(row), _REPORTED[int(status[row])]) for row in changed]

    def mark_stale(self, slots: np.ndarray) -> np.ndarray:
        """Report `stale` for these slots (no sample stepped for a while: Engine.stale_statuses);
        returns the ones whose status changed. A raised stream keeps `alert` (its alert is open:
        a status other than `alert` promises none is); a slot that never reported stays silent.
        Its next stepped sample reports its real status again (status_changes sees the difference)."""
        reported = self._store.column("alert.status")
        current = reported[slots]
        turn: np.ndarray = slots[(current != 0) & (current != _STALE) & ~self._store.column("alert.raised")[slots]]
        reported[turn] = _STALE
        return turn

    def is_raised(self, slot: int) -> bool:
        return bool(self._store.column("alert.raised")[slot])
