"""A YAML document that remembers where every value was written.

PyYAML's `compose` gives the node tree with start marks; constructing the data from that
same tree (one parse) lets a pydantic error location such as ("broker", "port") be turned
back into the line and column the user typed. Duplicate keys, which PyYAML silently
resolves to the last one, are reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from edge_config.problems import Loc, Problem

__all__ = ["Position", "YamlSource", "YamlSyntaxError", "parse_yaml"]


@dataclass(frozen=True)
class Position:
    line: int
    """1-based."""
    column: int
    """1-based."""


@dataclass(frozen=True)
class YamlSyntaxError:
    position: Position
    message: str


@dataclass(frozen=True)
class YamlSource:
    path: Path
    data: object
    """Plain Python data (dicts, lists, scalars) as yaml.safe_load would give."""
    root: yaml.Node | None
    duplicates: tuple[Problem, ...]
    """One per repeated mapping key, located at the repetition."""

    def position(self, loc: Loc, *, at_key: bool = False) -> Position:
        """Where `loc` was written; the deepest written ancestor when it was not (a missing key)."""
        node = self.root
        if node is None:
            return Position(1, 1)
        mark = node.start_mark
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            key_node, node = found
            mark = key_node.start_mark if (at_key and part == loc[-1] and key_node is not None) else node.start_mark
        return Position(mark.line + 1, mark.column + 1)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        # The last of repeated keys: it is the one whose value PyYAML keeps.
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def _duplicates(node: yaml.Node | None, loc: Loc = ()) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in first:
                problems.append(
                    Problem(
                        (*loc, name), f"duplicate key {name!r} (first at line {first[name]})", "remove one", at_key=True
                    )
                )
            elif name is not None:
                first[name] = key.start_mark.line + 1
            problems.extend(_duplicates(value, (*loc, name if name is not None else "?")))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems.extend(_duplicates(item, (*loc, i)))
    return problems


def parse_yaml(path: Path, text: str) -> YamlSource | YamlSyntaxError:
    """Parse one YAML document; a syntax error comes back with its position, not raised."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        return YamlSyntaxError(where, f"YAML syntax: {exc.problem or exc.context}")
    except yaml.YAMLError as exc:  # e.g. a second document in the file
        return YamlSyntaxError(Position(1, 1), f"YAML: {exc}")
    finally:
        loader.dispose()
    return YamlSource(path, data, root, tuple(_duplicates(root)))
