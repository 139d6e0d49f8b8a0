"""The export's data inputs: `--normalization FILE.json`, `--calibration CSV`, feature names.

- normalization file: `{"features": [...], "mean": [...], "std": [...]}` (what
  `edgewatch train` writes); the model takes x_norm = (x - mean) / std.
- calibration CSV: normal operating data in raw units, `;` or `,` separated, header row.
  Columns are chosen by name (`--features` or the normalization file); without names, every
  numeric column is a feature. Non-numeric columns (e.g. a datetime) are ignored.

No torch here: plain numpy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.errors import ExportInputError
from edge_config.manifest import Normalization
from exporter.csv_columns import read_numeric_columns

MIN_CALIBRATION_ROWS = 50


@dataclass(frozen=True)
class NormalizationFile:
    features: list[str] | None
    normalization: Normalization


@dataclass(frozen=True)
class CalibrationData:
    """Raw calibration samples: `values` float32 [T, F] in the order of `features`."""

    features: list[str]
    values: np.ndarray
    source: str


def read_normalization(path: Path) -> NormalizationFile:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportInputError(f"--normalization {path}: unreadable JSON: {exc}") from None
    if not isinstance(raw, dict) or "mean" not in raw or "std" not in raw:
        raise ExportInputError(f"--normalization {path}: expected an object with 'mean' and 'std' (and 'features')")
    features = raw.get("features")
    if features is not None and (not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
        raise ExportInputError(f"--normalization {path}: 'features' must be a list of names")
    try:
        norm = Normalization(mean=raw["mean"], std=raw["std"])
    except ValueError as exc:
        raise ExportInputError(
            f"--normalization {path}: 'mean'/'std' must be lists of numbers ({exc.__class__.__name__})"
        ) from None
    n = len(norm.mean)
    if len(norm.std) != n or (features is not None and len(features) != n):
        raise ExportInputError(f"--normalization {path}: 'features', 'mean' and 'std' must have the same length")
    if any(not (s > 0 and math.isfinite(s)) for s in norm.std) or not all(math.isfinite(m) for m in norm.mean):
        raise ExportInputError(f"--normalization {path}: std must be finite and > 0, mean finite")
    return NormalizationFile(features, norm)


def read_calibration_csv(path: Path, features: list[str] | None) -> CalibrationData:
    """Read the calibration CSV; `features` picks and orders columns (None: all numeric ones)."""
    names, values = read_numeric_columns(path, features, option="--calibration")
    if len(values) < MIN_CALIBRATION_ROWS:
        raise ExportInputError(f"--calibration {path}: {len(values)} rows; at least {MIN_CALIBRATION_ROWS} are needed")
    return CalibrationData(names, values, str(path))


def normalization_from(values: np.ndarray) -> Normalization:
    """Per-feature mean/std of raw samples [T, F]; a constant column gets std 1 (no scaling)."""
    mean = values.astype(np.float64).mean(axis=0)
    std = values.astype(np.float64).std(axis=0)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return Normalization(mean=mean.tolist(), std=std.tolist())


def ar1_stream(steps: int, features: int, *, rho: float = 0.95, seed: int = 0) -> np.ndarray:
    """A smooth synthetic stream [steps, features] with unit variance: x_t = rho x_{t-1} + noise.

    Used for gate 3 when no calibration data is given: smooth like sensor data, unlike white
    noise, so the recurrent state builds up as it does in service."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((steps, features)) * math.sqrt(1.0 - rho * rho)
    out = np.empty((steps, features))
    out[0] = rng.standard_normal(features)
    for t in range(1, steps):
        out[t] = rho * out[t - 1] + noise[t]
    return out.astype(np.float32)
