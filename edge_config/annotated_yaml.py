"""Write a config as YAML with every key present and its documentation as a comment.

The comments are the schema's field docstrings, so the file `config init` prints and the
schema cannot drift apart. Optional sections left out (null) are shown commented out with
their defaults, so a user can see what enabling them takes.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, SecretStr

from edge_config.problems import Loc

__all__ = ["render_annotated"]

_PASSWORD_NOTE = (
    "password: never written here. Set EDGEWATCH_BROKER__PASSWORD, or password_file, or a file\n"
    "named edgewatch-mqtt-password in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) or /run/secrets."
)


def _scalar(value: object) -> str:
    """One value in YAML flow style: 1883, "5", [fp32, int8], {}, null."""
    if isinstance(value, Path):
        value = str(value)
    text: str = yaml.safe_dump([value], default_flow_style=True, width=10_000, allow_unicode=True)
    return text.strip()[1:-1]


def _comment(text: str | None, pad: str) -> list[str]:
    return [f"{pad}# {line.strip()}" for line in (text or "").splitlines() if line.strip()]


def _model_lines(model: BaseModel, indent: int, loc: Loc, notes: dict[Loc, str]) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        here = (*loc, name)
        if isinstance(value, SecretStr) or (name == "password" and value is None):
            lines.extend(_comment(_PASSWORD_NOTE, pad))
            continue
        lines.extend(_comment(field.description, pad))
        lines.extend(_comment(notes.get(here), pad))
        lines.extend(_value_lines(name, value, field.annotation, indent, here, notes))
    return lines


def _value_lines(
    name: str, value: object, annotation: object, indent: int, loc: Loc, notes: dict[Loc, str]
) -> list[str]:
    pad = " " * indent
    key = _scalar(name)
    if isinstance(value, BaseModel):
        return [f"{pad}{key}:", *_model_lines(value, indent + 2, loc, notes)]
    if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        lines = [f"{pad}{key}:"]
        for item_name, item in value.items():
            lines += [f"{pad}  {_scalar(item_name)}:", *_model_lines(item, indent + 4, (*loc, item_name), notes)]
        return lines
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        lines = [f"{pad}{key}:"]
        for i, item in enumerate(value):
            lines += [f"{pad}  -", *_model_lines(item, indent + 4, (*loc, i), notes)]
        return lines
    lines = [f"{pad}{key}: {_scalar(value)}"]
    example = _section_type(annotation)
    if value is None and example is not None:  # an optional section: show what enabling it looks like
        lines += [f"{pad}# {line}" for line in [f"{key}:", *_model_lines(example(), 2, loc, notes)]]
    return lines


def _section_type(annotation: object) -> type[BaseModel] | None:
    """The model of an optional section (`TLSConfig | None` → TLSConfig) when all its keys have defaults."""
    for member in getattr(annotation, "__args__", ()):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        if all(not f.is_required() for f in member.model_fields.values()):
            return member
    return None


def render_annotated(model: BaseModel, *, header: str = "", notes: dict[Loc, str] | None = None) -> str:
    """YAML for `model` with every field written out, each under its docstring as a comment.

    `notes` adds a comment line above a key, by location (e.g. the model's feature names
    above streams[0].features).
    """
    lines = _comment(header, "")
    lines += _model_lines(model, 0, (), notes or {})
    return "\n".join(lines) + "\n"
