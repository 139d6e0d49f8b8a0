"""Environment overrides: EDGEWATCH_<SECTION>__<KEY>[__<KEY>…]=value.

    EDGEWATCH_BROKER__PORT=1884              broker.port = 1884
    EDGEWATCH_RUNTIME__METRICS_ADDRESS=      runtime.metrics_address = null
    EDGEWATCH_MODELS__DETECTOR__THRESHOLD=4  models.detector.threshold = 4.0
    EDGEWATCH_STREAMS__0__TOPICS='[a/+/x]'   streams[0].topics = ["a/+/x"]

Values are parsed as YAML, exactly as if written in the file (so `"007"` needs its quotes,
as it would there), except the broker password, which is taken verbatim: a secret is not
YAML. Only names with a `__` are overrides; others (EDGEWATCH_EXPECT_PROVIDER, …) belong
to tools and are ignored. Map keys match case-insensitively with '-' read as '_', because
environment names cannot hold lower case reliably nor dashes.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from edge_config.problems import Loc, Problem

__all__ = ["PREFIX", "EnvOverlay", "apply_env"]

PREFIX = "EDGEWATCH_"
_VERBATIM: frozenset[Loc] = frozenset({("broker", "password")})


@dataclass
class EnvOverlay:
    data: object
    """The document with the overrides applied (the input is not modified)."""
    origins: dict[Loc, str] = field(default_factory=dict)
    """Location set by a variable → "$NAME" of the variable."""
    problems: list[Problem] = field(default_factory=list)

    def origin(self, loc: Loc) -> str | None:
        """The variable that set `loc` or one of its ancestors."""
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.origins:
                return self.origins[loc[:n]]
        return None


def _norm(name: object) -> str:
    return str(name).lower().replace("-", "_")


def _step(container: object, segment: str) -> tuple[str | int, str]:
    """The key or index `segment` names in `container`; ("", reason) when it names nothing."""
    if isinstance(container, list):
        if not segment.isdigit() or int(segment) >= len(container):
            return "", f"{segment!r} is not an index of a list of {len(container)}"
        return int(segment), ""
    if isinstance(container, dict):
        for key in container:
            if _norm(key) == segment.lower():
                return key, ""
    return segment.lower(), ""


def apply_env(data: object, environ: Mapping[str, str], sections: list[str]) -> EnvOverlay:
    """Apply every EDGEWATCH_…__… variable of `environ` to a copy of the parsed document."""
    root = copy.deepcopy(data) if isinstance(data, dict) else {}
    overlay = EnvOverlay(root)
    for var in sorted(v for v in environ if v.startswith(PREFIX) and "__" in v[len(PREFIX) :]):
        segments = var[len(PREFIX) :].split("__")
        if segments[0].lower() not in sections:
            close = difflib.get_close_matches(segments[0].lower(), sections, n=1)
            hint = f"did you mean {PREFIX}{close[0].upper()}__…?" if close else f"sections: {', '.join(sections)}"
            overlay.problems.append(
                Problem((), f"{segments[0].lower()!r} is not a config section", hint, source=f"${var}")
            )
            continue
        if any(not s for s in segments):
            overlay.problems.append(Problem((), "empty key between '__'", source=f"${var}"))
            continue
        _set(overlay, var, segments, environ[var])
    return overlay


def _parse(loc: Loc, raw: str) -> object:
    """The variable's value: YAML, except for secrets (raises yaml.YAMLError)."""
    return raw if loc in _VERBATIM else yaml.safe_load(raw)


def _set(overlay: EnvOverlay, var: str, segments: list[str], raw: str) -> None:
    container: dict[object, object] | list[object] = overlay.data  # type: ignore[assignment]  # a dict, see apply_env
    loc: Loc = ()
    for i, segment in enumerate(segments):
        key, reason = _step(container, segment)
        if reason:
            overlay.problems.append(Problem(loc, reason, source=f"${var}"))
            return
        loc = (*loc, key)
        if i == len(segments) - 1:
            break
        child = container[key] if isinstance(container, list) else container.get(key)  # type: ignore[index]
        if child is None:  # e.g. broker.tls left out or null: the variable creates it
            child = {}
            container[key] = child  # type: ignore[index]
        if not isinstance(child, (dict, list)):
            overlay.problems.append(Problem(loc, "is a single value, not a section", source=f"${var}"))
            return
        container = child
    try:
        value = _parse(loc, raw)
    except yaml.YAMLError as exc:
        overlay.problems.append(Problem(loc, f"not a YAML value: {str(exc).splitlines()[0]}", source=f"${var}"))
        return
    container[key] = value  # type: ignore[index]
    overlay.origins[loc] = f"${var}"
