"""Unroll nn.LSTM / nn.GRU into plain MatMul/Add/Sigmoid/Tanh/Mul cells (same weights).

Why: ONNX Runtime's static QDQ quantization leaves `LSTM`/`GRU` nodes in float, so on an
int8 accelerator the recurrent weights would stay float. Written as Gemm + elementwise
ops, every weight matrix gets a QuantizeLinear/DequantizeLinear pair and really is int8.

The replacement keeps the nn.LSTM/nn.GRU call signature — `forward(input, hx) ->
(output, state)`, `batch_first` honoured — so the streaming wrapper's hooks work on it
unchanged. It loops over time in Python; the exporter traces it with time fixed to 1,
so the graph holds exactly one step (manifest `time_steps == 1`).

Imports torch at import time (it defines nn.Modules); only the export path imports it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from exporter.sites import RecurrentSite


class _Unrolled(nn.Module):
    """Shared part: per-layer weights copied from a torch RNN, the time loop."""

    gates: int = 0

    def __init__(self, rnn: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        self.input_size = rnn.input_size
        self.hidden_size = rnn.hidden_size
        self.num_layers = rnn.num_layers
        self.batch_first = rnn.batch_first
        h = rnn.hidden_size

        def param(name: str, size: int) -> nn.Parameter:
            value = getattr(rnn, name, None)
            # bias=False RNNs have no bias tensors: an all-zero bias keeps one code path.
            data = value.detach().clone() if value is not None else torch.zeros(size)
            return nn.Parameter(data, requires_grad=False)

        self.w_ih = nn.ParameterList([param(f"weight_ih_l{k}", 0) for k in range(self.num_layers)])
        self.w_hh = nn.ParameterList([param(f"weight_hh_l{k}", 0) for k in range(self.num_layers)])
        self.b_ih = nn.ParameterList([param(f"bias_ih_l{k}", self.gates * h) for k in range(self.num_layers)])
        self.b_hh = nn.ParameterList([param(f"bias_hh_l{k}", self.gates * h) for k in range(self.num_layers)])

    def _gate(self, g: torch.Tensor, i: int) -> torch.Tensor:
        # Constant slices (not chunk()) so the graph has no Shape/Div arithmetic for NPUs.
        h = self.hidden_size
        return g[:, i * h : (i + 1) * h]

    def _cell(self, layer: int, x: torch.Tensor, state: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def _initial(self, hx: Any, batch: int, like: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, hx: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        seq = x if not self.batch_first else x.transpose(0, 1)  # [T, B, F]
        states = self._initial(hx, seq.shape[1], seq)
        per_layer = [[s[k] for s in states] for k in range(self.num_layers)]
        outputs = []
        for t in range(seq.shape[0]):
            inp = seq[t]
            for k in range(self.num_layers):
                per_layer[k] = self._cell(k, inp, per_layer[k])
                inp = per_layer[k][0]
            outputs.append(inp)
        out = torch.stack(outputs, 0)
        out = out.transpose(0, 1) if self.batch_first else out
        finals = [torch.stack([per_layer[k][j] for k in range(self.num_layers)], 0) for j in range(len(states))]
        return out, finals


class UnrolledLSTM(_Unrolled):
    gates = 4

    def _initial(self, hx: Any, batch: int, like: torch.Tensor) -> list[torch.Tensor]:
        if hx is None:
            zeros = like.new_zeros(self.num_layers, batch, self.hidden_size)
            return [zeros, zeros]
        return [hx[0], hx[1]]

    def _cell(self, layer: int, x: torch.Tensor, state: list[torch.Tensor]) -> list[torch.Tensor]:
        h, c = state
        g = F.linear(x, self.w_ih[layer], self.b_ih[layer]) + F.linear(h, self.w_hh[layer], self.b_hh[layer])
        i, f, cand, o = (self._gate(g, n) for n in range(4))  # torch's gate order: i, f, g, o
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        return [h, c]

    def forward(self, input: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, (h, c) = self._run(input, hx)
        return out, (h, c)


class UnrolledGRU(_Unrolled):
    gates = 3

    def _initial(self, hx: Any, batch: int, like: torch.Tensor) -> list[torch.Tensor]:
        return [hx if hx is not None else like.new_zeros(self.num_layers, batch, self.hidden_size)]

    def _cell(self, layer: int, x: torch.Tensor, state: list[torch.Tensor]) -> list[torch.Tensor]:
        (h,) = state
        gi = F.linear(x, self.w_ih[layer], self.b_ih[layer])
        gh = F.linear(h, self.w_hh[layer], self.b_hh[layer])
        r = torch.sigmoid(self._gate(gi, 0) + self._gate(gh, 0))
        z = torch.sigmoid(self._gate(gi, 1) + self._gate(gh, 1))
        n = torch.tanh(self._gate(gi, 2) + r * self._gate(gh, 2))  # torch: r gates (W_hn h + b_hn)
        return [(1 - z) * n + z * h]

    def forward(self, input: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h,) = self._run(input, hx)
        return out, h


def unroll_recurrent(model: nn.Module, sites: list[RecurrentSite]) -> nn.Module:
    """A deep copy of `model` with each site's nn.LSTM/nn.GRU replaced by its unrolled cell.

    Call it before wrapping: the copy must not carry the streaming wrapper's hooks. Other sites
    (cells in the user's own loop, causal convolutions) are left as they are: they trace to
    Gemm/Conv form already."""
    clone = copy.deepcopy(model).eval()
    for site in sites:
        if site.kind not in ("lstm", "gru"):
            continue
        parent_name, _, attr = site.name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        rnn = getattr(parent, attr)
        setattr(parent, attr, (UnrolledLSTM if site.kind == "lstm" else UnrolledGRU)(rnn))
    return clone
