"""Per-stream baselines: each stream learns its own normal score level, then alerts against it.

A model is calibrated on one recording; a fleet's machines run at other operating points
(offsets, amplitudes, noise), so a healthy machine's scores can sit well above the calibration
data's and cross the calibrated threshold all day (measured: 17-19 of 20 simulated healthy
machines, benchmarks/fleet_alarms.py). Each stream therefore learns, after it first appears
(and after a reset command), from its first `learn_steps` warm steps. With T the model's
calibrated threshold and μ_cal, σ_cal the calibration scores' mean and standard deviation, the
calibrated tail sits z = (T − μ_cal) / σ_cal standard deviations above the mean:

    learning   alerts above the learning threshold: learning_factor × T, and once 30 steps are
               in, also never below μ_n + 2z·σ_n of what the stream showed so far (a wide margin:
               few steps). Scores above it are not learned: a machine that arrives failing must
               not teach us that failing is normal.
    learned    its own threshold moves the calibrated tail to the stream's level and spread:

                   T_s = max(μ_s + z · σ_s,  the highest score it learned from)

               policy "max" alerts above max(T, T_s) (a quiet machine keeps the calibrated
               sensitivity, a noisier one gets its own); policy "stream" above T_s alone.
    out-of-range  μ_s above out_of_range_factor × μ_cal: the model does not know this machine.
               It alerts against its own level like a learned stream (an alarm that is always
               on is no alarm), but its retained status says `out-of-range` instead of `ok`.

Without calibration statistics, with learn_steps 0, or for probability models (their output is
already the quantity to threshold), every stream uses T. The columns are per-stream state (scope
"baseline"): checkpointed and restored with the stream, kept across gaps and across a reload of
the same model, relearned after a reset command or a reload to other weights. docs/BASELINES.md
has the reasoning and the measurements behind the defaults.
"""

from __future__ import annotations

import numpy as np

from edge_config.manifest import Calibration, Task
from edge_config.schema import BaselineConfig
from runtime.engine.streams import StateStore

__all__ = ["LEARNED", "LEARNING", "OUT_OF_RANGE", "PROVISIONAL_AFTER", "Baselines"]

LEARNING, LEARNED, OUT_OF_RANGE = 0, 1, 2
PROVISIONAL_AFTER = 30
"""Learning steps after which a stream's own spread also bounds its learning threshold."""


class Baselines:
    def __init__(
        self, config: BaselineConfig, threshold: float, calibration: Calibration | None, task: Task, store: StateStore
    ) -> None:
        self.config = config
        self.threshold = float(threshold)
        self.enabled = (
            config.learn_steps > 0
            and task == "forecast"
            and calibration is not None
            and calibration.score_std > 0
            and bool(np.isfinite(calibration.score_mean))
        )
        self._mean_cal = calibration.score_mean if calibration is not None else 0.0
        std_cal = calibration.score_std if calibration is not None else 1.0
        self.z = max((self.threshold - self._mean_cal) / std_cal, 0.0) if self.enabled else 0.0
        """How many calibration standard deviations the threshold sits above the calibration mean."""
        self.learning_threshold = config.learning_factor * self.threshold if self.enabled else self.threshold
        self._store = store
        self.learned = 0
        self.out_of_range = 0
        """Baselines finished since the engine last took its counts: in range, out of range."""
        if self.enabled:
            store.add_column("baseline.state", (), np.int8, LEARNING, scope="baseline")
            store.add_column("baseline.n", (), np.int64, 0, scope="baseline")
            store.add_column("baseline.mean", (), np.float64, 0.0, scope="baseline")
            store.add_column("baseline.m2", (), np.float64, 0.0, scope="baseline")
            store.add_column("baseline.max", (), np.float64, 0.0, scope="baseline")
            store.add_column("baseline.threshold", (), np.float64, np.nan, scope="baseline")

    def thresholds(self, slots: np.ndarray) -> np.ndarray:
        """float64 [B]: the threshold each stream alerts against now."""
        if not self.enabled:
            return np.full(len(slots), self.threshold)
        col = self._store.column
        own: np.ndarray = col("baseline.threshold")[slots]
        learning = np.isnan(own)
        if not learning.any():
            return own
        s = slots[learning]
        n = col("baseline.n")[s]
        spread = np.sqrt(col("baseline.m2")[s] / np.maximum(n - 1, 1))
        provisional = np.where(n >= PROVISIONAL_AFTER, col("baseline.mean")[s] + 2.0 * self.z * spread, 0.0)
        out: np.ndarray = own.copy()
        out[learning] = np.maximum(self.learning_threshold, provisional)
        return out

    def threshold_of(self, slot: int) -> float:
        return float(self.thresholds(np.array([slot]))[0])

    def learn(self, slots: np.ndarray, scores: np.ndarray, warm: np.ndarray, thresholds: np.ndarray) -> None:
        """One time step of B distinct streams: learning streams take in their warm scores that
        stayed under their threshold of this step (`thresholds`, from `thresholds(slots)`)."""
        if not self.enabled:
            return
        col = self._store.column
        learning = warm & (col("baseline.state")[slots] == LEARNING) & (scores <= thresholds)
        if not learning.any():
            return
        s = slots[learning]
        x = scores[learning]
        n = col("baseline.n")[s] + 1
        mean = col("baseline.mean")[s]
        delta = x - mean
        mean = mean + delta / n
        col("baseline.m2")[s] += delta * (x - mean)
        col("baseline.mean")[s] = mean
        col("baseline.n")[s] = n
        col("baseline.max")[s] = np.maximum(col("baseline.max")[s], x)
        done = n >= self.config.learn_steps
        if done.any():
            self._finish(s[done])

    def _finish(self, slots: np.ndarray) -> None:
        col = self._store.column
        n = col("baseline.n")[slots]
        mean = col("baseline.mean")[slots]
        std = np.sqrt(col("baseline.m2")[slots] / np.maximum(n - 1, 1))
        own = np.maximum(mean + self.z * std, col("baseline.max")[slots])
        if self.config.policy == "max":
            own = np.maximum(own, self.threshold)
        out = mean > self.config.out_of_range_factor * self._mean_cal
        col("baseline.state")[slots] = np.where(out, OUT_OF_RANGE, LEARNED)
        col("baseline.threshold")[slots] = own
        self.out_of_range += int(out.sum())
        self.learned += int((~out).sum())

    def states(self, slots: np.ndarray) -> np.ndarray:
        """int8 [B]: LEARNING, LEARNED or OUT_OF_RANGE (LEARNED for every stream when disabled)."""
        if not self.enabled:
            return np.full(len(slots), LEARNED, dtype=np.int8)
        states: np.ndarray = self._store.column("baseline.state")[slots]
        return states

    def census(self) -> tuple[int, int]:
        """(streams learning, streams out of range) among the active ones."""
        if not self.enabled or len(self._store) == 0:
            return 0, 0
        active = np.fromiter(self._store.slots.values(), dtype=np.int64, count=len(self._store))
        states = self._store.column("baseline.state")[active]
        return int(np.count_nonzero(states == LEARNING)), int(np.count_nonzero(states == OUT_OF_RANGE))
