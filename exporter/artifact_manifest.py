"""The manifest the export writes beside model.onnx: what the steps found, in the contract's terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_config.manifest import Features, Manifest, ParityResult, StateSpec, Task, sha256_bytes
from edge_config.presets import ExportTarget
from exporter.gates import Scoring
from exporter.onnx_run import StateNames
from exporter.resolve import ResolvedInputs

if TYPE_CHECKING:  # these import torch
    from exporter.streaming import OutputLayout, RecurrentSite, StreamingWrapper


@dataclass(frozen=True)
class Streamable:
    """The user's model made streamable, and what the probes found."""

    sites: list[RecurrentSite]
    wrapper: StreamingWrapper
    layout: OutputLayout
    names: StateNames
    task: Task


def state_names(sites: list[RecurrentSite]) -> StateNames:
    """The graph's state input/output names in wrapper order, with each tensor's (layers, hidden)."""
    return StateNames(
        inputs=[n[0] for s in sites for n in s.state_names()],
        outputs=[n[1] for s in sites for n in s.state_names()],
        shapes=[(s.layers, s.hidden) for s in sites for _ in s.state_names()],
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import onnx
    import onnxruntime
    import torch

    try:
        own = version("edgewatch")
    except PackageNotFoundError:
        own = "unknown"
    return {
        "edgewatch": own,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def build_manifest(
    name: str,
    target: ExportTarget,
    m: Streamable,
    inputs: ResolvedInputs,
    scoring: Scoring,
    *,
    model_bytes: bytes,
    fp32_bytes: int,
    parity_results: list[ParityResult],
    notes: list[str],
) -> Manifest:
    from exporter.onnx_export import OPSET

    return Manifest(
        name=name,
        sha256=sha256_bytes(model_bytes),
        versions=_versions(),
        opset=OPSET,
        target=target.name,
        precision=target.precision,
        quantization=target.quantization,
        providers=list(target.provider_types),
        features=Features(names=inputs.features, count=len(inputs.features)),
        time_steps=1 if target.unrolled else "dynamic",
        outputs=["y", *m.names.outputs],
        output_kind=m.layout.output_kind,
        output_size=m.layout.output_size,
        task=m.task,
        state=[
            StateSpec(input=i, output=o, shape=[s.layers, "batch", s.hidden], module=s.name, kind=k)
            for s in m.sites
            for i, o, k in s.state_names()
        ],
        normalization=inputs.normalization,
        score=scoring.settings,
        calibration=scoring.calibration,
        parity=parity_results,
        sizes={"model": len(model_bytes), "fp32": fp32_bytes},
        notes=notes,
    )
