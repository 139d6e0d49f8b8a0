"""A lasting bias of a stream's signed forecast errors, feature by feature: the step-change detector.

A next-step forecaster follows a level step within a few samples, so a step shows in the squared
error only as a transient and a second-order lasting rise (docs/BASELINES.md). Its signed error
shows it to first order: after a step the model keeps forecasting part of the way back to the
levels it knows, so the stepped sensors' errors stay biased, same sign, for as long as the step
lasts (measured on the development fleets: the Pressure error's mean moves by ~2 of its standard
deviations, Current's by ~1, for a 2σ step; a healthy machine's 150-sample means stay within 0.5).

Each stream learns over its first `window` warm steps under its threshold (the baselines'
learn_steps + level_steps), per feature f, from the signed error e_f (in the model's residual
units):

    μ_f      the mean of e_f
    v_f      its long-run variance: batch means of BATCH steps, b·mean((batch mean)²) - b·μ_f²,
             never below the per-step variance (errors of slow sensors are autocorrelated, so
             the per-step variance understates how far their averages wander)

then, from the next step on, an EWMA of e_f - μ_f with weight λ (bias_lambda), and the statistic

    max_f |EWMA_f| / spread_f,      spread_f = sqrt(λ/(2-λ) · v_f)

(the EWMA's stationary standard deviation). Above h (bias_h) the stream has shifted. Per stream:
four float32 vectors of the features and a count, columns of the state store (scope "baseline":
checkpointed with the stream, relearned after a reset). While a stream learns, its `ewma` column
holds the open batch's sum and its `spread` column the mean of e² (neither is needed before the
stream is learned, and neither is needed after): 64 B less per stream of 8 features.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from runtime.engine.streams import StateStore

__all__ = ["BATCH", "BiasDetector"]

BATCH = 10
"""Steps per batch of the long-run variance's batch means (50 batches in the default 500 steps)."""
_MIN_VAR = 1e-6
"""The smallest per-step variance of a feature's error (a feature that never moves)."""


class BiasDetector:
    def __init__(self, store: StateStore, features: int, *, window: int, lam: float, h: float) -> None:
        self.window = window
        self.lam = lam
        self.h = h
        self._store = store
        self._ewma_sd = float(np.sqrt(lam / (2.0 - lam)))
        store.add_column("bias.n", (), np.int32, 0, scope="baseline")
        for name in ("mean", "bsq", "ewma", "spread"):
            # mean: of e; bsq: mean of closed batch means²; ewma: of e - mean once learned (while
            # learning: the open batch's sum); spread: the EWMA's standard deviation (while
            # learning: the mean of e²)
            store.add_column(f"bias.{name}", (features,), np.float32, 0.0, scope="baseline")

    def step(self, slots: np.ndarray, errors: np.ndarray, warm: np.ndarray, under: np.ndarray) -> NDArray[np.float64]:
        """One time step of B distinct streams. errors float64 [B, F]: the step's signed errors
        (NaN: none); warm bool [B]: the step's score is trusted (not the first steps after a model
        reset); under bool [B]: its score is under the stream's threshold (else not learned).
        Returns float64 [B]: each stream's statistic (0 while it learns, or on a step not warm)."""
        col = self._store.column
        n = col("bias.n")[slots]
        finite = warm & np.isfinite(errors).all(axis=1)
        ready = finite & (n >= self.window)
        count = np.count_nonzero(ready)
        if count == len(slots):  # the steady state: every stream learned, every step trusted
            return self._watch(slots, errors).astype(np.float64)
        out = np.zeros(len(slots))
        learn = finite & ~ready & under
        if np.count_nonzero(learn):
            self._learn(slots[learn], errors[learn], n[learn] + 1)
        if count:
            out[ready] = self._watch(slots[ready], errors[ready])
        return out

    def _watch(self, s: np.ndarray, e: np.ndarray) -> NDArray[np.float32]:
        """One EWMA step of learned streams; their statistic (float32 [b])."""
        col = self._store.column
        ewma = col("bias.ewma").take(s, axis=0)
        ewma += self.lam * ((e - col("bias.mean").take(s, axis=0)) - ewma)
        col("bias.ewma")[s] = ewma
        stat: NDArray[np.float32] = np.maximum.reduce(np.abs(ewma) / col("bias.spread").take(s, axis=0), axis=1)
        return stat

    def statistic(self, slot: int) -> float:
        """The slot's statistic now (0 while it learns)."""
        col = self._store.column
        if col("bias.n")[slot] < self.window:
            return 0.0
        return float(np.max(np.abs(col("bias.ewma")[slot]) / col("bias.spread")[slot]))

    def _learn(self, s: np.ndarray, e: np.ndarray, n: np.ndarray) -> None:
        col = self._store.column
        col("bias.n")[s] = n
        # spread holds the mean of e² until learned
        mean, sq = col("bias.mean").take(s, axis=0), col("bias.spread").take(s, axis=0)
        col("bias.mean")[s] = mean + (e - mean) / n[:, None]
        col("bias.spread")[s] = sq + (e * e - sq) / n[:, None]
        bsum = col("bias.ewma").take(s, axis=0) + e  # ewma holds the open batch's sum until learned
        closed = n % BATCH == 0
        if np.count_nonzero(closed):
            batches = (n[closed] // BATCH)[:, None]
            bsq = col("bias.bsq")[s[closed]]
            col("bias.bsq")[s[closed]] = bsq + ((bsum[closed] / BATCH) ** 2 - bsq) / batches
            bsum[closed] = 0.0
        col("bias.ewma")[s] = bsum
        done = n >= self.window
        if np.count_nonzero(done):
            d = s[done]
            mu = col("bias.mean")[d].astype(np.float64)
            var = np.maximum(col("bias.spread")[d] - mu * mu, _MIN_VAR)
            long_run = BATCH * (col("bias.bsq")[d] - mu * mu)  # below var when no batch closed
            col("bias.spread")[d] = self._ewma_sd * np.sqrt(np.maximum(long_run, var))
            col("bias.ewma")[d] = 0.0  # the EWMA starts from the learned mean
