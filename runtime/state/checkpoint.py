"""State checkpoints on disk: an atomic writer that keeps one previous generation, and a
loader that never raises.

Files, for `path` = e.g. /var/lib/edgewatch/state.pump.ckpt (`model_checkpoint_path`):

    path            the newest generation
    path.1          the generation before it
    .<name>.*.tmp   a write in progress (or left by a crash before its rename; harmless,
                    never read, removed by the next write)

A write encodes the snapshot (runtime.state.format), writes it to a temporary file
in the same folder, fsyncs it, renames `path` to `path.1`, renames the temporary file to
`path` and fsyncs the folder. Whatever step fails or is cut by a crash, the generations
already on disk stay intact: a failure before the first rename leaves both untouched,
one between the renames leaves no `path` and the previous one as `path.1`, which the
loader then restores. A failed write raises CheckpointError, for the caller to count
and log; it never leaves a half-written `path`. One writer per path at a time (the daemon
writes each model's file from one thread): a write removes the temporary files it finds.

Loading tries `path`, then `path.1`, and returns the first that is intact (magic,
lengths, sha256) and was written for the same model sha256 and state shapes; each one
skipped is logged in one line with the reason, and nothing ever raises out of it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_config.errors import CheckpointError
from runtime.state.format import (
    StateLayout,
    StateSnapshot,
    decode_snapshot,
    encode_snapshot,
    layout_mismatch,
)

__all__ = [
    "CheckpointWrite",
    "LoadResult",
    "StateLayout",
    "StateSnapshot",
    "load_checkpoint",
    "model_checkpoint_path",
    "previous_generation",
    "write_checkpoint",
]

log = logging.getLogger("edgewatch.checkpoint")

DEFAULT_MAX_BYTES = 4 * 1024**3
"""Files larger than this are refused unread (100k streams of a 2×256 LSTM is ~0.8 GB)."""


@dataclass(frozen=True)
class CheckpointWrite:
    """What one successful write cost."""

    path: Path
    bytes: int
    encode_s: float
    """Seconds spent encoding + checksumming (CPU)."""
    write_s: float
    """Seconds spent writing, fsyncing and renaming (storage)."""


@dataclass(frozen=True)
class LoadResult:
    """What `load_checkpoint` found. `snapshot` is None exactly when `status == "fresh"`."""

    status: Literal["restored", "fresh"]
    snapshot: StateSnapshot | None
    path: Path | None
    """The generation restored, or None."""
    skipped: tuple[tuple[Path, str], ...]
    """Generations that exist but were not restored, with the reason (one line each)."""

    @property
    def reason(self) -> str:
        """One line for the log: what was restored, or why the streams start fresh."""
        why = "; ".join(f"{p.name}: {r}" for p, r in self.skipped)
        if self.snapshot is not None and self.path is not None:
            age = time.time() - self.snapshot.created
            head = f"restored {len(self.snapshot.streams)} streams from {self.path} (age {age:.0f} s)"
            return f"{head}, after skipping {why}" if why else head
        return f"streams start fresh: {why}" if why else "streams start fresh: no checkpoint yet"


def previous_generation(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def model_checkpoint_path(checkpoint_path: Path, model: str) -> Path:
    """One model's file: runtime.checkpoint_path `DIR/state.ckpt`, model "pump" → `DIR/state.pump.ckpt`.

    One file per model: models restore, fail and get replaced (SIGHUP) independently. A model
    name that is not a plain file name is made one, plus a hash of the name, so that names
    differing only in the replaced characters do not share a file.
    """
    checkpoint_path = Path(checkpoint_path)
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in model)
    if safe != model or not safe:
        safe = f"{safe[:64]}-{hashlib.sha256(model.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return checkpoint_path.with_name(f"{checkpoint_path.stem}.{safe}{checkpoint_path.suffix}")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_checkpoint(path: Path, snapshot: StateSnapshot) -> CheckpointWrite:
    """Write `snapshot` as the newest generation of `path`, atomically and durably.

    Raises CheckpointError (one line) if it cannot; `path` and `path.1` are then as they were,
    except when the failure came between the two renames (see the module docstring).
    """
    path = Path(path)
    started = time.perf_counter()
    data = encode_snapshot(snapshot)
    encoded = time.perf_counter()
    directory = path.parent
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise CheckpointError(f"{path}: exists and is not a regular file; not overwriting it")
    _remove_stale_temps(path)
    temp = directory / f"{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot create a file in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before any name points at them
        if path.is_file():
            os.replace(path, previous_generation(path))
        os.replace(temp, path)
        _fsync_directory(directory)  # make the renames themselves durable
    except OSError as exc:
        _unlink_quietly(temp)
        raise CheckpointError(f"{path}: checkpoint write failed: {exc.strerror or exc}") from None
    return CheckpointWrite(path, len(data), encoded - started, time.perf_counter() - encoded)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot fsync a folder
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _remove_stale_temps(path: Path) -> None:
    """Temporary files left by a crash mid-write: never valid generations, only disk space."""
    prefix = _temp_prefix(path)
    try:
        names = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return  # the write that follows reports the folder's problem
    for name in names:
        _unlink_quietly(path.parent / name)


def load_checkpoint(path: Path, layout: StateLayout, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadResult:
    """Restore the newest intact generation of `path` written for `layout`; never raises.

    Logs one warning line per generation skipped and one info line with the outcome.
    """
    path = Path(path)
    skipped: list[tuple[Path, str]] = []
    result = None
    for candidate in (path, previous_generation(path)):
        try:
            snapshot, why = _read_generation(candidate, layout, max_bytes)
        except Exception as exc:  # noqa: BLE001 — a loader that never raises: any failure skips the file
            snapshot, why = None, f"unreadable ({type(exc).__name__}: {exc})"
        if snapshot is not None:
            result = LoadResult("restored", snapshot, candidate, tuple(skipped))
            break
        if why is not None:
            log.warning("checkpoint %s skipped: %s", candidate, why)
            skipped.append((candidate, why))
    if result is None:
        result = LoadResult("fresh", None, None, tuple(skipped))
    log.info("%s", result.reason)
    return result


def _read_generation(path: Path, layout: StateLayout, max_bytes: int) -> tuple[StateSnapshot | None, str | None]:
    """(snapshot, None) if restorable, (None, reason) if not, (None, None) if absent."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the start
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot open: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        if info.st_size > max_bytes:
            return None, f"{info.st_size} bytes is over the {max_bytes}-byte limit"
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(max_bytes + 1)
    finally:
        os.close(fd)
    try:
        snapshot = decode_snapshot(data)
    except CheckpointError as exc:
        return None, str(exc)
    mismatch = layout_mismatch(snapshot, layout)
    return (None, mismatch) if mismatch else (snapshot, None)
