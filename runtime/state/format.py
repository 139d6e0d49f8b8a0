"""The bytes of a state checkpoint: a `StateSnapshot` ↔ one self-verifying blob.

Layout (all integers little-endian):

    offset        size         field
    0             8            magic b"\\x89EWCKPT\\n" (the high byte and the newline catch
                               7-bit and text-mode mangling, as PNG's magic does)
    8             2            format version (FORMAT_VERSION)
    10            2            flags (0)
    12            4            meta_len: bytes of the meta JSON
    16            8            payload_len: bytes of the array payload
    24            meta_len     meta: UTF-8 JSON {model_sha256, created, streams, arrays}
    24+meta_len   payload_len  the arrays' raw bytes, C order, little-endian, in meta order
    end-32        32           sha256 of every byte before it

Nothing is unpickled or evaluated: arrays are `np.frombuffer` over byte ranges whose dtype
comes from a short allow-list and whose sizes must add up to exactly `payload_len`, and
the lengths must add up to exactly the file size. The checksum is checked before the JSON
is parsed, so a torn, zeroed or bit-flipped file is refused without interpreting it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_config.errors import CheckpointError
from edge_config.manifest import Manifest

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "StateLayout",
    "StateSnapshot",
    "decode_snapshot",
    "encode_snapshot",
    "layout_mismatch",
]

MAGIC = b"\x89EWCKPT\n"
FORMAT_VERSION = 1

_HEADER = struct.Struct("<8sHHIQ")
_DIGEST = 32
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_MAX_UNICODE = 1024  # characters per element of a "<U" column (alert ids are short)
_MAX_NDIM = 4
_DTYPE_CODE = re.compile(r"\|b1|\|[iu]1|<[iu][248]|<f[248]|<U[0-9]{1,4}")


@dataclass(frozen=True, eq=False)
class StateSnapshot:
    """Every stream's carried state for one model, at one moment. n = len(streams).

    Arrays share axis "stream" with `streams` (state tensors on axis 1, like the
    StateStore slab `[layers, capacity, hidden]`; everything else on axis 0), so a slab
    gathers with `slab[:, slots, :]` and restores with `slab[:, slots, :] = states[name]`.
    Monotonic-clock values (a stream's last_seen, an alert's last update time) are not kept:
    they mean nothing after a restart; a restored stream counts as seen at restore time.
    """

    model_sha256: str
    """Hex sha256 of the model.onnx bytes the state was computed with."""
    streams: tuple[str, ...]
    states: Mapping[str, np.ndarray]
    """State graph input name (e.g. "h0.lstm") → float32 [layers, n, hidden]."""
    last_seq: np.ndarray
    """int64 [n], the last accepted sample's seq, with runtime.engine.streams' sentinel (NO_SEQ) where none."""
    last_ts: np.ndarray
    """float64 [n], the last accepted sample's payload ts (seconds since the epoch); NaN if none."""
    steps: np.ndarray
    """int64 [n], samples stepped since the stream's state was (re)initialised (warm-up)."""
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Every other per-stream column worth keeping, by StateStore column name: the seq
    window, the scorer's and the alert tracker's state (e.g. "seq_window" uint64 [n],
    "score.prev" float64 [n, F], "alert.ring" bool [n, raise_n], "alert.id" <U [n]).
    Axis 0 is the stream axis. Numeric, bool or "<U" dtypes only: no objects, no pickle
    (an object column such as alert ids goes in as "<U", "" for None)."""
    created: float = 0.0
    """time.time() when taken (wall seconds), used for the log's "age" only."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "states", dict(self.states))
        object.__setattr__(self, "columns", dict(self.columns))
        n = len(self.streams)
        if not isinstance(self.model_sha256, str) or not _SHA256_HEX.fullmatch(self.model_sha256):
            raise CheckpointError("snapshot: model_sha256 must be 64 lowercase hex characters")
        if not all(isinstance(s, str) for s in self.streams) or len(set(self.streams)) != n:
            raise CheckpointError("snapshot: stream ids must be unique strings")
        for name, array in self.states.items():
            _check_name(f"states[{name!r}]", name)
            ok = isinstance(array, np.ndarray) and array.dtype == np.float32 and array.ndim == 3
            if not ok or array.shape[1] != n:
                raise CheckpointError(
                    f"snapshot: states[{name!r}] must be float32 [layers, {n}, hidden], got {_desc(array)}"
                )
        for label, array, dtype in (
            ("last_seq", self.last_seq, np.int64),
            ("last_ts", self.last_ts, np.float64),
            ("steps", self.steps, np.int64),
        ):
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != (n,):
                raise CheckpointError(f"snapshot: {label} must be {np.dtype(dtype)} [{n}], got {_desc(array)}")
        for name, array in self.columns.items():
            _check_name(f"columns[{name!r}]", name)
            if (
                not isinstance(array, np.ndarray)
                or not _dtype_allowed(array.dtype)
                or array.ndim < 1
                or array.shape[0] != n
                or array.ndim > _MAX_NDIM
            ):
                raise CheckpointError(
                    f"snapshot: columns[{name!r}] must be a bool/int/float/<U array with {n} rows, got {_desc(array)}"
                )
        if not math.isfinite(self.created):
            raise CheckpointError("snapshot: created must be finite")


def _desc(array: object) -> str:
    return f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray) else type(array).__name__


def _check_name(label: str, name: object) -> None:
    if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
        raise CheckpointError(f"snapshot: {label}: names are 1-128 characters of A-Z a-z 0-9 _ . -")


def _dtype_allowed(dtype: np.dtype[Any]) -> bool:
    """Plain little-endian numbers, bools and short unicode strings: nothing needs unpickling."""
    if not _DTYPE_CODE.fullmatch(dtype.newbyteorder("<").str):
        return False
    return dtype.kind != "U" or 0 < dtype.itemsize // 4 <= _MAX_UNICODE


@dataclass(frozen=True)
class StateLayout:
    """What a checkpoint must match to be restored: the model and its state tensors' shapes."""

    model_sha256: str
    states: tuple[tuple[str, int, int], ...]
    """(state graph input name, layers, hidden) per state tensor, in manifest order."""

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> StateLayout:
        return cls(manifest.sha256, tuple((s.input, s.layers, s.hidden) for s in manifest.state))


def layout_mismatch(snapshot: StateSnapshot, layout: StateLayout) -> str | None:
    """One line saying why `snapshot` cannot be restored into `layout`, or None if it can."""
    if snapshot.model_sha256 != layout.model_sha256:
        return f"written by model sha256 {snapshot.model_sha256[:12]}…, the model now is {layout.model_sha256[:12]}…"
    want = {name: (layers, hidden) for name, layers, hidden in layout.states}
    have = {name: (a.shape[0], a.shape[2]) for name, a in snapshot.states.items()}
    if want != have:
        return f"state shapes differ: checkpoint {_shapes(have)}, model {_shapes(want)}"
    return None


def _shapes(shapes: Mapping[str, tuple[int, int]]) -> str:
    return ", ".join(f"{k}[{layers}, n, {h}]" for k, (layers, h) in sorted(shapes.items())) or "(none)"


def _arrays(snapshot: StateSnapshot) -> list[tuple[str, np.ndarray]]:
    named = [(f"state/{k}", v) for k, v in snapshot.states.items()]
    named += [("last_seq", snapshot.last_seq), ("last_ts", snapshot.last_ts), ("steps", snapshot.steps)]
    return named + [(f"column/{k}", v) for k, v in snapshot.columns.items()]


def encode_snapshot(snapshot: StateSnapshot) -> bytes:
    """The checkpoint bytes of `snapshot` (layout in the module docstring)."""
    chunks: list[bytes] = []
    specs = []
    for name, array in _arrays(snapshot):
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        specs.append({"name": name, "dtype": little.dtype.str, "shape": list(little.shape)})
        chunks.append(little.tobytes())
    meta = json.dumps(
        {
            "model_sha256": snapshot.model_sha256,
            "created": snapshot.created,
            "streams": list(snapshot.streams),
            "arrays": specs,
        },
        allow_nan=False,
        separators=(",", ":"),
    ).encode()  # ensure_ascii (default) keeps odd stream ids (lone surrogates) encodable
    payload_len = sum(len(c) for c in chunks)
    blob = b"".join([_HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta), payload_len), meta, *chunks])
    return blob + hashlib.sha256(blob).digest()


def decode_snapshot(data: bytes) -> StateSnapshot:
    """Verify and decode checkpoint bytes; CheckpointError (one line, the first problem) if bad."""
    if len(data) < _HEADER.size + _DIGEST:
        raise CheckpointError(f"truncated: {len(data)} bytes is shorter than header + checksum")
    magic, version, flags, meta_len, payload_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError("not an edgewatch checkpoint (bad magic; zeroed or foreign file)")
    if version != FORMAT_VERSION or flags != 0:
        raise CheckpointError(f"format version {version} (flags {flags}) is not supported (expected {FORMAT_VERSION})")
    expected = _HEADER.size + meta_len + payload_len + _DIGEST
    if expected != len(data):
        raise CheckpointError(f"length mismatch: header says {expected} bytes, file has {len(data)} (truncated?)")
    body = memoryview(data)[: len(data) - _DIGEST]
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        raise CheckpointError("checksum mismatch (corrupted)")
    try:
        meta = json.loads(bytes(body[_HEADER.size : _HEADER.size + meta_len]))
    except (ValueError, RecursionError) as exc:  # only reachable for a file written by another program
        raise CheckpointError(f"meta is not JSON: {exc}") from None
    arrays = _read_arrays(meta, body[_HEADER.size + meta_len :])
    streams = meta["streams"] if isinstance(meta, dict) else None
    if not isinstance(streams, list):
        raise CheckpointError("meta: streams must be a list")
    states = {k[6:]: v for k, v in arrays.items() if k.startswith("state/")}
    columns = {k[7:]: v for k, v in arrays.items() if k.startswith("column/")}
    try:
        return StateSnapshot(
            model_sha256=meta.get("model_sha256"),
            streams=tuple(streams),
            states=states,
            last_seq=arrays["last_seq"],
            last_ts=arrays["last_ts"],
            steps=arrays["steps"],
            columns=columns,
            created=float(meta.get("created", 0.0)),
        )
    except KeyError as exc:
        raise CheckpointError(f"meta: array {exc} is missing") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"meta: {exc}") from None


def _read_arrays(meta: Any, payload: memoryview) -> dict[str, np.ndarray]:
    specs = meta.get("arrays") if isinstance(meta, dict) else None
    if not isinstance(specs, list):
        raise CheckpointError("meta: arrays must be a list")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        name, dtype, shape = _array_spec(spec)
        if name in arrays:
            raise CheckpointError(f"meta: array {name!r} appears twice")
        size = dtype.itemsize * math.prod(shape)  # Python ints: a crafted shape cannot overflow
        if offset + size > len(payload):
            raise CheckpointError(f"meta: array {name!r} runs past the payload")
        # copy(): the arrays must own writable memory, not pin the whole file's bytes
        arrays[name] = np.frombuffer(payload[offset : offset + size], dtype=dtype).reshape(shape).copy()
        offset += size
    if offset != len(payload):
        raise CheckpointError(f"meta: arrays cover {offset} of {len(payload)} payload bytes")
    return arrays


def _array_spec(spec: Any) -> tuple[str, np.dtype[Any], tuple[int, ...]]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("dtype"), str):
        raise CheckpointError("meta: an array spec must have a name and a dtype")
    name, code, shape = spec["name"], spec["dtype"], spec.get("shape")
    prefix, _, rest = name.rpartition("/")
    known = prefix in ("state", "column") or (prefix == "" and rest in ("last_seq", "last_ts", "steps"))
    if not known or not _ARRAY_NAME.fullmatch(rest):
        raise CheckpointError(f"meta: bad array name {name[:80]!r}")
    if not _DTYPE_CODE.fullmatch(code) or not _dtype_allowed(np.dtype(code)):
        raise CheckpointError(f"meta: array {name!r} has a dtype {code[:16]!r} outside the allow-list")
    dtype = np.dtype(code)
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"meta: array {name!r} has a bad shape")
    return name, dtype, tuple(shape)
