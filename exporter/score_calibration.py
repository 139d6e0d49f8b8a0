"""Score calibration at export: the score settings and the threshold the runtime uses by default.

The float model runs over the normalized calibration data (normal operation); the
runtime's own offline scorer (`runtime.engine.scoring.score_sequence`, the same numbers as the
online `Scorer`) turns its outputs into per-step scores, and `runtime.engine.scoring.calibrate`
chooses the score settings and the threshold: at most one false alert per stream per
`false_alert_steps` steps under the gateway's default alert policy (docs/THRESHOLDS.md). Using
the runtime's code here is the point: the threshold is chosen on exactly the alert process the
gateway runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_config.errors import ExportInputError
from edge_config.manifest import Calibration, ScoreSettings, Task
from runtime.engine.thresholds import DEFAULT_TARGET_STEPS

__all__ = ["ScoreFn", "ScoreOptions", "calibrate_scores"]

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(x_norm [T, F], y [T, n]) -> scores [T]."""


@dataclass(frozen=True)
class ScoreOptions:
    """`edgewatch export`'s score options (--false-alert-steps, --score-reduce, --top-k, --feature-cap)."""

    false_alert_steps: int = DEFAULT_TARGET_STEPS
    reduce: Literal["mean", "max", "top-k"] = "mean"
    top_k: int = 2
    feature_cap: float | None = None

    def __post_init__(self) -> None:
        if self.false_alert_steps < 1:
            raise ExportInputError(f"--false-alert-steps {self.false_alert_steps}: must be at least 1")
        if self.top_k < 1:
            raise ExportInputError(f"--top-k {self.top_k}: must be at least 1")
        if self.feature_cap is not None and not self.feature_cap > 0:
            raise ExportInputError(f"--feature-cap {self.feature_cap}: must be > 0")

    def settings(self, task: Task, features: int) -> ScoreSettings:
        """The score settings before calibration (residual_std unset)."""
        if task == "forecast" and self.reduce == "top-k" and self.top_k > features:
            raise ExportInputError(f"--top-k {self.top_k} is more than the model's {features} features")
        return ScoreSettings(
            kind="forecast-error" if task == "forecast" else "probability",
            reduce=self.reduce,
            top_k=self.top_k,
            feature_cap=self.feature_cap,
        )


def calibrate_scores(
    task: Task, x_norm: np.ndarray, y: np.ndarray, *, source: str, options: ScoreOptions | None = None
) -> tuple[ScoreSettings, Calibration, ScoreFn]:
    """x_norm [T, F] normalized calibration data, y [T, n] the float model's per-step outputs."""
    from runtime.engine import scoring

    opts = options or ScoreOptions()
    base = opts.settings(task, x_norm.shape[1])
    try:
        settings, calibration = scoring.calibrate(
            base, task, x_norm, y, false_alert_steps=opts.false_alert_steps, source=source
        )
    except ValueError as exc:
        raise ExportInputError(f"--calibration: cannot calibrate the score: {exc}") from None

    def score(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.asarray(scoring.score_sequence(settings, task, x, out), dtype=np.float64)

    return settings, calibration, score
