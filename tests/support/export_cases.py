"""User-style modules for the exporter tests, written to a temporary .py file (not a package).

`write_models(tmp)` writes them; `save_weights(...)` builds one with kwargs and saves its
state_dict; `step_artifact(...)` steps an artifact with plain ONNX Runtime (state carried),
independently of the exporter's own gate code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

MODELS_SOURCE = '''
import torch
from torch import nn


class Seq(nn.Module):
    """One recurrent module + a head. batch_first=False models take and return time-major
    tensors, as such a user's forward would; last=True reads only the last step."""

    def __init__(self, kind="lstm", features=3, hidden=8, layers=1, batch_first=True, last=False, out=None):
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(features, hidden, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(hidden, out or (1 if last else features))
        self.batch_first, self.last = batch_first, last

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.last:
            step = y[:, -1] if self.batch_first else y[-1]
            return torch.sigmoid(self.head(step))
        return self.head(y)


class Mixed(nn.Module):
    """GRU → LSTM → head on every step: two recurrent modules, dotted names."""

    def __init__(self, features=4, hidden=8):
        super().__init__()
        self.body = nn.ModuleDict({"gru": nn.GRU(features, hidden, 2, batch_first=True)})
        self.lstm = nn.LSTM(hidden, hidden, 1, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x):
        y, _ = self.body["gru"](x)
        y, _ = self.lstm(y)
        return self.head(y)


class NonCausal(nn.Module):
    """Subtracts the mean over the time axis: every output depends on the whole window."""

    def __init__(self, features=3, hidden=8):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x):
        y, _ = self.rnn(x - x.mean(dim=1, keepdim=True))
        return self.head(y)


class Bidirectional(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, batch_first=True, proj_size=4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class Twice(nn.Module):
    """Runs its LSTM twice per forward: the state of the second call would be lost."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 3, batch_first=True)

    def forward(self, x):
        return self.rnn(self.rnn(x)[0])[0]


class Projected5(nn.Module):
    """An input projection before the LSTM (5 features in, LSTM input 8) and a (y, state)
    return value, as some users write it."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(5, 8)
        self.rnn = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        y, state = self.rnn(torch.relu(self.proj(x)))
        return self.head(y), state


def make_seq(**kwargs):
    """A factory, not a class: SPEC may name either."""
    return Seq(**kwargs)
'''


def write_models(directory: Path) -> Path:
    path = Path(directory) / "user_models.py"
    path.write_text(MODELS_SOURCE)
    return path


def import_models(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_test_user_models_{abs(hash(str(path)))}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def save_weights(path: Path, name: str, out: Path, seed: int = 0, **kwargs: Any) -> Any:
    """Build models.<name>(**kwargs) with a fixed seed, save its state_dict to `out`, return it."""
    import torch

    torch.manual_seed(seed)
    model = getattr(import_models(path), name)(**kwargs).eval()
    torch.save(model.state_dict(), out)
    return model


def step_artifact(directory: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Feed x [batch, time, features] one step per ORT call, state carried (zero initial).

    Returns per-step outputs [batch, time, n] and the final states by graph output name."""
    import onnxruntime as ort

    from runtime.model.artifact import load_artifact

    art = load_artifact(directory)
    session = ort.InferenceSession(art.model_bytes, providers=["CPUExecutionProvider"])
    batch = x.shape[0]
    states = {s.input: np.zeros((s.layers, batch, s.hidden), np.float32) for s in art.manifest.state}
    outputs = []
    for t in range(x.shape[1]):
        result = session.run(None, {"x": x[:, t : t + 1].astype(np.float32), **states})
        named = dict(zip(art.manifest.outputs, result, strict=True))
        y = named[art.manifest.outputs[0]]
        outputs.append(y[:, 0] if art.manifest.output_kind == "sequence" else y)
        states = {s.input: named[s.output] for s in art.manifest.state}
    return np.stack(outputs, axis=1), {s.output: states[s.input] for s in art.manifest.state}
