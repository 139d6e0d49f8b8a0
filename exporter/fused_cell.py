"""One ONNX `LSTM` node for a hand-written LSTM cell that declares its weights in ONNX's layout.

A step module (exporter.sites) whose state is exactly `h` and `c` of one width H, whose
`step()` returns the new `h` as its output, may declare

    def onnx_lstm_weights(self) -> dict[str, Tensor]:
        # ONNX LSTM layout, gates in ONNX's order i, o, f, c:
        # "W" [4H, in], "R" [4H, H], "B" [8H] (input then recurrent biases),
        # optional "P" [3H] peepholes (p_i, p_o, p_f), optional "input_forget" (a bool tensor or bool:
        # the input gate is 1 - the forget gate; ONNX keeps a 4-gate W whose i rows are unused)

The exporter then emits, per step, one `LSTM` node (sequence length 1) with those weights,
peephole input `P` and `input_forget` attribute, in place of the cell's traced arithmetic.
PyTorch still runs the user's `step()`: gate 1 compares the graph with it, so a declaration
that does not compute what `step()` computes fails the export (exit 1), never ships.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_config.errors import UnsupportedModelError

if TYPE_CHECKING:
    import torch

_KEYS = {"W", "R", "B", "P", "input_forget"}


def declares_lstm(module: Any, state: Mapping[str, int]) -> bool:
    """True when `module` asks for the fused node and its declared state can be an LSTM's."""
    if not callable(getattr(module, "onnx_lstm_weights", None)):
        return False
    if set(state) != {"h", "c"} or state["h"] != state["c"]:
        raise UnsupportedModelError(
            f"{type(module).__name__} declares onnx_lstm_weights() but its state is {dict(state)}; "
            "an ONNX LSTM node carries exactly h and c of one width"
        )
    return True


def _checked(weights: Any, hidden: int, features: int) -> tuple[list[torch.Tensor], bool]:
    import torch

    if not isinstance(weights, Mapping) or not {"W", "R", "B"} <= set(weights) or set(weights) - _KEYS:
        raise UnsupportedModelError(
            f"onnx_lstm_weights() must return a dict with W, R, B (and optionally P, input_forget); got {weights!r:.80}"
        )
    expected = {"W": (4 * hidden, features), "R": (4 * hidden, hidden), "B": (8 * hidden,), "P": (3 * hidden,)}
    tensors = []
    for key, shape in expected.items():
        value = weights.get(key)
        if value is None and key == "P":
            value = torch.zeros(shape)  # no peepholes: ONNX's default is P = 0
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UnsupportedModelError(f"onnx_lstm_weights()[{key!r}] must be a tensor {list(shape)}, got {got}")
        tensors.append(value.detach().float())
    return tensors, bool(weights.get("input_forget", False))


@functools.cache
def _function(input_forget: bool) -> Any:
    import torch

    class LSTMStep(torch.autograd.Function):
        """forward: the user's own new (h, c), untouched; symbolic: one ONNX LSTM node."""

        @staticmethod
        def forward(ctx: Any, x_t: Any, h: Any, c: Any, w: Any, r: Any, b: Any, p: Any, h_new: Any, c_new: Any) -> Any:
            del ctx, x_t, h, c, w, r, b, p  # the graph's node computes from these; PyTorch keeps the user's result
            return h_new.clone(), c_new.clone()

        @staticmethod
        def symbolic(g: Any, x_t: Any, h: Any, c: Any, w: Any, r: Any, b: Any, p: Any, h_new: Any, c_new: Any) -> Any:
            axis = g.op("Constant", value_t=torch.tensor([0]))
            no_lengths = g.op("prim::Constant")  # an omitted optional input (how torch's own RNN symbolics do it)
            no_lengths.setType(torch._C.OptionalType.ofTensor())
            inputs = [g.op("Unsqueeze", v, axis) for v in (x_t, w, r, b)]
            states = [g.op("Unsqueeze", v, axis) for v in (h, c)]
            peepholes = g.op("Unsqueeze", p, axis)
            hidden = int(r.type().sizes()[-1])  # R is a constant [4H, H]: its shape is known when tracing
            _, h_n, c_n = g.op(
                "LSTM",
                *inputs,
                no_lengths,
                *states,
                peepholes,
                hidden_size_i=hidden,
                input_forget_i=int(input_forget),
                outputs=3,
            )
            return g.op("Squeeze", h_n, axis), g.op("Squeeze", c_n, axis)

    return LSTMStep


def lstm_node(
    module: Any, x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor, h_new: torch.Tensor, c_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """While exporting: the user's (h_new, c_new), recorded in the graph as one ONNX LSTM step."""
    tensors, input_forget = _checked(module.onnx_lstm_weights(), int(h.shape[-1]), int(x_t.shape[-1]))
    result: tuple[torch.Tensor, torch.Tensor] = _function(input_forget).apply(x_t, h, c, *tensors, h_new, c_new)
    return result
