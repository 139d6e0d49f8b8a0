"""Example hand-written cell: a minimal gated unit (MGU; Zhou et al., 2016), a GRU-like
simplification with one gate that both resets and updates:

    f = σ(W_f x + U_f h + b_f)      ĥ = tanh(W_h x + U_h (f ⊙ h) + b_h)      h_t = (1 - f) ⊙ h + f ⊙ ĥ

It follows the exporter's step protocol (docs/EXPORT.md) and declares nothing else: no ONNX
operator computes it, so the exporter traces `step()` as written (Gemm + Sigmoid/Tanh/Mul, one
time step per call).

    edgewatch export --model examples/models/minimal_gru.py:MinimalGRU \
        --weights examples/models/minimal_gru.pt --target cpu-int8 --out out/mgu
"""

from __future__ import annotations

import torch
from torch import nn


class MinimalGRU(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.hidden = hidden
        self.state_sizes = {"h": hidden}
        self.x_gates = nn.Linear(features, 2 * hidden)
        self.h_gate = nn.Linear(hidden, hidden, bias=False)
        self.h_candidate = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, features)

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t: [batch, features]; state h: [batch, hidden] → (y_t [batch, features], next state)."""
        h, n = state["h"], self.hidden
        zx = self.x_gates(x_t)
        f = torch.sigmoid(zx[:, :n] + self.h_gate(h))
        candidate = torch.tanh(zx[:, n:] + self.h_candidate(f * h))
        h = (1 - f) * h + f * candidate
        return self.head(h), {"h": h}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features]."""
        state = {"h": x.new_zeros(x.shape[0], self.hidden)}
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)
