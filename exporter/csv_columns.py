"""Read the numeric columns of a sensor CSV (`--calibration`, `train --data`).

A header row, `;` or `,` separated (whichever the header uses more); blank rows skipped.
Columns are chosen by name, or, without names, every column whose first data row parses as a
number (a datetime, ids, text do not). Every chosen value must be a finite number.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from edge_config.errors import ExportInputError


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_numeric_columns(path: Path, features: list[str] | None, *, option: str) -> tuple[list[str], np.ndarray]:
    """(column names, float32 [rows, columns]); `option` names the flag in error messages."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            head = fh.readline()
            fh.seek(0)
            rows = list(csv.reader(fh, delimiter=";" if head.count(";") > head.count(",") else ","))
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportInputError(f"{option} {path}: unreadable: {exc}") from None
    if not rows:
        raise ExportInputError(f"{option} {path}: needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise ExportInputError(f"{option} {path}: needs a header row and data rows")
    if features is None:
        chosen = [i for i in range(len(header)) if i < len(body[0]) and _as_float(body[0][i]) is not None]
    else:
        missing = [f for f in features if f not in header]
        if missing:
            raise ExportInputError(f"{option} {path}: no column(s) {missing}; columns are {header}")
        chosen = [header.index(f) for f in features]
    if not chosen:
        raise ExportInputError(f"{option} {path}: no numeric columns")
    values = np.empty((len(body), len(chosen)), dtype=np.float32)
    for r, row in enumerate(body):
        for j, col in enumerate(chosen):
            value = _as_float(row[col]) if col < len(row) else None
            if value is None or not math.isfinite(value):
                raise ExportInputError(
                    f"{option} {path}: row {r + 2}, column {header[col]!r}: not a finite number "
                    f"({row[col] if col < len(row) else 'missing'!r})"
                )
            values[r, j] = value
    return [header[c] for c in chosen], values
