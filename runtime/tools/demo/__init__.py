"""The demo: a pump/valve rig simulator (`simulator`), the small model trained on it
(`model/`, reproduced by `make_model`), its fleet (`fleet`) and `edgewatch demo` (`command`).

`runtime.cli` imports every command module by name and calls its `register`; this package is
that module for `demo`. Everything heavy (numpy, paho, onnxruntime) is imported by `run`, so
`edgewatch --help` does not pay for the demo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `edgewatch demo` to the CLI."""
    p = subparsers.add_parser(
        "demo",
        help="the whole job on a built-in example: private broker, daemon, simulated pumps, live alerts, plots",
        description="Start a private mosquitto on a free loopback port, write a gateway config for the model "
        "shipped in the package and start `edgewatch serve` on it, stream simulated pumps through MQTT "
        "(one pump's valve starts closing), print the alerts as they arrive and a summary per machine, "
        "write plots, and shut everything down. Exit 0 only if the failing pump alerted and no healthy one did.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("edgewatch-demo"),
        help="folder for gateway.yaml, the model copy, logs and plots (default ./edgewatch-demo)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=45.0,
        help="simulated seconds per wall second; each machine sends one sample per simulated second (default 45)",
    )
    p.add_argument("--machines", type=int, default=4, help="pumps in the fleet, one of them failing (2..20, default 4)")
    p.add_argument(
        "--duration",
        type=int,
        default=None,
        help="simulated seconds (540..3600, default 900; the failure begins at t=480s, after every pump has "
        "learned its baseline)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from runtime.tools.demo.command import run

    return run(args)
