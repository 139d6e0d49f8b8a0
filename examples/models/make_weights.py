"""Write the example models' weights beside them: forecaster.pt and one .pt per example in WEIGHTS.

Random initialisation with a fixed seed — an untrained model is enough to demonstrate and
test the export (parity does not depend on training). Train a real one with
`edgewatch train`. Run: .venv/bin/python examples/models/make_weights.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

HERE = Path(__file__).resolve().parent

WEIGHTS: dict[str, tuple[str, str, int]] = {
    # file written: (example file, class, seed); each class with its default arguments
    "forecaster.pt": ("forecaster.py", "Forecaster", 20240611),
    "stem.pt": ("input_stems.py", "StemForecaster", 1),
    "lstm_cell_loop.pt": ("cell_loops.py", "LSTMCellLoop", 2),
    "gru_cell_loop.pt": ("cell_loops.py", "GRUCellLoop", 3),
    "peephole.pt": ("peephole.py", "PeepholeLSTM", 4),
    "coupled_gate.pt": ("coupled_gate.py", "CoupledGateLSTM", 5),
    "minimal_gru.pt": ("minimal_gru.py", "MinimalGRU", 6),
}


def _load(file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(file).stem, HERE / file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> list[Path]:
    written = []
    for name, (file, cls, seed) in WEIGHTS.items():
        torch.manual_seed(seed)
        model = getattr(_load(file), cls)()
        out = HERE / name
        torch.save(model.state_dict(), out)
        written.append(out)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
