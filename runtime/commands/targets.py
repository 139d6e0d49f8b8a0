"""`edgewatch targets`: what this machine's ONNX Runtime can run, and where a model really runs.

    edgewatch targets [--config FILE]
        the installed ORT flavour, version and providers; the export presets; the config's targets;
        with --config, the node placement of every configured model on its own target (a model
        whose artifact is not on this machine is named and skipped). Exit 1 when a placed model's
        fallback policy is not met.
    edgewatch targets --model DIR [--target NAME] [--config FILE] [--fallback strict|allow-cpu]
        builds the session exactly as `serve` does (runtime.model.session.create_session), runs the
        warm-up step and prints the nodes per op type per provider. Exit 1 when the target's
        fallback policy is not met (or the target cannot run the model at all).

NAME is a target of the config when --config is given, otherwise a target type (cpu,
openvino, cuda, …) with default settings; without --target, the model's first preset provider.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edge_config.errors import ArtifactError, TargetError
from edge_config.presets import EXPORT_TARGETS, PROVIDER_BY_TYPE
from edge_config.schema import GatewayConfig, TargetConfig

if TYPE_CHECKING:
    from runtime.model.artifact import Artifact


def node_table(nodes_by_provider: dict[str, dict[str, int]]) -> str:
    """Op types down, providers across, with totals: the assignment of one session."""
    providers = list(nodes_by_provider)
    ops = sorted({op for counts in nodes_by_provider.values() for op in counts})
    rows = [["op type", *providers]]
    rows += [[op, *(str(nodes_by_provider[p].get(op, 0)) for p in providers)] for op in ops]
    rows.append(["total", *(str(sum(nodes_by_provider[p].values())) for p in providers)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _inventory(config: GatewayConfig | None, config_path: Path | None) -> None:
    from runtime.model.session import installed_runtime

    install = installed_runtime()
    print(f"onnxruntime: {install.flavour} {install.version}")
    print(f"available providers: {', '.join(install.providers)}")
    for warning in install.warnings:
        print(f"warning: {warning}")
    print("\nexport presets (edgewatch export --target NAME):")
    width = max(len(n) for n in EXPORT_TARGETS)
    for preset in EXPORT_TARGETS.values():
        providers = ", ".join(preset.provider_types)
        print(f"  {preset.name:<{width}}  {preset.precision:<4}  for {providers:<34}  {preset.description}")
    if config is None:
        return
    print(f"\ntargets in {config_path}:")
    for name, target in config.targets.items():
        chain = " → ".join(target.providers)
        missing = [p for p in target.providers if p not in install.providers]
        state = "available" if not missing else f"missing here: {', '.join(missing)}"
        print(f"  {name}: {chain} (fallback {target.fallback}, precisions {', '.join(target.precisions)}) — {state}")


def _pick_target(name: str | None, config: GatewayConfig | None, default_type: str) -> tuple[str, TargetConfig]:
    if config is not None and name is not None:
        if name not in config.targets:
            raise TargetError(f"--target {name!r} is not a target of the config (targets: {', '.join(config.targets)})")
        return name, config.targets[name]
    chosen = name or default_type
    if chosen not in PROVIDER_BY_TYPE:
        raise TargetError(f"--target {chosen!r}: expected a target type ({', '.join(PROVIDER_BY_TYPE)}) or --config")
    return chosen, TargetConfig.model_validate({"type": chosen})


def _probe(model_dir: Path, target_name: str | None, config: GatewayConfig | None, fallback: str | None) -> int:
    from runtime.model.artifact import load_artifact

    artifact = load_artifact(model_dir)
    providers = artifact.manifest.providers
    name, target = _pick_target(target_name, config, providers[0] if providers else "cpu")
    if fallback is not None:
        target = target.model_copy(update={"fallback": fallback})
    return _place(artifact, name, target, label=repr(artifact.manifest.name))


def _configured(config: GatewayConfig) -> int:
    """Every model of the config on its own target: 1 when any placed model misses its fallback policy."""
    from runtime.model.artifact import load_artifact

    worst = 0
    for model_name, model in config.models.items():
        try:
            artifact = load_artifact(model.path)
        except ArtifactError as exc:
            print(f"\nmodel {model_name!r}: not placed, its artifact is not usable here: {exc}")
            continue
        worst = max(worst, _place(artifact, model.target, config.targets[model.target], label=repr(model_name)))
    return worst


def _place(artifact: Artifact, name: str, target: TargetConfig, *, label: str) -> int:
    """Build the session as `serve` does and print where its nodes run; 1 when the policy is not met."""
    from runtime.model.session import create_session

    print(
        f"\nmodel {label} ({artifact.manifest.target}, {artifact.manifest.precision}) "
        f"on target {name!r}: {' → '.join(target.providers)}, fallback {target.fallback}"
    )
    try:
        _, report = create_session(artifact, target, name=artifact.manifest.name, enforce=False)
    except TargetError as exc:
        print(f"fallback policy NOT met: {exc}")
        return 1
    print(f"providers handed to ONNX Runtime: {', '.join(report.provider_chain)}")
    print(f"node assignment ({report.assignment_source}):")
    print("  " + node_table(report.nodes_by_provider).replace("\n", "\n  "))
    print(f"warm-up: {report.warmup_ms:.2f} ms")
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"fallback policy {report.fallback}: {'met' if report.policy_met else 'NOT met'}")
    return 0 if report.policy_met else 1


def _run(args: argparse.Namespace) -> int:
    from edge_config.loading import load_config

    if args.model is None and (args.target or args.fallback):
        raise TargetError("--target and --fallback need --model DIR")
    # The session check below is the authority on artifacts; the config's own file checks
    # would only repeat it (and refuse a config whose other models are missing here).
    config = load_config(args.config, check_files=False) if args.config else None
    _inventory(config, args.config)
    if args.model is not None:
        return _probe(args.model, args.target, config, args.fallback)
    return 0 if config is None else _configured(config)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("targets", help="list ONNX Runtime providers; show where a model's nodes run")
    parser.add_argument("--config", type=Path, metavar="FILE", help="gateway config whose targets to list")
    parser.add_argument("--model", type=Path, metavar="DIR", help="artifact folder to build a session for")
    parser.add_argument("--target", metavar="NAME", help="a target of --config, or a target type (cpu, openvino, …)")
    parser.add_argument("--fallback", choices=["strict", "allow-cpu"], help="override the target's fallback policy")
    parser.set_defaults(func=_run)
