"""`edgewatch serve --config FILE`: run the daemon in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the configured models on MQTT (foreground; SIGTERM stops, SIGHUP reloads the config and models)",
    )
    p.add_argument("--config", type=Path, required=True, help="gateway config (YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_config.loading import load_config
    from runtime.service import Service

    return Service(load_config(args.config), config_path=args.config).run()
