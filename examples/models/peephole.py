"""Example hand-written cell: an LSTM with peephole connections (Gers & Schmidhuber, 2000).

The input and forget gates also see the previous cell state c_{t-1}, the output gate the new
one c_t, each through a per-unit weight vector:

    i = σ(W_i x + U_i h + p_i ⊙ c_{t-1} + b_i)     f = σ(W_f x + U_f h + p_f ⊙ c_{t-1} + b_f)
    c_t = f ⊙ c_{t-1} + i ⊙ tanh(W_g x + U_g h + b_g)
    o = σ(W_o x + U_o h + p_o ⊙ c_t + b_o)         h_t = o ⊙ tanh(c_t)

`PeepholeLSTMCell` follows the exporter's step protocol (docs/EXPORT.md): `state_sizes` names
the state tensors and `step(x_t, state) -> (h_t, state)` advances one time step. It also
declares `onnx_lstm_weights()`: the same weights in the ONNX `LSTM` operator's layout, peepholes
as its input `P`; the exporter then writes each step as one ONNX `LSTM` node, and its parity
gates prove that node computes what `step()` computes. `PeepholeLSTM` is the user's model: its
own time loop over the cell, and a head.

    edgewatch export --model examples/models/peephole.py:PeepholeLSTM \
        --weights examples/models/peephole.pt --target cpu-int8 --out out/peephole
"""

from __future__ import annotations

import torch
from torch import nn


class PeepholeLSTMCell(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.state_sizes = {"h": hidden, "c": hidden}
        self.x_gates = nn.Linear(features, 4 * hidden)  # gate blocks i, f, g, o
        self.h_gates = nn.Linear(hidden, 4 * hidden, bias=False)
        self.peep_i = nn.Parameter(0.1 * torch.randn(hidden))
        self.peep_f = nn.Parameter(0.1 * torch.randn(hidden))
        self.peep_o = nn.Parameter(0.1 * torch.randn(hidden))

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t: [batch, features]; state h, c: [batch, hidden] → (h_t, next state)."""
        h, c = state["h"], state["c"]
        z = self.x_gates(x_t) + self.h_gates(h)
        n = self.hidden
        i = torch.sigmoid(z[:, :n] + self.peep_i * c)
        f = torch.sigmoid(z[:, n : 2 * n] + self.peep_f * c)
        c = f * c + i * torch.tanh(z[:, 2 * n : 3 * n])
        o = torch.sigmoid(z[:, 3 * n :] + self.peep_o * c)
        h = o * torch.tanh(c)
        return h, {"h": h, "c": c}

    def onnx_lstm_weights(self) -> dict[str, torch.Tensor]:
        """The same cell in ONNX LSTM's layout: gate order i, o, f, c; P = [p_i, p_o, p_f]."""
        n = self.hidden

        def onnx_order(t: torch.Tensor) -> torch.Tensor:  # i, f, g, o → i, o, f, c
            return torch.cat([t[:n], t[3 * n :], t[n : 2 * n], t[2 * n : 3 * n]])

        return {
            "W": onnx_order(self.x_gates.weight),
            "R": onnx_order(self.h_gates.weight),
            "B": torch.cat([onnx_order(self.x_gates.bias), torch.zeros(4 * n)]),
            "P": torch.cat([self.peep_i, self.peep_o, self.peep_f]),
        }


class PeepholeLSTM(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell = PeepholeLSTMCell(features, hidden)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features]."""
        zeros = x.new_zeros(x.shape[0], self.hidden)
        state = {"h": zeros, "c": zeros}
        outputs = []
        for t in range(x.shape[1]):
            h, state = self.cell.step(x[:, t], state)
            outputs.append(self.head(h))
        return torch.stack(outputs, dim=1)
