"""One MQTT payload (bytes) → validated samples `[T, F]` float32 (+ seq, ts).

The input contract (docs/INPUT.md, docs/schemas/input.schema.json):

    {"seq": 42, "ts": 1763800000.25, "values": [0.1, 0.2, …]}          one sample, positional
    {"seq": 42, "ts": 1763800000.25, "values": {"Pressure": 0.1, …}}    one sample, named
    {"seq": 42, "ts": [t0, t1, …], "values": [[…], […], …]}             T consecutive samples

`seq` and `ts` are optional; no other top-level key is accepted (a typo such as
"sequence" would otherwise silently switch deduplication off).

Every rejection is a `PayloadError(reason, detail)` whose reason is one of `REASONS`
(fixed labels, safe as metric labels). Nothing else escapes `decode_payload`, whatever the
bytes: the caller is paho's network thread, where one stray exception stops all input.

Two decoders, one contract. msgspec decodes and validates the well-formed shapes in C (typed
structs: a positional or named single sample, or positional samples; numbers bounded to the
float32 range, seq >= 0, ts in [0, MAX_TS)): a valid payload costs a few microseconds. Whatever
msgspec does not accept, and anything it accepts that JSON semantics could read otherwise
(a duplicate key, which msgspec resolves last-wins), goes to the hand-written validator below,
the one that names the rejection reason. So the fast path only ever *accepts*, and only what
the validator would accept with the same numbers: the reasons and their counts do not change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, NoReturn, TypeAlias

import msgspec
import numpy as np

from edge_config.errors import ConfigError, PayloadError
from edge_config.manifest import Manifest
from edge_config.schema import RuntimeConfig

__all__ = [
    "MAX_SEQ",
    "MAX_TS",
    "REASONS",
    "FeatureLayout",
    "PayloadLimits",
    "Samples",
    "Timestamps",
    "decode_payload",
    "decode_samples",
]

REASONS: tuple[str, ...] = (
    "too-large",  # more bytes than PayloadLimits.max_bytes
    "not-utf8",
    "not-json",
    "too-deep",  # nesting beyond PayloadLimits.max_depth
    "duplicate-key",
    "bad-number",  # a number JSON cannot convert (e.g. an integer of 5,000 digits)
    "bad-structure",  # not an object, no "values", an unknown top-level key, …
    "bad-value",  # a sample value that is not a number (bool, string, null, list)
    "wrong-arity",  # a positional sample with a wrong number of values
    "unknown-feature",
    "missing-feature",
    "non-finite",  # NaN, Infinity, or outside the float32 range
    "too-many-samples",
    "bad-seq",
    "bad-ts",
)

MAX_SEQ = 2**63 - 1
"""seq must fit in int64 together with the message's sample count."""
MAX_TS = 1e11
"""ts is seconds since the epoch; 1e11 s is year ~5138, so milliseconds are caught."""
_FLT_MAX = float(np.finfo(np.float32).max)
_TOP_KEYS = frozenset(("seq", "ts", "values"))
_NUMBER_TYPES = frozenset((int, float))  # bool is a subclass of int, but type() tells them apart
# Only brackets matter for depth; deleting everything else leaves a short string to scan.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)

Samples: TypeAlias = "np.ndarray | list[float]"
"""A message's samples: float32 [T, F], or one sample's F numbers in the model's order (float,
exact float64 values from the JSON text), which the engine converts with the rest of its batch
(runtime.engine.admission) instead of one numpy call per message."""
Timestamps: TypeAlias = "np.ndarray | tuple[float]"
"""float64 [T] seconds since the epoch, or one sample's ts as a 1-tuple (indexed the same way;
no numpy call per message)."""


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Bounds checked before (bytes, depth) and while (samples) a payload is parsed."""

    max_bytes: int = 65536
    max_samples: int = 256
    max_depth: int = 8
    """A valid payload nests 3 deep (object → list of samples → sample)."""

    def __post_init__(self) -> None:
        if self.max_bytes < 16 or self.max_samples < 1 or self.max_depth < 3:
            raise ConfigError(
                f"payload limits too small: max_bytes={self.max_bytes} (>= 16), "
                f"max_samples={self.max_samples} (>= 1), max_depth={self.max_depth} (>= 3)"
            )

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig) -> PayloadLimits:
        return cls(max_bytes=runtime.max_payload_bytes, max_samples=runtime.max_samples_per_message)


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """The model's feature order and which payload key names each feature."""

    names: tuple[str, ...]
    """Feature names in the model's order (manifest.features.names)."""
    index: Mapping[str, int]
    """Payload key → position in `names` (read-only)."""

    @property
    def count(self) -> int:
        return len(self.names)

    @classmethod
    def from_manifest(cls, manifest: Manifest, keys: Mapping[str, str] | None = None) -> FeatureLayout:
        """`keys` is StreamConfig.features: payload key → feature name, for the names that differ.

        A feature not named in `keys` is addressed by its own name.
        """
        names = tuple(manifest.features.names)
        if not names:
            raise ConfigError("the model has no features")
        position = {name: i for i, name in enumerate(names)}
        renamed: dict[str, int] = {}
        for key, feature in (keys or {}).items():
            if feature not in position:
                raise ConfigError(
                    f"features: {key!r} maps to {feature!r}, which is not one of the model's {list(names)}"
                )
            if position[feature] in renamed.values():
                raise ConfigError(f"features: two payload keys map to {feature!r}")
            renamed[key] = position[feature]
        index = {name: i for name, i in position.items() if i not in renamed.values()}
        for key, i in renamed.items():
            if key in index:
                raise ConfigError(f"features: payload key {key!r} is also the name of another feature")
            index[key] = i
        return cls(names=names, index=MappingProxyType(index))


def _reject(reason: str, detail: str) -> NoReturn:
    raise PayloadError(reason, detail)


class _DuplicateKeyError(Exception):
    pass


class _NonFiniteConstantError(Exception):
    pass


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> float:
    raise _NonFiniteConstantError(name)


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_refuse_constant)


def _check_depth(payload: bytes, max_depth: int) -> None:
    """Refuse nesting deeper than max_depth before json.loads recurses into it."""
    if payload.count(b"[") + payload.count(b"{") <= max_depth:
        return  # the common single-sample case: no scan needed
    brackets = np.frombuffer(payload.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if int(np.cumsum(_DEPTH_STEP[brackets], dtype=np.int64).max()) <= max_depth:
        return
    # Brackets inside strings (a key named "a[") do not nest: strip strings and look again.
    stripped = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = int(np.cumsum(_DEPTH_STEP[np.frombuffer(stripped, dtype=np.uint8)], dtype=np.int64).max())
    if depth > max_depth:
        _reject("too-deep", f"nesting depth {depth} exceeds {max_depth}")


def _parse(payload: bytes, limits: PayloadLimits) -> object:
    if len(payload) > limits.max_bytes:
        _reject("too-large", f"{len(payload)} bytes exceeds {limits.max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        _reject("not-utf8", f"invalid UTF-8 at byte {exc.start}")
    _check_depth(payload, limits.max_depth)
    try:
        return _DECODER.decode(text)
    except _DuplicateKeyError as exc:
        _reject("duplicate-key", f"key {str(exc)[:40]!r} appears twice in one object")
    except _NonFiniteConstantError as exc:
        _reject("non-finite", f"{exc} is not a finite number")
    except json.JSONDecodeError as exc:
        _reject("not-json", f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:  # belt and braces: _check_depth should have caught it
        _reject("too-deep", "nesting exceeds the parser's recursion limit")
    except ValueError as exc:  # int() digit limit (CVE-2020-10735 guard) and the like
        _reject("bad-number", str(exc)[:80])


def _type_name(value: object) -> str:
    return {bool: "boolean", str: "string", type(None): "null", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check_numbers(row: list[object], what: str) -> None:
    """Every item an int or float (not bool) within the float32 range."""
    if not set(map(type, row)) <= _NUMBER_TYPES:
        bad = next(v for v in row if type(v) not in _NUMBER_TYPES)
        _reject("bad-value", f"{what} holds a {_type_name(bad)}, expected numbers")
    if min(row) < -_FLT_MAX or max(row) > _FLT_MAX:  # type: ignore[type-var, operator]
        _reject("non-finite", f"{what} holds a number outside the float32 range")


def _named_row(sample: dict[str, object], layout: FeatureLayout, what: str) -> list[object]:
    row: list[object] = [None] * layout.count
    for key, value in sample.items():
        i = layout.index.get(key)
        if i is None:
            _reject("unknown-feature", f"{what}: unknown feature {key[:40]!r}")
        row[i] = value
    # Keys are unique (duplicate-key) and map to distinct features, so fewer keys means missing ones.
    if len(sample) != layout.count:
        given = {layout.index[key] for key in sample}
        missing = [name for i, name in enumerate(layout.names) if i not in given]
        _reject("missing-feature", f"{what}: missing {', '.join(missing[:5])}")
    return row


def _positional_row(sample: object, count: int, what: str) -> list[object]:
    if type(sample) is not list:
        _reject("bad-structure", f"{what} is a {_type_name(sample)}, expected an array of {count} numbers")
    if len(sample) != count:
        _reject("wrong-arity", f"{what} has {len(sample)} values, expected {count}")
    return sample


def _rows_fast(rows: list[object], count: int) -> np.ndarray | None:
    """All-number rectangular samples in one numpy call; None when anything needs a closer look."""
    try:
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):  # ragged, or an int too large for any dtype
        return None
    if array.ndim != 2 or array.shape[1] != count or array.dtype.kind not in "fiu":
        return None
    if array.dtype.kind == "f" and not (array.min() >= -_FLT_MAX and array.max() <= _FLT_MAX):
        return None
    if array.dtype.kind != "f" and not (float(array.min()) >= -_FLT_MAX and float(array.max()) <= _FLT_MAX):
        return None
    return np.ascontiguousarray(array, dtype=np.float32)


def _values(raw: object, payload: bytes, layout: FeatureLayout, limits: PayloadLimits) -> np.ndarray:
    count = layout.count
    if type(raw) is dict:
        row = _named_row(raw, layout, "values")
        _check_numbers(row, "values")
        return np.array(row, dtype=np.float32).reshape(1, count)
    if type(raw) is not list:
        _reject("bad-structure", f'"values" is a {_type_name(raw)}, expected an array or an object')
    if not raw or type(raw[0]) not in (list, dict):  # one positional sample
        row = _positional_row(raw, count, "values")
        _check_numbers(row, "values")
        return np.array(row, dtype=np.float32).reshape(1, count)
    if len(raw) > limits.max_samples:
        _reject("too-many-samples", f"{len(raw)} samples exceeds {limits.max_samples}")
    # Booleans would be silently read as 0/1 by numpy, so only payloads without any take the fast path.
    if type(raw[0]) is list and b"true" not in payload and b"false" not in payload:
        fast = _rows_fast(raw, count)
        if fast is not None:
            return fast
    rows: list[list[object]] = []
    for i, sample in enumerate(raw):
        what = f"values[{i}]"
        row = _named_row(sample, layout, what) if type(sample) is dict else _positional_row(sample, count, what)
        _check_numbers(row, what)
        rows.append(row)
    return np.array(rows, dtype=np.float32)


def _seq(raw: object, steps: int) -> int:
    if type(raw) is not int:
        _reject("bad-seq", f'"seq" must be an integer, got a {_type_name(raw)}')
    if raw < 0 or raw + steps - 1 > MAX_SEQ:
        _reject("bad-seq", f'"seq" {str(raw)[:24]} is outside [0, 2**63 - 1] (for the last sample too)')
    return raw


def _ts(raw: object, steps: int) -> np.ndarray:
    if steps == 1 and (type(raw) is float or type(raw) is int) and 0 <= raw < MAX_TS:
        return np.array((raw,), dtype=np.float64)  # the common case, without the list checks below
    items = raw if type(raw) is list else [raw]
    if len(items) != steps:
        _reject("bad-ts", f'"ts" has {len(items)} entries for {steps} samples (one number per sample)')
    if not set(map(type, items)) <= _NUMBER_TYPES:
        _reject("bad-ts", '"ts" must hold numbers (seconds since the epoch)')
    if min(items) < 0 or max(items) >= MAX_TS:
        _reject("bad-ts", f'"ts" must be seconds since the epoch in [0, {MAX_TS:.0e}) (milliseconds?)')
    return np.array(items, dtype=np.float64)


# --- the fast path: msgspec typed structs ------------------------------------------------------
_Value = Annotated[float, msgspec.Meta(ge=-_FLT_MAX, le=_FLT_MAX)]
_Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
_Ts = Annotated[float, msgspec.Meta(ge=0, lt=MAX_TS)]


class _One(msgspec.Struct, forbid_unknown_fields=True):
    """One sample, positional or named."""

    values: list[_Value] | dict[str, _Value]
    seq: _Seq | msgspec.UnsetType = msgspec.UNSET
    ts: _Ts | msgspec.UnsetType = msgspec.UNSET


class _Many(msgspec.Struct, forbid_unknown_fields=True):
    """Positional samples (named ones take the validator's path)."""

    values: list[list[_Value]]
    seq: _Seq | msgspec.UnsetType = msgspec.UNSET
    ts: list[_Ts] | _Ts | msgspec.UnsetType = msgspec.UNSET


_ONE = msgspec.json.Decoder(_One)
_MANY = msgspec.json.Decoder(_Many)
_FAST_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)  # ValidationError is a DecodeError; both named


_UNSET = msgspec.UNSET


def _keys(doc: _One | _Many) -> int:
    """Top-level keys of an accepted document (each one `:` in the bytes)."""
    return 1 + (doc.seq is not _UNSET) + (doc.ts is not _UNSET)


def _fast(
    payload: bytes, layout: FeatureLayout, limits: PayloadLimits
) -> tuple[Samples, int | None, Timestamps | None] | None:
    """The samples of a well-formed payload, or None for the validator to decide (never raises).

    A duplicate key shows as more `:` than keys: the accepted shapes hold no other strings.
    One function for the single sample (the intake's every message: no nested calls)."""
    try:
        doc = _ONE.decode(payload)
    except _FAST_ERRORS:
        try:
            return _fast_many(_MANY.decode(payload), payload, layout, limits)
        except _FAST_ERRORS:
            return None
    count, raw, seq, ts = layout.count, doc.values, doc.seq, doc.ts
    keys = 1 + (seq is not _UNSET) + (ts is not _UNSET)
    if type(raw) is list:
        if len(raw) != count or payload.count(b":") != keys:
            return None
        row: list[float] = raw
    else:
        assert isinstance(raw, dict)
        if len(raw) != count or payload.count(b":") != keys + count:
            return None
        index = layout.index
        row = [0.0] * count
        try:
            for key, value in raw.items():
                row[index[key]] = value
        except KeyError:
            return None  # unknown-feature; distinct keys → distinct features, so none is missing
    return row, None if seq is _UNSET else seq, None if ts is _UNSET else (ts,)


def _fast_many(
    doc: _Many, payload: bytes, layout: FeatureLayout, limits: PayloadLimits
) -> tuple[np.ndarray, int | None, np.ndarray | None] | None:
    steps = len(doc.values)
    if not 0 < steps <= limits.max_samples or payload.count(b":") != _keys(doc):
        return None
    if any(len(sample) != layout.count for sample in doc.values):
        return None
    seq = None if doc.seq is msgspec.UNSET else doc.seq
    if seq is not None and seq + steps - 1 > MAX_SEQ:
        return None
    ts: np.ndarray | None = None
    if doc.ts is not msgspec.UNSET:
        items = doc.ts if type(doc.ts) is list else [doc.ts]
        if len(items) != steps:
            return None
        ts = np.array(items, dtype=np.float64)
    values = np.array(doc.values, dtype=np.float32)  # float64 numbers → float32, as the validator does
    return values, seq, ts


def decode_samples(
    payload: bytes, layout: FeatureLayout, limits: PayloadLimits
) -> tuple[Samples, int | None, Timestamps | None]:
    """Decode one payload into (samples, seq of sample 0, timestamps): what the intake queues.

    A single sample stays a list of F floats and its ts a 1-tuple (see Samples and Timestamps);
    several are float32 [T, F] and float64 [T].
    Raises only PayloadError (reason in REASONS).
    """
    if type(payload) is bytes and len(payload) <= limits.max_bytes:
        fast = _fast(payload, layout, limits)
        if fast is not None:
            return fast
    return _validate(payload, layout, limits)


def decode_payload(
    payload: bytes, layout: FeatureLayout, limits: PayloadLimits
) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Decode one payload into (values float32 [T, F] raw units, seq of sample 0, ts float64 [T] s).

    Raises only PayloadError (reason in REASONS).
    """
    values, seq, ts = decode_samples(payload, layout, limits)
    if type(values) is list:
        values = np.array(values, dtype=np.float32).reshape(1, layout.count)
    if type(ts) is tuple:
        ts = np.array(ts, dtype=np.float64)
    assert isinstance(values, np.ndarray)
    assert ts is None or isinstance(ts, np.ndarray)
    return values, seq, ts


# --- the validator: every reason, exactly ------------------------------------------------------------
def _validate(
    payload: bytes, layout: FeatureLayout, limits: PayloadLimits
) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    if type(payload) is not bytes:  # a caller outside the bus may hand over a bytearray or memoryview
        data: object = payload
        if not isinstance(data, (bytearray, memoryview)):
            _reject("bad-structure", f"payload is a {type(data).__name__}, not bytes")
        payload = bytes(data)
    doc = _parse(payload, limits)
    if type(doc) is not dict:
        _reject("bad-structure", f"payload is a JSON {_type_name(doc)}, expected an object")
    if not doc.keys() <= _TOP_KEYS:
        extra = doc.keys() - _TOP_KEYS
        _reject("bad-structure", f"unknown key {min(extra)[:40]!r} (allowed: seq, ts, values)")
    if "values" not in doc:
        _reject("bad-structure", 'no "values"')
    values = _values(doc["values"], payload, layout, limits)
    steps = values.shape[0]
    seq = _seq(doc["seq"], steps) if "seq" in doc else None
    ts = _ts(doc["ts"], steps) if "ts" in doc else None
    return values, seq, ts
