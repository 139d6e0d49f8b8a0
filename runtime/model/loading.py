"""One configured model → a verified, warmed-up Engine: what `serve` does at start and on SIGHUP.

`load_artifact` verifies the bytes against the manifest's sha256 and refuses external data;
`create_session` builds the session from those verified bytes and runs one warm-up step. So an
Engine that comes out of here has already run the model once; a model that fails anywhere
raises (an EdgewatchError with one line, or ONNX Runtime's own error) and is never served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_config.schema import GatewayConfig
from runtime.engine.engine import Engine
from runtime.model.artifact import Artifact

if TYPE_CHECKING:  # runtime.model.session imports onnxruntime: only load_model needs it
    from runtime.model.session import SessionReport

__all__ = ["LoadedModel", "load_model"]

log = logging.getLogger("edgewatch.service")


@dataclass(frozen=True)
class LoadedModel:
    engine: Engine
    report: SessionReport


def load_model(
    name: str,
    config: GatewayConfig,
    artifact: Artifact | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> LoadedModel:
    """Load, verify and warm up model `name` of `config` (slow: seconds; call it off the worker).

    artifact: already loaded (and so verified) from the model's folder; None loads it.
    clock: the engine's monotonic clock (runtime.engine.replay.RecordedClock for a replay)."""
    from runtime.model.artifact import load_artifact
    from runtime.model.session import create_session

    model = config.models[name]
    if artifact is None:
        artifact = load_artifact(model.path, config.trust)
    session, report = create_session(artifact, config.targets[model.target], name=name)
    log.info("%s", report.summary())
    for warning in report.warnings:
        log.warning("model %r: %s", name, warning)
    engine = Engine(
        artifact,
        session,
        model,
        name=name,
        max_streams=config.runtime.max_streams,
        idle_ttl_s=config.runtime.idle_ttl_s,
        clock=clock,
        max_seq_jump=config.runtime.max_seq_jump,
        stale_after_s=config.runtime.stale_after_s,
    )
    return LoadedModel(engine, report)
