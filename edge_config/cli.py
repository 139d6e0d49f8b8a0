"""`edgewatch config init | check | show`.

config init --broker HOST:PORT --model DIR --topic FILTER [--prefix P] [--target TYPE] [--state-dir DIR]
    prints a complete, commented config that passes `config check`: client id edgewatch-<host name>
    (unique per gateway), state checkpointed to state.ckpt beside the config or in --state-dir
config check FILE [--no-files]   exit 0 valid, 2 invalid (one line per problem on stderr)
config show FILE [--no-files]    the effective config: environment applied, secrets masked
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from edge_config.annotated_yaml import render_annotated
from edge_config.compat import suitable_presets, target_problems
from edge_config.errors import ConfigError, TargetError
from edge_config.loading import load_config
from edge_config.manifest import read_manifest
from edge_config.presets import PROVIDER_BY_TYPE
from edge_config.problems import Loc
from edge_config.schema import (
    BrokerConfig,
    GatewayConfig,
    ModelConfig,
    RuntimeConfig,
    StreamConfig,
    TargetConfig,
)

__all__ = ["default_client_id", "init_config", "parse_broker", "register", "show_config"]

MASK = "***"
CHECKPOINT_FILE = "state.ckpt"
"""What `config init` names the checkpoint (runtime.state: one file per model beside it)."""
_CLIENT_ID_MAX = 64
_NOT_CLIENT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def default_client_id() -> str:
    """ "edgewatch-<host name>", reduced to [A-Za-z0-9_-] and 64 characters: two gateways with one
    client id on a broker take each other's session over endlessly."""
    host = _NOT_CLIENT_ID.sub("-", socket.gethostname()).strip("-")
    return f"edgewatch-{host}"[:_CLIENT_ID_MAX] if host else "edgewatch"


def parse_broker(value: str) -> tuple[str, int]:
    """ "host:port" or "[v6-address]:port" → (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker {value!r}: expected HOST:PORT, e.g. 192.0.2.10:1883")
    return host, int(port)


def _first_message(exc: ValidationError) -> str:
    return exc.errors()[0]["msg"].removeprefix("Value error, ")


def init_config(
    broker: str,
    model_dir: Path,
    topics: list[str],
    *,
    prefix: str | None = None,
    target: str | None = None,
    state_dir: Path | None = None,
) -> str:
    """The text of a complete, commented config for one model and its topic filters.

    state_dir: where checkpoints go (None: beside the config file, a path relative to it)."""
    host, port = parse_broker(broker)
    manifest = read_manifest(model_dir)
    target_type = target or (manifest.providers[0] if manifest.providers else "cpu")
    if target_type not in PROVIDER_BY_TYPE:
        raise ConfigError(f"--target {target_type!r}: expected one of {', '.join(PROVIDER_BY_TYPE)}")
    chosen = TargetConfig.model_validate({"type": target_type})
    reasons = target_problems(manifest, chosen)
    if reasons:
        raise TargetError(
            f"model {manifest.name!r} ({manifest.target}) cannot run on {target_type}: {'; '.join(reasons)} "
            f"(targets it suits: {', '.join(manifest.providers)}; "
            f"presets for {target_type}: {', '.join(suitable_presets(chosen))})"
        )
    try:
        stream = StreamConfig(name=manifest.name, topics=topics, model=manifest.name)
    except ValidationError as exc:
        raise ConfigError(f"--topic: {_first_message(exc)}") from None
    try:
        runtime = RuntimeConfig() if prefix is None else RuntimeConfig(topic_prefix=prefix)
    except ValidationError as exc:
        raise ConfigError(f"--prefix {prefix!r}: {_first_message(exc)}") from None
    checkpoint = Path(CHECKPOINT_FILE) if state_dir is None else state_dir / CHECKPOINT_FILE
    runtime = runtime.model_copy(update={"checkpoint_path": checkpoint})
    config = GatewayConfig(
        broker=BrokerConfig(host=host, port=port, client_id=default_client_id()),
        streams=[stream],
        models={manifest.name: ModelConfig(path=model_dir.resolve(), target=target_type)},
        targets={target_type: chosen},
        runtime=runtime,
    )
    header = (
        f"edgewatch gateway config, written by `edgewatch config init`.\n"
        f"Model {manifest.name!r}: {manifest.target} ({manifest.precision}), {manifest.task}, "
        f"{manifest.features.count} features.\nCheck it with: edgewatch config check FILE"
    )
    notes: dict[Loc, str] = {
        ("streams", 0, "features"): f"This model's features, in order: {', '.join(manifest.features.names)}",
        ("runtime", "checkpoint_path"): (
            "Relative paths are relative to this file's folder. Under systemd (examples/edgewatch.service): "
            "/var/lib/edgewatch/state.ckpt, or init with --state-dir /var/lib/edgewatch"
        ),
    }
    return render_annotated(config, header=header, notes=notes)


def show_config(config: GatewayConfig) -> str:
    """The effective config as YAML, with the password masked."""
    data = config.model_dump(mode="json")
    if config.broker.password is not None:
        data["broker"]["password"] = MASK
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return text


def _run_init(args: argparse.Namespace) -> int:
    state_dir = None if args.state_dir is None else Path(args.state_dir)
    text = init_config(
        args.broker, Path(args.model), args.topic, prefix=args.prefix, target=args.target, state_dir=state_dir
    )
    sys.stdout.write(text)
    return 0


def _run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, check_files=not args.no_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ConfigError.exit_code
    skipped = " (files not checked: --no-files)" if args.no_files else ""
    print(
        f"{args.file}: ok: {len(config.streams)} stream(s), {len(config.models)} model(s), "
        f"{len(config.targets)} target(s){skipped}"
    )
    return 0


def _run_show(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, check_files=not args.no_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ConfigError.exit_code
    sys.stdout.write(show_config(config))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("config", help="write, check and show gateway config files")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="print a complete, commented config for one model")
    init.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker address")
    init.add_argument("--model", required=True, metavar="DIR", help="artifact folder (model.onnx + manifest.json)")
    init.add_argument(
        "--topic", required=True, action="append", metavar="FILTER", help="input topic filter (repeatable)"
    )
    init.add_argument("--prefix", help="topic prefix of everything edgewatch publishes (default: edgewatch)")
    init.add_argument(
        "--target", choices=sorted(PROVIDER_BY_TYPE), help="target type (default: the model's first provider)"
    )
    init.add_argument(
        "--state-dir",
        metavar="DIR",
        help="folder of the state checkpoints, e.g. /var/lib/edgewatch under systemd (default: beside the config)",
    )
    init.set_defaults(func=_run_init)

    no_files_help = (
        "skip the checks that read other files (artifacts, secrets, TLS files): for a config meant for another machine"
    )
    check = sub.add_parser("check", help="validate a config: exit 0 valid, 2 invalid")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--no-files", action="store_true", help=no_files_help)
    check.set_defaults(func=_run_check)

    show = sub.add_parser("show", help="print the effective config (environment applied, secrets masked)")
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--no-files", action="store_true", help=no_files_help)
    show.set_defaults(func=_run_show)
