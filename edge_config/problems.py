"""One thing wrong with a gateway config, located by its path in the document.

A `Problem` knows *which* key is wrong (`loc`, as pydantic writes locations);
`edge_config.loading` turns it into a `FILE:LINE:COL: path: message (hint)` line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Loc", "Problem", "dotted"]

Loc = tuple[str | int, ...]
"""Path into the document: ("streams", 0, "topics", 1) is streams[0].topics[1]."""


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    hint: str = ""
    at_key: bool = False
    """Point at the key itself (an unknown key) rather than at its value."""
    source: str = ""
    """Where the value came from when not from the file, e.g. "$EDGEWATCH_BROKER__PORT"."""


def dotted(loc: Loc) -> str:
    """("streams", 0, "topics", 1) → "streams[0].topics[1]"; () → "(document)"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"
