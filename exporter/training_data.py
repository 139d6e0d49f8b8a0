"""Read `edgewatch train --data CSV…`: normal operating data in raw units.

A header row, `;` or `,` separated (whichever the header uses more). Columns are chosen by
name (`--features`); without names every numeric column is a feature, in file order, and
every file must then have the same ones. Non-numeric columns (a datetime) are skipped.
No torch here.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.errors import ExportInputError

__all__ = ["TrainingData", "read_training_csvs"]


@dataclass(frozen=True)
class TrainingData:
    features: list[str]
    sequences: list[np.ndarray]
    """One float32 [T_i, F] array per file (windows never cross two files)."""
    sources: list[str]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_one(path: Path, features: list[str] | None) -> tuple[list[str], np.ndarray]:
    try:
        with path.open(newline="") as fh:
            head = fh.readline()
            fh.seek(0)
            rows = [r for r in csv.reader(fh, delimiter=";" if head.count(";") > head.count(",") else ",") if r]
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportInputError(f"--data {path}: unreadable: {exc}") from None
    if len(rows) < 3:
        raise ExportInputError(f"--data {path}: needs a header row and at least 2 data rows")
    header = [h.strip() for h in rows[0]]
    if features is None:
        columns = [i for i, _ in enumerate(header) if i < len(rows[1]) and _number(rows[1][i]) is not None]
    else:
        missing = [f for f in features if f not in header]
        if missing:
            raise ExportInputError(f"--data {path}: no column(s) {missing}; columns are {header}")
        columns = [header.index(f) for f in features]
    if not columns:
        raise ExportInputError(f"--data {path}: no numeric columns")
    values = np.empty((len(rows) - 1, len(columns)), dtype=np.float32)
    for r, row in enumerate(rows[1:]):
        for j, c in enumerate(columns):
            v = _number(row[c]) if c < len(row) else None
            if v is None:
                raise ExportInputError(f"--data {path}: row {r + 2}, column {header[c]!r} is not a finite number")
            values[r, j] = v
    return [header[c] for c in columns], values


def read_training_csvs(paths: list[Path], features: list[str] | None) -> TrainingData:
    """Every file's chosen columns; all files must yield the same feature names."""
    if not paths:
        raise ExportInputError("--data: give at least one CSV file")
    names: list[str] | None = None
    sequences = []
    for path in paths:
        found, values = _read_one(Path(path), features)
        if names is not None and found != names:
            raise ExportInputError(f"--data {path}: columns {found} differ from the first file's {names}; pass --features")
        names = found
        sequences.append(values)
    assert names is not None
    return TrainingData(names, sequences, [str(p) for p in paths])
