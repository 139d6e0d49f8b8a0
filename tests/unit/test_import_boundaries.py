"""A gateway has no torch: the gateway core imports neither torch, the exporter nor matplotlib.

Each check imports in a fresh interpreter and, when a forbidden module is loaded anyway, names
the project lines whose import pulled it in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GATEWAY_CORE = (
    "runtime.service",
    "runtime.mqtt.bus",
    "runtime.engine.engine",
    "runtime.model.session",
    "runtime.state.checkpoint",
    "runtime.ops.metrics",
    "runtime.commands.serve",
    "edge_config",
)

# argv: the forbidden top-level names (comma-separated), then the modules to import. Prints
# {forbidden name: [file:line of the project frames that imported it first]} for those loaded.
_PROBE = """
import importlib, json, sys, traceback

forbidden = set(sys.argv[1].split(","))
root = sys.argv[2]
chains = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in forbidden and top not in chains:
            frames = traceback.extract_stack()[:-1]
            chains[top] = [f"{f.filename[len(root) + 1:]}:{f.lineno}" for f in frames if f.filename.startswith(root)]
        return None

sys.meta_path.insert(0, Watch())
for module in sys.argv[3:]:
    importlib.import_module(module)
print(json.dumps({top: chains.get(top, []) for top in sorted(forbidden) if top in sys.modules}))
"""


def _loaded(forbidden: tuple[str, ...], modules: tuple[str, ...]) -> dict[str, list[str]]:
    """The forbidden modules that importing `modules` loads, each with the import lines that pulled it in."""
    args = [sys.executable, "-c", _PROBE, ",".join(forbidden), str(ROOT), *modules]
    result = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_gateway_core_imports_neither_torch_nor_exporter_nor_matplotlib() -> None:
    assert _loaded(("exporter", "matplotlib", "torch"), GATEWAY_CORE) == {}


def test_import_exporter_loads_neither_torch_nor_matplotlib() -> None:
    assert _loaded(("matplotlib", "torch"), ("exporter",)) == {}
