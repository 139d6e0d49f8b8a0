"""Score calibration at export: the threshold the runtime uses by default.

The float model runs over the normalized calibration data (normal operation); the
runtime's own offline scorer (`runtime.engine.scoring.score_sequence`, the same numbers as the
online `Scorer`) turns its outputs into per-step scores, and `runtime.engine.scoring.calibrate`
chooses the score settings and the threshold. Using the runtime's code here is the point:
the threshold is computed on exactly the score the gateway computes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_config.errors import ExportInputError
from edge_config.manifest import Calibration, ScoreSettings, Task

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(x_norm [T, F], y [T, n]) -> scores [T]."""


def calibrate_scores(
    task: Task, x_norm: np.ndarray, y: np.ndarray, *, source: str
) -> tuple[ScoreSettings, Calibration, ScoreFn]:
    """x_norm [T, F] normalized calibration data, y [T, n] the float model's per-step outputs."""
    from runtime.engine import scoring

    base = ScoreSettings(kind="forecast-error" if task == "forecast" else "probability")
    try:
        settings, calibration = scoring.calibrate(base, task, x_norm, y, source=source)
    except ValueError as exc:
        raise ExportInputError(f"--calibration: cannot calibrate the score: {exc}") from None

    def score(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.asarray(scoring.score_sequence(settings, task, x, out), dtype=np.float64)

    return settings, calibration, score
