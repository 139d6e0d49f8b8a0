"""Reproduce the demo's shipped model (runtime/tools/demo/model/): developers only, needs torch.

    python -m runtime.tools.demo.make_model [--out runtime/tools/demo/model] [--epochs 30]

1. simulate healthy machines (TRAIN_SEEDS, an hour each at 1 Hz) and train the reference
   forecaster on them (`edgewatch train`'s code, small: 1 LSTM layer of 32);
2. simulate another healthy machine (CALIBRATION_SEED, two hours) as calibration data the
   model never trained on, and export to cpu-int8 with `edgewatch export`'s code (parity gates included).

The runtime never imports this module; torch and the exporter are imported inside `main`.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.tools.demo.simulator import SENSORS, Machine, simulate

__all__ = ["CALIBRATION_SEED", "DEFAULT_OUT", "TRAIN_SEEDS", "healthy_fleet", "main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "model"
TRAIN_SEEDS = tuple(range(1, 9))
CALIBRATION_SEED = 51
HOUR = 3600


def healthy_fleet(seeds: Sequence[int], steps: int) -> list[np.ndarray]:
    """float32 [steps, 8] per healthy machine."""
    return [simulate(Machine(f"healthy-{s}", seed=s), steps).values for s in seeds]


def _write_csv(path: Path, values: np.ndarray) -> Path:
    # One machine only: the exporter scores its calibration CSV as one stream, and the seam
    # between two machines' recordings would look like a failure and inflate the threshold.
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SENSORS)
        writer.writerows(values.tolist())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.tools.demo.make_model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"artifact folder (default {DEFAULT_OUT})")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-reduce", choices=["mean", "max", "top-k"], default="mean")
    parser.add_argument("--top-k", type=int, default=2)
    args = parser.parse_args(argv)

    from exporter.pipeline import ExportRequest, run_export
    from exporter.progress import ProgressBar
    from exporter.score_calibration import ScoreOptions
    from exporter.training.fit import TrainConfig, train_forecaster, write_training_output
    from exporter.training.reference_model import SPEC

    started = time.monotonic()
    config = TrainConfig(
        hidden=args.hidden, layers=1, epochs=args.epochs, window=64, stride=16, lr=5e-3, seed=args.seed
    )
    bar = ProgressBar(config.epochs, "train")
    result = train_forecaster(
        healthy_fleet(TRAIN_SEEDS, HOUR),
        SENSORS,
        config,
        progress=lambda d, n, loss: bar.update(d, f"held-out mse {loss:.4f}"),
    )
    print(f"trained in {result.seconds:.0f}s (kept epoch {result.best_epoch})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgewatch-demo-model-") as tmp:
        folder = Path(tmp)
        paths = write_training_output(result, folder, config=config, sources=[f"simulator seeds {list(TRAIN_SEEDS)}"])
        calibration = _write_csv(folder / "calibration.csv", healthy_fleet([CALIBRATION_SEED], 2 * HOUR)[0])
        request = ExportRequest(
            model=SPEC,
            weights=paths["weights"],
            target="cpu-int8",
            out=args.out,
            model_kwargs=dict(result.kwargs),
            normalization=paths["normalization"],
            calibration=calibration,
            force=True,
            name="pump-rig-demo",
            score=ScoreOptions(reduce=args.score_reduce, top_k=args.top_k),
        )
        exported = run_export(request, lambda line: print(line, file=sys.stderr))
    manifest = exported.manifest
    assert manifest.calibration is not None
    print(
        f"wrote {exported.directory} ({manifest.sizes['model'] / 1024:.0f} KiB, threshold "
        f"{manifest.calibration.threshold:.3g}) in {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
