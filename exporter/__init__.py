"""exporter: a trained PyTorch LSTM/GRU module → streaming, quantized ONNX artifact.

load → make streaming → export → validate → calibrate → quantize → validate → write
(`exporter.pipeline.STEPS`). The public names are below; each is imported on first use
(PEP 562), so `import exporter` loads neither torch nor matplotlib: a gateway's CLI
imports `exporter.cli` without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

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

__getattr__ = _lazy_exports(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
