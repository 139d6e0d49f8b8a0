"""The parity gates as the export runs them: verdict lines, refusals, gate 3's backend and stream,
gate 4 (batch isolation) on the artifact's graph.

The gates' arithmetic is in exporter.parity; here they are wired to the export's graphs and
turned into a verdict: a failed gate 2 refuses the model (UnsupportedModelError, exit 2), any
other failed gate raises ParityError (exit 1), a gate that cannot run here is reported skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from edge_config.errors import ParityError, UnsupportedModelError
from edge_config.manifest import Calibration, ParityResult, ScoreSettings
from edge_config.presets import ExportTarget
from exporter import parity
from exporter.calibration_data import ar1_stream
from exporter.onnx_run import GraphRunner, ort_session, reference_session
from exporter.resolve import ResolvedInputs
from exporter.score_calibration import ScoreFn

if TYPE_CHECKING:
    from runtime.engine.types import InferenceBackend

Log = Callable[[str], None]


@dataclass(frozen=True)
class Scoring:
    """The score settings, and the threshold with its score function when calibrated."""

    settings: ScoreSettings
    calibration: Calibration | None = None
    score_fn: ScoreFn | None = None


def torch_fn(wrapper: Any) -> parity.SequenceFn:
    """The streaming wrapper (state fed) as a numpy function."""
    import torch

    def run(x: np.ndarray, states: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.no_grad():
            out = wrapper(
                torch.from_numpy(np.ascontiguousarray(x)), *(torch.from_numpy(np.ascontiguousarray(s)) for s in states)
            )
        return out[0].numpy(), [o.numpy() for o in out[1:]]

    return run


def plain_fn(wrapper: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The user's module as written (zero initial state) as a numpy function."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return cast("np.ndarray", wrapper.plain_forward(torch.from_numpy(np.ascontiguousarray(x))).numpy())

    return run


def check_gates(results: list[ParityResult], log: Log, *, hint: str = "") -> None:
    """Log one verdict line per gate; raise for the first failed one (with `hint`, what to try)."""
    for r in results:
        verdict = "skipped" if r.skipped else ("passed" if r.passed else "FAILED")
        log(f"  gate {r.gate}: {r.metric} {r.value:.3g} (limit {r.tolerance:.3g}) {verdict}")
    for r in results:
        if r.skipped or r.passed:
            continue
        if r.gate == parity.GATE_STREAM:
            # Not a numerical detail: the model's output depends on more than the past.
            raise UnsupportedModelError(
                f"the model cannot be streamed: step-by-step output differs from the full-sequence output by "
                f"{r.value:.3g} (> {r.tolerance:g}); it looks at the whole sequence "
                "(e.g. normalizes over the time axis)"
            )
        raise ParityError(
            f"parity gate {r.gate} failed: {r.metric} {r.value:.3g} vs limit {r.tolerance:g} ({r.detail})"
            + (f"; {hint}" if hint else "")
        )


def quant_backend(model: bytes, target: ExportTarget) -> tuple[InferenceBackend, str] | str:
    """The backend that can run the quantized graph here, or why none can."""
    import onnxruntime as ort

    if target.quantization != "fp16":
        return ort_session(model), "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ort_session(model, ["CUDAExecutionProvider"]), "CUDAExecutionProvider"
    # ORT's CPU provider has no float16 LSTM kernel and crashes the process at session creation.
    try:
        return reference_session(model), "onnx.reference (numpy float16; no GPU provider here)"
    except Exception as exc:  # noqa: BLE001 - any op the reference evaluator lacks: report the gate skipped
        return f"no GPU provider here and onnx.reference cannot run the graph ({type(exc).__name__})"


def quant_stream(inputs: ResolvedInputs, steps: int, features: int) -> tuple[NDArray[np.float32], str]:
    """Gate 3's stream: the normalized calibration data repeated to `steps`, else a smooth synthetic one."""
    if inputs.normalized is not None:
        cal = inputs.normalized
        reps = -(-steps // len(cal))
        return np.tile(cal, (reps, 1))[:steps], "calibration data"
    return ar1_stream(steps, features), "synthetic AR(1) stream"


def gate_quantized(
    quantized: bytes,
    target: ExportTarget,
    float_runner: GraphRunner,
    stream: np.ndarray,
    tolerances: parity.Tolerances,
    scoring: Scoring,
) -> list[ParityResult]:
    """Gate 3 on `stream` [T, F]: quantized vs float outputs, and their alert decisions when a
    threshold is known; reported skipped where nothing here can run the quantized graph."""
    tolerance = tolerances.quant if tolerances.quant is not None else parity.DEFAULT_QUANT_ATOL[target.precision]
    backend = quant_backend(quantized, target)
    if isinstance(backend, str):
        skipped = ParityResult(
            gate=parity.GATE_QUANT,
            metric="max abs error",
            value=0.0,
            tolerance=tolerance,
            passed=False,
            skipped=True,
            detail=backend,
        )
        return [skipped]
    quant_runner = GraphRunner(backend[0], float_runner.names, output_kind=float_runner.output_kind)
    result, outputs = parity.gate_quantized(float_runner, quant_runner, stream, tolerance, evaluator=backend[1])
    results = [result]
    if scoring.score_fn is not None and scoring.calibration is not None:
        results.append(
            parity.gate_decisions(outputs, scoring.score_fn, scoring.calibration.threshold, tolerances.decisions)
        )
    return results


def gate_isolation(model: bytes, target: ExportTarget, float_runner: GraphRunner, stream: np.ndarray) -> ParityResult:
    """Gate 4 on the artifact's graph: the first parity.ISOLATION_STEPS steps of `stream` [T, F]
    alone vs among extreme neighbours, on the backend gate 3 uses (the CPU provider for
    float and int8 targets); reported skipped where nothing here can run the graph."""
    backend = quant_backend(model, target)
    if isinstance(backend, str):
        return ParityResult(
            gate=parity.GATE_ISOLATION,
            metric="max abs difference",
            value=0.0,
            tolerance=0.0,
            passed=False,
            skipped=True,
            detail=backend,
        )
    runner = GraphRunner(backend[0], float_runner.names, output_kind=float_runner.output_kind)
    return parity.gate_isolation(runner, stream[: parity.ISOLATION_STEPS], evaluator=backend[1])
