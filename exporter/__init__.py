"""exporter: a trained PyTorch LSTM/GRU module → streaming, quantized ONNX artifact.

load → make streaming → export → validate → calibrate → quantize → validate → write
(`exporter.pipeline.STEPS`). The public names are below; each is imported on first use
(PEP 562), so `import exporter` loads neither torch nor matplotlib: a gateway's CLI
imports `exporter.cli` without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.parity import Tolerances
    from exporter.pipeline import STEPS, ExportRequest, ExportResult, Step, run_export
    from exporter.progress import ProgressBar

__all__ = ["STEPS", "ExportRequest", "ExportResult", "ProgressBar", "Step", "Tolerances", "run_export"]

_WHERE = {
    "STEPS": "exporter.pipeline",
    "ExportRequest": "exporter.pipeline",
    "ExportResult": "exporter.pipeline",
    "ProgressBar": "exporter.progress",
    "Step": "exporter.pipeline",
    "Tolerances": "exporter.parity",
    "run_export": "exporter.pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
