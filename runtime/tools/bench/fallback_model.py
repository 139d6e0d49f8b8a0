"""The reference graph without torch: 2 stacked ONNX LSTM nodes + a MatMul head, via onnx.helper.

Same artifact contract as an export (x [batch, time, F], h0/c0 [layers, batch, H] → y, hn,
cn), same sizes, random weights. The threshold is calibrated the way the exporter does it
(runtime.engine.scoring.calibrate on the float model's outputs over the benchmark's AR(1) plant),
and int8 uses onnxruntime's quantize_dynamic, as the cpu-int8 export preset does.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_config.manifest import (
    Features,
    Manifest,
    Normalization,
    ScoreSettings,
    StateSpec,
    sha256_bytes,
    write_manifest,
)
from edge_config.presets import Precision
from runtime.tools.bench.workload import LEVEL, SPREAD, ar1

_OPSET = 17
_MODULE = "lstm"


def lstm_graph(features: int, hidden: int, layers: int, seed: int = 7) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    h0, c0 = f"h0.{_MODULE}", f"c0.{_MODULE}"
    nodes.append(helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]))  # ONNX LSTM is time-major
    split = const("split_sizes", np.ones(layers, dtype=np.int64))
    nodes.append(helper.make_node("Split", [h0, split], [f"h0_{i}" for i in range(layers)], axis=0))
    nodes.append(helper.make_node("Split", [c0, split], [f"c0_{i}" for i in range(layers)], axis=0))
    axis1 = const("axis1", np.array([1], dtype=np.int64))
    layer_in, width = "x_t", features
    scale = 1.0 / np.sqrt(hidden)  # PyTorch's LSTM initialisation range
    for i in range(layers):
        w = const(f"W{i}", rng.uniform(-scale, scale, (1, 4 * hidden, width)).astype(np.float32))
        r = const(f"R{i}", rng.uniform(-scale, scale, (1, 4 * hidden, hidden)).astype(np.float32))
        b = const(f"B{i}", rng.uniform(-scale, scale, (1, 8 * hidden)).astype(np.float32))
        inputs = [layer_in, w, r, b, "", f"h0_{i}", f"c0_{i}"]
        nodes.append(helper.make_node("LSTM", inputs, [f"Y{i}", f"hn_{i}", f"cn_{i}"], hidden_size=hidden))
        nodes.append(helper.make_node("Squeeze", [f"Y{i}", axis1], [f"Ys{i}"]))
        layer_in, width = f"Ys{i}", hidden
    nodes.append(helper.make_node("Concat", [f"hn_{i}" for i in range(layers)], [f"hn.{_MODULE}"], axis=0))
    nodes.append(helper.make_node("Concat", [f"cn_{i}" for i in range(layers)], [f"cn.{_MODULE}"], axis=0))
    nodes.append(helper.make_node("Transpose", [layer_in], ["Y_bt"], perm=[1, 0, 2]))
    head_w = const("head_w", rng.uniform(-scale, scale, (hidden, features)).astype(np.float32))
    head_b = const("head_b", np.zeros(features, dtype=np.float32))
    nodes.append(helper.make_node("MatMul", ["Y_bt", head_w], ["y_mm"]))
    nodes.append(helper.make_node("Add", ["y_mm", head_b], ["y"]))
    state: list[int | str] = [layers, "batch", hidden]
    graph = helper.make_graph(
        nodes,
        "reference_lstm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info(h0, TensorProto.FLOAT, state),
            helper.make_tensor_value_info(c0, TensorProto.FLOAT, state),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info(f"hn.{_MODULE}", TensorProto.FLOAT, state),
            helper.make_tensor_value_info(f"cn.{_MODULE}", TensorProto.FLOAT, state),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _quantize_int8(float_model: bytes) -> bytes | None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_model)
        logging.disable(logging.WARNING)  # quantize_dynamic gives advice on the root logger
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return dst.read_bytes()


def _manifest(data: bytes, name: str, precision: Precision, features: int, hidden: int, layers: int) -> Manifest:
    names = [f"s{i}" for i in range(features)]
    shape: list[int | str] = [layers, "batch", hidden]
    return Manifest(
        name=name,
        sha256=sha256_bytes(data),
        versions={"edgewatch": "bench", "onnx": onnx.__version__},
        opset=_OPSET,
        target="cpu-int8" if precision == "int8" else "cpu-fp32",
        precision=precision,
        quantization="dynamic" if precision == "int8" else "none",
        providers=["cpu"] if precision == "int8" else ["cpu", "openvino"],
        features=Features(names=names, count=features),
        outputs=["y", f"hn.{_MODULE}", f"cn.{_MODULE}"],
        output_kind="sequence",
        output_size=features,
        task="forecast",
        state=[
            StateSpec(input=f"h0.{_MODULE}", output=f"hn.{_MODULE}", shape=shape, module=_MODULE, kind="lstm_h"),
            StateSpec(input=f"c0.{_MODULE}", output=f"cn.{_MODULE}", shape=shape, module=_MODULE, kind="lstm_c"),
        ],
        normalization=Normalization(mean=[LEVEL] * features, std=[SPREAD] * features),
        score=ScoreSettings(kind="forecast-error", ewma_alpha=0.2),
    )


def _calibrated(manifest: Manifest, float_model: bytes) -> Manifest:
    """The manifest with residual_std and threshold from the float model over normal data."""
    import onnxruntime as ort

    from runtime.engine.scoring import calibrate

    layers, hidden = manifest.state[0].layers, manifest.state[0].hidden
    x = ((ar1(3000, manifest.features.count, seed=8) - LEVEL) / SPREAD).astype(np.float32)
    session = ort.InferenceSession(float_model, providers=["CPUExecutionProvider"])
    zeros = np.zeros((layers, 1, hidden), np.float32)
    y = session.run(["y"], {"x": x[None], manifest.state[0].input: zeros, manifest.state[1].input: zeros})[0][0]
    settings, calibration = calibrate(manifest.score, "forecast", x, y, source="bench AR(1) plant")
    return manifest.model_copy(update={"score": settings, "calibration": calibration})


def write_fallback_artifacts(
    work: Path, *, features: int, hidden: int, layers: int
) -> tuple[Path, Path | None, tuple[str, ...]]:
    """(fp32 dir, int8 dir or None, notes)."""
    float_model = lstm_graph(features, hidden, layers).SerializeToString()
    base = _calibrated(_manifest(float_model, "reference-cpu-fp32", "fp32", features, hidden, layers), float_model)
    out: dict[str, Path | None] = {}
    notes: list[str] = []
    for precision, data in (("fp32", float_model), ("int8", _quantize_int8(float_model))):
        if data is None:
            notes.append("onnxruntime.quantization is not available: no int8 artifact")
            out[precision] = None
            continue
        directory = work / f"cpu-{precision}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.onnx").write_bytes(data)
        manifest = base.model_copy(
            update={
                "name": f"reference-cpu-{precision}",
                "sha256": sha256_bytes(data),
                "precision": precision,
                "target": f"cpu-{precision}",
                "quantization": "dynamic" if precision == "int8" else "none",
                "providers": ["cpu"] if precision == "int8" else ["cpu", "openvino"],
            }
        )
        write_manifest(manifest, directory)
        out[precision] = directory
    assert out["fp32"] is not None
    return out["fp32"], out["int8"], tuple(notes)
