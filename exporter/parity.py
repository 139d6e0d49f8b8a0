"""The parity gates: proof that the exported artifact computes what the PyTorch model did.

1. `onnx-vs-torch`      float ONNX vs PyTorch on the same random input and random initial
                        state, full sequence (max abs error over y and the next states).
2. `stream-vs-sequence` the float ONNX graph fed one step at a time, state carried outside,
                        vs the same graph on the full sequence. A model that looks at the
                        future (e.g. normalizes over the time axis) fails here.
   One-step graphs (a cell in the module's own time loop, traced with one step) can only be
   stepped: gate 1 compares them with the PyTorch wrapper stepped the same way, gate 2 with
   PyTorch on the full sequence (and the module as written, from a zero state).
   `unrolled-vs-torch`  (unrolled targets) the one-step unrolled float graph, stepped, vs PyTorch.
3. `quantized-vs-float` the quantized graph vs the float graph, both stepped one sample at a
                        time over a long stream (error builds up in the carried state), and
   `quantized-decisions` when a threshold is known, the share of steps where the alert
                        decision (score > threshold) is the same.
4. `batch-isolation`    the artifact's graph (what the gateway runs, every target) stepped on a
                        probe stream alone, then in a batch with extreme neighbours (×100
                        glitches, huge values): the probe's outputs and states must be identical.
                        The engine batches streams; a stream's alerts must not depend on whom
                        it shares a call with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_config.manifest import ParityResult
from exporter.onnx_run import GraphRunner

GATE_ONNX = "onnx-vs-torch"
GATE_STREAM = "stream-vs-sequence"
GATE_UNROLLED = "unrolled-vs-torch"
GATE_QUANT = "quantized-vs-float"
GATE_DECISIONS = "quantized-decisions"
GATE_ISOLATION = "batch-isolation"

ISOLATION_STEPS = 200
ISOLATION_NEIGHBOURS = 40

DEFAULT_QUANT_ATOL = {"int8": 0.1, "fp16": 0.01, "fp32": 1e-4}
"""Max abs output error (normalized units) of the quantized model vs float, per precision."""

# A full-sequence function: (x [B, T, F], states) -> (y, next states), y as the graph returns it.
SequenceFn = Callable[[np.ndarray, Sequence[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


@dataclass(frozen=True)
class Tolerances:
    onnx: float = 1e-4
    stream: float = 1e-4
    quant: float | None = None
    """None: DEFAULT_QUANT_ATOL for the target's precision."""
    decisions: float = 0.99
    """Minimum share of steps whose alert decision agrees (quantized vs float)."""


def random_case(
    features: int, shapes: Sequence[tuple[int, int]], *, batch: int = 3, time: int = 24, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """x ~ N(0, 1) [batch, time, features] and non-zero initial states, so that a state input
    that was baked in as a constant (instead of fed) shows up as an error."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, time, features)).astype(np.float32)
    states = [rng.uniform(-0.5, 0.5, (layers, batch, hidden)).astype(np.float32) for layers, hidden in shapes]
    return x, states


def _max_err(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |Δ| of the first pair, max |Δ| over the rest): output error, state error."""
    diffs = [
        float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)))) if np.size(p) else 0.0
        for p, q in zip(a, b, strict=True)
    ]
    return diffs[0], max(diffs[1:], default=0.0)


def _per_step(
    fn: SequenceFn, x: np.ndarray, states: Sequence[np.ndarray], output_kind: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-step outputs [B, T, n] from full-sequence calls: one call for sequence output; for a
    last-step output, one call per prefix x[:, :t+1] (its output is the model's at step t)."""
    if output_kind == "sequence":
        return fn(x, states)
    outputs, final = [], list(states)
    for t in range(x.shape[1]):
        y, final = fn(x[:, : t + 1], states)
        outputs.append(y)
    return np.stack(outputs, axis=1), final


def _result(
    gate: str, metric: str, value: float, tolerance: float, detail: str, *, higher_is_better: bool = False
) -> ParityResult:
    passed = bool(value >= tolerance) if higher_is_better else bool(value <= tolerance)
    return ParityResult(
        gate=gate, metric=metric, value=float(value), tolerance=float(tolerance), passed=passed, detail=detail
    )


def gate_onnx_vs_torch(
    torch_fn: SequenceFn,
    plain_fn: Callable[[np.ndarray], np.ndarray],
    runner: GraphRunner,
    features: int,
    tolerance: float,
) -> ParityResult:
    """torch_fn: the streaming wrapper (state fed); plain_fn: the user's module as written,
    which starts from a zero state — so the zero-state ONNX run must match it too."""
    x, states = random_case(features, runner.names.shapes)
    y_ref, s_ref = torch_fn(x, states)
    y, s = runner.run(x, states)
    out_err, state_err = _max_err([y_ref, *s_ref], [y, *s])
    y_zero, _ = runner.run(x, runner.zero_states(x.shape[0]))
    plain_err, _ = _max_err([plain_fn(x)], [y_zero])
    detail = (
        f"x {list(x.shape)}, random initial state: output {out_err:.2e}, state {state_err:.2e}; "
        f"zero state vs the module as written: {plain_err:.2e}"
    )
    return _result(GATE_ONNX, "max abs error", max(out_err, state_err, plain_err), tolerance, detail)


def gate_stream_vs_sequence(runner: GraphRunner, features: int, tolerance: float) -> ParityResult:
    x, states = random_case(features, runner.names.shapes, batch=2, seed=1)
    y_seq, s_seq = _per_step(runner.run, x, states, runner.output_kind)
    y_step, s_step = runner.step(x, states)
    out_err, state_err = _max_err([y_seq, *s_seq], [y_step, *s_step])
    detail = f"{x.shape[1]} one-step calls vs one {x.shape[1]}-step call; output {out_err:.2e}, state {state_err:.2e}"
    return _result(GATE_STREAM, "max abs error", max(out_err, state_err), tolerance, detail)


def gate_unrolled_vs_torch(torch_fn: SequenceFn, runner: GraphRunner, features: int, tolerance: float) -> ParityResult:
    x, states = random_case(features, runner.names.shapes, time=16, seed=2)
    y_ref, s_ref = _per_step(torch_fn, x, states, runner.output_kind)
    y_step, s_step = runner.step(x, states)
    out_err, state_err = _max_err([y_ref, *s_ref], [y_step, *s_step])
    detail = f"unrolled one-step graph, {x.shape[1]} steps vs PyTorch; output {out_err:.2e}, state {state_err:.2e}"
    return _result(GATE_UNROLLED, "max abs error", max(out_err, state_err), tolerance, detail)


def _stepped(
    fn: SequenceFn, x: np.ndarray, states: Sequence[np.ndarray], output_kind: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """`fn` fed one time step per call, state carried: per-step outputs [B, T, n], final states."""
    outputs, current = [], list(states)
    for t in range(x.shape[1]):
        y, current = fn(x[:, t : t + 1], current)
        outputs.append(y if output_kind == "last" else y[:, 0])
    return np.stack(outputs, axis=1), current


def gate_step_onnx_vs_torch(torch_fn: SequenceFn, runner: GraphRunner, features: int, tolerance: float) -> ParityResult:
    """Gate 1 for a one-step graph (a cell in the module's own loop): the graph and the PyTorch
    wrapper both stepped one sample per call from the same random state, each carrying its own."""
    x, states = random_case(features, runner.names.shapes, time=16)
    y_ref, s_ref = _stepped(torch_fn, x, states, runner.output_kind)
    y, s = runner.step(x, states)
    out_err, state_err = _max_err([y_ref, *s_ref], [y, *s])
    detail = (
        f"one-step graph vs PyTorch, both stepped {x.shape[1]} times from a random state; "
        f"output {out_err:.2e}, state {state_err:.2e}"
    )
    return _result(GATE_ONNX, "max abs error", max(out_err, state_err), tolerance, detail)


def gate_step_vs_torch_sequence(
    torch_fn: SequenceFn,
    plain_fn: Callable[[np.ndarray], np.ndarray],
    runner: GraphRunner,
    features: int,
    tolerance: float,
) -> ParityResult:
    """Gate 2 for a one-step graph: the graph stepped one sample per call vs PyTorch on the whole
    sequence (from the same random state, and the module as written from a zero state). A module
    whose loop looks at the future, or whose state is not all declared, fails here."""
    x, states = random_case(features, runner.names.shapes, batch=2, seed=1)
    y_seq, s_seq = _per_step(torch_fn, x, states, runner.output_kind)
    y_step, s_step = runner.step(x, states)
    out_err, state_err = _max_err([y_seq, *s_seq], [y_step, *s_step])
    y_zero, _ = runner.step(x, runner.zero_states(x.shape[0]))
    plain = plain_fn(x)
    plain_err, _ = _max_err([plain], [y_zero if runner.output_kind == "sequence" else y_zero[:, -1]])
    detail = (
        f"{x.shape[1]} one-step calls vs PyTorch on the {x.shape[1]}-step sequence; output {out_err:.2e}, "
        f"state {state_err:.2e}; zero state vs the module as written: {plain_err:.2e}"
    )
    return _result(GATE_STREAM, "max abs error", max(out_err, state_err, plain_err), tolerance, detail)


@dataclass(frozen=True)
class StreamOutputs:
    """Per-step outputs of the float and the quantized graph on one long stream."""

    stream: np.ndarray
    """x_norm [T, F]."""
    float_y: np.ndarray
    """[T, n]."""
    quant_y: np.ndarray
    """[T, n]."""


def gate_quantized(
    float_runner: GraphRunner, quant_runner: GraphRunner, stream: np.ndarray, tolerance: float, *, evaluator: str
) -> tuple[ParityResult, StreamOutputs]:
    """Both graphs stepped one sample at a time over `stream` [T, F] from a zero state."""
    x = stream[None]
    y_f, s_f = float_runner.step(x, float_runner.zero_states(1))
    y_q, s_q = quant_runner.step(x, quant_runner.zero_states(1))
    out_err, state_err = _max_err([y_f, *s_f], [y_q, *s_q])
    scale = float(np.std(y_f)) or 1.0
    detail = (
        f"{len(stream)} one-step calls on {evaluator}; output {out_err:.2e} ({out_err / scale:.1%} of the output std), "
        f"final state {state_err:.2e}"
    )
    result = _result(GATE_QUANT, "max abs error", out_err, tolerance, detail)
    return result, StreamOutputs(stream, y_f[0], y_q[0])


def gate_decisions(
    outputs: StreamOutputs, score: Callable[[np.ndarray, np.ndarray], np.ndarray], threshold: float, minimum: float
) -> ParityResult:
    """Share of steps where (score > threshold) agrees between float and quantized outputs."""
    alert_f = score(outputs.stream, outputs.float_y) > threshold
    alert_q = score(outputs.stream, outputs.quant_y) > threshold
    agree = float(np.mean(alert_f == alert_q))
    detail = (
        f"threshold {threshold:.4g}; float alerts on {int(alert_f.sum())}, quantized on {int(alert_q.sum())} "
        f"of {len(alert_f)} steps"
    )
    return _result(GATE_DECISIONS, "decision agreement", agree, minimum, detail, higher_is_better=True)


def extreme_neighbours(probe: np.ndarray, count: int = ISOLATION_NEIGHBOURS, *, seed: int = 3) -> np.ndarray:
    """`count` streams [count, T, F] built to disturb anything that mixes rows of a batch:
    the probe ×100 with noise, constant huge values (±1e4), and spikes of 1e4 on a quiet stream."""
    rng = np.random.default_rng(seed)
    steps, features = probe.shape
    streams = np.empty((count, steps, features), np.float32)
    for i in range(count):
        kind = i % 3
        if kind == 0:
            streams[i] = probe * 100 + rng.normal(0.0, 50.0, probe.shape)
        elif kind == 1:
            streams[i] = np.where(rng.random(features) < 0.5, -1e4, 1e4)
        else:
            spikes = rng.random(probe.shape) < 0.05
            streams[i] = np.where(spikes, 1e4, rng.normal(0.0, 0.1, probe.shape))
    return streams


def _largest_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """max |a - b| over every pair; NaN where only one side is NaN counts as infinite."""
    worst = 0.0
    for p, q in zip(a, b, strict=True):
        p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
        diff = np.abs(p64 - q64)
        diff[np.isnan(p64) & np.isnan(q64)] = 0.0
        diff[np.isnan(diff)] = np.inf
        worst = max(worst, float(np.max(diff, initial=0.0)))
    return worst


def gate_isolation(runner: GraphRunner, probe: np.ndarray, *, evaluator: str) -> ParityResult:
    """The probe [T, F] stepped alone vs at the first, a middle and the last row of a batch with
    extreme neighbours; the limit is 0: bit-identical outputs and states."""
    y_alone, s_alone = runner.step(probe[None], runner.zero_states(1))
    neighbours = extreme_neighbours(probe)
    rows = (0, len(neighbours) // 2, len(neighbours))
    diffs = []
    for row in rows:
        batch = np.insert(neighbours, row, probe, axis=0)
        y, states = runner.step(batch, runner.zero_states(len(batch)))
        mine = [y[row : row + 1], *(s[:, row : row + 1] for s in states)]
        diffs.append(_largest_difference([y_alone, *s_alone], mine))
    worst = max(diffs)
    detail = (
        f"{len(probe)} one-step calls on {evaluator}: the probe alone vs at rows {', '.join(map(str, rows))} "
        f"among {len(neighbours)} neighbours (×100 glitches, ±1e4); largest difference (outputs and states) "
        + ", ".join(f"{d:.2e}" for d in diffs)
    )
    return _result(GATE_ISOLATION, "max abs difference", worst, 0.0, detail)
