"""The Skoltech Anomaly Benchmark (SKAB v0.9): files, columns and the published split.

Layout (see the data README): `anomaly-free/anomaly-free.csv` (no labels) and 34
labelled files `valve1/*.csv`, `valve2/*.csv`, `other/*.csv`, `;`-separated, about
1 Hz. The published protocol takes each labelled file's first 400 rows as training
data and the rest as its test split. No torch here: loading is plain numpy.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.errors import ExportInputError

ENV_VAR = "EDGEWATCH_SKAB_DIR"
SENSORS: tuple[str, ...] = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
SUBFOLDERS: tuple[str, ...] = ("valve1", "valve2", "other")
DEV_SUBFOLDERS: tuple[str, ...] = ("valve1",)
"""The development split: methods and defaults are chosen on these files only. valve2/ and
other/ are held out: nothing is chosen by looking at them, they are only reported."""
SPLITS: tuple[str, ...] = ("all", "dev", "held-out")
TRAIN_ROWS = 400
"""The published protocol's training split: each labelled file's first 400 rows."""


class SkabError(ExportInputError):
    """The SKAB folder or one of its files is missing or malformed (exit code 2)."""


@dataclass(frozen=True)
class SkabFile:
    """One SKAB CSV. `name` is the path below the data folder without `.csv` (e.g. "valve1/3")."""

    name: str
    datetime: tuple[str, ...]
    """The `datetime` column verbatim (written back into the prediction CSVs)."""
    ts: np.ndarray
    """float64 [T], seconds since the epoch (the timestamps carry no zone; read as UTC)."""
    values: np.ndarray
    """float32 [T, 8] in SENSORS order, raw units."""
    anomaly: np.ndarray | None
    """int8 [T] 0/1 labels, None for the anomaly-free file."""
    changepoint: np.ndarray | None
    """int8 [T] 0/1 labels, None for the anomaly-free file."""

    def __len__(self) -> int:
        return len(self.ts)


def resolve_skab_dir(path: str | Path | None) -> Path:
    """The --data option, else $EDGEWATCH_SKAB_DIR; raise SkabError unless it holds SKAB."""
    raw = path if path is not None else os.environ.get(ENV_VAR)
    if raw is None:
        raise SkabError(f"no SKAB folder given: pass --data DIR or set {ENV_VAR}")
    root = Path(raw)
    if not (root / "anomaly-free" / "anomaly-free.csv").is_file():
        raise SkabError(f"{root}: not a SKAB data folder (expected anomaly-free/anomaly-free.csv inside)")
    return root


def read_skab_csv(path: Path, name: str) -> SkabFile:
    """Parse one `;`-separated SKAB file; the sensor columns are found by name, not position."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError as exc:
        raise SkabError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(rows) < 2:
        raise SkabError(f"{path}: no data rows")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("datetime", *SENSORS) if c not in header]
    if missing:
        raise SkabError(f"{path}: missing column(s) {missing}")
    body = [r for r in rows[1:] if r]
    column = {c: i for i, c in enumerate(header)}
    try:
        stamps = tuple(r[column["datetime"]].strip() for r in body)
        values = np.array([[float(r[column[s]]) for s in SENSORS] for r in body], dtype=np.float32)
        labels = {
            key: np.array([int(float(r[column[key]])) for r in body], dtype=np.int8) if key in column else None
            for key in ("anomaly", "changepoint")
        }
        ts = np.array(stamps, dtype="datetime64[s]").astype(np.int64).astype(np.float64)
    except (ValueError, IndexError) as exc:
        raise SkabError(f"{path}: malformed row: {exc}") from None
    if not np.isfinite(values).all():
        raise SkabError(f"{path}: non-finite sensor values")
    return SkabFile(name, stamps, ts, values, labels["anomaly"], labels["changepoint"])


def load_anomaly_free(root: Path) -> SkabFile:
    return read_skab_csv(root / "anomaly-free" / "anomaly-free.csv", "anomaly-free/anomaly-free")


def in_split(name: str, split: str) -> bool:
    """Whether file `name` ("valve1/3") belongs to split "all", "dev" or "held-out"."""
    if split not in SPLITS:
        raise SkabError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    dev = name.split("/", 1)[0] in DEV_SUBFOLDERS
    return split == "all" or dev == (split == "dev")


def load_labelled(root: Path, limit: int | None = None, split: str = "all") -> list[SkabFile]:
    """The labelled files of `split` in a fixed order (subfolder, then file number). `limit`
    keeps N files taken round robin over the subfolders, so a reduced run still sees every
    kind of failure (valve1, valve2, other)."""
    groups = []
    for sub in SUBFOLDERS:
        if not in_split(f"{sub}/", split):
            continue
        folder = root / sub
        if folder.is_dir():
            groups.append(
                sorted(folder.glob("*.csv"), key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 30, p.stem))
            )
    paths = [p for group in groups for p in group]
    if not paths:
        raise SkabError(f"{root}: no labelled files under {', '.join(SUBFOLDERS)}")
    if limit is not None:
        rounds = [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]
        keep = set(rounds[: max(limit, 0)])
        paths = [p for p in paths if p in keep]
    files = [read_skab_csv(p, f"{p.parent.name}/{p.stem}") for p in paths]
    for f in files:
        if f.anomaly is None:
            raise SkabError(f"{f.name}: labelled file without an `anomaly` column")
    return files
