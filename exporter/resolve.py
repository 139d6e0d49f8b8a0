"""Decide the artifact's features, normalization, calibration data and task from the options.

Feature names come from, in order: `--features`, the normalization file, the calibration
CSV's numeric columns, else `f0..f{n-1}` with n the first RNN's input size. Normalization
comes from the file, else from the calibration data's mean/std, else none (the model takes
raw values). The calibration data is normalized here, once, with the manifest's own
`Normalization.apply` (the gateway's float32 arithmetic), for every step that uses it.

Warnings (ResolvedInputs.warnings, for the export to print): no normalization at all (the
model takes raw values; a model trained on normalized data then sees numbers it never saw),
and calibration data far from the training normalization: any feature whose calibration mean
lies more than SHIFT_LIMIT training standard deviations from the training mean (the threshold
would be chosen on data the model does not know, so either the data or the normalization is
the wrong one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_config.errors import ExportInputError, UnsupportedModelError
from edge_config.manifest import Normalization, Task
from exporter.calibration_data import (
    CalibrationData,
    normalization_from,
    read_calibration_csv,
    read_normalization,
)

SHIFT_LIMIT = 3.0
"""Calibration mean vs training normalization, in training standard deviations, beyond which
the export warns."""
NO_NORMALIZATION = (
    "the manifest will have no normalization: the gateway feeds the model raw values. Pass "
    "--normalization (edgewatch train writes normalization.json) unless the model normalizes inside."
)


@dataclass(frozen=True)
class ResolvedInputs:
    features: list[str]
    normalization: Normalization | None
    normalization_source: str
    """"file", "calibration" or "none"."""
    calibration: CalibrationData | None
    normalized: NDArray[np.float32] | None = None
    """The calibration values as the model sees them: normalized in float32, [T, F]."""
    warnings: tuple[str, ...] = ()
    """Things the user should check, one sentence each (the export prints them)."""


def resolve_inputs(
    *,
    features: list[str] | None,
    normalization: Path | None,
    calibration: Path | None,
    default_width: int,
) -> ResolvedInputs:
    norm_file = read_normalization(normalization) if normalization is not None else None
    names = features
    if norm_file is not None and norm_file.features is not None:
        if names is not None and names != norm_file.features:
            raise ExportInputError(
                f"--features {names} differ from the normalization file's features {norm_file.features}"
            )
        names = norm_file.features
    if names is not None and len(set(names)) != len(names):
        raise ExportInputError(f"feature names must be unique: {names}")
    cal = read_calibration_csv(calibration, names) if calibration is not None else None
    if names is None:
        names = cal.features if cal is not None else [f"f{i}" for i in range(default_width)]
    if norm_file is not None:
        if len(norm_file.normalization.mean) != len(names):
            raise ExportInputError(
                f"the normalization file has {len(norm_file.normalization.mean)} entries for {len(names)} features"
            )
        norm = norm_file.normalization
        normed = None if cal is None else norm.apply(cal.values)
        return ResolvedInputs(names, norm, "file", cal, normed, _shift_warnings(names, normed))
    if cal is not None:
        norm = normalization_from(cal.values)
        return ResolvedInputs(names, norm, "calibration", cal, norm.apply(cal.values))
    return ResolvedInputs(
        names,
        None,
        "none",
        None,
        warnings=(NO_NORMALIZATION,),
    )


def _shift_warnings(names: list[str], normed: NDArray[np.float32] | None) -> tuple[str, ...]:
    """One warning naming every feature whose calibration mean, in training standard deviations
    (the normalized data's mean), is beyond SHIFT_LIMIT."""
    if normed is None or len(normed) == 0:
        return ()
    shift = np.abs(normed.astype(np.float64).mean(axis=0))
    far = [f"{names[i]} {shift[i]:.1f}" for i in np.argsort(-shift) if shift[i] > SHIFT_LIMIT]
    if not far:
        return ()
    warning = (
        f"the calibration data's mean is more than {SHIFT_LIMIT:g} training standard deviations from the "
        f"training mean for {len(far)} feature(s) ({', '.join(far)} std): the threshold would be chosen on "
        "data the model does not know. Check that the calibration CSV and --normalization come from the "
        "same machine and operating point."
    )
    return (warning,)


def resolve_task(task: str, *, output_size: int, features: int) -> Task:
    """auto: output_size == features → forecast (next sample); output_size == 1 → probability."""
    if task == "forecast":
        if output_size != features:
            raise UnsupportedModelError(
                f"--task forecast needs one output per feature ({features}); the model outputs {output_size}"
            )
        return "forecast"
    if task == "probability":
        return "probability"
    if task != "auto":
        raise ExportInputError(f"--task {task!r}: expected auto, forecast or probability")
    if output_size == features and features > 1:
        return "forecast"
    if output_size == 1 and features > 1:
        return "probability"
    if output_size == 1:
        raise ExportInputError("one feature and one output: say --task forecast or --task probability")
    raise UnsupportedModelError(
        f"the model outputs {output_size} values for {features} features: neither a forecast "
        f"({features} outputs) nor a probability (1 output); pass --task or check --features"
    )
