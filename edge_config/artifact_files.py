"""Read one artifact file: a regular file under a size cap, or an ArtifactError.

A model path that names /dev/zero would otherwise be read until memory runs out, and a FIFO
would block the reader (and `config check`, `serve`, a SIGHUP reload) until someone writes
to it. The file is opened non-blocking (opening a FIFO then returns at once), its type and size
are taken from the open descriptor (no race with a rename in between), and at most the cap
plus one byte is read (a file that grows while being read is refused too).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge_config.errors import ArtifactError

__all__ = ["MAX_MANIFEST_BYTES", "MAX_MODEL_BYTES", "MAX_SIGNATURE_BYTES", "read_artifact_file"]

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""model.onnx cap: a streaming LSTM/GRU is kilobytes to tens of megabytes; protobuf stops at 2 GiB."""
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""manifest.json cap (a manifest is a few kilobytes)."""
MAX_SIGNATURE_BYTES = 64 * 1024
"""signature.json cap (a few hundred bytes)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_artifact_file(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of `path`; ArtifactError unless it is a regular file of at most max_bytes.

    FileNotFoundError is raised as is (callers word "missing" themselves)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{path}: {_kind(info.st_mode)}, expected a regular file")
        if info.st_size > max_bytes:
            raise ArtifactError(f"{path}: {info.st_size} bytes exceeds the {max_bytes}-byte cap")
        chunks: list[bytes] = []
        size = 0
        try:
            while size <= max_bytes:
                chunk = file.read(max_bytes + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise ArtifactError(f"{path}: grew beyond the {max_bytes}-byte cap while being read")
    return b"".join(chunks)
