"""The manifest the export writes beside model.onnx: what the steps found, in the contract's terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from edge_config.manifest import Features, Manifest, ParityResult, StateSpec, Task, sha256_bytes
from edge_config.presets import ExportTarget
from exporter.gates import Scoring
from exporter.onnx_run import StateNames
from exporter.resolve import ResolvedInputs

if TYPE_CHECKING:  # these import torch
    from exporter.sites import RecurrentSite
    from exporter.streaming import OutputLayout, StreamingWrapper


@dataclass(frozen=True)
class Streamable:
    """The user's model made streamable, and what the probes found."""

    sites: list[RecurrentSite]
    wrapper: StreamingWrapper
    layout: OutputLayout
    names: StateNames
    task: Task

    @property
    def time_steps(self) -> Literal["dynamic", 1]:
        """1 when a cell runs in the module's own time loop (the graph holds one step), else dynamic."""
        return 1 if self.wrapper.one_step else "dynamic"


def state_names(sites: list[RecurrentSite]) -> StateNames:
    """The graph's state input/output names in wrapper order, with each tensor's (layers, hidden)."""
    return StateNames(
        inputs=[n[0] for s in sites for n in s.state_names()],
        outputs=[n[1] for s in sites for n in s.state_names()],
        shapes=[shape for s in sites for shape in s.state_shapes()],
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
        time_steps=1 if target.unrolled else m.time_steps,
        outputs=["y", *m.names.outputs],
        output_kind=m.layout.output_kind,
        output_size=m.layout.output_size,
        task=m.task,
        state=[
            StateSpec(input=i, output=o, shape=[layers, "batch", width], module=s.name, kind=k)
            for s in m.sites
            for (i, o, k), (layers, width) in zip(s.state_names(), s.state_shapes(), strict=True)
        ],
        normalization=inputs.normalization,
        score=scoring.settings,
        calibration=scoring.calibration,
        parity=parity_results,
        sizes={"model": len(model_bytes), "fp32": fp32_bytes},
        notes=notes,
    )
