"""Float ONNX bytes → the target's precision, on the ONNX side (torch.ao LSTMs do not export).

- `none`    fp32 as exported.
- `weights` (cpu-int8) int8 *weights only*: each LSTM/GRU W and R and each MatMul/Gemm/Conv
            weight is stored as int8 with one float scale, behind `Cast` + `Mul`; activations stay float32.
            ORT folds Cast·Mul into float initializers when the session is created, so the
            file is ~28 % of fp32 and the engine runs the float kernels: a stream's outputs do
            not depend on the other streams in its batch. (ORT's `quantize_dynamic` quantized
            activations with one range per call, over the whole batch: one glitching stream
            changed every other stream's outputs; manifests of such artifacts say `dynamic`.
            See docs/EXPORT.md for the measurements.)
- `fp16`    `convert_float_to_float16(keep_io_types=True)`: float16 inside, float32 graph
            inputs/outputs so the runtime's state slab stays float32.
- `qdq`     `quantize_static` in QDQ format on the *unrolled* graph, calibrated with real
            (x, h, c) feeds collected by stepping the float model through the calibration data.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from edge_config.errors import ExportError
from edge_config.presets import ExportTarget
from exporter.onnx_export import graph_ops
from exporter.onnx_run import GraphRunner

_FEED_BATCH = 256  # calibration feeds are stacked on the batch axis: one ORT call per 256 steps


@dataclass(frozen=True)
class QuantizationResult:
    model: bytes
    notes: list[str] = field(default_factory=list)
    """What happened to the recurrent nodes, in words (stored in the manifest)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # onnxruntime.quantization logs advice ("consider pre-processing") on the root logger.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _topological(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder nodes so each comes after its inputs' producers.

    convert_float_to_float16 appends its output Casts at the end of the node list; ORT does
    not mind, but the ONNX checker and the reference evaluator require graph order."""
    graph = model.graph
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ExportError("internal: the float16 graph has a cycle or a dangling input")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)
    return model


# Weight inputs worth storing as int8: (op type, input index). Biases stay float32 (small).
_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {"LSTM": (1, 2), "GRU": (1, 2), "MatMul": (1,), "Gemm": (1,), "Conv": (1,)}


def _int8_initializers(graph: onnx.GraphProto, name: str, weight: NDArray[np.float32]) -> list[onnx.NodeProto]:
    """Replace float initializer `name` by int8 values and a scale; return the Cast·Mul that rebuild it.

    Symmetric per-tensor scale (max |w| / 127): per-row scales measured 1.5x less output error
    on the example forecaster but put the file at 30.2 % of fp32, over the 30 % size goal."""
    from onnx import TensorProto, helper, numpy_helper

    peak = float(np.max(np.abs(weight)))
    scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}.int8"), numpy_helper.from_array(np.array(scale), f"{name}.scale")]
    )
    return [
        helper.make_node("Cast", [f"{name}.int8"], [f"{name}.float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}.float", f"{name}.scale"], [name]),
    ]


def _int8_weights(float_model: bytes) -> QuantizationResult:
    """int8 weights stored in the file, float32 compute: batch-isolated (see the module docstring).

    Cast + Mul rather than DequantizeLinear: ORT's constant folding keeps DequantizeLinear
    nodes (for its QDQ fusions), and an LSTM whose weights are not constant takes another
    GEMM path whose results depend on the batch in the last bits (measured 3e-8)."""
    from onnx import numpy_helper

    model = onnx.load_model_from_string(float_model)
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    initializers = {t.name: t for t in graph.initializer if t.name not in graph_inputs}
    converted: dict[str, str] = {}  # initializer name → op type of its first user
    rebuild: list[onnx.NodeProto] = []
    for node in graph.node:
        for index in _WEIGHT_INPUTS.get(node.op_type, ()):
            name = node.input[index] if index < len(node.input) else ""
            init = initializers.get(name)
            if init is None or name in converted or init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2:
                continue
            weight = numpy_helper.to_array(init).astype(np.float32)
            graph.initializer.remove(init)
            rebuild += _int8_initializers(graph, name, weight)
            converted[name] = node.op_type
    nodes = [*rebuild, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    counts = {op: sum(1 for o in converted.values() if o == op) for op in sorted(set(converted.values()))}
    stored = ", ".join(f"{n} {op} weight tensor(s)" for op, n in counts.items()) or "no weight tensors"
    notes = [
        f"int8 weights (one scale per tensor), float32 activations and compute: {stored}",
        "weights are rebuilt in float32 when the session is created; a stream's outputs do not depend on its batch",
    ]
    return QuantizationResult(model.SerializeToString(), notes)


def _fp16(float_model: bytes) -> QuantizationResult:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        converted = convert_float_to_float16(onnx.load_model_from_string(float_model), keep_io_types=True)
    model = _topological(converted)
    onnx.checker.check_model(model)
    return QuantizationResult(
        model.SerializeToString(), ["float16 weights and activations; float32 graph inputs/outputs"]
    )


def calibration_feeds(runner: GraphRunner, x_norm: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Step the float (unrolled) graph through x_norm [T, F] and record every step's feed.

    The recurrent inputs h/c of a static-quantized graph get fixed int8 ranges, so they must
    be calibrated on the states the model really reaches on normal data, not on zeros."""
    feeds = []
    states = runner.zero_states(1)
    for t in range(len(x_norm)):
        x = x_norm[t].reshape(1, 1, -1)
        feed = {"x": x}
        feed.update(dict(zip(runner.names.inputs, states, strict=True)))
        feeds.append(feed)
        _, states = runner.run(x, states)
    return feeds


def _stacked_feeds(feeds: list[dict[str, np.ndarray]], state_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Per-step feeds → batches of _FEED_BATCH steps (x on axis 0, states on axis 1)."""
    batches = []
    for start in range(0, len(feeds), _FEED_BATCH):
        chunk = feeds[start : start + _FEED_BATCH]
        batch = {"x": np.concatenate([f["x"] for f in chunk], axis=0)}
        batch.update({name: np.concatenate([f[name] for f in chunk], axis=1) for name in state_inputs})
        batches.append(batch)
    return batches


def _qdq(float_model: bytes, feeds: list[dict[str, np.ndarray]], state_inputs: list[str]) -> QuantizationResult:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(_stacked_feeds(feeds, state_inputs))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="edgewatch-q-") as tmp:
        out = Path(tmp) / "qdq.onnx"
        with _quiet():
            # Per-tensor weights: measured no better than per-channel on our LSTMs, and every
            # NPU stack accepts per-tensor. uint8 activations suit sigmoid/tanh ranges.
            quantize_static(
                onnx.load_model_from_string(float_model),
                out,
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        data = out.read_bytes()
    ops = graph_ops(onnx.load_model_from_string(data))
    notes = [
        "recurrent cells unrolled into Gemm/MatMul + Sigmoid/Tanh/Mul; one step per call",
        (
            f"static QDQ int8 (uint8 activations, int8 weights) calibrated on {len(feeds)} steps; "
            f"{ops.get('DequantizeLinear', 0)} DequantizeLinear nodes"
        ),
    ]
    return QuantizationResult(data, notes)


def quantize(
    float_model: bytes,
    target: ExportTarget,
    *,
    calibration_feeds: list[dict[str, np.ndarray]] | None = None,
    state_inputs: list[str] | None = None,
) -> QuantizationResult:
    """Apply `target.quantization` to the float graph (for `qdq`: the unrolled graph + feeds)."""
    if target.quantization == "none":
        return QuantizationResult(float_model, [])
    if target.quantization == "weights":
        return _int8_weights(float_model)
    if target.quantization == "fp16":
        return _fp16(float_model)
    if target.quantization == "qdq":
        if not calibration_feeds or state_inputs is None:
            raise ExportError("internal: qdq quantization needs calibration feeds")
        return _qdq(float_model, calibration_feeds, state_inputs)
    raise ExportError(f"internal: unknown quantization {target.quantization!r}")
