"""Example hand-written cell: an LSTM with a coupled input and forget gate (CIFG).

One gate decides both how much to forget and how much to write: i = 1 - f (Greff et al.,
"LSTM: A Search Space Odyssey", 2017), so the cell has three gates instead of four:

    f = σ(W_f x + U_f h + b_f)      g = tanh(W_g x + U_g h + b_g)      o = σ(W_o x + U_o h + b_o)
    c_t = f ⊙ c_{t-1} + (1 - f) ⊙ g                                    h_t = o ⊙ tanh(c_t)

It follows the exporter's step protocol (docs/EXPORT.md), like peephole.py, and declares
`onnx_lstm_weights()` with `input_forget`: ONNX Runtime's LSTM then derives the forget gate from
the input gate (f = 1 - i), so the ONNX input gate carries 1 - f = σ(-(W_f x + U_f h + b_f)).

    edgewatch export --model examples/models/coupled_gate.py:CoupledGateLSTM \
        --weights examples/models/coupled_gate.pt --target cpu-int8 --out out/cifg
"""

from __future__ import annotations

import torch
from torch import nn


class CoupledGateCell(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.features, self.hidden = features, hidden
        self.state_sizes = {"h": hidden, "c": hidden}
        self.gates = nn.Linear(features + hidden, 3 * hidden)  # gate blocks f, g, o over [x, h]

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t: [batch, features]; state h, c: [batch, hidden] → (h_t, next state)."""
        h, c = state["h"], state["c"]
        z = self.gates(torch.cat([x_t, h], dim=1))
        n = self.hidden
        f = torch.sigmoid(z[:, :n])
        c = f * c + (1 - f) * torch.tanh(z[:, n : 2 * n])
        h = torch.sigmoid(z[:, 2 * n :]) * torch.tanh(c)
        return h, {"h": h, "c": c}

    def onnx_lstm_weights(self) -> dict[str, torch.Tensor | bool]:
        """ONNX LSTM layout (gates i, o, f, c) with input_forget: i = 1 - f, the f rows unused."""
        n, w, b = self.hidden, self.gates.weight, self.gates.bias
        f, g, o = w[:n], w[n : 2 * n], w[2 * n :]
        unused = torch.zeros_like(f)
        blocks = torch.cat([-f, o, unused, g])  # [4n, features + hidden]
        return {
            "W": blocks[:, : self.features],
            "R": blocks[:, self.features :],
            "B": torch.cat([-b[:n], b[2 * n :], torch.zeros(n), b[n : 2 * n], torch.zeros(4 * n)]),
            "input_forget": True,
        }


class CoupledGateLSTM(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell = CoupledGateCell(features, hidden)
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
