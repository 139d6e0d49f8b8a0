"""Does a stream-id template fit a topic filter? Checked when the config is validated.

A template is the filter written again level by level, where a `{name}` (kept in the id)
or a `+` (matched, not kept) may stand only where the filter has `+`, a `#` only where it
has `#`, and every other level repeats the filter's literal:

    filter plant/+/+/telemetry    template plant/{line}/{machine}/telemetry   id "L1/press-3"
    filter plant/+/+/telemetry    template plant/{line}/+/telemetry           id "L1"

This is stricter than what `runtime.mqtt.topics` can resolve (it would also accept a `{name}`
over a literal level, which always captures the same text): a config that passes here
always resolves there.
"""

from __future__ import annotations

import re

__all__ = ["check_template", "template_names"]

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def template_names(template: str) -> list[str]:
    """The `{name}` levels of a template, in order (malformed levels are ignored here)."""
    return [m.group(1) for level in template.split("/") if (m := _PLACEHOLDER.match(level))]


def check_template(template: str, topic_filter: str) -> None:
    """Raise ValueError saying which level of `template` does not fit `topic_filter`."""
    levels = template.split("/")
    wanted = topic_filter.split("/")
    for i, level in enumerate(levels, start=1):
        if not _PLACEHOLDER.match(level) and any(c in level for c in "{}+#") and level not in ("+", "#"):
            raise ValueError(
                f"level {i} {level!r} of stream_id {template!r} must be a literal, +, # or {{name}} "
                "(a letter or _ first)"
            )
    names = template_names(template)
    if not names:
        raise ValueError(f"stream_id {template!r} names no level; write a level as {{name}}")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"stream_id {template!r} names {{{twice}}} twice")
    if len(levels) != len(wanted):
        raise ValueError(
            f"stream_id {template!r} has {len(levels)} levels but topic filter {topic_filter!r} has {len(wanted)}; "
            "write the filter again level by level"
        )
    for i, (mine, theirs) in enumerate(zip(levels, wanted, strict=True), start=1):
        if _PLACEHOLDER.match(mine) or mine == "+":
            if theirs != "+":
                raise ValueError(
                    f"level {i} {mine!r} of stream_id {template!r} stands on {theirs!r} of topic filter "
                    f"{topic_filter!r}; {{name}} and + may stand only where the filter has +"
                )
        elif mine == "#":
            if theirs != "#":
                raise ValueError(
                    f"level {i} '#' of stream_id {template!r} stands on {theirs!r} of topic filter {topic_filter!r}"
                )
        elif mine != theirs:
            raise ValueError(
                f"level {i} {mine!r} of stream_id {template!r} differs from {theirs!r} of topic filter {topic_filter!r}"
            )
