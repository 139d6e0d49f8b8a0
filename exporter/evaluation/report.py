"""SKAB results: metrics per precision, the table beside the published leaderboard, the
prediction CSVs (`<subfolder>/<name>.csv`, columns `datetime,prediction`), the JSON and
the plots. No torch here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from exporter.evaluation.metrics import NAB_PROFILES, changepoint_alarms, confusion, nab_score, pooled
from exporter.evaluation.skab import SENSORS, TRAIN_ROWS, SkabFile, in_split
from exporter.evaluation.skab_eval import DetectorConfig, FileResult, SettingResult

LEADERBOARD: tuple[tuple[str, float, float, float], ...] = (
    # SKAB v0.9 outlier detection, test split (data/README.md): F1, FAR %, MAR %.
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla LSTM", 0.54, 12.54, 59.53),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation forest", 0.29, 2.56, 82.89),
)
NAB_LEADERBOARD: tuple[tuple[str, float], ...] = (
    ("MSCRED", 32.42),
    ("Isolation forest", 26.16),
    ("T²+Q (PCA)", 25.35),
    ("Conv-AE", 23.61),
    ("LSTM-AE", 23.51),
    ("Vanilla LSTM", 11.31),
)


def _test(array: np.ndarray) -> np.ndarray:
    return np.asarray(array)[TRAIN_ROWS:]


def _labels(f: SkabFile) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly, changepoint) of a labelled file; the anomaly-free file has none to score."""
    if f.anomaly is None or f.changepoint is None:
        raise ValueError(f"{f.name}: no labels to score against")
    return f.anomaly, f.changepoint


def metrics(files: Sequence[SkabFile], results: Sequence[FileResult]) -> dict[str, Any]:
    """Pooled F1/FAR/MAR over the test rows (no point adjustment), NAB per profile, per file."""
    pairs = [(_test(_labels(f)[0]), _test(r.raised)) for f, r in zip(files, results, strict=False)]
    total = pooled(pairs)
    cps = [
        (_test(f.ts), _test(_labels(f)[1]), changepoint_alarms(_test(r.raised)))
        for f, r in zip(files, results, strict=False)
    ]
    per_file = []
    for f, r, (labels, preds) in zip(files, results, pairs, strict=False):
        c = confusion(labels, preds)
        per_file.append({"file": f.name, "threshold": r.threshold, **{k: round(v, 4) for k, v in c.as_dict().items()}})
    return {
        **total.as_dict(),
        "rows": int(sum(len(p[0]) for p in pairs)),
        "nab": {profile: round(nab_score(cps, profile=profile), 2) for profile in NAB_PROFILES},
        "per_file": per_file,
    }


def split_metrics(files: Sequence[SkabFile], results: Sequence[FileResult]) -> dict[str, dict[str, float]]:
    """Pooled F1/FAR/MAR (and the confusion counts) of the dev and held-out files apart."""
    out = {}
    for split in ("dev", "held-out"):
        pairs = [
            (_test(_labels(f)[0]), _test(r.raised))
            for f, r in zip(files, results, strict=True)
            if in_split(f.name, split)
        ]
        if pairs:
            out[split] = {**pooled(pairs).as_dict(), "files": len(pairs)}
    return out


def format_splits(splits: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per target and split: dev (valve1/) and held-out (valve2/, other/)."""
    lines = ["by split (dev = valve1/, held-out = valve2/ + other/):"]
    for target, by_split in splits.items():
        for split, m in by_split.items():
            lines.append(
                f"  {target:<10} {split:<9} {int(m['files']):>2} files  F1 {m['f1']:.3f}  "
                f"FAR {100 * m['far']:6.2f} %  MAR {100 * m['mar']:6.2f} %"
            )
    return "\n".join(lines)


def format_table(setting: str, ours: dict[str, dict[str, Any]]) -> str:
    """Our rows (one per precision) beside the published leaderboard, best F1 first."""
    rows = [
        (f"edgewatch {target} ({setting})", m["f1"], 100 * m["far"], 100 * m["mar"], True) for target, m in ours.items()
    ]
    rows += [(name, f1, far, mar, False) for name, f1, far, mar in LEADERBOARD]
    rows.sort(key=lambda r: -r[1])
    width = max(len(r[0]) for r in rows)
    lines = [f"{'algorithm':<{width}}   F1     FAR %   MAR %", "-" * (width + 26)]
    for name, f1, far, mar, mine in rows:
        lines.append(f"{name:<{width}}  {f1:5.3f}  {far:6.2f}  {mar:6.2f}" + ("   <- ours" if mine else ""))
    lines.append("")
    nab = ", ".join(f"{target} {m['nab']['standard']:.2f}" for target, m in ours.items())
    lines.append(
        f"NAB changepoint score (standard, 60 s to the right): ours {nab}; published: "
        + ", ".join(f"{n} {s:.2f}" for n, s in NAB_LEADERBOARD)
    )
    if setting == "streaming":
        lines.append(
            "note: the leaderboard is the published protocol (a model per file); "
            "this setting is not comparable row for row"
        )
    return "\n".join(lines)


def write_predictions(directory: Path, files: Sequence[SkabFile], results: Sequence[FileResult]) -> list[Path]:
    """One CSV per file, mirroring the input tree: the test rows' datetime and 0/1 prediction."""
    written = []
    for f, r in zip(files, results, strict=False):
        path = Path(directory) / f"{f.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["datetime", "prediction"])
            for stamp, flag in zip(f.datetime[TRAIN_ROWS:], _test(r.raised), strict=False):
                writer.writerow([stamp, int(flag)])
        written.append(path)
    return written


def write_json(
    path: Path, result: SettingResult, config: DetectorConfig, ours: dict[str, dict[str, Any]], *, extra: dict[str, Any]
) -> Path:
    payload = {
        "setting": result.setting,
        "trained_on": result.trained_on,
        "metrics": ours,
        "leaderboard": [{"algorithm": n, "f1": f1, "far_pct": far, "mar_pct": mar} for n, f1, far, mar in LEADERBOARD],
        "config": {**asdict(config), "baseline": config.baseline.model_dump()},
        "artifact_sizes": result.artifacts,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        **extra,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return out


def plot_results(
    directory: Path, files: Sequence[SkabFile], results: Sequence[FileResult], *, label: str
) -> list[Path]:
    """One PNG per file (`<subfolder>/<name>.png`): sensors, score vs threshold, alerts, labels."""
    from runtime.tools.plots import StreamTrace, plot_stream

    written = []
    for f, r in zip(files, results, strict=False):
        c = confusion(_test(_labels(f)[0]), _test(r.raised))
        note = f"{label}; test rows: F1 {c.f1:.2f}, FAR {100 * c.far:.1f}%, MAR {100 * c.mar:.1f}%"
        trace = StreamTrace(
            f.name, f.values, SENSORS, r.scores, r.threshold, r.raised, f.anomaly, f.ts, note, split_at=TRAIN_ROWS
        )
        written.append(plot_stream(trace, Path(directory) / f"{f.name}.png"))
    return written
