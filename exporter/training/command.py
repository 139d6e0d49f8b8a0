"""`edgewatch train`: fit the reference forecaster on normal data, ready for `edgewatch export`.

Writes DIR/weights.pt (a plain state_dict), DIR/normalization.json (the exporter's
--normalization format) and DIR/model.json (the --model SPEC and --model-kwargs), then
prints the exact export command. The last `--calibration-fraction` of each file is kept out
of training and written to DIR/calibration.csv; the printed command calibrates on it, so
the threshold is chosen on rows the model never trained on. Progress goes to stderr. torch
is imported inside `run`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_config.errors import ExportInputError

__all__ = ["export_command", "register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the reference next-step forecasting LSTM on normal data (for users without a model)",
        description="Train exporter.training.reference_model:ForecastLSTM on normal operating data and write "
        "DIR/weights.pt, DIR/normalization.json and DIR/model.json for `edgewatch export`.",
    )
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        metavar="CSV",
        help="normal operating data, raw units (; or , separated, header row)",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder for weights.pt, normalization.json, model.json"
    )
    p.add_argument("--features", metavar="A,B,C", help="columns to use, in this order (default: every numeric column)")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="stacked LSTM layers (default 2)")
    p.add_argument(
        "--epochs", type=int, default=40, help="maximum epochs; the best held-out epoch is kept (default 40)"
    )
    p.add_argument("--window", type=int, default=64, help="steps per training window, 0 = whole files (default 64)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="tail of each file held out to pick the epoch (default 0.2; 0 = none)",
    )
    p.add_argument(
        "--calibration-fraction",
        type=float,
        default=0.2,
        help="tail of each file kept out of training and written to DIR/calibration.csv for the export's "
        "threshold (default 0.2; 0 = train on everything and calibrate on the training files)",
    )
    p.add_argument(
        "--no-persistence",
        dest="persistence",
        action="store_false",
        help="no learned per-feature persistence term (the forecast comes from the LSTM state alone)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=run)


def export_command(out: Path, kwargs: dict[str, Any], calibration: Path, target: str = "cpu-int8") -> str:
    """The `edgewatch export` command line for a training output folder."""
    from exporter.training.reference_model import SPEC

    parts = [
        "edgewatch",
        "export",
        "--model",
        SPEC,
        "--model-kwargs",
        json.dumps(kwargs),
        "--weights",
        str(out / "weights.pt"),
        "--normalization",
        str(out / "normalization.json"),
        "--calibration",
        str(calibration),
        "--target",
        target,
        "--out",
        str(out / "artifact"),
    ]
    return " ".join(shlex.quote(p) for p in parts)


def split_calibration(
    sequences: Sequence[NDArray[np.float32]], fraction: float
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
    """(heads to train on, tails to calibrate on): the last `fraction` of each sequence, at
    least 2 rows left to train on. fraction 0 keeps every row for training and no tail."""
    if not 0.0 <= fraction < 1.0:
        raise ExportInputError(f"--calibration-fraction must be in [0, 1), got {fraction}")
    heads, tails = [], []
    for seq in sequences:
        cut = max(len(seq) - round(fraction * len(seq)), 2)
        heads.append(seq[:cut])
        if cut < len(seq):
            tails.append(seq[cut:])
    return heads, tails


def write_calibration_csv(path: Path, features: Sequence[str], tails: Sequence[NDArray[np.float32]]) -> Path:
    """The held-out tails, one after the other, as a `;` CSV the exporter's --calibration reads."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(list(features))
        for tail in tails:
            writer.writerows([repr(float(v)) for v in row] for row in tail)
    return path


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: F401 - imported before the bar starts its clock (the import takes seconds)

    from exporter.progress import ProgressBar
    from exporter.training.data import read_training_csvs
    from exporter.training.fit import TrainConfig, train_forecaster, write_training_output

    features = [f.strip() for f in args.features.split(",")] if args.features else None
    data = read_training_csvs(list(args.data), features)
    config = TrainConfig(
        hidden=args.hidden,
        layers=args.layers,
        persistence=args.persistence,
        epochs=args.epochs,
        window=args.window,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        threads=args.threads,
    )
    heads, tails = split_calibration(data.sequences, args.calibration_fraction)
    rows = sum(len(s) for s in heads)
    held = sum(len(t) for t in tails)
    print(
        f"training on {rows} rows of {len(data.features)} features from {len(heads)} file(s); "
        f"{held} rows (the last {args.calibration_fraction:.0%} of each file) kept out for calibration",
        file=sys.stderr,
    )
    bar = ProgressBar(config.epochs, "train")
    what = "held-out mse" if config.val_fraction > 0 else "train mse"
    result = train_forecaster(
        heads, data.features, config, progress=lambda done, total, loss: bar.update(done, f"{what} {loss:.4f}")
    )
    paths = write_training_output(result, args.out, config=config, sources=data.sources)
    print(f"kept epoch {result.best_epoch} of {config.epochs} ({result.seconds:.1f}s)", file=sys.stderr)
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    if tails:
        calibration = write_calibration_csv(Path(args.out) / "calibration.csv", data.features, tails)
        print(f"  calibration: {calibration} ({held} rows the model did not train on)")
        print("next: export it, calibrated on the rows kept out of training:")
    else:
        calibration = Path(data.sources[0])
        print("next: export it (--calibration-fraction 0: replace the calibration CSV by normal data the model")
        print("did not train on, or the threshold will be too tight):")
    print("  " + export_command(Path(args.out), result.kwargs, calibration))
    return 0
