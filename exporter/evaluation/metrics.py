"""SKAB's metrics: pooled outlier-detection F1/FAR/MAR and the NAB-style changepoint score.

Outlier detection (the published leaderboard): 0/1 predictions of every test row of every
file are pooled, with no point adjustment,
    F1 = TP / (TP + (FP + FN) / 2),  FAR = FP / (FP + TN),  MAR = FN / (FN + TP).

Changepoint detection follows SKAB's NAB scorer (`core/metrics.py`, `chp_score`, after
Numenta's NAB): each true changepoint opens a window (60 s to its right here); the first
alarm inside a window earns a reward that is higher the earlier it comes, a window
without an alarm costs A_fn, and each alarm outside every window costs A_fp. The total
is rescaled so that "no alarms" is 0 and a perfect detector is 100. A detector's alarms
are the rows where its 0/1 prediction changes, as in SKAB's notebooks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)

    @property
    def f1(self) -> float:
        denom = self.tp + (self.fp + self.fn) / 2
        return self.tp / denom if denom else 0.0

    @property
    def far(self) -> float:
        """False alarm rate: the share of normal rows flagged."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate: the share of anomalous rows not flagged."""
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
        }


def confusion(labels: np.ndarray, predictions: np.ndarray) -> Confusion:
    """labels, predictions: 0/1 arrays of the same length [T]."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predictions).astype(bool)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be equal 1-d shapes")
    return Confusion(int((y & p).sum()), int((~y & p).sum()), int((~y & ~p).sum()), int((y & ~p).sum()))


def pooled(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Confusion:
    """Sum the confusion of every (labels, predictions) pair: SKAB pools rows, not files."""
    total = Confusion(0, 0, 0, 0)
    for labels, predictions in pairs:
        total = total + confusion(labels, predictions)
    return total


NAB_PROFILES: dict[str, dict[str, float]] = {
    # SKAB's table of coefficients (A_tp, A_fp, A_fn) for its three application profiles.
    "standard": {"tp": 1.0, "fp": -0.11, "fn": -1.0},
    "low_fp": {"tp": 1.0, "fp": -0.22, "fn": -1.0},
    "low_fn": {"tp": 1.0, "fp": -0.11, "fn": -2.0},
}


def changepoint_alarms(predictions: np.ndarray) -> np.ndarray:
    """A detector's changepoint alarms from its 0/1 outlier predictions, as SKAB derives
    them: every row where the prediction changes (raised or cleared), plus row 0 when it
    starts raised. bool [T]."""
    p = np.asarray(predictions).astype(np.int8)
    if p.size == 0:
        return p.astype(bool)
    return np.concatenate([[p[0] != 0], np.diff(p) != 0])


def _reward(fraction: float, a_tp: float, a_fp: float) -> float:
    """SKAB's "improved" NAB scoring function: A_tp for an alarm at the window's start,
    falling along a tanh to A_fp at its end; `fraction` is the alarm's position in [0, 1]."""
    x = np.linspace(-np.pi / 2, np.pi / 2, 1000)[min(int(fraction * 1000), 999)]
    half = (a_tp - a_fp) / 2
    return float(-half * np.tanh(x) / np.tanh(np.pi / 2) + half + a_fp)


def _windows(cp_ts: np.ndarray, window_s: float, where: str) -> list[list[float]]:
    """One [start, end] per true changepoint; overlaps cut from the right window (SKAB's
    default intersection mode)."""
    offset = {"right": (0.0, window_s), "center": (-window_s / 2, window_s / 2), "left": (-window_s, 0.0)}[where]
    bounds = [[t + offset[0], t + offset[1]] for t in np.sort(cp_ts)]
    for prev, nxt in itertools.pairwise(bounds):
        if prev[1] >= nxt[0]:
            nxt[0] = prev[1]
    return bounds


def _file_nab(
    ts: np.ndarray, cps: np.ndarray, alarms: np.ndarray, window_s: float, where: str, w: dict[str, float]
) -> tuple[float, int]:
    """(score, number of windows) of one file: the first alarm in each window earns the
    reward, a window without one costs A_fn, every alarm outside all windows costs A_fp."""
    alarm_ts = ts[np.asarray(alarms, dtype=bool)]
    bounds = _windows(ts[np.asarray(cps, dtype=bool)], window_s, where)
    score = 0.0
    inside_any = np.zeros(len(alarm_ts), dtype=bool)
    for start, end in bounds:
        inside = (alarm_ts >= start) & (alarm_ts <= end)
        inside_any |= inside
        if inside.any():
            first = alarm_ts[inside][0]
            score += _reward((first - start) / (end - start) if end > start else 0.0, w["tp"], w["fp"])
        else:
            score += w["fn"]
    score += w["fp"] * int((~inside_any).sum())
    return score, len(bounds)


def nab_score(
    files: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    profile: str = "standard",
    window_s: float = 60.0,
    where: str = "right",
) -> float:
    """SKAB's NAB score over files given as (ts float64 [T] seconds, true changepoint 0/1 [T],
    alarm 0/1 [T]): 100 when every changepoint is caught at once with no false alarm,
    0 for a detector that never alarms, negative when false alarms cost more than the hits
    earn. `where`: the window lies to the right of (default), around or left of each
    changepoint."""
    w = NAB_PROFILES[profile]
    raw, windows = 0.0, 0
    for ts, cps, alarms in files:
        s, n = _file_nab(np.asarray(ts, dtype=np.float64), np.asarray(cps), np.asarray(alarms), window_s, where, w)
        raw += s
        windows += n
    if windows == 0:
        return 0.0
    null, perfect = w["fn"] * windows, w["tp"] * windows
    return 100.0 * (raw - null) / (perfect - null)
