"""The reference detector: a next-step forecasting LSTM for users who have no model yet.

    edgewatch export --model exporter.training.reference_model:ForecastLSTM \\
        --model-kwargs '{"features": 8}' --weights DIR/weights.pt ...

Input and output are normalized samples: `forward(x)` takes x [batch, time, features]
and returns y [batch, time, features], where y[:, t] predicts x[:, t + 1]:

    y[t] = head(lstm(x[..t])) + g * x[t],   g = sigmoid(gate_logit) in (0, 1), per feature

The persistence term `g * x[t]` is why this works on real plants. Slow channels
(temperatures) drift beyond anything a few hundred normal rows show; a forecast from the
LSTM state alone cannot leave the range it was trained on, so every drift would look like
a failure. With g near 1 such a channel is forecast as "where it is now, plus what the
state adds". Noisy channels (flow, current) get g near 0: their best forecast is the
normal level the state knows, so a sustained shift keeps a sustained error instead of
being followed within a step. `exporter.training.fit` starts g at each feature's lag-1
autocorrelation in the training data and lets it learn from there.
`persistence=False` drops the term (the head alone forecasts).

This module imports torch at import time on purpose: it *is* a torch model. Nothing in
the runtime imports it.
"""

from __future__ import annotations

import torch
from torch import nn

SPEC = "exporter.training.reference_model:ForecastLSTM"
"""The `--model` value that names this class for `edgewatch export`."""


class ForecastLSTM(nn.Module):
    """Stacked LSTM + a Linear head on every step; the LSTM is the attribute `lstm`, so the
    exported state tensors are named `h0.lstm` / `c0.lstm`."""

    def __init__(self, features: int, hidden: int = 64, layers: int = 2, persistence: bool = True) -> None:
        super().__init__()
        if features < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"features, hidden and layers must be >= 1 (got {features}, {hidden}, {layers})")
        # Stored verbatim so model.json can rebuild the module with the same kwargs.
        self.features = features
        self.hidden = hidden
        self.layers = layers
        self.persistence = persistence
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, features)
        if persistence:
            self.gate_logit = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32 [batch, time, features] normalized → y: [batch, time, features]."""
        out, _ = self.lstm(x)
        y: torch.Tensor = self.head(out)
        if self.persistence:
            y = y + torch.sigmoid(self.gate_logit) * x
        return y

    def kwargs(self) -> dict[str, int | bool]:
        return {
            "features": self.features,
            "hidden": self.hidden,
            "layers": self.layers,
            "persistence": self.persistence,
        }
