"""SIGHUP: read the config again and prepare every changed model, off the worker thread.

`prepare_reload` does the slow and fallible part — parse and validate the file, verify each
changed artifact, build and warm up its session — while the old models keep serving. It
raises on the first problem (nothing is swapped then); on success the service hands the
returned engines to its worker, which carries each stream's state across (runtime.state.transfer)
between two batches.

What a reload applies: `models` (artifact folder content, threshold, score and alert settings,
on_gap) and `targets`. Changes elsewhere (`broker`, `streams`, `runtime`, `trust`: new models
are checked against the running trust settings), adding or removing
a model, or a model whose features differ (queued input was decoded for the old ones) need a
restart: the first three are reported and left as they run, the last two refuse the reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_config.errors import ConfigError
from edge_config.schema import GatewayConfig
from runtime.engine.engine import Engine
from runtime.model.loading import LoadedModel, load_model

__all__ = ["ReloadPlan", "prepare_reload"]

_RESTART_SECTIONS = ("broker", "streams", "runtime", "trust")


@dataclass
class ReloadPlan:
    config: GatewayConfig
    """The config to run from now on: the new models and targets, the running rest."""
    models: dict[str, LoadedModel] = field(default_factory=dict)
    """The models that changed, verified and warmed up."""
    not_applied: tuple[str, ...] = ()
    """Sections that changed but need a restart."""


def prepare_reload(path: Path, running: GatewayConfig, engines: Mapping[str, Engine]) -> ReloadPlan:
    """Load `path` and build the models that differ from the running ones; raises if any cannot serve."""
    from edge_config.loading import load_config
    from runtime.model.artifact import load_artifact

    new = load_config(path)
    if set(new.models) != set(running.models):
        added, removed = sorted(set(new.models) - set(running.models)), sorted(set(running.models) - set(new.models))
        raise ConfigError(f"{path}: models added {added or '[]'} / removed {removed or '[]'}: restart to apply")
    config = running.model_copy(update={"models": new.models, "targets": new.targets})
    plan = ReloadPlan(config, not_applied=tuple(s for s in _RESTART_SECTIONS if getattr(new, s) != getattr(running, s)))
    for name, model in new.models.items():
        old = engines[name]
        artifact = load_artifact(model.path, running.trust)  # verified every time: a tampered file fails
        if (
            model == old.model
            and new.targets[model.target] == running.targets[old.model.target]
            and artifact.sha256 == old.artifact.sha256
            and artifact.manifest == old.artifact.manifest
        ):
            continue  # unchanged: keep the running engine (and its session) as it is
        loaded = load_model(name, config, artifact)
        before, after = old.artifact.manifest.features.names, loaded.engine.artifact.manifest.features.names
        if list(before) != list(after):
            raise ConfigError(
                f"model {name!r}: features changed from {list(before)} to {list(after)}: restart to apply"
            )
        plan.models[name] = loaded
    return plan
