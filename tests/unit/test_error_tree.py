"""The error tree drawn in edge_config.errors' docstring is the real class hierarchy."""

from __future__ import annotations

import re

import edge_config.errors
from edge_config.errors import EdgewatchError
from exporter.evaluation.skab import SkabError
from exporter.training.fit import TrainingError

_PACKAGES = ("edge_config", "exporter", "runtime")
_NODE = re.compile(r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>[A-Z]\w*Error)\b")


def _drawn_parents() -> dict[str, str | None]:
    """Each class drawn in the docstring → the class drawn above it one level out (None for the root)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name), outermost first
    for line in (edge_config.errors.__doc__ or "").splitlines():
        match = _NODE.match(line)
        if match is None:
            continue
        column = match.start("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((column, match["name"]))
    return parents


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_the_drawing_shows_every_error_under_its_real_parent() -> None:
    # The errors defined outside edge_config are imported above, so that they are subclasses by now.
    assert {TrainingError, SkabError} <= set(_subclasses(EdgewatchError))
    real: dict[str, str | None] = {
        cls.__name__: cls.__bases__[0].__name__
        for cls in _subclasses(EdgewatchError)
        if cls.__module__.partition(".")[0] in _PACKAGES  # not the errors a test defines for itself
    }
    real[EdgewatchError.__name__] = None
    assert _drawn_parents() == real
