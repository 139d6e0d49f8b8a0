"""The one ONNX Runtime session factory: `serve` and `targets` both build sessions here.

ONNX Runtime falls back silently: a provider that is not installed only warns, and nodes
a provider cannot run move to the CPU. So the factory records where every node landed
(ORT's graph assignment info), runs one warm-up step, and applies the target's policy:

    strict     the chain's first provider must be installed and every node must land on
               the chain (`type`, then `fallback_providers`); CPU fallback is disabled in ORT
               too, otherwise TargetError
    allow-cpu  the chain plus CPU; nodes on CPU are counted and reported as warnings

The session is built from the artifact's verified bytes, never from its path.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import onnxruntime as ort

from edge_config.compat import target_problems
from edge_config.errors import TargetError
from edge_config.manifest import Manifest
from edge_config.presets import PROVIDER_BY_TYPE, check_precision
from edge_config.schema import TargetConfig
from runtime.model.artifact import Artifact

__all__ = ["CPU", "OrtInstall", "SessionReport", "create_session", "installed_runtime", "session_options"]

CPU = "CPUExecutionProvider"
_TYPE_BY_PROVIDER = {provider: kind for kind, provider in PROVIDER_BY_TYPE.items()}
_RECURRENT = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
# The wheels that provide the `onnxruntime` module; they conflict (onnxruntime#26996).
_FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-qnn")


@dataclass(frozen=True)
class OrtInstall:
    flavour: str
    version: str
    providers: tuple[str, ...]
    warnings: tuple[str, ...]


def installed_runtime() -> OrtInstall:
    """Which ONNX Runtime wheel is installed, its version and its providers."""
    found = {}
    for dist in _FLAVOURS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    matching = [d for d, v in found.items() if v == ort.__version__]
    flavour = matching[0] if matching else next(iter(found), "onnxruntime (unknown wheel)")
    warnings: tuple[str, ...] = ()
    if len(found) > 1:
        listed = ", ".join(f"{d} {v}" for d, v in found.items())
        warnings = (f"several ONNX Runtime wheels are installed ({listed}); they overwrite each other: keep one",)
    return OrtInstall(flavour, ort.__version__, tuple(ort.get_available_providers()), warnings)


def assignment_api_available() -> bool:
    """ORT 1.23+ records which provider got each node; older wheels need profiling instead."""
    return hasattr(ort.InferenceSession, "get_provider_graph_assignment_info")


def _count_from_session(session: ort.InferenceSession) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            counts.setdefault(subgraph.ep_name, Counter())[node.op_type] += 1
    return {provider: dict(ops) for provider, ops in counts.items()}


def _count_from_profile(session: ort.InferenceSession) -> dict[str, dict[str, int]]:
    """Node kernels seen in the warm-up run's profile (a fused provider subgraph is one node)."""
    path = session.end_profiling()
    try:
        with open(path, encoding="utf-8") as handle:
            events = json.load(handle)
    finally:
        os.remove(path)
    counts: dict[str, Counter[str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") and "provider" in args:
            counts.setdefault(args["provider"], Counter())[args.get("op_name", "?")] += 1
    return {provider: dict(ops) for provider, ops in counts.items()}


@dataclass(frozen=True)
class SessionReport:
    name: str
    flavour: str
    """Distribution providing onnxruntime: onnxruntime, onnxruntime-openvino, onnxruntime-gpu, …"""
    version: str
    available_providers: tuple[str, ...]
    requested_provider: str
    """The target's `type` as an ORT provider name."""
    provider_chain: tuple[str, ...]
    """Providers handed to ORT, in order (the chain, then CPU under allow-cpu)."""
    active_providers: tuple[str, ...]
    """session.get_providers(): ORT lists CPU here even when no node runs on it."""
    nodes_by_provider: dict[str, dict[str, int]]
    """provider → op type → nodes, of the graph ORT runs (after its optimizations)."""
    assignment_source: str
    """"graph-assignment-info" or "profiling" (older ORT: a provider's fused subgraph counts as one node)."""
    fallback: str
    policy_met: bool
    off_chain_nodes: int
    """Nodes on a provider outside the target's chain (on CPU, under allow-cpu)."""
    warnings: tuple[str, ...]
    warmup_ms: float

    def summary(self) -> str:
        """One log line: where the model runs and whether the policy holds."""
        total = sum(sum(ops.values()) for ops in self.nodes_by_provider.values())
        spread = ", ".join(f"{sum(ops.values())} on {p}" for p, ops in self.nodes_by_provider.items())
        state = "met" if self.policy_met else "NOT met"
        return (
            f"model {self.name!r}: {total} nodes ({spread}) with {self.flavour} {self.version}; "
            f"warm-up {self.warmup_ms:.1f} ms; fallback {self.fallback} {state}"
        )


def _option_text(value: str | int | float | bool) -> str:
    # ORT's Python layer applies str(): True would become "True", which providers reject.
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def session_options(target: TargetConfig, *, record_assignment: bool) -> ort.SessionOptions:
    """Threads from the target, sequential execution, and the assignment record switched on."""
    options = ort.SessionOptions()
    if target.intra_op_threads:
        options.intra_op_num_threads = target.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ORT would also log what our TargetError and report already say, with less context.
    options.log_severity_level = 4
    if record_assignment:
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if target.fallback == "strict" and target.type != "cpu":
        # ORT refuses an explicit CPU EP together with this switch, so only non-CPU targets set it.
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return options


def _providers(
    target: TargetConfig, install: OrtInstall, manifest: Manifest, name: str, warnings: list[str]
) -> list[tuple[str, dict[str, str]]]:
    chain = target.providers
    missing = [p for p in chain if p not in install.providers]
    if chain[0] in missing and target.fallback == "strict":
        raise TargetError(
            f"{name}: {chain[0]} is not available in {install.flavour} {install.version} "
            f"(providers: {', '.join(install.providers)}); "
            "install the matching onnxruntime flavour or set fallback: allow-cpu"
        )
    warnings.extend(
        f"{provider} is not available in {install.flavour} {install.version}; its nodes go down the chain"
        for provider in missing
    )
    picked = [p for p in chain if p not in missing]
    if target.fallback == "allow-cpu" and CPU not in picked:
        picked.append(CPU)
    if not picked:
        raise TargetError(f"{name}: no provider of the chain {', '.join(chain)} is available")
    # With every suitable accelerator missing, the recurrent nodes would land on the CPU: for a
    # float16 model ORT 1.32 then dies with SIGSEGV while building the session, so refuse first.
    reasons = {p: check_precision(manifest.quantization, _TYPE_BY_PROVIDER[p]) for p in picked}
    if all(reasons.values()):
        why = "; ".join(f"{p}: {r}" for p, r in reasons.items())
        raise TargetError(f"{name}: no available provider can run this {manifest.precision} artifact ({why})")
    options = {k: _option_text(v) for k, v in target.options.items()}
    return [(p, options if p == chain[0] else {}) for p in picked]


def _warmup_feeds(manifest: Manifest) -> dict[str, np.ndarray]:
    """One step of zeros for one stream: x [1, 1, features], each state [layers, 1, hidden]."""
    feeds = {manifest.input: np.zeros((1, 1, manifest.features.count), dtype=np.float32)}
    for spec in manifest.state:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feeds[spec.input] = np.zeros(shape, dtype=np.float32)
    return feeds


def _listed(ops: dict[str, int]) -> str:
    return ", ".join(f"{op}×{n}" for op, n in sorted(ops.items()))


def _judge(
    target: TargetConfig, counts: dict[str, dict[str, int]], name: str, warnings: list[str]
) -> tuple[bool, dict[str, dict[str, int]]]:
    """(policy met, the nodes outside the chain by provider); adds what a user should know to `warnings`."""
    chain = target.providers
    off = {p: ops for p, ops in counts.items() if p not in chain}
    if not counts:
        # Without a placement record strict cannot be proven; allow-cpu runs anyway and says so.
        warnings.append("ONNX Runtime reported no node placement; where nodes run is unknown")
        return target.fallback != "strict", off
    for provider, ops in off.items():
        warnings.append(f"{sum(ops.values())} node(s) run on {provider}, outside {' → '.join(chain)}: {_listed(ops)}")
        if _RECURRENT & set(ops) and provider == CPU:
            warnings.append(f"the recurrent nodes of {name} run on CPU, not on {chain[0]}")
    return (not off if target.fallback == "strict" else True), off


def create_session(
    artifact: Artifact, target: TargetConfig | None, *, name: str = "", enforce: bool = True
) -> tuple[ort.InferenceSession, SessionReport]:
    """Build the session for `artifact` on `target` (None: plain CPU), warm it up, report where it runs.

    Raises TargetError when the artifact's precision does not suit the target, when ORT cannot
    build or run it, and under `strict` when the provider is missing or a node leaves the chain.
    `enforce=False` (for `edgewatch targets`) returns that last case as `policy_met=False`
    instead, with the same session, so the node table can still be shown.
    """
    target = target or TargetConfig(type="cpu")
    name = name or artifact.manifest.name
    reasons = target_problems(artifact.manifest, target)
    if reasons:
        raise TargetError(
            f"{name}: artifact {artifact.manifest.target} does not suit target {target.type}: {'; '.join(reasons)}"
        )
    install = installed_runtime()
    warnings = list(install.warnings)
    providers = _providers(target, install, artifact.manifest, name, warnings)
    use_api = assignment_api_available()
    options = session_options(target, record_assignment=use_api)
    if not use_api:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"edgewatch-profile-{os.getpid()}")
        warnings.append("this onnxruntime has no graph assignment info; node counts come from profiling")
    try:
        session = ort.InferenceSession(
            artifact.model_bytes,
            options,
            providers=[p for p, _ in providers],
            provider_options=[o for _, o in providers],
        )
    except Exception as exc:  # noqa: BLE001 — ORT raises its own unrelated types (Fail, InvalidArgument, …)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = " (fallback: strict forbids CPU fallback)" if target.fallback == "strict" and target.type != "cpu" else ""
        raise TargetError(
            f"{name}: ONNX Runtime cannot build the session on {', '.join(p for p, _ in providers)}{why}: {first}"
        ) from None
    start = time.perf_counter()
    try:
        session.run(None, _warmup_feeds(artifact.manifest))
    except Exception as exc:  # noqa: BLE001 — any failure of the warm-up step refuses the model
        raise TargetError(f"{name}: the warm-up step failed: {str(exc).strip().splitlines()[0]}") from None
    warmup_ms = (time.perf_counter() - start) * 1000.0
    counts = _count_from_session(session) if use_api else _count_from_profile(session)
    policy_met, off = _judge(target, counts, name, warnings)
    report = SessionReport(
        name=name,
        flavour=install.flavour,
        version=install.version,
        available_providers=install.providers,
        requested_provider=target.providers[0],
        provider_chain=tuple(p for p, _ in providers),
        active_providers=tuple(session.get_providers()),
        nodes_by_provider=counts,
        assignment_source="graph-assignment-info" if use_api else "profiling",
        fallback=target.fallback,
        policy_met=policy_met,
        off_chain_nodes=sum(sum(ops.values()) for ops in off.values()),
        warnings=tuple(warnings),
        warmup_ms=warmup_ms,
    )
    if enforce and not policy_met:
        where = "; ".join(f"{_listed(ops)} on {p}" for p, ops in off.items()) or "ORT reported no node placement"
        raise TargetError(f"{name}: fallback is strict but nodes leave {' → '.join(target.providers)}: {where}")
    return session, report
