"""Run an exported graph the way the runtime does: x + carried state → y + next state.

`GraphRunner` wraps an `InferenceBackend` (the runtime's protocol: `run(output_names, feeds)
-> list[np.ndarray]`) — an ORT `InferenceSession`, or onnx's reference evaluator for graphs the local providers cannot
run (float16 LSTM crashes ORT's CPU provider at session creation; see field notes) —
and knows the graph's state input/output names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from edge_config.manifest import OutputKind

if TYPE_CHECKING:
    from runtime.engine.types import InferenceBackend


@dataclass(frozen=True)
class StateNames:
    """Graph state names in wrapper order, and each tensor's (layers, hidden)."""

    inputs: list[str]
    outputs: list[str]
    shapes: list[tuple[int, int]]


def ort_session(model: bytes, providers: list[str] | None = None) -> InferenceBackend:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: these graphs are small, and the export machine is often shared.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
    return cast("InferenceBackend", session)  # onnxruntime ships no type information


def reference_session(model: bytes) -> InferenceBackend:
    """onnx.reference: slow pure-numpy evaluation, but it computes float16 ops in float16."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    return cast("InferenceBackend", ReferenceEvaluator(onnx.load_model_from_string(model)))


class GraphRunner:
    """Feeds x [batch, time, features] and states [layers, batch, hidden]; returns numpy."""

    def __init__(self, backend: InferenceBackend, names: StateNames, *, output_kind: OutputKind) -> None:
        self.backend = backend
        self.names = names
        self.output_kind = output_kind

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((layers, batch, hidden), np.float32) for layers, hidden in self.names.shapes]

    def run(self, x: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"x": np.ascontiguousarray(x, dtype=np.float32)}
        feeds.update(
            {name: np.ascontiguousarray(s, dtype=np.float32) for name, s in zip(self.names.inputs, states, strict=True)}
        )
        out = self.backend.run(["y", *self.names.outputs], feeds)
        return np.asarray(out[0], dtype=np.float32), [np.asarray(o, dtype=np.float32) for o in out[1:]]

    def step(self, x: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Feed x one time step at a time, carrying the state outside the graph.

        Returns per-step outputs [batch, time, n] (for `output_kind == "last"` the output of
        each one-step call, i.e. the model's output after that step) and the final states."""
        outputs = []
        current = list(states)
        for t in range(x.shape[1]):
            y, current = self.run(x[:, t : t + 1], current)
            outputs.append(y if self.output_kind == "last" else y[:, 0])
        return np.stack(outputs, axis=1), current
