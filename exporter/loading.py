"""Build the user's nn.Module from `--model SPEC` and load `--weights FILE` into it.

SPEC is `path/to/file.py:Name` (the file is imported by path, it need not be an
installed package) or `package.module:Name`. `Name` is a class or a factory,
called with the `--model-kwargs` JSON object as keyword arguments.

Weights are a state_dict saved with `torch.save`, loaded with `weights_only=True`
only: a pickle payload could run arbitrary code, so it is refused, never retried
with `weights_only=False`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge_config.errors import ExportInputError, UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """`--model-kwargs` JSON → keyword arguments (an object, or nothing)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportInputError(f"--model-kwargs is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ExportInputError(f"--model-kwargs must be a JSON object, got {type(value).__name__}")
    return value


def _import_file(path: Path) -> ModuleType:
    # A unique module name per file so two user files called model.py do not collide,
    # and registered in sys.modules because dataclasses/typing look the module up there.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_edgewatch_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExportInputError(f"--model: cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file can raise anything; report it as bad input
        del sys.modules[name]
        raise ExportInputError(f"--model: importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def resolve_spec(spec: str) -> Any:
    """`file.py:Name` or `package.module:Name` → the object called `Name`."""
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ExportInputError(f"--model {spec!r}: expected path/to/file.py:Name or package.module:Name")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ExportInputError(f"--model: no such file {path}")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ExportInputError(f"--model: cannot import module {where!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExportInputError(f"--model: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def build_model(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the class or factory named by SPEC; the result must be an nn.Module."""
    from torch import nn

    factory = resolve_spec(spec)
    if not callable(factory):
        raise ExportInputError(f"--model {spec!r} is not a class or function")
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's constructor can raise anything; report it as bad input
        raise ExportInputError(
            f"--model {spec!r}: calling it with {kwargs} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ExportInputError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    if not path.is_file():
        raise ExportInputError(f"--weights: no such file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: the file holds code, not just tensors.
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it references {match.group(1)})" if match else ""
        raise UnsupportedModelError(
            f"weights file holds a pickle payload that weights_only loading refuses{what}; "
            "save a plain state_dict with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError/RuntimeError/EOFError… for non-checkpoint bytes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportInputError(f"--weights {path}: not a torch.save state_dict: {first[:200]}") from None
    # A whole-module checkpoint {"state_dict": {...}} is common; accept its inner dict.
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UnsupportedModelError(f"--weights {path}: holds a {type(state).__name__}, not a state_dict")
    return state


def _keys(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a state_dict into `model` with strict key and shape checking."""
    state = _read_state_dict(Path(path))
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_keys(unexpected)}")
        raise UnsupportedModelError(f"weights do not fit the module ({'; '.join(parts)})")
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise UnsupportedModelError(f"weights do not fit the module (shape mismatch: {_keys(wrong, 3)})")
    model.load_state_dict(state, strict=True)
