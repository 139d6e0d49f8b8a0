"""Topic → stream id, and the checks a stream id passes before it goes into a topic we publish.

A stream id is the part of the input topic that names one machine. By default it is the
levels matched by the filter's wildcards, joined with '/':

    filter  plant/+/+/telemetry     topic plant/L1/press-3/telemetry  → "L1/press-3"
    filter  site/#                  topic site/a/b/c                   → "a/b/c"
    filter  machine1/data           (no wildcard)                      → the stream's `name`

`StreamConfig.stream_id` is a topic *pattern* whose `{name}` levels are kept, in order:

    template plant/{line}/+/{machine}  topic plant/L1/cell/press-3 → "L1/press-3"

The id then becomes a level of `<prefix>/alerts/<id>` and `<prefix>/status/<id>`, so an id
that could widen or escape that topic is rejected (PayloadError reason "stream-id"), never
published: wildcards, NUL and control characters, invisible format characters (zero-width,
bidi controls, BOM: Unicode category Cf) and line or paragraph separators (an id must read in a log
or a dashboard as what it is), a leading '$' in any level, empty, '.' or '..' levels, more levels
than allowed, or more than `max_bytes` UTF-8 bytes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from edge_config.errors import ConfigError, PayloadError
from edge_config.schema import StreamConfig

__all__ = [
    "MAX_ID_BYTES",
    "MAX_ID_LEVELS",
    "OutputTopics",
    "Route",
    "StreamIdResolver",
    "check_stream_id",
    "topic_matches",
]

MAX_ID_LEVELS = 8
"""Levels a '#'-matched id may have (a '+'-only filter or a template fixes its own count)."""
MAX_ID_BYTES = 200
"""Keeps `<prefix>/alerts/<id>` far below MQTT's 65,535-byte topic limit and readable in logs."""

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f+#]")
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories refused beyond ASCII: C1 controls, format characters (zero-width, bidi
controls such as U+202E, U+FEFF), line and paragraph separators. Lone surrogates (Cs) fail UTF-8."""
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one input topic goes: its sanitized stream id and the stream config that serves it."""

    stream: str
    config: StreamConfig


def topic_matches(filter_levels: Sequence[str], topic_levels: Sequence[str]) -> bool:
    """MQTT matching (§4.7): '+' one level, '#' the rest (parent included), '$' topics need a literal first level."""
    if topic_levels and topic_levels[0].startswith("$") and filter_levels and filter_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def check_stream_id(stream: str, max_levels: int, max_bytes: int = MAX_ID_BYTES) -> str:
    """Return `stream` unchanged if it is safe as topic levels; raise PayloadError("stream-id") otherwise."""
    size = len(stream.encode("utf-8", "surrogatepass"))
    if size == 0 or size > max_bytes:
        raise PayloadError("stream-id", f"stream id of {size} bytes (allowed 1..{max_bytes})")
    if _FORBIDDEN.search(stream):
        raise PayloadError("stream-id", f"stream id {_show(stream)} holds a wildcard or control character")
    if not stream.isascii() and any(unicodedata.category(c) in _UNPRINTABLE for c in stream):
        raise PayloadError("stream-id", f"stream id {_show(stream)} holds an invisible, bidi or control character")
    levels = stream.split("/")
    if len(levels) > max_levels:
        raise PayloadError("stream-id", f"stream id {_show(stream)} has {len(levels)} levels (allowed {max_levels})")
    for level in levels:
        if level in ("", ".", "..") or level.startswith("$"):
            raise PayloadError("stream-id", f"stream id {_show(stream)} has an empty, '.', '..' or '$' level")
    try:
        stream.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot go into a topic
        raise PayloadError("stream-id", f"stream id {_show(stream)} is not valid UTF-8") from None
    return stream


def _show(text: str) -> str:
    """A log-safe rendering of a hostile string: escaped and cut."""
    shown = ascii(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


@dataclass(frozen=True, slots=True)
class _Rule:
    config: StreamConfig
    filter_levels: tuple[str, ...]
    template: tuple[str, ...] | None  # levels; None = take the filter's wildcard levels
    captures: tuple[int, ...]  # template level indexes that form the id
    max_levels: int

    def stream_id(self, levels: Sequence[str]) -> str:
        if self.template is not None:
            if not topic_matches(self.template, levels):
                raise PayloadError("stream-id", f"topic does not fit the stream_id template of {self.config.name!r}")
            return "/".join(levels[i] for i in self.captures)
        if not any(level in ("+", "#") for level in self.filter_levels):
            return self.config.name
        parts = [levels[i] for i, level in enumerate(self.filter_levels) if level == "+"]
        if self.filter_levels[-1] == "#":
            parts.extend(levels[len(self.filter_levels) - 1 :])
        return "/".join(parts)


def _covers(outer: Sequence[str], inner: Sequence[str]) -> bool:
    """True when every topic matching filter `inner` also matches filter `outer`."""
    for i, level in enumerate(outer):
        if level == "#":
            return True
        if i >= len(inner) or inner[i] == "#":
            return False
        if level != "+" and level != inner[i]:
            return False
    return len(outer) == len(inner)


def _compile(config: StreamConfig, topic_filter: str, max_levels: int) -> _Rule:
    levels = tuple(topic_filter.split("/"))
    if config.stream_id is None:
        wildcards = sum(level == "+" for level in levels)
        # '+' levels fix the id's level count; '#' (or a stream name as id) gets the general cap.
        limit = max_levels if levels[-1] == "#" or wildcards == 0 else wildcards
        return _Rule(config, levels, None, (), limit)
    template: list[str] = []
    captures: list[int] = []
    names: set[str] = set()
    for i, level in enumerate(config.stream_id.split("/")):
        found = _PLACEHOLDER.match(level)
        if found:
            if found.group(1) in names:
                raise ConfigError(f"stream {config.name!r}: stream_id names {{{found.group(1)}}} twice")
            names.add(found.group(1))
            captures.append(i)
            template.append("+")
        elif "{" in level or "}" in level or ("#" in level and level != "#") or ("+" in level and level != "+"):
            raise ConfigError(f"stream {config.name!r}: stream_id level {level!r} must be a literal, + , # or {{name}}")
        else:
            template.append(level)
    if not captures:
        raise ConfigError(f"stream {config.name!r}: stream_id {config.stream_id!r} names no level ({{name}})")
    if "#" in template[:-1]:
        raise ConfigError(f"stream {config.name!r}: '#' must be the last level of stream_id")
    if not _covers(template, levels):
        raise ConfigError(
            f"stream {config.name!r}: topic filter {topic_filter!r} can match topics its stream_id "
            f"{config.stream_id!r} does not fit"
        )
    return _Rule(config, levels, tuple(template), tuple(captures), len(captures))


class StreamIdResolver:
    """Maps input topics to routes for every configured stream; the first stream whose filter matches wins."""

    def __init__(
        self, streams: Sequence[StreamConfig], *, max_levels: int = MAX_ID_LEVELS, max_bytes: int = MAX_ID_BYTES
    ) -> None:
        self._max_bytes = max_bytes
        self._rules = [_compile(s, f, max_levels) for s in streams for f in s.topics]

    @property
    def filters(self) -> list[str]:
        """Every topic filter to subscribe to, in config order, without repeats."""
        return list(dict.fromkeys("/".join(r.filter_levels) for r in self._rules))

    def matches(self, topic: str) -> bool:
        levels = topic.split("/")
        return any(topic_matches(r.filter_levels, levels) for r in self._rules)

    def resolve(self, topic: str) -> Route | None:
        """The route of `topic`, None if no stream serves it; PayloadError("stream-id") if its id is unsafe."""
        levels = topic.split("/")
        for rule in self._rules:
            if topic_matches(rule.filter_levels, levels):
                stream = check_stream_id(rule.stream_id(levels), rule.max_levels, self._max_bytes)
                return Route(stream, rule.config)
        return None


@dataclass(frozen=True, slots=True)
class OutputTopics:
    """Every topic under the gateway's `runtime.topic_prefix`: what it publishes and its control tree.

    <prefix>/alerts/<stream>          alert messages (docs/ALERTS.md)
    <prefix>/status/<stream>          retained stream status
    <prefix>/scores/<stream>          score and threshold (runtime.score_stream; off by default)
    <prefix>/stats                    the periodic stats message
    <prefix>/available                online / offline (last will) / stopped, retained
    <prefix>/probe                    empty QoS 1 liveness probe when nothing else was published
    <prefix>/control/<stream>/reset   commands to the gateway (the only input under the prefix)
    """

    prefix: str

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def probe(self) -> str:
        return f"{self.prefix}/probe"

    def alert(self, stream: str) -> str:
        return f"{self.prefix}/alerts/{stream}"

    def status(self, stream: str) -> str:
        return f"{self.prefix}/status/{stream}"

    def score(self, stream: str) -> str:
        return f"{self.prefix}/scores/{stream}"

    @property
    def control_root(self) -> str:
        return f"{self.prefix}/control/"

    @property
    def control_filter(self) -> str:
        return self.control_root + "#"

    def is_control(self, topic: str) -> bool:
        return topic.startswith(self.control_root)

    def is_own(self, topic: str) -> bool:
        """A topic of our own tree (alerts, statuses, stats), seen through a wide input filter."""
        return topic.startswith(self.prefix + "/")

    def reset_target(self, topic: str) -> str:
        """The stream id of `<prefix>/control/<stream>/reset`; PayloadError("control-…") otherwise."""
        rest = topic[len(self.control_root) :]
        if not rest.endswith("/reset"):
            raise PayloadError("control-unknown", "expected <prefix>/control/<stream>/reset")
        try:
            return check_stream_id(rest[: -len("/reset")], MAX_ID_LEVELS)
        except PayloadError as exc:  # "control-" keeps control rejects apart from input ones
            raise PayloadError(f"control-{exc.reason}", exc.detail) from None
