"""The reference model, exported in the same run: a 2-layer LSTM, hidden 64, 8 features.

With torch installed this is `exporter.training.reference_model.ForecastLSTM` (seeded random weights),
put through the real `edgewatch export` pipeline twice — cpu-fp32 and cpu-int8 — with a
normalization file and a calibration CSV from the benchmark's own workload, so the artifacts
carry a normalization and a calibrated threshold like a user's would. The torch module is
kept for the PyTorch-per-message baseline.

Without torch (a gateway, the OpenVINO environment) the same graph shape is built with
onnx.helper (runtime.tools.bench.fallback_model) and the PyTorch baseline is skipped.

This is the only benchmark module that imports the exporter, and only inside a function:
the runtime itself never needs it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.tools.bench.workload import FEATURES, LEVEL, SPREAD, ar1

HIDDEN = 64
LAYERS = 2
_CALIBRATION_ROWS = 3000
_SEED = 7

log = logging.getLogger("edgewatch.bench")


@dataclass(frozen=True)
class ReferenceModels:
    fp32: Path
    int8: Path | None
    """None when no int8 artifact could be made (no quantization tools)."""
    source: str
    """How the artifacts were made, in words."""
    torch_module: Any | None = None
    """The module the artifacts came from (torch.nn.Module), or None without torch."""
    notes: tuple[str, ...] = ()


def _feature_names() -> list[str]:
    return [f"s{i}" for i in range(FEATURES)]


def _write_inputs(work: Path) -> tuple[Path, Path]:
    """normalization.json and calibration.csv, from the benchmark's own AR(1) plant."""
    names = _feature_names()
    norm = work / "normalization.json"
    norm.write_text(json.dumps({"features": names, "mean": [LEVEL] * FEATURES, "std": [SPREAD] * FEATURES}))
    csv = work / "calibration.csv"
    rows = ar1(_CALIBRATION_ROWS, seed=_SEED + 1)
    csv.write_text(",".join(names) + "\n" + "".join(",".join(f"{v:.4f}" for v in r) + "\n" for r in rows))
    return norm, csv


def _export(work: Path) -> ReferenceModels:
    import torch

    from exporter.pipeline import ExportRequest, run_export
    from exporter.training.reference_model import SPEC, ForecastLSTM

    torch.manual_seed(_SEED)
    module = ForecastLSTM(features=FEATURES, hidden=HIDDEN, layers=LAYERS).eval()
    weights = work / "weights.pt"
    torch.save(module.state_dict(), weights)
    norm, csv = _write_inputs(work)
    out: dict[str, Path] = {}
    for target in ("cpu-fp32", "cpu-int8"):
        request = ExportRequest(
            model=SPEC,
            weights=weights,
            target=target,
            out=work / target,
            model_kwargs=module.kwargs(),
            features=_feature_names(),
            normalization=norm,
            calibration=csv,
            force=True,
            name=f"reference-{target}",
        )
        out[target] = run_export(request, log.debug).directory
    return ReferenceModels(
        fp32=out["cpu-fp32"],
        int8=out["cpu-int8"],
        source=f"edgewatch export of {SPEC} (features {FEATURES}, hidden {HIDDEN}, layers {LAYERS}; "
        "seeded random weights; calibrated on the benchmark's AR(1) plant)",
        torch_module=module,
    )


def _build_without_torch(work: Path) -> ReferenceModels:
    from runtime.tools.bench.fallback_model import write_fallback_artifacts

    fp32, int8, notes = write_fallback_artifacts(work, features=FEATURES, hidden=HIDDEN, layers=LAYERS)
    return ReferenceModels(
        fp32=fp32,
        int8=int8,
        source=f"onnx.helper LSTM (features {FEATURES}, hidden {HIDDEN}, layers {LAYERS}; random weights) — "
        "torch is not installed, so no export and no PyTorch baseline",
        notes=("torch is not installed: baseline (a) PyTorch per message skipped", *notes),
    )


def torch_available() -> bool:
    try:
        import torch  # noqa: F401  only whether it imports
    except ImportError:
        return False
    return True


def prepare_reference(work: Path) -> ReferenceModels:
    """Export (or build) the fp32 and int8 artifacts under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    return _export(work) if torch_available() else _build_without_torch(work)
