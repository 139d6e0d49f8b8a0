"""The demo: a pump/valve rig simulator (`simulator`), the small model trained on it
(`model/`, reproduced by `make_model`), and — once the MQTT demo lands — `edgewatch demo`.

`runtime.cli` imports every command module by name and calls its `register`; this package
is that module for `demo`. Until the MQTT demo exists there is no command to add, so
`register` adds none (otherwise the bare package would break every `edgewatch` command).
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `edgewatch demo` to the CLI: nothing yet (the MQTT demo is a later step)."""
    del subparsers
