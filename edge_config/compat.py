"""Can an artifact run on a target? One answer for `config check` and the session factory.

The precision must be one the target accepts, and its quantization must have kernels on
every accelerator of the target's chain (`type`, then `fallback_providers`): a node that
one of them cannot run would fail there or quietly move elsewhere. The implicit CPU
fallback (`fallback: allow-cpu`) is not judged here: where nodes really land is known only
once a session exists, and `runtime.model.session` reports it.
"""

from __future__ import annotations

from edge_config.manifest import Manifest
from edge_config.presets import EXPORT_TARGETS, check_precision
from edge_config.schema import TargetConfig

__all__ = ["suitable_presets", "target_problems"]


def target_problems(manifest: Manifest, target: TargetConfig) -> list[str]:
    """Why the artifact described by `manifest` does not suit `target`; empty when it does."""
    reasons = []
    if manifest.precision not in target.precisions:
        reasons.append(
            f"precision {manifest.precision} is not in the target's precisions [{', '.join(target.precisions)}]"
        )
    for provider_type in (target.type, *target.fallback_providers):
        why = check_precision(manifest.quantization, provider_type)
        if why:
            reasons.append(f"{manifest.quantization!r} quantization on {provider_type}: {why}")
    return reasons


def suitable_presets(target: TargetConfig) -> list[str]:
    """Export presets (`edgewatch export --target NAME`) whose artifacts would suit `target`."""
    return [
        name
        for name, preset in EXPORT_TARGETS.items()
        if preset.precision in target.precisions
        and all(check_precision(preset.quantization, t) is None for t in (target.type, *target.fallback_providers))
    ]
