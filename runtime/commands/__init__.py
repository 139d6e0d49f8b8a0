"""The `edgewatch` subcommands: the registry `runtime.cli` reads, and the runtime's own commands.

Every command module exposes `register(subparsers)`, which adds its parser and sets `func` to a
`run(args) -> int`. A module imports its heavy dependencies (torch, onnxruntime, paho) inside
`run`, so `edgewatch --help` stays fast and a gateway without torch can use every runtime command.
The modules are listed by import path, not imported here: importing this package costs nothing.

    targets   what this machine's ONNX Runtime can run, and where a model really runs
    serve     the daemon, in the foreground
    keys      Ed25519 key pairs for signed artifacts
    alerts    subscribe to the alert topics and print one line per alert
    replay    publish a CSV file as one sensor stream
    score     run a model over a CSV recording as a gateway would (alerts, scores, what-if)
"""

from __future__ import annotations

__all__ = ["COMMAND_MODULES"]

COMMAND_MODULES = (
    "exporter.cli",  # export
    "exporter.training.command",  # train
    "exporter.evaluation.command",  # eval skab
    "edge_config.cli",  # config init|check|show
    "runtime.commands.targets",  # targets
    "runtime.commands.serve",  # serve
    "runtime.commands.keys",  # keys generate
    "runtime.commands.alerts",  # alerts
    "runtime.commands.replay",  # replay
    "runtime.commands.score",  # score
    "runtime.tools.demo",  # demo
    "runtime.tools.bench",  # bench
)
"""Every command module, in the order `edgewatch --help` lists the commands."""
