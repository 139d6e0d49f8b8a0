"""int8 and fp16 variants of the test LSTM artifact (tests/onnx_artifacts.py), still without torch.

- int8: ONNX Runtime's own `quantize_dynamic`, as the exporter's cpu-int8 preset did before
  batch isolation (LSTM → DynamicQuantizeLSTM, a CPU-only kernel): artifacts in the field.
- int8 weights: the exporter's cpu-int8 quantization as it is now (int8 weights behind
  Cast·Mul, float compute), applied by exporter.quantize itself (no torch there).
- fp16: float16 weights and activations with float32 graph inputs/outputs (Cast at the
  edges), as the gpu-fp16 preset describes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_config.manifest import MODEL_NAME, read_manifest, sha256_bytes, write_manifest
from tests.support.onnx_artifacts import lstm_forecaster_model, write_lstm_artifact


def _rewrite(directory: Path, data: bytes, **changes: object) -> Path:
    (directory / MODEL_NAME).write_bytes(data)
    manifest = read_manifest(directory)
    manifest = manifest.model_copy(update={"sha256": sha256_bytes(data), "sizes": {"model": len(data)}, **changes})
    write_manifest(manifest, directory)
    return directory


def write_int8_artifact(directory: Path, **kwargs: int) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = write_lstm_artifact(directory, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(directory / MODEL_NAME, out, weight_type=QuantType.QInt8)
        data = out.read_bytes()
    ops = {n.op_type for n in onnx.load_model_from_string(data).graph.node}
    assert "DynamicQuantizeLSTM" in ops, ops  # the point of this variant
    return _rewrite(directory, data, precision="int8", quantization="dynamic", target="cpu-int8", providers=["cpu"])


def write_weight_int8_artifact(directory: Path, **kwargs: int) -> Path:
    from edge_config.presets import export_target
    from exporter.quantize import quantize

    directory = write_lstm_artifact(directory, **kwargs)
    data = quantize((directory / MODEL_NAME).read_bytes(), export_target("cpu-int8")).model
    assert any(t.data_type == TensorProto.INT8 for t in onnx.load_model_from_string(data).graph.initializer)
    return _rewrite(directory, data, precision="int8", quantization="dynamic", target="cpu-int8", providers=["cpu"])


def fp16_model(**kwargs: int) -> onnx.ModelProto:
    model = lstm_forecaster_model(**kwargs)
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    for node in graph.node:
        node.input[:] = [f"{n}_f16" if n in inputs else n for n in node.input]
        node.output[:] = [f"{n}_f16" if n in outputs else n for n in node.output]
    cast_in = [helper.make_node("Cast", [n], [f"{n}_f16"], to=TensorProto.FLOAT16) for n in inputs]
    cast_out = [helper.make_node("Cast", [f"{n}_f16"], [n], to=TensorProto.FLOAT) for n in outputs]
    nodes = [*cast_in, *graph.node, *cast_out]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def write_fp16_artifact(directory: Path, **kwargs: int) -> Path:
    directory = write_lstm_artifact(directory, **kwargs)
    data = fp16_model(**kwargs).SerializeToString()
    return _rewrite(
        directory, data, precision="fp16", quantization="fp16", target="gpu-fp16", providers=["cuda", "tensorrt", "dml"]
    )
