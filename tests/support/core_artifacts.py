"""Artifact variants for the runtime core tests, built from tests/onnx_artifacts.py (no torch).

- `write_variant(..., output_kind="last")`: the LSTM forecaster with only the chunk's last output.
- `write_variant(..., task="probability")`: the LSTM with a sigmoid head, y [batch, time, 1].
- `write_variant(..., time_steps=1)`: the same graph, declared one-step-per-call.
- `write_persistence_artifact`: y = x (the forecast is the current sample), state passed through:
  a deterministic forecaster whose score is exactly the normalized step-to-step change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_config.manifest import (
    MODEL_NAME,
    Calibration,
    Normalization,
    ScoreSettings,
    read_manifest,
    sha256_bytes,
    write_manifest,
)
from runtime.model.artifact import Artifact, load_artifact
from tests.support.onnx_artifacts import lstm_forecaster_model, write_lstm_artifact


def session(artifact: Artifact) -> ort.InferenceSession:
    """A single-threaded CPU session, as the benchmark and a small gateway run it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(artifact.model_bytes, options, providers=["CPUExecutionProvider"])


def _rewrite(directory: Path, model: onnx.ModelProto, **manifest_update: object) -> Artifact:
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (directory / MODEL_NAME).write_bytes(data)
    manifest = read_manifest(directory).model_copy(update={"sha256": sha256_bytes(data), **manifest_update})
    write_manifest(type(manifest).model_validate(manifest.model_dump()), directory)
    return load_artifact(directory)


def write_variant(
    directory: Path,
    *,
    features: int = 4,
    hidden: int = 8,
    layers: int = 2,
    seed: int = 0,
    threshold: float | None = 1.0,
    output_kind: Literal["sequence", "last"] = "sequence",
    time_steps: Literal["dynamic", 1] = "dynamic",
    task: Literal["forecast", "probability"] = "forecast",
    normalization: Normalization | None = None,
) -> Artifact:
    directory = Path(directory)
    write_lstm_artifact(directory, features=features, hidden=hidden, layers=layers, seed=seed, threshold=threshold)
    model = lstm_forecaster_model(features, hidden, layers, seed)
    graph = model.graph
    update: dict[str, object] = {"output_kind": output_kind, "time_steps": time_steps}
    if normalization is not None:
        update["normalization"] = normalization
    if task == "probability" or output_kind == "last":
        for node in graph.node:
            node.output[:] = ["y_seq" if o == "y" else o for o in node.output]
        out_y, size = "y_seq", features
        if task == "probability":
            w = np.random.default_rng(seed + 1).standard_normal((features, 1)).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(w, "prob_w"))
            graph.node.extend(
                [
                    helper.make_node("MatMul", ["y_seq", "prob_w"], ["logit"]),
                    helper.make_node("Sigmoid", ["logit"], ["prob"]),
                ]
            )
            out_y, size = "prob", 1
            update.update(task="probability", output_size=1, score=ScoreSettings(kind="probability"))
        if output_kind == "last":
            graph.initializer.append(numpy_helper.from_array(np.array(-1, dtype=np.int64), "last_index"))
            graph.node.append(helper.make_node("Gather", [out_y, "last_index"], ["y"], axis=1))
            shape: list[str | int] = ["batch", size]
        else:
            graph.node.append(helper.make_node("Identity", [out_y], ["y"]))
            shape = ["batch", "time", size]
        graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, shape))
    return _rewrite(directory, model, **update)


def write_persistence_artifact(directory: Path, *, features: int = 4, threshold: float = 1.0) -> Artifact:
    """y = x, hn = h0, cn = c0 (state of the same shapes as the LSTM's: [2, batch, 8])."""
    directory = Path(directory)
    write_lstm_artifact(directory, features=features, threshold=threshold)
    state = [2, "batch", 8]
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("Identity", ["h0.lstm"], ["hn.lstm"]),
            helper.make_node("Identity", ["c0.lstm"], ["cn.lstm"]),
        ],
        "persistence",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info("h0.lstm", TensorProto.FLOAT, state),
            helper.make_tensor_value_info("c0.lstm", TensorProto.FLOAT, state),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info("hn.lstm", TensorProto.FLOAT, state),
            helper.make_tensor_value_info("cn.lstm", TensorProto.FLOAT, state),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    calibration = Calibration(threshold=threshold, method="fixed", steps=0, score_mean=0.0, score_std=1.0)
    return _rewrite(directory, model, calibration=calibration)


def reference_steps(sess: ort.InferenceSession, artifact: Artifact, x_norm: np.ndarray) -> np.ndarray:
    """One stream alone, one sample per call, state carried outside: x_norm [T, F] → y [T, n]."""
    manifest = artifact.manifest
    state = {spec.input: np.zeros((spec.layers, 1, spec.hidden), np.float32) for spec in manifest.state}
    out = []
    for t in range(x_norm.shape[0]):
        results = sess.run(manifest.outputs, {manifest.input: x_norm[None, t : t + 1], **state})
        y = results[0]
        out.append(y[0, -1] if manifest.output_kind == "sequence" else y[0])
        for spec in manifest.state:
            state[spec.input] = results[manifest.outputs.index(spec.output)]
    return np.stack(out)
