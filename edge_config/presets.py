"""Export target presets: what `edgewatch export --target NAME` produces.

A preset fixes the precision and the quantization method, and names the ONNX
Runtime execution providers the artifact is meant for. The gateway config's
`targets:` map (see `edge_config.schema`) says which provider a gateway uses;
`check_precision` tells whether an artifact suits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_config.errors import TargetError

__all__ = [
    "EXPORT_TARGETS",
    "PROVIDER_BY_TYPE",
    "ExportTarget",
    "Precision",
    "ProviderType",
    "Quantization",
    "check_precision",
    "export_target",
]

Precision = Literal["fp32", "fp16", "int8"]
Quantization = Literal["none", "weights", "dynamic", "fp16", "qdq"]
"""How an artifact reaches its precision: "none" (fp32 as exported); "weights" (int8 weights
behind Cast·Mul, float32 activations and compute: cpu-int8 now); "dynamic" (ORT's
quantize_dynamic, DynamicQuantizeLSTM: what cpu-int8 made before the batch-isolation gate;
no preset makes it, artifacts that have it still load); "fp16"; "qdq" (static QDQ int8)."""
ProviderType = Literal["cpu", "openvino", "cuda", "tensorrt", "qnn", "coreml", "dml"]

PROVIDER_BY_TYPE: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


@dataclass(frozen=True)
class ExportTarget:
    name: str
    precision: Precision
    quantization: Quantization
    provider_types: tuple[str, ...]
    """Provider types (keys of PROVIDER_BY_TYPE) the artifact is meant for, best first."""
    unrolled: bool
    """True when LSTM/GRU nodes are unrolled into MatMul form (time axis fixed to 1)."""
    description: str


EXPORT_TARGETS: dict[str, ExportTarget] = {
    t.name: t
    for t in (
        ExportTarget(
            "cpu-fp32",
            "fp32",
            "none",
            ("cpu", "openvino", "cuda", "tensorrt", "dml"),
            False,
            "float32 LSTM/GRU nodes; runs on every provider with an LSTM kernel",
        ),
        ExportTarget(
            "cpu-int8",
            "int8",
            "weights",
            ("cpu",),
            False,
            "int8 weights only (one scale per tensor, rebuilt in float32 when the session is created), "
            "float32 activations and compute; batch-isolated; CPU provider",
        ),
        ExportTarget(
            "gpu-fp16",
            "fp16",
            "fp16",
            ("cuda", "tensorrt", "dml"),
            False,
            "float16 weights and activations, float32 graph inputs/outputs; GPU providers only",
        ),
        ExportTarget(
            "openvino-fp32",
            "fp32",
            "none",
            ("openvino", "cpu"),
            False,
            "float32 for the OpenVINO provider (Intel CPU/iGPU/NPU)",
        ),
        ExportTarget(
            "npu-int8",
            "int8",
            "qdq",
            ("qnn", "openvino", "tensorrt", "cpu"),
            True,
            "static int8 QDQ with the recurrent cell unrolled into MatMul form, so the "
            "recurrent weights really are int8; needs --calibration; one step per call",
        ),
    )
}

# Which precisions (quantization methods) each provider type can run for recurrent models.
_SUPPORTED: dict[str, frozenset[str]] = {
    "cpu": frozenset({"none", "weights", "dynamic", "qdq"}),
    "openvino": frozenset({"none", "qdq"}),
    "cuda": frozenset({"none", "fp16"}),
    "tensorrt": frozenset({"none", "fp16", "qdq"}),
    "qnn": frozenset({"fp16", "qdq"}),
    "coreml": frozenset({"none", "fp16"}),
    "dml": frozenset({"none", "fp16"}),
}

_WHY: dict[tuple[str, str], str] = {
    ("weights", "*"): "int8-weight artifacts are exported and checked for the CPU provider only",
    ("dynamic", "*"): "DynamicQuantizeLSTM has a CPU kernel only",
    ("fp16", "cpu"): "the CPU provider has no float16 LSTM kernel (session creation fails)",
    ("fp16", "openvino"): "export fp32 for OpenVINO; it picks its own inference precision",
    ("none", "qnn"): "QNN runs quantized (QDQ) or fp16 models only",
}


def export_target(name: str) -> ExportTarget:
    try:
        return EXPORT_TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(EXPORT_TARGETS))
        raise TargetError(f"unknown export target {name!r}; known targets: {known}") from None


def check_precision(quantization: str, provider_type: str) -> str | None:
    """Return None when an artifact quantized with `quantization` suits `provider_type`,
    otherwise the reason it does not."""
    if quantization in _SUPPORTED.get(provider_type, frozenset()):
        return None
    why = _WHY.get((quantization, provider_type)) or _WHY.get((quantization, "*"))
    return why or f"{provider_type} does not run {quantization!r}-quantized recurrent models"
