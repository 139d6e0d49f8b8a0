"""Training the reference next-step forecaster on normal data (`edgewatch train`).

The names are imported on first use (PEP 562): `ForecastLSTM`/`SPEC` and training itself
need torch, which `import exporter.training` does not load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from exporter.training.data import TrainingData, read_training_csvs
    from exporter.training.fit import (
        NormalizationStats,
        TrainConfig,
        TrainingError,
        TrainResult,
        fit_normalization,
        train_forecaster,
        write_training_output,
    )
    from exporter.training.reference_model import SPEC, ForecastLSTM

__all__ = [
    "SPEC",
    "ForecastLSTM",
    "NormalizationStats",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainingError",
    "fit_normalization",
    "read_training_csvs",
    "train_forecaster",
    "write_training_output",
]

_WHERE = {
    "SPEC": "exporter.training.reference_model",
    "ForecastLSTM": "exporter.training.reference_model",
    "NormalizationStats": "exporter.training.fit",
    "TrainConfig": "exporter.training.fit",
    "TrainResult": "exporter.training.fit",
    "TrainingData": "exporter.training.data",
    "TrainingError": "exporter.training.fit",
    "fit_normalization": "exporter.training.fit",
    "read_training_csvs": "exporter.training.data",
    "train_forecaster": "exporter.training.fit",
    "write_training_output": "exporter.training.fit",
}

__getattr__ = _lazy_exports(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
