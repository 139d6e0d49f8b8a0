"""Read `edgewatch train --data CSV…`: normal operating data in raw units.

A header row, `;` or `,` separated (whichever the header uses more). Columns are chosen by
name (`--features`); without names every numeric column is a feature, in file order, and
every file must then have the same ones. Non-numeric columns (a datetime) are skipped.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.errors import ExportInputError
from exporter.csv_columns import read_numeric_columns


@dataclass(frozen=True)
class TrainingData:
    features: list[str]
    sequences: list[np.ndarray]
    """One float32 [T_i, F] array per file (windows never cross two files)."""
    sources: list[str]


def _read_one(path: Path, features: list[str] | None) -> tuple[list[str], np.ndarray]:
    names, values = read_numeric_columns(path, features, option="--data")
    if len(values) < 2:
        raise ExportInputError(f"--data {path}: needs a header row and at least 2 data rows")
    return names, values


def read_training_csvs(paths: list[Path], features: list[str] | None) -> TrainingData:
    """Every file's chosen columns; all files must yield the same feature names."""
    if not paths:
        raise ExportInputError("--data: give at least one CSV file")
    names: list[str] | None = None
    sequences = []
    for path in paths:
        found, values = _read_one(Path(path), features)
        if names is not None and found != names:
            raise ExportInputError(
                f"--data {path}: columns {found} differ from the first file's {names}; pass --features"
            )
        names = found
        sequences.append(values)
    assert names is not None
    return TrainingData(names, sequences, [str(p) for p in paths])
