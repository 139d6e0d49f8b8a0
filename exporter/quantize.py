"""Float ONNX bytes → the target's precision, on the ONNX side (torch.ao LSTMs do not export).

- `none`    fp32 as exported.
- `dynamic` `quantize_dynamic`: LSTM → `DynamicQuantizeLSTM` (int8 weights, float activations),
            MatMul → int8. GRU has no int8 kernel in ORT (onnxruntime#9796) and stays float.
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


def _dynamic(float_model: bytes) -> QuantizationResult:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgewatch-q-") as tmp:
        out = Path(tmp) / "int8.onnx"
        with _quiet():
            quantize_dynamic(onnx.load_model_from_string(float_model), out, weight_type=QuantType.QInt8)
        data = out.read_bytes()
    ops = graph_ops(onnx.load_model_from_string(data))
    notes = [
        f"{ops.get('DynamicQuantizeLSTM', 0)} LSTM layer(s) → DynamicQuantizeLSTM (int8 weights, float activations)"
    ]
    if ops.get("GRU", 0):
        notes.append(f"{ops['GRU']} GRU layer(s) stay float32: ONNX Runtime has no int8 GRU kernel")
    if ops.get("LSTM", 0):
        notes.append(f"{ops['LSTM']} LSTM layer(s) stay float32")
    if ops.get("MatMulInteger", 0):
        notes.append(f"{ops['MatMulInteger']} MatMul(s) → int8 MatMulInteger")
    return QuantizationResult(data, notes)


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
    if target.quantization == "dynamic":
        return _dynamic(float_model)
    if target.quantization == "fp16":
        return _fp16(float_model)
    if target.quantization == "qdq":
        if not calibration_feeds or state_inputs is None:
            raise ExportError("internal: qdq quantization needs calibration feeds")
        return _qdq(float_model, calibration_feeds, state_inputs)
    raise ExportError(f"internal: unknown quantization {target.quantization!r}")
