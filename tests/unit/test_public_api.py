"""Each package's curated `__all__` matches what its `__init__` offers (the httpx habit).

Every package under edge_config/, exporter/ and runtime/ whose `__init__` assigns `__all__` is
checked: each listed name resolves, the list is in ruff's RUF022 order with no duplicates, and
every public name the `__init__` defines or imports from the project is listed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("edge_config", "exporter", "runtime")
# The packages other code imports from: each must curate its public names.
MUST_BE_CURATED = (
    "edge_config",
    "exporter",
    "exporter.evaluation",
    "exporter.training",
    "runtime",
    "runtime.engine",
    "runtime.ingest",
    "runtime.model",
    "runtime.mqtt",
    "runtime.ops",
    "runtime.state",
)
# Optional extras: a name whose module needs one cannot resolve where it is not installed.
EXTRAS = ("torch", "matplotlib")


def _packages() -> list[str]:
    return [
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_PACKAGES
        for init in sorted((ROOT / top).rglob("__init__.py"))
    ]


def _init_tree(package: str) -> ast.Module:
    path = ROOT.joinpath(*package.split("."), "__init__.py")
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _assigned(node: ast.stmt) -> list[str]:
    """The plain names a top-level assignment binds."""
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _assigns_all(tree: ast.Module) -> bool:
    return any("__all__" in _assigned(node) for node in tree.body)


def _first_party(module: str) -> bool:
    return module.partition(".")[0] in TOP_PACKAGES


def _offered_names(tree: ast.Module) -> set[str]:
    """Public names the `__init__` binds at top level: defs, classes, assignments, imports from the project."""
    names: set[str] = set()
    for node in tree.body:
        names.update(_assigned(node))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or _first_party(node.module or "")):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname for alias in node.names if alias.asname and _first_party(alias.name))
    return {name for name in names if not name.startswith("_")}


def _ruff_order(name: str) -> tuple[int, list[int | str]]:
    """RUF022's isort-style key: CONSTANTS, then Classes, then the rest; digit runs compare as numbers."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


PACKAGES = _packages()
CURATED = [package for package in PACKAGES if _assigns_all(_init_tree(package))]


def _resolve(package: str, name: str) -> object:
    """`from package import name` semantics: an attribute, or else a submodule of that name."""
    module = importlib.import_module(package)
    try:
        return getattr(module, name)
    except AttributeError:
        if importlib.util.find_spec(f"{package}.{name}") is None:
            raise
        return importlib.import_module(f"{package}.{name}")


def test_the_curated_packages_include_the_contracts() -> None:
    unchecked = sorted(set(PACKAGES) - set(CURATED))
    print(f"checked ({len(CURATED)}): {', '.join(CURATED)}")
    print(f"no __all__ yet ({len(unchecked)}): {', '.join(unchecked)}")
    assert set(MUST_BE_CURATED) <= set(CURATED)


@pytest.mark.parametrize("package", CURATED)
def test_all_is_sorted_without_duplicates(package: str) -> None:
    exported = list(importlib.import_module(package).__all__)
    assert len(exported) == len(set(exported)), sorted({n for n in exported if exported.count(n) > 1})
    assert exported == sorted(exported, key=_ruff_order)


@pytest.mark.parametrize("package", CURATED)
def test_every_listed_name_resolves(package: str) -> None:
    missing = []
    for name in importlib.import_module(package).__all__:
        try:
            _resolve(package, name)
        except ModuleNotFoundError as exc:
            extra = (exc.name or "").partition(".")[0]
            if extra not in EXTRAS or importlib.util.find_spec(extra) is not None:
                raise
        except AttributeError:
            missing.append(name)
    assert missing == []


@pytest.mark.parametrize("package", CURATED)
def test_every_public_name_the_init_offers_is_listed(package: str) -> None:
    exported = set(importlib.import_module(package).__all__)
    assert sorted(_offered_names(_init_tree(package)) - exported) == []
