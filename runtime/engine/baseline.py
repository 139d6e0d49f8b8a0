"""Per-stream baselines: each stream learns how large its own errors normally are, feature by feature.

A model is calibrated on one recording; a fleet's machines run at other operating points and
with other sensors (offsets, gains, noise), so a healthy machine's next-step errors can be
several times the calibration data's on some features, and its score crosses the calibrated
threshold all day (measured: 16-19 of 20 simulated healthy machines, benchmarks/fleet_alarms.py).
So each stream learns, after it first appears (and after a reset command), from its first
`learn_steps` warm steps:

    learning   the mean squared error of each feature, e_f² in the model's calibrated units (the
               calibration data's is 1). Meanwhile it alerts only above the learning threshold:
               max(learning_factor × T, learning_ratio × μ_own) (T: the model's calibrated
               threshold; μ_own: the mean of the stream's own scores so far, from its first
               scored step, warm-up included, steps above the threshold and warm steps above
               OWN_GATE × μ_own left out). A score extreme for the model is not enough: a
               healthy machine the model does not know scores 10-25 × T from its first step
               (measured, docs/BASELINES.md); a failure is a jump against what the stream
               showed so far. Steps above it are not learned: a machine that arrives failing
               must not teach us that failing is normal.
    learned    its squared errors are divided by its own scale s_f = max(mean e_f², 1) per feature
               (policy "stream": no floor at 1), so its score is back on the calibration data's
               footing and alerts against T: a feature that is noisy on this machine is weighed
               down, one that is quiet keeps the calibrated sensitivity, and a change on it stands
               out (a step on three sensors: caught within 150 samples on 5 of 6 development
               fleets, against 3 of 6 with a per-stream threshold on the unscaled score).
    out-of-range  mean_f s_f above out_of_range_factor × the calibration scores' mean: the model
               does not know this machine. It is scaled like a learned stream (an alarm that is
               always on is no alarm), but its retained status says `out-of-range`, not `ok`.
    level      then, over `level_steps` more warm steps under the threshold, the stream learns μ_s,
               the mean of its rescaled score, and from there runs a one-sided CUSUM against it:
                   S ← min(max(0, S + (score - μ_s)/σ_cal - k), 2h)
               (σ_cal: the calibration scores' standard deviation; k = cusum_k, h = cusum_h). A
               step with S > h counts as above the threshold for the hysteresis: a next-step
               forecaster follows a level shift within a few steps, so a moderate one shows only
               as a small lasting rise of the score, which the per-step threshold misses and the
               sum catches (docs/BASELINES.md, measured). The cap 2h bounds how long the sum
               takes to fall back under h once the shift is over (≥ h/k steps).
    bias       and, learned over the first learn_steps + level_steps steps, each feature's mean
               signed error and its long-run spread; from then on an EWMA of the signed errors
               further than bias_h of its own standard deviations from that mean, on any
               feature, also counts as above the threshold (runtime.engine.shift): the
               step-change detector, first order where the CUSUM on squared errors is second.

Without calibration statistics, with learn_steps 0, or for probability models (their output is
already the quantity to threshold), every stream is scored and thresholded as calibrated. The
columns are per-stream state (scope "baseline"): checkpointed and restored with the stream,
kept across gaps and across a reload of the same model, relearned after a reset command or a
reload to other weights. docs/BASELINES.md has the reasoning and the measurements.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_config.manifest import Calibration, Task
from edge_config.schema import BaselineConfig
from runtime.engine.shift import BiasDetector
from runtime.engine.streams import StateStore

__all__ = ["LEARNED", "LEARNING", "OUT_OF_RANGE", "Baselines"]

Bools = NDArray[np.bool_]

LEARNING, LEARNED, OUT_OF_RANGE = 0, 1, 2
OWN_GATE = 2.5
"""A warm learning step takes part in its stream's own level μ_own only when at most this many
times that level (2-3 gave the same on the development fleets, docs/BASELINES.md)."""
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
        self._std_cal = std_cal
        self.shift_enabled = self.enabled and config.level_steps > 0
        """Whether learned streams also run the CUSUM against their own level."""
        self.shifts = 0
        """Steps that started a shift (the sum crossed h) since the engine last took its counts."""
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
            store.add_column("baseline.own", (), np.float32, 0.0, scope="baseline")  # μ_own, while learning
            store.add_column("baseline.own_n", (), np.int32, 0, scope="baseline")  # steps in μ_own
        if self.shift_enabled:
            store.add_column("baseline.level_n", (), np.int32, 0, scope="baseline")
            store.add_column("baseline.level", (), np.float32, 0.0, scope="baseline")  # μ_s, running mean
            store.add_column("baseline.cusum", (), np.float32, 0.0, scope="baseline")  # S
        self.bias: BiasDetector | None = None
        """The step-change detector on the signed errors (runtime.engine.shift), None: off."""
        if self.shift_enabled and config.bias_h > 0:
            features = store.column("score.contrib").shape[1]
            window = config.learn_steps + config.level_steps
            self.bias = BiasDetector(store, features, window=window, lam=config.bias_lambda, h=config.bias_h)
            store.add_column("baseline.biased", (), np.bool_, False, scope="baseline")  # above bias_h

    def step(
        self,
        slots: np.ndarray,
        scores: np.ndarray,
        warm: np.ndarray,
        squares: np.ndarray | None = None,
        errors: np.ndarray | None = None,
    ) -> Bools:
        """One time step of B distinct streams, the pass AlertTracker.observe makes: returns bool [B],
        whether each step counts as above the stream's threshold (its score above the threshold the
        stream alerts against now, or a persistent shift: watch), and the learning streams learn
        from their warm steps that stayed under it. warm: bool [B], the tracker's (enough steps
        since the model reset, and a finite score); squares, errors float64 [B, F]: the step's
        squared and signed errors (None: not needed, see needs_squares). Reads each stream's state
        once and shares the comparisons between the parts (the fixed cost of a small batch)."""
        if not self.enabled:
            over: Bools = scores > self.threshold
            return over
        states = self._store.column("baseline.state")[slots]
        learning = states == LEARNING
        if np.count_nonzero(learning):
            thresholds: np.ndarray | float = self._thresholds(slots, learning)
        else:
            thresholds = self.threshold
        over = scores > thresholds
        under = warm & ~over  # a warm step has a finite score: not over means at most the threshold
        above: Bools = over | self._watch(slots, scores, warm, under, states, errors)
        if squares is not None:  # after the comparison: a step never judges itself
            self._learn(slots, squares, under & learning)
            self._learn_own(slots, scores, learning, over, warm)
        return above

    def thresholds(self, slots: np.ndarray) -> np.ndarray:
        """float64 [B]: the threshold each stream alerts against now."""
        if not self.enabled:
            return np.full(len(slots), self.threshold)
        return self._thresholds(slots, self._store.column("baseline.state")[slots] == LEARNING)

    def _thresholds(self, slots: np.ndarray, learning: Bools) -> np.ndarray:
        out = np.empty(len(slots))
        out.fill(self.threshold)  # np.full's Python wrapper costs more than this at small B
        if np.count_nonzero(learning):
            out[learning] = self._learning_thresholds(slots[learning])
        return out

    def needs_squares(self, slots: np.ndarray) -> bool:
        """Whether any of these streams is still learning (else the step needs no squared errors)."""
        return self.enabled and bool(np.count_nonzero(self._store.column("baseline.state")[slots] == LEARNING))

    def threshold_of(self, slot: int) -> float:
        """thresholds() of one slot (it runs for every alert message: a learned stream needs no arrays)."""
        if not self.enabled or self._store.column("baseline.state")[slot] != LEARNING:
            return self.threshold
        return float(self._learning_thresholds(np.array([slot]))[0])

    def _learning_thresholds(self, slots: np.ndarray) -> np.ndarray:
        """float64 [B] of learning streams: max(learning_factor × T, learning_ratio × μ_own)."""
        own = self._store.column("baseline.own")[slots] * np.float64(self.config.learning_ratio)  # float64 out
        out: np.ndarray = np.maximum(own, self.learning_threshold)
        return out

    def _learn_own(self, slots: np.ndarray, scores: np.ndarray, learning: Bools, over: Bools, warm: Bools) -> None:
        """μ_own takes in this step's finite score where the stream is learning and the step is not
        above its threshold: every warm-up step (a stream has a level of its own by its first
        warm step), and a warm step only when at most OWN_GATE × μ_own (a failure that ramps up
        through a smoothed score must not carry the level up with it); a stream's first score
        always (with no level yet, a machine that runs above learning_factor × T would never
        get one)."""
        col = self._store.column
        own, count = col("baseline.own")[slots], col("baseline.own_n")[slots]
        keep = ~over & (~warm | (scores <= OWN_GATE * own))
        keep |= count == 0
        keep &= learning & np.isfinite(scores)
        if not np.count_nonzero(keep):
            return
        s, n, mean = slots[keep], count[keep] + 1, own[keep]
        col("baseline.own_n")[s] = n
        col("baseline.own")[s] = mean + (scores[keep] - mean) / n

    def _learn(self, slots: np.ndarray, squares: np.ndarray, learning: Bools) -> None:
        """Learning streams take in this step (learning: bool [B], warm, learning and under the
        threshold) when its squared errors are finite."""
        if not np.count_nonzero(learning):
            return
        learning &= np.isfinite(squares).all(axis=1)
        if not np.count_nonzero(learning):
            return
        col = self._store.column
        s = slots[learning]
        n = col("baseline.n")[s] + 1
        col("baseline.n")[s] = n
        sq = col("baseline.sq").take(s, axis=0)
        col("baseline.sq")[s] = sq + (squares[learning] - sq) / n[:, None]
        done = n >= self.config.learn_steps
        if np.count_nonzero(done):
            self._finish(s[done])

    def watch(
        self,
        slots: np.ndarray,
        scores: np.ndarray,
        warm: np.ndarray,
        thresholds: np.ndarray,
        errors: np.ndarray | None = None,
    ) -> Bools:
        """The shift part of step() alone: learn each learned stream's level of the rescaled score,
        then run its CUSUM; and the step-change detector on the signed errors (float64 [B, F],
        when `self.bias`). thresholds: float64 [B], this step's. Returns bool [B]: the sum is above
        h or the errors' bias above bias_h (a shift)."""
        if not self.shift_enabled:
            return np.zeros(len(slots), dtype=np.bool_)
        states = self._store.column("baseline.state")[slots]
        warm = warm & np.isfinite(scores)
        return self._watch(slots, scores, warm, warm & (scores <= thresholds), states, errors)

    def _watch(
        self,
        slots: np.ndarray,
        scores: np.ndarray,
        warm: Bools,
        under: Bools,
        states: np.ndarray,
        errors: np.ndarray | None,
    ) -> Bools:
        """watch() with what step() already has: under, bool [B]: warm and at most the threshold;
        states: int8 [B], the streams' baseline states."""
        if not self.shift_enabled:
            return np.zeros(len(slots), dtype=np.bool_)
        col = self._store.column
        if self.bias is not None and errors is not None:
            shifted: Bools = self.bias.step(slots, errors, warm, under) > self.bias.h
            before = col("baseline.biased")[slots]
            self.shifts += int(np.count_nonzero(shifted & ~before))
            col("baseline.biased")[slots] = shifted
        else:
            shifted = np.zeros(len(slots), dtype=np.bool_)
        rows = (warm & (states != LEARNING)).nonzero()[0]  # warm: the score is finite
        if rows.size == 0:
            return shifted
        if rows.size == len(slots):  # every stream learned and warm: no row selection needed
            s, x, u = slots, scores, under
        else:
            s, x, u = slots[rows], scores[rows], under[rows]
        n = col("baseline.level_n")[s]
        ready = n >= self.config.level_steps
        if np.count_nonzero(ready) == len(rows):  # the steady state: every stream knows its level
            self._cusum(s, x, shifted, rows)
            return shifted
        learn = ~ready & u  # a step above the threshold is no level to learn
        if np.count_nonzero(learn):
            sl, nl = s[learn], n[learn] + 1
            col("baseline.level_n")[sl] = nl
            level = col("baseline.level")[sl]
            col("baseline.level")[sl] = level + (x[learn] - level) / nl
        if np.count_nonzero(ready):
            self._cusum(s[ready], x[ready], shifted, rows[ready])
        return shifted

    def _cusum(self, slots: np.ndarray, scores: np.ndarray, shifted: Bools, rows: np.ndarray) -> None:
        """One CUSUM step of streams that know their level; shifted[rows] |= the sum is above h."""
        col = self._store.column
        k, h = self.config.cusum_k, self.config.cusum_h
        before = col("baseline.cusum")[slots]
        after = (scores - col("baseline.level")[slots]) / self._std_cal - k
        after += before
        np.maximum(after, 0.0, out=after)  # = np.clip(.., 0, 2h), without its Python wrapper
        np.minimum(after, 2.0 * h, out=after)
        col("baseline.cusum")[slots] = after
        above = after > h
        self.shifts += int(np.count_nonzero(above & (before <= h)))
        if len(rows) == len(shifted):
            shifted |= above
        else:
            shifted[rows] |= above

    def shift_of(self, slot: int) -> float | None:
        """The slot's shift-detector sum over h, or its errors' bias over bias_h, the larger,
        when above 1 (a persistent shift), else None."""
        if not self.shift_enabled:
            return None
        ratio = float(self._store.column("baseline.cusum")[slot]) / self.config.cusum_h
        if self.bias is not None:
            ratio = max(ratio, self.bias.statistic(slot) / self.bias.h)
        return ratio if ratio > 1.0 else None

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
