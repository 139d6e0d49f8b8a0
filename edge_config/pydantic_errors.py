"""pydantic's validation errors → `Problem`s a user can act on.

pydantic says *what* is wrong at which location; this adds what a person needs next:
the closest known key for a typo, the accepted values, the value that was given, and one
message per place (a value that fits no member of `str | int | float | bool` is one
problem, not four).
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from edge_config.problems import Loc, Problem

__all__ = ["problems_from_validation_error"]


def _unwrap(annotation: object) -> object:
    """`X | None` → X; other annotations unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class validating the mapping at `loc`, None when `loc` is not a model."""
    current: object = root
    parts = list(loc)
    while parts:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        current = _unwrap(field.annotation)
        while get_origin(current) in (list, dict) and parts:  # an index or a map key
            parts.pop(0)
            current = _unwrap(get_args(current)[-1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _written(data: object, loc: Loc) -> int:
    """How many leading parts of `loc` exist in the document."""
    for n, part in enumerate(loc):
        in_map = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_map or in_list:
            data = data[part]  # type: ignore[index]
        else:
            return n
    return len(loc)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one(root: type[BaseModel], error: ErrorDetails, data: object) -> tuple[Problem, str]:
    """The problem, and the given value when showing it helps ("" otherwise)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        known = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return Problem(loc, f"unknown key {str(loc[-1])!r}", hint, at_key=True), ""
    if kind == "missing":
        model = _model_at(root, loc[:-1])
        field = model.model_fields.get(str(loc[-1])) if model else None
        hint = (field.description or "").splitlines()[0] if field else ""
        return Problem(loc, f"missing required key {str(loc[-1])!r}", hint), ""
    if kind == "model_type" and not loc:
        return Problem(loc, "the file must be a mapping of sections", f"sections: {', '.join(root.model_fields)}"), ""
    loc = loc[: _written(data, loc)]  # drop union member tags ('str', 'int', …) pydantic appends
    hint = ""
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(str(error["input"]), choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else ""
    given = error["input"]
    got = "" if isinstance(given, (dict, list)) or kind in ("value_error", "assertion_error") else _shown(given)
    return Problem(loc, error["msg"].removeprefix("Value error, "), hint), got


def problems_from_validation_error(root: type[BaseModel], exc: ValidationError, data: object) -> list[Problem]:
    """One `Problem` per place; the messages of one place (union members) are joined with 'or'."""
    grouped: dict[tuple[Loc, bool], list[tuple[Problem, str]]] = {}
    for error in exc.errors():
        problem, got = _one(root, error, data)
        grouped.setdefault((problem.loc, problem.at_key), []).append((problem, got))
    problems = []
    for entries in grouped.values():
        first, got = entries[0]
        messages = list(dict.fromkeys(p.message for p, _ in entries))
        text = messages[0] + "".join(" or " + m.removeprefix("Input should be ") for m in messages[1:])
        problems.append(Problem(first.loc, f"{text}, got {got}" if got else text, first.hint, first.at_key))
    return problems
