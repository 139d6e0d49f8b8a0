"""`edgewatch export`, step by step: load → make streaming → export → gates → quantize → write.

Every step reports a line through `log`; a refused model raises UnsupportedModelError (exit
2), a failed parity gate ParityError (exit 1). Nothing is written until every gate passed,
and then atomically (exporter.artifact_writer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_config.errors import ExportInputError, ParityError, UnsupportedModelError
from edge_config.manifest import Features, Manifest, ParityResult, ScoreSettings, StateSpec, sha256_bytes
from edge_config.presets import ExportTarget, export_target
from exporter import parity
from exporter.artifact_writer import check_out_dir, write_artifact
from exporter.calibration_data import ar1_stream, normalize
from exporter.onnx_run import GraphRunner, StateNames, ort_session, reference_session
from exporter.resolve import ResolvedInputs, resolve_inputs, resolve_task

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
    return {"edgewatch": own, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _torch_fn(wrapper: Any) -> parity.SequenceFn:
    import torch

    def run(x: np.ndarray, states: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.no_grad():
            out = wrapper(torch.from_numpy(np.ascontiguousarray(x)), *(torch.from_numpy(np.ascontiguousarray(s)) for s in states))
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
        raise ParityError(f"parity gate {r.gate} failed: {r.metric} {r.value:.3g} vs limit {r.tolerance:g} ({r.detail})")


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
    if inputs.calibration is not None:
        cal = normalize(inputs.calibration.values, inputs.normalization)
        reps = -(-steps // len(cal))
        return np.tile(cal, (reps, 1))[:steps], "calibration data"
    return ar1_stream(steps, features), "synthetic AR(1) stream"


def run_export(req: ExportRequest, log: Callable[[str], None]) -> ExportResult:
    import torch

    from exporter.loading import build_model, load_weights
    from exporter.onnx_export import OPSET, export_onnx
    from exporter.quantize import calibration_feeds, quantize
    from exporter.score_calibration import calibrate_scores
    from exporter.streaming import find_recurrent, make_streaming
    from exporter.unroll import unroll_recurrent

    torch.manual_seed(0)
    target = export_target(req.target)
    if target.quantization == "qdq" and req.calibration is None:
        raise ExportInputError(f"target {target.name} needs --calibration CSV (normal data) for static int8 calibration")
    if req.steps < MIN_STREAM_STEPS:
        raise ExportInputError(f"--steps {req.steps}: gate 3 needs at least {MIN_STREAM_STEPS} steps")
    check_out_dir(req.out, force=req.force)

    log(f"[1/7] loading {req.model} with weights {req.weights}")
    model = build_model(req.model, req.model_kwargs)
    load_weights(model, req.weights)
    sites = find_recurrent(model)
    log("  recurrent layers: " + ", ".join(f"{s.name} ({s.kind.upper()} {s.layers}×{s.hidden})" for s in sites))
    inputs = resolve_inputs(
        features=req.features, normalization=req.normalization, calibration=req.calibration, default_width=sites[0].input_size
    )
    reference = unroll_recurrent(model, sites) if target.unrolled else None  # copy before hooks are added

    log(f"[2/7] making it streamable ({len(inputs.features)} features)")
    wrapper = make_streaming(model, sites, len(inputs.features))
    layout = wrapper.layout
    assert layout is not None
    task = resolve_task(req.task, output_size=layout.output_size, features=len(inputs.features))
    names = StateNames(
        inputs=[n[0] for s in sites for n in s.state_names()],
        outputs=[n[1] for s in sites for n in s.state_names()],
        shapes=[(s.layers, s.hidden) for s in sites for _ in s.state_names()],
    )
    log(f"  output: {layout.output_kind} of {layout.output_size} ({task}); state inputs: {', '.join(names.inputs)}")

    log(f"[3/7] exporting float ONNX (opset {OPSET})")
    float_bytes = export_onnx(wrapper)
    float_runner = GraphRunner(ort_session(float_bytes), names, output_kind=layout.output_kind)

    log("[4/7] parity gates 1-2: ONNX vs PyTorch, one step at a time vs whole sequence")
    tol = req.tolerances
    results = [
        parity.gate_onnx_vs_torch(_torch_fn(wrapper), _plain_fn(wrapper), float_runner, len(inputs.features), tol.onnx),
        parity.gate_stream_vs_sequence(float_runner, len(inputs.features), tol.stream),
    ]
    _check_gates(results, log)

    source_bytes, source_runner = float_bytes, float_runner
    if reference is not None:
        log("  unrolling the recurrent cells into MatMul form (one step per call)")
        unrolled = make_streaming(reference, sites, len(inputs.features))
        source_bytes = export_onnx(unrolled, time_steps=1, unrolled=True)
        source_runner = GraphRunner(ort_session(source_bytes), names, output_kind=layout.output_kind)
        extra = parity.gate_unrolled_vs_torch(_torch_fn(wrapper), source_runner, len(inputs.features), tol.onnx)
        _check_gates([extra], log)
        results.append(extra)

    log("[5/7] score calibration" + ("" if inputs.calibration is not None else ": skipped (no --calibration)"))
    score, calibration, score_fn = ScoreSettings(kind="forecast-error" if task == "forecast" else "probability"), None, None
    if inputs.calibration is not None:
        x_cal = normalize(inputs.calibration.values, inputs.normalization)
        y_cal, _ = float_runner.step(x_cal[None], float_runner.zero_states(1)) if layout.output_kind == "last" else float_runner.run(x_cal[None], float_runner.zero_states(1))
        score, calibration, score_fn = calibrate_scores(task, x_cal, y_cal[0], source=inputs.calibration.source)
        log(f"  threshold {calibration.threshold:.4g} ({calibration.method}) from {calibration.steps} steps")

    log(f"[6/7] quantizing for {target.name} ({target.quantization})")
    feeds = None
    if target.quantization == "qdq":
        assert inputs.calibration is not None
        x_cal = normalize(inputs.calibration.values[:_MAX_CALIBRATION_FEEDS], inputs.normalization)
        feeds = calibration_feeds(source_runner, x_cal)
    quantized = quantize(source_bytes, target, calibration_feeds=feeds, state_inputs=names.inputs)
    for note in quantized.notes:
        log(f"  {note}")

    if target.quantization != "none":
        stream, what = _gate3_stream(inputs, req.steps, len(inputs.features))
        log(f"[7/7] parity gate 3: quantized vs float over {len(stream)} steps of {what}")
        backend = _quant_backend(quantized.model, target)
        tolerance = tol.quant if tol.quant is not None else parity.DEFAULT_QUANT_ATOL[target.precision]
        if isinstance(backend, str):
            gate3 = [ParityResult(gate=parity.GATE_QUANT, metric="max abs error", value=0.0, tolerance=tolerance, passed=False, skipped=True, detail=backend)]
        else:
            quant_runner = GraphRunner(backend[0], names, output_kind=layout.output_kind)
            result, outputs = parity.gate_quantized(float_runner, quant_runner, stream, tolerance, evaluator=backend[1])
            gate3 = [result]
            if score_fn is not None and calibration is not None:
                gate3.append(parity.gate_decisions(outputs, score_fn, calibration.threshold, tol.decisions))
        _check_gates(gate3, log)
        results.extend(gate3)
    else:
        log("[7/7] parity gate 3: not applicable (float32 target, nothing quantized)")

    model_bytes = quantized.model
    manifest = Manifest(
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
        outputs=["y", *names.outputs],
        output_kind=layout.output_kind,
        output_size=layout.output_size,
        task=task,
        state=[
            StateSpec(input=i, output=o, shape=[s.layers, "batch", s.hidden], module=s.name, kind=k)  # type: ignore[arg-type]
            for s in sites
            for i, o, k in s.state_names()
        ],
        normalization=inputs.normalization,
        score=score,
        calibration=calibration,
        parity=results,
        sizes={"model": len(model_bytes), "fp32": len(source_bytes)},
        notes=quantized.notes,
    )
    directory = write_artifact(req.out, model_bytes, manifest, force=req.force)
    return ExportResult(directory, manifest)
