"""torch.onnx.export of a StreamingWrapper → self-contained ONNX bytes, verified.

We use the TorchScript exporter (`dynamo=False`, opset 17): it emits real ONNX `LSTM`/`GRU`
nodes with the state as `initial_h`/`initial_c`, writes everything into one protobuf (no
side `.onnx.data` file) and is the opset ORT's CPU `DynamicQuantizeLSTM` path expects. It
is deprecated upstream and warns on every call; the warnings are contained here because
they say nothing the user can act on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import onnx

from edge_config.errors import ExportError, UnsupportedModelError

if TYPE_CHECKING:
    from exporter.streaming import StreamingWrapper

OPSET = 17
_EXAMPLE_BATCH, _EXAMPLE_TIME = 2, 7  # any sizes; the axes are dynamic and gate 1 uses others


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Silence the legacy exporter's deprecation and tracer warnings (and its logger)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def graph_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type (top-level graph)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _verify(model: onnx.ModelProto, wrapper: StreamingWrapper, unrolled: bool) -> None:
    onnx.checker.check_model(model)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"the exported graph refers to external data ({external[0]}); artifacts must be self-contained"
        )
    ops = graph_ops(model)
    fused = sum(1 for s in wrapper.sites if s.fused) if wrapper.fuse else 0  # one LSTM node per fused step
    for kind, op in (("lstm", "LSTM"), ("gru", "GRU")):
        expected = 0 if unrolled else sum(s.layers for s in wrapper.sites if s.kind == kind)
        expected += fused if op == "LSTM" else 0
        if ops.get(op, 0) != expected:
            raise ExportError(f"the exported graph has {ops.get(op, 0)} {op} nodes, expected {expected}")


def export_onnx(
    wrapper: StreamingWrapper, *, time_steps: Literal["dynamic", 1] = "dynamic", unrolled: bool = False
) -> bytes:
    """Export `wrapper` (layout already probed) → ONNX bytes with inputs x + states, outputs y + states."""
    import torch

    layout = wrapper.layout
    if layout is None:
        raise ExportError("internal: export_onnx needs a probed StreamingWrapper (make_streaming)")
    if wrapper.one_step and time_steps != 1:
        raise ExportError("internal: a model with a cell in its own time loop exports one step (time_steps=1)")
    time = 1 if time_steps == 1 else _EXAMPLE_TIME
    x = torch.zeros(_EXAMPLE_BATCH, time, layout.features)
    states = wrapper.zero_states(_EXAMPLE_BATCH)
    names = [n for site in wrapper.sites for n in site.state_names()]
    inputs = ["x", *(n[0] for n in names)]
    outputs = ["y", *(n[1] for n in names)]
    dynamic: dict[str, dict[int, str]] = {"x": {0: "batch"} if time_steps == 1 else {0: "batch", 1: "time"}}
    dynamic["y"] = {0: "batch", 1: "time"} if layout.output_kind == "sequence" and time_steps != 1 else {0: "batch"}
    for state_in, state_out, _ in names:
        dynamic[state_in] = dynamic[state_out] = {1: "batch"}
    buffer = io.BytesIO()
    try:
        with quiet_torch_export(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (x, *states),
                buffer,  # type: ignore[arg-type]  # a file object works; the stub says path only
                dynamo=False,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.onnx.export raises many unrelated types for unsupported ops
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"torch.onnx.export failed: {type(exc).__name__}: {first[:240]}") from None
    data = buffer.getvalue()
    model = onnx.load_model_from_string(data)
    _verify(model, wrapper, unrolled)
    return data
