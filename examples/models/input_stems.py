"""Example user models whose first layer is not recurrent: a Linear, a small MLP or a causal
Conv1d input stem before a 2-layer LSTM. The exporter finds the input width (5 here) from the
module itself; no `--features` is needed (it only names the inputs, or overrides the width).
The causal convolution pads only the past (left) side; the exporter carries its last
kernel−1 input frames as graph state, so the artifact still takes one sample per call.

    edgewatch export --model examples/models/input_stems.py:StemForecaster \
        --weights examples/models/stem.pt --target cpu-int8 --out out/stem

(stem.pt is the Linear stem with the default arguments; make_weights.py writes it. For the
others, save a state_dict of StemForecaster(stem="mlp") or (stem="conv") and pass the same
arguments as --model-kwargs '{"stem": "conv"}'.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn


class CausalConv(nn.Module):
    """Conv1d over time that sees only the present and the past: x [batch, time, in] → [batch, time, out]."""

    def __init__(self, features: int, width: int, kernel: int) -> None:
        super().__init__()
        self.past = kernel - 1
        self.conv = nn.Conv1d(features, width, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left_padded = F.pad(x.transpose(1, 2), (self.past, 0))
        return torch.relu(self.conv(left_padded)).transpose(1, 2)


class StemForecaster(nn.Module):
    def __init__(self, features: int = 5, width: int = 12, hidden: int = 12, stem: str = "linear") -> None:
        super().__init__()
        if stem == "linear":
            self.stem: nn.Module = nn.Linear(features, width)
        elif stem == "mlp":
            self.stem = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh())
        elif stem == "conv":
            self.stem = CausalConv(features, width, kernel=3)
        else:
            raise ValueError(f"stem {stem!r}: expected linear, mlp or conv")
        self.encoder = nn.LSTM(width, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, features] → [batch, time, features] next-sample forecast."""
        out, _ = self.encoder(self.stem(x))
        return self.head(out)
