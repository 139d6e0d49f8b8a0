"""The service's side of checkpoints: restore each model at start, save on a schedule and at stop.

    start       load_checkpoint(model_checkpoint_path(runtime.checkpoint_path, model), layout)
                → restore into the engine when the model sha256 and state shapes match
                  (else the loader's one line says why the streams start fresh)
    every runtime.checkpoint_interval_s, on the worker thread
                → snapshot each engine that stepped, evicted or reset since its last snapshot
                → CheckpointWriter (its own thread) writes it
    after a reload, at a clean stop
                → the same, at once

An unchanged engine is not written again: an idle gateway wears no flash. docs/RELIABILITY.md
has the byte budget and what a power cut between two checkpoints costs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from runtime.engine.engine import Engine
from runtime.state.checkpoint import StateLayout, load_checkpoint, model_checkpoint_path
from runtime.state.transfer import Restored, restore_engine, snapshot_columns, snapshot_engine
from runtime.state.writer import CheckpointStats, CheckpointWriter

__all__ = ["Checkpointing"]

log = logging.getLogger("edgewatch.checkpoint")


class Checkpointing:
    def __init__(self, base: Path, interval_s: float, writer: CheckpointWriter | None = None) -> None:
        """base: runtime.checkpoint_path (one file per model next to it)."""
        self._base = Path(base)
        self.interval_s = interval_s
        self._writer = writer or CheckpointWriter()
        self._saved: dict[str, int] = {}  # model → Engine.version last snapshotted
        self._next = time.monotonic() + interval_s
        self.snapshot_seconds = 0.0
        """How long the last round of snapshots held the worker (seconds)."""

    def path(self, model: str) -> Path:
        return model_checkpoint_path(self._base, model)

    def stats(self) -> CheckpointStats:
        return self._writer.stats()

    def restore(self, name: str, engine: Engine) -> Restored | None:
        """At start, before any step: the newest usable generation into `engine`; None if fresh."""
        result = load_checkpoint(self.path(name), StateLayout.from_manifest(engine.artifact.manifest))
        if result.snapshot is None:
            # Nothing to write until a stream steps: a start and stop without traffic must not
            # rotate the files on disk (an intact previous generation would be pushed out).
            self._saved[name] = engine.version
            return None
        snapshot = result.snapshot
        # restart=True: republish each status, re-warm the streams whose next seq shows a gap.
        restored = restore_engine(engine, snapshot.streams, snapshot_columns(snapshot), time.monotonic(), restart=True)
        if restored.refused or restored.dropped:
            log.warning(
                "model %r: %d of %d checkpointed streams restored (%d over max_streams; "
                "columns that no longer fit the config, reset: %s)",
                name,
                restored.streams,
                len(snapshot.streams),
                len(restored.refused),
                ", ".join(restored.dropped) or "none",
            )
        self._saved[name] = engine.version  # what is on disk already: nothing to write until it steps
        return restored

    def due(self, now: float) -> bool:
        return now >= self._next

    def save(self, engines: Mapping[str, Engine], now: float, *, force: bool = False) -> int:
        """On the thread that owns the engines: snapshot the changed ones (all with `force`: after
        a model swap) and queue them; returns how many were queued. Schedules the next round."""
        self._next = now + self.interval_s
        started = time.perf_counter()
        queued = 0
        for name, engine in engines.items():
            token = engine.version
            if not force and self._saved.get(name) == token:
                continue
            self._writer.submit(self.path(name), snapshot_engine(engine))
            self._saved[name] = token
            queued += 1
        if queued:
            self.snapshot_seconds = time.perf_counter() - started
        return queued

    def close(self, timeout: float) -> bool:
        """Finish the queued writes (the last checkpoint of a clean stop); False (logged) on a
        timeout or when the last write failed."""
        done = self._writer.close(timeout)
        if not done:
            log.error("the last checkpoint was not written within %.0f s; the previous generation stays", timeout)
            return False
        failing = self._writer.stats().failing
        if failing is not None:
            # The write of this stop failed, or earlier ones did and nothing changed since: either
            # way the files on disk are older than the state being stopped.
            log.error(
                "stopping with checkpoint writes failing (%s): the next start restores an older checkpoint "
                "(or none) and the streams re-warm",
                failing,
            )
        return failing is None
