"""Checkpoint writes off the worker thread: one background writer, one pending snapshot per file.

The worker takes a snapshot (it owns the state; a gather costs milliseconds) and hands it
here; encoding, the fsyncs and the renames (tens of milliseconds to seconds on an SD card)
happen on this thread, so a slow flash write never stalls a step. When the writer is still
busy and a newer snapshot of the same file arrives, the older one waiting is replaced
(`superseded`): a stale state is worth nothing once a newer one exists, and memory stays at
most two snapshots per model (one being written, one waiting).

A failed write (CheckpointError: disk full, read-only, I/O error) is counted and logged once;
the next failures with the same reason are counted quietly until a write succeeds again,
which is logged too. It never stops the daemon: the previous generations stay on disk.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_config.errors import CheckpointError
from runtime.state.checkpoint import CheckpointWrite, write_checkpoint
from runtime.state.format import StateSnapshot

__all__ = ["CheckpointStats", "CheckpointWriter"]

log = logging.getLogger("edgewatch.checkpoint")


@dataclass(slots=True)
class CheckpointStats:
    """Exact counts since start (a snapshot is a copy)."""

    written: int = 0
    failed: int = 0
    superseded: int = 0
    """Snapshots replaced by a newer one of the same file before they were written."""
    bytes: int = 0
    """Bytes of every successful write (the file sizes)."""
    seconds: float = 0.0
    """Time spent encoding + writing (fsync and renames included), successful writes."""
    last_bytes: int = 0
    last_seconds: float = 0.0
    failing: str | None = None
    """Why the last write failed; None once one succeeds (/healthz and a gauge report it)."""


class CheckpointWriter:
    def __init__(self, *, write: Callable[[Path, StateSnapshot], CheckpointWrite] = write_checkpoint) -> None:
        """write: the function that writes one generation (a test seam: a slow or failing disk)."""
        self._write = write
        self._cond = threading.Condition()
        self._pending: dict[Path, StateSnapshot] = {}
        self._busy = False
        self._closed = False
        self._stats = CheckpointStats()
        self._failing: str | None = None  # the reason logged for the current run of failures
        self._thread = threading.Thread(target=self._run, name="edgewatch-checkpoint", daemon=True)
        self._thread.start()

    def stats(self) -> CheckpointStats:
        with self._cond:
            return dataclasses.replace(self._stats)

    def submit(self, path: Path, snapshot: StateSnapshot) -> None:
        """Queue `snapshot` as the next generation of `path` (replacing one still waiting)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the checkpoint writer is closed")
            if path in self._pending:
                self._stats.superseded += 1
            self._pending[path] = snapshot
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted snapshot was written (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float) -> bool:
        """Write what is pending, then stop the thread; False if that took longer than `timeout`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed, nothing left
                path = next(iter(self._pending))
                snapshot = self._pending.pop(path)
                self._busy = True
            try:
                self._write_one(path, snapshot)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write_one(self, path: Path, snapshot: StateSnapshot) -> None:
        started = time.perf_counter()
        try:
            done = self._write(path, snapshot)
        except CheckpointError as exc:
            self._failed(str(exc))
            return
        except Exception as exc:
            log.exception("checkpoint %s: unexpected error", path)
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        took = time.perf_counter() - started
        with self._cond:
            s = self._stats
            s.written += 1
            s.bytes += done.bytes
            s.seconds += took
            s.last_bytes, s.last_seconds = done.bytes, took
            recovered, self._failing = self._failing, None
            s.failing = None
        if recovered is not None:
            log.info("checkpoint writes work again (%s, %d bytes)", path, done.bytes)
        log.debug("checkpoint %s: %d streams, %d bytes in %.3f s", path, len(snapshot.streams), done.bytes, took)

    def _failed(self, reason: str) -> None:
        with self._cond:
            self._stats.failed += 1
            repeat = self._failing == reason
            self._failing = self._stats.failing = reason
        if not repeat:  # once per run of failures (and when the reason changes): a full disk must not flood the log
            log.error("%s (still serving; failures are counted and not logged again until one succeeds)", reason)
