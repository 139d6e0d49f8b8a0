"""Example user models that write the time loop themselves over an nn.LSTMCell / nn.GRUCell.

The exporter feeds the cell's state on the first call of the loop and reads it after the last;
the graph holds one time step (manifest `time_steps: 1`), so it is the same graph for any
sequence length.

    edgewatch export --model examples/models/cell_loops.py:LSTMCellLoop \
        --weights examples/models/lstm_cell_loop.pt --target cpu-fp32 --out out/lstm-cell
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMCellLoop(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell = nn.LSTMCell(features, hidden)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features]."""
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        outputs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outputs.append(self.head(h))
        return torch.stack(outputs, dim=1)


class GRUCellLoop(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell = nn.GRUCell(features, hidden)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features]."""
        h = x.new_zeros(x.shape[0], self.hidden)
        outputs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outputs.append(self.head(h))
        return torch.stack(outputs, dim=1)
