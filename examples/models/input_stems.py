"""Example user models whose first layer is not recurrent: a Linear or a small MLP input stem
before a 2-layer LSTM. The exporter finds the input width (5 here) from the module itself;
no `--features` is needed (it only names the inputs, or overrides the width).

    edgewatch export --model examples/models/input_stems.py:StemForecaster \
        --model-kwargs '{"stem": "mlp"}' --weights stem.pt --target cpu-int8 --out out/stem
"""

from __future__ import annotations

import torch
from torch import nn


class StemForecaster(nn.Module):
    def __init__(self, features: int = 5, width: int = 12, hidden: int = 12, stem: str = "linear") -> None:
        super().__init__()
        if stem == "linear":
            self.stem: nn.Module = nn.Linear(features, width)
        elif stem == "mlp":
            self.stem = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh())
        else:
            raise ValueError(f"stem {stem!r}: expected linear or mlp")
        self.encoder = nn.LSTM(width, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features] next-sample forecast."""
        out, _ = self.encoder(self.stem(x))
        return self.head(out)
