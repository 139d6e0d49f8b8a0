"""`edgewatch export` as one list of named steps, `STEPS`:

    load → make streaming → export → validate → calibrate → quantize → validate
         → validate isolation → write

Each step's progress line is numbered from its place in `STEPS` ("[3/7] exporting …"), so a
step added to the list renumbers every line. A refused model raises UnsupportedModelError
(exit 2), a failed parity gate ParityError (exit 1). Nothing is written until every gate
passed, and then atomically (exporter.artifact_writer). torch is imported by the steps that
need it, not by this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_config.errors import ExportInputError, UnsupportedModelError
from edge_config.manifest import Calibration, Manifest, ParityResult
from edge_config.presets import ExportTarget, export_target
from exporter import gates, parity
from exporter.artifact_manifest import Streamable, build_manifest, state_names
from exporter.artifact_writer import check_out_dir, write_artifact
from exporter.onnx_run import GraphRunner, ort_session
from exporter.resolve import ResolvedInputs, resolve_inputs, resolve_task
from exporter.score_calibration import ScoreOptions

if TYPE_CHECKING:  # these import torch; the steps import them when they run
    from exporter.input_width import InputWidth
    from exporter.quantize import QuantizationResult
    from exporter.sites import RecurrentSite

MIN_STREAM_STEPS = 2000
_MAX_CALIBRATION_FEEDS = 20_000

Log = Callable[[str], None]


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
    tolerances: parity.Tolerances = field(default_factory=parity.Tolerances)
    steps: int = MIN_STREAM_STEPS
    score: ScoreOptions = field(default_factory=ScoreOptions)
    """Score options and the false-alert target of the threshold (docs/THRESHOLDS.md)."""
    force: bool = False
    name: str | None = None
    sign: Path | None = None
    """Ed25519 private key (PEM): sign the artifact (DIR/signature.json, edge_config.signing)."""


_GENERIC_STEMS = frozenset({"model", "weights", "state_dict", "checkpoint", "best", "last", "final"})


def artifact_name(req: ExportRequest) -> str:
    """--name, else the weights file's stem, else (a generic stem such as model.pt) the module's
    Name from SPEC: never the --out folder, which is often just "artifact"."""
    if req.name:
        return req.name
    stem = req.weights.stem
    if stem and stem.lower() not in _GENERIC_STEMS:
        return stem
    return req.model.rpartition(":")[2] or req.model


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: Manifest


class _Run:
    """One export's work in progress, handed from step to step. Each attribute is set by the
    step named beside it and only read by the steps after it."""

    model: Any  # load: the user's nn.Module with its weights
    sites: list[RecurrentSite]  # load
    width: InputWidth | None  # load: the input width the module itself accepts, when one was found
    inputs: ResolvedInputs  # load
    to_unroll: Any  # load: on unrolled targets, a copy taken before the wrapper adds its hooks
    m: Streamable  # make streaming
    float_bytes: bytes  # export
    float_runner: GraphRunner  # export
    source_bytes: bytes  # validate: the graph to quantize (the unrolled one on unrolled targets)
    source_runner: GraphRunner  # validate
    scoring: gates.Scoring  # calibrate
    quantized: QuantizationResult  # quantize
    result: ExportResult  # write

    def __init__(self, req: ExportRequest, target: ExportTarget, log: Log) -> None:
        self.req = req
        self.target = target
        self.log = log
        self.results: list[ParityResult] = []  # validate (both)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[_Run, Log], None]
    """(the export so far, `say`: logs a line under this step's number)."""
    numbered: bool = True
    """False for a step that reports no progress line of its own."""


def _load(r: _Run, say: Log) -> None:
    from exporter.input_width import find_input_width
    from exporter.loading import build_model, load_weights
    from exporter.sites import find_recurrent
    from exporter.unroll import unroll_recurrent

    req = r.req
    say(f"loading {req.model} with weights {req.weights}")
    r.model = build_model(req.model, req.model_kwargs)
    load_weights(r.model, req.weights)
    r.sites = find_recurrent(r.model)
    r.log("  recurrent layers: " + ", ".join(s.describe() for s in r.sites))
    found = r.width = find_input_width(r.model)
    r.inputs = resolve_inputs(
        features=req.features,
        normalization=req.normalization,
        calibration=req.calibration,
        default_width=found.width if found is not None else max(r.sites[0].input_size, 1),
    )
    if found is not None:
        names = len(r.inputs.features)
        given = "" if names == found.width else f"; {names} feature names given override it"
        r.log(f"  input width: {found.width} ({found.how}){given}")
    for warning in r.inputs.warnings:
        r.log(f"  warning: {warning}")
    # Cells and convolutions already trace to Gemm/Conv form: only nn.LSTM/nn.GRU need unrolling.
    rnns = [s for s in r.sites if s.kind in ("lstm", "gru")]
    r.to_unroll = unroll_recurrent(r.model, rnns) if r.target.unrolled and rnns else None


def _make_streamable(r: _Run, say: Log) -> None:
    from exporter.streaming import make_streaming

    n_features = len(r.inputs.features)
    say(f"making it streamable ({n_features} features)")
    # A cell that declares onnx_lstm_weights() becomes one ONNX LSTM node on the float and int8-weight
    # targets. Not for npu-int8 (QDQ leaves LSTM nodes float) nor gpu-fp16 (its gate 3 falls back to
    # onnx.reference, which ignores LSTM's input_forget): those keep the cell as traced.
    fuse = r.target.quantization in ("none", "weights")
    try:
        wrapper = make_streaming(r.model, r.sites, n_features, fuse=fuse)
    except UnsupportedModelError as exc:
        if r.width is None or r.width.width == n_features:
            raise
        raise UnsupportedModelError(
            f"{exc}; the module itself takes {r.width.width} inputs ({r.width.how}) but {n_features} feature "
            "names were given (--features, the normalization file or the calibration CSV's numeric columns)"
        ) from None
    layout = wrapper.layout
    assert layout is not None  # make_streaming probed it
    task = resolve_task(r.req.task, output_size=layout.output_size, features=n_features)
    names = state_names(r.sites)
    order = "time-major [time, batch, features]" if layout.time_major_input else "batch-first [batch, time, features]"
    r.log(f"  input layout: {order} (detected by probing)")
    r.log(f"  output: {layout.output_kind} of {layout.output_size} ({task}); state inputs: {', '.join(names.inputs)}")
    if wrapper.one_step:
        r.log("  a cell runs in the module's own time loop: the graph holds one time step per call")
    r.m = Streamable(r.sites, wrapper, layout, names, task)


def _export(r: _Run, say: Log) -> None:
    from exporter.onnx_export import OPSET, export_onnx

    say(f"exporting float ONNX (opset {OPSET})")
    r.float_bytes = export_onnx(r.m.wrapper, time_steps=r.m.time_steps)
    r.float_runner = GraphRunner(ort_session(r.float_bytes), r.m.names, output_kind=r.m.layout.output_kind)


def _validate_float(r: _Run, say: Log) -> None:
    from exporter.onnx_export import export_onnx
    from exporter.streaming import make_streaming

    say("parity gates 1-2: ONNX vs PyTorch, one step at a time vs whole sequence")
    tol, n_features, m = r.req.tolerances, len(r.inputs.features), r.m
    torch_fn, plain = gates.torch_fn(m.wrapper), gates.plain_fn(m.wrapper)
    if m.time_steps == 1:  # the graph is one step: stepping it is all it can do, so PyTorch is the sequence
        r.results += [
            parity.gate_step_onnx_vs_torch(torch_fn, r.float_runner, n_features, tol.onnx),
            parity.gate_step_vs_torch_sequence(torch_fn, plain, r.float_runner, n_features, tol.stream),
        ]
    else:
        r.results += [
            parity.gate_onnx_vs_torch(torch_fn, plain, r.float_runner, n_features, tol.onnx),
            parity.gate_stream_vs_sequence(r.float_runner, n_features, tol.stream),
        ]
    gates.check_gates(r.results, r.log)
    r.source_bytes, r.source_runner = r.float_bytes, r.float_runner
    if r.to_unroll is not None:
        r.log("  unrolling the recurrent cells into MatMul form (one step per call)")
        unrolled = make_streaming(r.to_unroll, r.sites, n_features, fuse=False)
        r.source_bytes = export_onnx(unrolled, time_steps=1, unrolled=True)
        r.source_runner = GraphRunner(ort_session(r.source_bytes), m.names, output_kind=m.layout.output_kind)
        r.results.append(parity.gate_unrolled_vs_torch(torch_fn, r.source_runner, n_features, tol.onnx))
        gates.check_gates(r.results[-1:], r.log)


def _calibrate(r: _Run, say: Log) -> None:
    """Threshold and score settings from the float model's outputs on the calibration data.

    Calibrated on the float graph; gate 3's decision agreement then shows that the
    quantized artifact makes the same decisions under this threshold."""
    from exporter.score_calibration import calibrate_scores

    base = r.req.score.settings(r.m.task, len(r.inputs.features))
    x_cal, cal = r.inputs.normalized, r.inputs.calibration
    if x_cal is None or cal is None:
        say("score calibration: skipped (no --calibration; the gateway config must set a threshold)")
        r.scoring = gates.Scoring(base)
        return
    say("score calibration on the calibration data")
    # A last-step model gives one output per call, a one-step graph takes one step: step them.
    stepped = r.m.layout.output_kind == "last" or r.m.time_steps == 1
    run = r.float_runner.step if stepped else r.float_runner.run
    y_cal, _ = run(x_cal[None], r.float_runner.zero_states(1))
    settings, calibration, score_fn = calibrate_scores(
        r.m.task, x_cal, y_cal[0], source=cal.source, options=r.req.score
    )
    r.log(
        f"  threshold {calibration.threshold:.4g} ({calibration.method}) from {calibration.steps} steps: "
        f"at most 1 false alert per {calibration.target_steps} steps per stream"
    )
    r.log(f"  evidence: {_evidence_line(calibration)}")
    for warning in calibration.warnings:
        r.log(f"  warning: {warning}")
    r.scoring = gates.Scoring(settings, calibration, score_fn)


def _evidence_line(calibration: Calibration) -> str:
    e = calibration.evidence
    if e is None:
        return "none"
    return (
        f"{e.steps} scored steps, {e.exceedances} over u={e.tail_level:.4g} ({e.tail_quantile:.0%} level, "
        f"{e.space}) in {e.clusters} clusters (extremal index {e.extremal_index:.2f}), GPD shape {e.gpd_shape:.3f} "
        f"scale {e.gpd_scale:.4g}; tail model {e.pot_threshold:.4g}, replay floor {e.replay_floor:.4g}; "
        f"replayed raises {e.replay_raises} (allowed {e.allowed_raises}); "
        f"expected false alerts per {calibration.target_steps} steps {e.expected_false_alerts:.2g}"
    )


def _quantize(r: _Run, say: Log) -> None:
    from exporter.quantize import calibration_feeds, quantize

    say(f"quantizing for {r.target.name} ({r.target.quantization})")
    feeds = None
    if r.target.quantization == "qdq" and r.inputs.normalized is not None:
        feeds = calibration_feeds(r.source_runner, r.inputs.normalized[:_MAX_CALIBRATION_FEEDS])
    r.quantized = quantize(r.source_bytes, r.target, calibration_feeds=feeds, state_inputs=r.m.names.inputs)
    for note in r.quantized.notes:
        r.log(f"  {note}")


def _validate_quantized(r: _Run, say: Log) -> None:
    if r.target.quantization == "none":
        say("parity gate 3: not applicable (float32 target, nothing quantized)")
        return
    stream, what = gates.quant_stream(r.inputs, r.req.steps, len(r.inputs.features))
    say(f"parity gate 3: quantized vs float over {len(stream)} steps of {what}")
    results = gates.gate_quantized(r.quantized.model, r.target, r.float_runner, stream, r.req.tolerances, r.scoring)
    hint = "" if r.inputs.calibration is not None else "the quantized model was checked on a synthetic stream: "
    if hint:
        hint += "add --calibration CSV (normal operating data) to check it on real data"
    gates.check_gates(results, r.log, hint=hint)
    r.results += results


def _validate_isolation(r: _Run, say: Log) -> None:
    """Gate 4, for every target: the engine batches streams, so the artifact must give a stream
    the same outputs whoever shares its batch."""
    stream, what = gates.quant_stream(r.inputs, parity.ISOLATION_STEPS, len(r.inputs.features))
    say(f"parity gate 4: batch isolation, {len(stream)} steps of {what} alone vs among extreme neighbours")
    results = [gates.gate_isolation(r.quantized.model, r.target, r.source_runner, stream)]
    gates.check_gates(results, r.log)
    r.results += results


def _write(r: _Run, say: Log) -> None:
    q = r.quantized
    manifest = build_manifest(
        artifact_name(r.req),
        r.target,
        r.m,
        r.inputs,
        r.scoring,
        model_bytes=q.model,
        fp32_bytes=len(r.source_bytes),
        parity_results=r.results,
        notes=q.notes,
    )
    directory = write_artifact(r.req.out, q.model, manifest, force=r.req.force, sign=r.req.sign)
    r.result = ExportResult(directory, manifest)


STEPS: tuple[Step, ...] = (
    Step("load", _load),
    Step("make streaming", _make_streamable),
    Step("export", _export),
    Step("validate", _validate_float),
    Step("calibrate", _calibrate),
    Step("quantize", _quantize),
    Step("validate quantized", _validate_quantized),
    Step("validate isolation", _validate_isolation),
    # Silent: the write is atomic, and the caller prints the summary of what was written.
    Step("write", _write, numbered=False),
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


def _labelled(log: Log, label: str) -> Log:
    return lambda line: log(f"{label} {line}")


def run_export(req: ExportRequest, log: Log) -> ExportResult:
    """The whole export, step by step; raises an ExportError subclass (nothing written) on any failure."""
    import torch

    torch.manual_seed(0)
    r = _Run(req, _check_request(req), log)
    numbered = [s for s in STEPS if s.numbered]
    for step in STEPS:
        say = _labelled(log, f"[{numbered.index(step) + 1}/{len(numbered)}]") if step.numbered else log
        step.run(r, say)
    return r.result
