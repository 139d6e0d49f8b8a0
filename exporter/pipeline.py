"""`edgewatch export`, step by step: load → make streaming → export → gates → quantize → write.

Every step reports a line through `log`; a refused model raises UnsupportedModelError (exit
2), a failed parity gate ParityError (exit 1). Nothing is written until every gate passed,
and then atomically (exporter.artifact_writer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_config.errors import ExportInputError, ParityError, UnsupportedModelError
from edge_config.manifest import Calibration, Features, Manifest, ParityResult, ScoreSettings, StateSpec, sha256_bytes
from edge_config.presets import ExportTarget, export_target
from exporter import parity
from exporter.artifact_writer import check_out_dir, write_artifact
from exporter.calibration_data import ar1_stream
from exporter.onnx_run import GraphRunner, StateNames, ort_session, reference_session
from exporter.resolve import ResolvedInputs, Task, resolve_inputs, resolve_task
from exporter.score_calibration import ScoreFn
from runtime.engine.engine import normalize  # the gateway's own arithmetic: calibrate on what serves

if TYPE_CHECKING:  # these import torch; the pipeline imports them inside run_export only
    from exporter.streaming import OutputLayout, RecurrentSite, StreamingWrapper

__all__ = ["ExportRequest", "ExportResult", "run_export"]

MIN_STREAM_STEPS = 2000
_MAX_CALIBRATION_FEEDS = 20_000


@dataclass(frozen=True)
class ExportRequest:
    model: str
    weights: Path
    target: str
    out: Path
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    normalization: Path | None = None
    calibration: Path | None = None
    task: str = "auto"
    tolerances: parity.Tolerances = parity.Tolerances()
    steps: int = MIN_STREAM_STEPS
    force: bool = False
    name: str | None = None


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: Manifest


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


def _torch_fn(wrapper: Any) -> parity.SequenceFn:
    import torch

    def run(x: np.ndarray, states: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.no_grad():
            out = wrapper(
                torch.from_numpy(np.ascontiguousarray(x)), *(torch.from_numpy(np.ascontiguousarray(s)) for s in states)
            )
        return out[0].numpy(), [o.numpy() for o in out[1:]]

    return run


def _plain_fn(wrapper: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapper.plain_forward(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


def _check_gates(results: list[ParityResult], log: Callable[[str], None]) -> None:
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
                f"{r.value:.3g} (> {r.tolerance:g}); it looks at the whole sequence (e.g. normalizes over the time axis)"
            )
        raise ParityError(
            f"parity gate {r.gate} failed: {r.metric} {r.value:.3g} vs limit {r.tolerance:g} ({r.detail})"
        )


def _quant_backend(model: bytes, target: ExportTarget) -> tuple[Any, str] | str:
    """The backend that can run the quantized graph here, or why none can."""
    import onnxruntime as ort

    if target.quantization != "fp16":
        return ort_session(model), "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ort_session(model, ["CUDAExecutionProvider"]), "CUDAExecutionProvider"
    # ORT's CPU provider has no float16 LSTM kernel and crashes the process at session creation.
    try:
        return reference_session(model), "onnx.reference (numpy float16; no GPU provider here)"
    except Exception as exc:  # an op the reference evaluator lacks
        return f"no GPU provider here and onnx.reference cannot run the graph ({type(exc).__name__})"


def _gate3_stream(inputs: ResolvedInputs, steps: int, features: int) -> tuple[np.ndarray, str]:
    """Calibration data (normalized) repeated to `steps`, else a smooth synthetic stream."""
    if inputs.calibration is not None:
        cal = normalize(inputs.calibration.values, inputs.normalization)
        reps = -(-steps // len(cal))
        return np.tile(cal, (reps, 1))[:steps], "calibration data"
    return ar1_stream(steps, features), "synthetic AR(1) stream"


@dataclass(frozen=True)
class _Streamable:
    """The user's model made streamable, and what the probes found."""

    sites: list[RecurrentSite]
    wrapper: StreamingWrapper
    layout: OutputLayout
    names: StateNames
    task: Task


@dataclass(frozen=True)
class _Scoring:
    settings: ScoreSettings
    calibration: Calibration | None = None
    score_fn: ScoreFn | None = None


def _score_calibration(
    inputs: ResolvedInputs, m: _Streamable, runner: GraphRunner, log: Callable[[str], None]
) -> _Scoring:
    """Threshold and score settings from the float model's outputs on the calibration data.

    Calibrated on the float graph; gate 3's decision agreement then shows that the
    quantized artifact makes the same decisions under this threshold."""
    from exporter.score_calibration import calibrate_scores

    base = ScoreSettings(kind="forecast-error" if m.task == "forecast" else "probability")
    if inputs.calibration is None:
        log("[5/7] score calibration: skipped (no --calibration; the gateway config must set a threshold)")
        return _Scoring(base)
    log("[5/7] score calibration on the calibration data")
    x_cal = normalize(inputs.calibration.values, inputs.normalization)
    # A last-step model gives one output per call: step it to get every step's output.
    run = runner.step if m.layout.output_kind == "last" else runner.run
    y_cal, _ = run(x_cal[None], runner.zero_states(1))
    settings, calibration, score_fn = calibrate_scores(m.task, x_cal, y_cal[0], source=inputs.calibration.source)
    log(f"  threshold {calibration.threshold:.4g} ({calibration.method}) from {calibration.steps} steps")
    return _Scoring(settings, calibration, score_fn)


def _gate3(
    req: ExportRequest,
    target: ExportTarget,
    quantized: bytes,
    inputs: ResolvedInputs,
    m: _Streamable,
    float_runner: GraphRunner,
    scoring: _Scoring,
    log: Callable[[str], None],
) -> list[ParityResult]:
    if target.quantization == "none":
        log("[7/7] parity gate 3: not applicable (float32 target, nothing quantized)")
        return []
    stream, what = _gate3_stream(inputs, req.steps, len(inputs.features))
    log(f"[7/7] parity gate 3: quantized vs float over {len(stream)} steps of {what}")
    tol = req.tolerances
    tolerance = tol.quant if tol.quant is not None else parity.DEFAULT_QUANT_ATOL[target.precision]
    backend = _quant_backend(quantized, target)
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
        results = [skipped]
    else:
        quant_runner = GraphRunner(backend[0], m.names, output_kind=m.layout.output_kind)
        result, outputs = parity.gate_quantized(float_runner, quant_runner, stream, tolerance, evaluator=backend[1])
        results = [result]
        if scoring.score_fn is not None and scoring.calibration is not None:
            results.append(
                parity.gate_decisions(outputs, scoring.score_fn, scoring.calibration.threshold, tol.decisions)
            )
    _check_gates(results, log)
    return results


def _make_streamable(
    req: ExportRequest, model: Any, sites: list[Any], inputs: ResolvedInputs, log: Callable[[str], None]
) -> _Streamable:
    from exporter.streaming import make_streaming

    log(f"[2/7] making it streamable ({len(inputs.features)} features)")
    wrapper = make_streaming(model, sites, len(inputs.features))
    layout = wrapper.layout
    assert layout is not None  # make_streaming probed it
    task = resolve_task(req.task, output_size=layout.output_size, features=len(inputs.features))
    names = StateNames(
        inputs=[n[0] for s in sites for n in s.state_names()],
        outputs=[n[1] for s in sites for n in s.state_names()],
        shapes=[(s.layers, s.hidden) for s in sites for _ in s.state_names()],
    )
    log(f"  output: {layout.output_kind} of {layout.output_size} ({task}); state inputs: {', '.join(names.inputs)}")
    return _Streamable(sites, wrapper, layout, names, task)


def _manifest(
    req: ExportRequest,
    target: ExportTarget,
    m: _Streamable,
    inputs: ResolvedInputs,
    scoring: _Scoring,
    model_bytes: bytes,
    fp32_bytes: int,
    parity_results: list[ParityResult],
    notes: list[str],
) -> Manifest:
    from exporter.onnx_export import OPSET

    return Manifest(
        name=req.name or req.out.name,
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
            StateSpec(input=i, output=o, shape=[s.layers, "batch", s.hidden], module=s.name, kind=k)  # type: ignore[arg-type]
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


def _check_request(req: ExportRequest) -> ExportTarget:
    """Everything that can be refused before any work is done."""
    target = export_target(req.target)
    if target.quantization == "qdq" and req.calibration is None:
        raise ExportInputError(
            f"target {target.name} needs --calibration CSV (normal data) for static int8 calibration"
        )
    if req.steps < MIN_STREAM_STEPS:
        raise ExportInputError(f"--steps {req.steps}: gate 3 needs at least {MIN_STREAM_STEPS} steps")
    check_out_dir(req.out, force=req.force)
    return target


def run_export(req: ExportRequest, log: Callable[[str], None]) -> ExportResult:
    """The whole export; raises an ExportError subclass (nothing written) on any failure."""
    import torch

    from exporter.loading import build_model, load_weights
    from exporter.onnx_export import OPSET, export_onnx
    from exporter.quantize import calibration_feeds, quantize
    from exporter.streaming import find_recurrent, make_streaming
    from exporter.unroll import unroll_recurrent

    torch.manual_seed(0)
    target = _check_request(req)

    log(f"[1/7] loading {req.model} with weights {req.weights}")
    model = build_model(req.model, req.model_kwargs)
    load_weights(model, req.weights)
    sites = find_recurrent(model)
    log("  recurrent layers: " + ", ".join(f"{s.name} ({s.kind.upper()} {s.layers}×{s.hidden})" for s in sites))
    inputs = resolve_inputs(
        features=req.features,
        normalization=req.normalization,
        calibration=req.calibration,
        default_width=sites[0].input_size,
    )
    to_unroll = unroll_recurrent(model, sites) if target.unrolled else None  # copy before the wrapper adds hooks
    m = _make_streamable(req, model, sites, inputs, log)
    n_features = len(inputs.features)

    log(f"[3/7] exporting float ONNX (opset {OPSET})")
    float_bytes = export_onnx(m.wrapper)
    float_runner = GraphRunner(ort_session(float_bytes), m.names, output_kind=m.layout.output_kind)

    log("[4/7] parity gates 1-2: ONNX vs PyTorch, one step at a time vs whole sequence")
    tol = req.tolerances
    results = [
        parity.gate_onnx_vs_torch(_torch_fn(m.wrapper), _plain_fn(m.wrapper), float_runner, n_features, tol.onnx),
        parity.gate_stream_vs_sequence(float_runner, n_features, tol.stream),
    ]
    _check_gates(results, log)
    source_bytes, source_runner = float_bytes, float_runner
    if to_unroll is not None:
        log("  unrolling the recurrent cells into MatMul form (one step per call)")
        source_bytes = export_onnx(make_streaming(to_unroll, sites, n_features), time_steps=1, unrolled=True)
        source_runner = GraphRunner(ort_session(source_bytes), m.names, output_kind=m.layout.output_kind)
        results.append(parity.gate_unrolled_vs_torch(_torch_fn(m.wrapper), source_runner, n_features, tol.onnx))
        _check_gates(results[-1:], log)

    scoring = _score_calibration(inputs, m, float_runner, log)

    log(f"[6/7] quantizing for {target.name} ({target.quantization})")
    feeds = None
    if target.quantization == "qdq" and inputs.calibration is not None:
        x_cal = normalize(inputs.calibration.values[:_MAX_CALIBRATION_FEEDS], inputs.normalization)
        feeds = calibration_feeds(source_runner, x_cal)
    quantized = quantize(source_bytes, target, calibration_feeds=feeds, state_inputs=m.names.inputs)
    for note in quantized.notes:
        log(f"  {note}")
    results += _gate3(req, target, quantized.model, inputs, m, float_runner, scoring, log)

    manifest = _manifest(req, target, m, inputs, scoring, quantized.model, len(source_bytes), results, quantized.notes)
    directory = write_artifact(req.out, quantized.model, manifest, force=req.force)
    return ExportResult(directory, manifest)
