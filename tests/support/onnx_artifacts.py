"""Build small, real streaming LSTM artifacts with onnx.helper — no torch needed.

The graph has the same contract as an exported one: x [batch, time, features]
+ h0/c0 [layers, batch, hidden] → y [batch, time, features] + hn/cn.
Used by runtime and config tests (and the OpenVINO environment, which has no torch).
"""

from __future__ import annotations

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


def lstm_forecaster_model(features: int = 4, hidden: int = 8, layers: int = 2, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    nodes.append(helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]))  # [T, B, F]
    split = const("split_sizes", np.ones(layers, dtype=np.int64))
    nodes.append(helper.make_node("Split", ["h0.lstm", split], [f"h0_{i}" for i in range(layers)], axis=0))
    nodes.append(helper.make_node("Split", ["c0.lstm", split], [f"c0_{i}" for i in range(layers)], axis=0))
    axis1 = const("axis1", np.array([1], dtype=np.int64))
    layer_in, in_size = "x_t", features
    for i in range(layers):
        scale = 1.0 / np.sqrt(hidden)
        w = const(f"W{i}", rng.uniform(-scale, scale, (1, 4 * hidden, in_size)).astype(np.float32))
        r = const(f"R{i}", rng.uniform(-scale, scale, (1, 4 * hidden, hidden)).astype(np.float32))
        b = const(f"B{i}", rng.uniform(-scale, scale, (1, 8 * hidden)).astype(np.float32))
        nodes.append(
            helper.make_node(
                "LSTM",
                [layer_in, w, r, b, "", f"h0_{i}", f"c0_{i}"],
                [f"Y{i}", f"hn_{i}", f"cn_{i}"],
                hidden_size=hidden,
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"Y{i}", axis1], [f"Ys{i}"]))  # [T, B, H]
        layer_in, in_size = f"Ys{i}", hidden
    nodes.append(helper.make_node("Concat", [f"hn_{i}" for i in range(layers)], ["hn.lstm"], axis=0))
    nodes.append(helper.make_node("Concat", [f"cn_{i}" for i in range(layers)], ["cn.lstm"], axis=0))
    nodes.append(helper.make_node("Transpose", [layer_in], ["Y_bt"], perm=[1, 0, 2]))  # [B, T, H]
    head_w = const("head_w", (rng.standard_normal((hidden, features)) * 0.3).astype(np.float32))
    head_b = const("head_b", np.zeros(features, dtype=np.float32))
    nodes.append(helper.make_node("MatMul", ["Y_bt", head_w], ["y_mm"]))
    nodes.append(helper.make_node("Add", ["y_mm", head_b], ["y"]))

    state_shape = [layers, "batch", hidden]
    graph = helper.make_graph(
        nodes,
        "lstm_forecaster",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info("h0.lstm", TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info("c0.lstm", TensorProto.FLOAT, state_shape),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info("hn.lstm", TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info("cn.lstm", TensorProto.FLOAT, state_shape),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_lstm_artifact(
    directory: Path,
    *,
    features: int = 4,
    hidden: int = 8,
    layers: int = 2,
    seed: int = 0,
    threshold: float | None = None,
) -> Path:
    """Write DIR/model.onnx + DIR/manifest.json for a random-weight LSTM forecaster."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = lstm_forecaster_model(features, hidden, layers, seed).SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    names = [f"f{i}" for i in range(features)]
    from edge_config.manifest import Calibration

    manifest = Manifest(
        name="test-lstm",
        sha256=sha256_bytes(data),
        versions={"edgewatch": "test", "onnx": onnx.__version__},
        opset=17,
        target="cpu-fp32",
        precision="fp32",
        quantization="none",
        providers=["cpu", "openvino"],
        features=Features(names=names, count=features),
        outputs=["y", "hn.lstm", "cn.lstm"],
        output_kind="sequence",
        output_size=features,
        task="forecast",
        state=[
            StateSpec(input="h0.lstm", output="hn.lstm", shape=[layers, "batch", hidden], module="lstm", kind="lstm_h"),
            StateSpec(input="c0.lstm", output="cn.lstm", shape=[layers, "batch", hidden], module="lstm", kind="lstm_c"),
        ],
        normalization=Normalization(mean=[0.0] * features, std=[1.0] * features),
        score=ScoreSettings(kind="forecast-error", ewma_alpha=0.2, residual_std=[1.0] * features),
        calibration=None
        if threshold is None
        else Calibration(threshold=threshold, method="fixed", steps=0, score_mean=0.0, score_std=1.0),
    )
    write_manifest(manifest, directory)
    return directory


def persistence_forecaster_model(features: int = 3, hidden: int = 4, layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """The LSTM graph above with y = x: the forecast of the next sample is the current one.

    The LSTM still carries h/c (the contract's state inputs/outputs), but the output does not
    depend on it, so the score of a step is known in advance: the normalized difference of
    consecutive samples. A smooth signal scores ~0, a jumping one scores high.
    """
    model = lstm_forecaster_model(features, hidden, layers, seed)
    graph = model.graph
    keep = [n for n in graph.node if "y" not in n.output and "y_mm" not in n.output]
    del graph.node[:]
    graph.node.extend(keep)
    graph.node.append(helper.make_node("Identity", ["x"], ["y"]))
    dead = {"head_w", "head_b"}
    inits = [t for t in graph.initializer if t.name not in dead]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


def write_persistence_artifact(
    directory: Path, *, features: int = 3, threshold: float = 1.0, ewma_alpha: float = 0.5
) -> Path:
    """DIR/model.onnx + DIR/manifest.json for `persistence_forecaster_model`, with a fixed threshold."""
    from edge_config.manifest import Calibration

    write_lstm_artifact(directory, features=features, hidden=4, layers=1)
    data = persistence_forecaster_model(features).SerializeToString()
    (Path(directory) / "model.onnx").write_bytes(data)
    from edge_config.manifest import read_manifest

    manifest = read_manifest(directory).model_copy(
        update={
            "name": "test-persistence",
            "sha256": sha256_bytes(data),
            "score": ScoreSettings(kind="forecast-error", ewma_alpha=ewma_alpha, residual_std=[1.0] * features),
            "calibration": Calibration(threshold=threshold, method="fixed", steps=0, score_mean=0.0, score_std=1.0),
        }
    )
    write_manifest(manifest, directory)
    return Path(directory)
