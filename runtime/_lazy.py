"""Lazy package exports (PEP 562): a package's curated names, imported on first use.

Used by runtime's packages and by exporter's (whose public names import torch). The packages
of the data path import each other's modules (engine ↔ state ↔ ops); importing
every public name eagerly in each `__init__` would make those imports circular, and it would
make `edgewatch --help` import ONNX Runtime. Each `__init__` lists its names for type checkers
under TYPE_CHECKING and resolves them here at run time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `where[name]` (a module path) and returns its `name`."""

    def getattr_(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return getattr_
