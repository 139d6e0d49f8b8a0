"""Per-stream baselines: each stream learns how large its own errors normally are, feature by feature.

A model is calibrated on one recording; a fleet's machines run at other operating points and
with other sensors (offsets, gains, noise), so a healthy machine's next-step errors can be
several times the calibration data's on some features, and its score crosses the calibrated
threshold all day (measured: 16-19 of 20 simulated healthy machines, benchmarks/fleet_alarms.py).
So each stream learns, after it first appears (and after a reset command), from its first
`learn_steps` warm steps:

    learning   the mean squared error of each feature, e_f² in the model's calibrated units (the
               calibration data's is 1). Meanwhile it alerts only above the learning threshold:
               learning_factor × T (T: the model's calibrated threshold), and after 30 steps also
               never below μ_n + 2z·σ_n of its own scores so far (z: how many calibration standard
               deviations T sits above the calibration mean). Steps above it are not learned: a
               machine that arrives failing must not teach us that failing is normal.
    learned    its squared errors are divided by its own scale s_f = max(mean e_f², 1) per feature
               (policy "stream": no floor at 1), so its score is back on the calibration data's
               footing and alerts against T: a feature that is noisy on this machine is weighed
               down, one that is quiet keeps the calibrated sensitivity, and a change on it stands
               out (a step on three sensors: caught within 150 samples on 5 of 6 development
               fleets, against 3 of 6 with a per-stream threshold on the unscaled score).
    out-of-range  mean_f s_f above out_of_range_factor × the calibration scores' mean: the model
               does not know this machine. It is scaled like a learned stream (an alarm that is
               always on is no alarm), but its retained status says `out-of-range`, not `ok`.

Without calibration statistics, with learn_steps 0, or for probability models (their output is
already the quantity to threshold), every stream is scored and thresholded as calibrated. The
columns are per-stream state (scope "baseline"): checkpointed and restored with the stream,
kept across gaps and across a reload of the same model, relearned after a reset command or a
reload to other weights. docs/BASELINES.md has the reasoning and the measurements.
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
_STREAM_FLOOR = 1e-3
"""Policy "stream": the smallest scale a feature may get (a feature that never moves)."""


def enabled_for(config: BaselineConfig, calibration: Calibration | None, task: Task) -> bool:
    """Whether per-stream baselines apply: configured, a forecast model, calibration statistics."""
    return (
        config.learn_steps > 0
        and task == "forecast"
        and calibration is not None
        and calibration.score_std > 0
        and bool(np.isfinite(calibration.score_mean))
    )


class Baselines:
    def __init__(
        self, config: BaselineConfig, threshold: float, calibration: Calibration | None, task: Task, store: StateStore
    ) -> None:
        """The scorer must have been built with per_stream_scale=True when `enabled_for(...)`."""
        self.config = config
        self.threshold = float(threshold)
        self.enabled = enabled_for(config, calibration, task)
        self._mean_cal = calibration.score_mean if calibration is not None else 1.0
        std_cal = calibration.score_std if calibration is not None else 1.0
        self.z = max((self.threshold - self._mean_cal) / std_cal, 0.0) if self.enabled else 0.0
        """How many calibration standard deviations the threshold sits above the calibration mean."""
        self.learning_threshold = config.learning_factor * self.threshold if self.enabled else self.threshold
        self._store = store
        self.learned = 0
        self.out_of_range = 0
        """Baselines finished since the engine last took its counts: in range, out of range."""
        if self.enabled:
            features = store.column("score.contrib").shape[1]
            store.add_column("baseline.state", (), np.int8, LEARNING, scope="baseline")
            store.add_column("baseline.n", (), np.int64, 0, scope="baseline")
            store.add_column("baseline.sq", (features,), np.float32, 0.0, scope="baseline")  # mean e_f²
            store.add_column("baseline.mean", (), np.float64, 0.0, scope="baseline")  # of its scores
            store.add_column("baseline.m2", (), np.float64, 0.0, scope="baseline")

    def thresholds(self, slots: np.ndarray) -> np.ndarray:
        """float64 [B]: the threshold each stream alerts against now."""
        out = np.full(len(slots), self.threshold)
        if not self.enabled:
            return out
        col = self._store.column
        learning = col("baseline.state")[slots] == LEARNING
        if not learning.any():
            return out
        s = slots[learning]
        n = col("baseline.n")[s]
        spread = np.sqrt(col("baseline.m2")[s] / np.maximum(n - 1, 1))
        provisional = np.where(n >= PROVISIONAL_AFTER, col("baseline.mean")[s] + 2.0 * self.z * spread, 0.0)
        out[learning] = np.maximum(self.learning_threshold, provisional)
        return out

    def any_learning(self, slots: np.ndarray) -> bool:
        """Whether any of these streams is still learning (else the step needs no squared errors)."""
        return self.enabled and bool((self._store.column("baseline.state")[slots] == LEARNING).any())

    def threshold_of(self, slot: int) -> float:
        return float(self.thresholds(np.array([slot]))[0])

    def learn(
        self, slots: np.ndarray, scores: np.ndarray, squares: np.ndarray, warm: np.ndarray, thresholds: np.ndarray
    ) -> None:
        """One time step of B distinct streams: learning streams take in their warm steps that stayed
        under their threshold of this step. squares float64 [B, F]: the step's squared errors."""
        if not self.enabled:
            return
        col = self._store.column
        learning = warm & (col("baseline.state")[slots] == LEARNING) & (scores <= thresholds)
        learning &= np.isfinite(squares).all(axis=1)
        if not learning.any():
            return
        s = slots[learning]
        n = col("baseline.n")[s] + 1
        col("baseline.n")[s] = n
        sq = col("baseline.sq")[s]
        col("baseline.sq")[s] = sq + (squares[learning] - sq) / n[:, None]
        x = scores[learning]
        mean = col("baseline.mean")[s]
        delta = x - mean
        mean = mean + delta / n
        col("baseline.m2")[s] += delta * (x - mean)
        col("baseline.mean")[s] = mean
        done = n >= self.config.learn_steps
        if done.any():
            self._finish(s[done])

    def _finish(self, slots: np.ndarray) -> None:
        col = self._store.column
        floor = 1.0 if self.config.policy == "max" else _STREAM_FLOOR
        scale = np.maximum(col("baseline.sq")[slots], floor)
        col("score.scale")[slots] = scale
        col("score.contrib")[slots] = col("score.contrib")[slots] / scale  # the running EWMA, rescaled
        out = scale.mean(axis=1) > self.config.out_of_range_factor * self._mean_cal
        col("baseline.state")[slots] = np.where(out, OUT_OF_RANGE, LEARNED)
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
