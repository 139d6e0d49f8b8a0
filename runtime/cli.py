"""The `edgewatch` command: a thin dispatcher over one module per subcommand.

The modules are `runtime.commands.COMMAND_MODULES`; each exposes `register(subparsers)`, which
adds its parser and sets `func` to a `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_config.errors import EdgewatchError
from runtime.commands import COMMAND_MODULES

__all__ = ["build_parser", "main"]


# Optional dependencies a command may need, and how to get them (gateways have no torch).
_EXTRA_HINTS = {
    "torch": "install the export extra: pip install torch==2.13.0 'edgewatch[export]'",
    "matplotlib": "install the plots extra: pip install 'edgewatch[plots]'",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgewatch")
    except PackageNotFoundError:  # not installed (running from a checkout)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgewatch",
        description="Export PyTorch LSTM/GRU detectors to streaming ONNX and serve them on MQTT gateways.",
    )
    parser.add_argument("--version", action="version", version=f"edgewatch {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except EdgewatchError as exc:
        print(f"edgewatch {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        hint = _EXTRA_HINTS.get((exc.name or "").split(".")[0])
        if hint is None:
            raise
        print(f"edgewatch {args.command}: error: {exc.name} is not installed here; {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
