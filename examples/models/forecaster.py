"""An example user model, written the way a user writes one (nothing edgewatch-specific).

A 2-layer LSTM (hidden 64) over 8 sensor features with a Linear head on every step;
y[:, t] forecasts the normalized sample x[:, t + 1]. `forward(x)` takes no state: the
exporter makes the LSTM's state an explicit input/output of the graph.

    edgewatch export --model examples/models/forecaster.py:Forecaster \
        --weights examples/models/forecaster.pt --target cpu-int8 --out out/forecaster
"""

from __future__ import annotations

import torch
from torch import nn


class Forecaster(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] (normalized) → [batch, time, features] next-sample forecast."""
        out, _ = self.encoder(x)
        return self.head(out)
