"""Write examples/models/forecaster.pt: the example Forecaster's weights.

Random initialisation with a fixed seed — an untrained model is enough to demonstrate and
test the export (parity does not depend on training). Train a real one with
`edgewatch train`. Run: .venv/bin/python examples/models/make_weights.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> Path:
    spec = importlib.util.spec_from_file_location("forecaster", HERE / "forecaster.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(20240611)
    model = module.Forecaster()
    out = HERE / "forecaster.pt"
    torch.save(model.state_dict(), out)
    return out


if __name__ == "__main__":
    print(main())
