"""runtime.ingest.payload: the input contract, and hostile bytes that must only ever raise PayloadError."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import ConfigError, PayloadError
from edge_config.manifest import Features, Manifest, read_manifest
from edge_config.schema import RuntimeConfig
from runtime.engine.types import Message
from runtime.ingest import payload as payload_module
from runtime.ingest.payload import REASONS, FeatureLayout, PayloadLimits, decode_payload
from tests.support.onnx_artifacts import write_lstm_artifact

LIMITS = PayloadLimits()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return read_manifest(write_lstm_artifact(tmp_path_factory.mktemp("art"), features=4))


@pytest.fixture(scope="module")
def layout(manifest: Manifest) -> FeatureLayout:
    return FeatureLayout.from_manifest(manifest)  # features f0..f3


def _named_manifest(manifest: Manifest, names: list[str]) -> Manifest:
    return manifest.model_copy(update={"features": Features(names=names, count=len(names))})


def test_positional_single_sample(layout: FeatureLayout) -> None:
    values, seq, ts = decode_payload(b'{"seq": 42, "ts": 1763800000.25, "values": [0.1, 2, -3.5, 4e3]}', layout, LIMITS)
    assert values.dtype == np.float32
    assert values.shape == (1, 4)
    assert values.flags.c_contiguous
    np.testing.assert_array_equal(values, np.array([[0.1, 2, -3.5, 4e3]], dtype=np.float32))
    assert seq == 42
    assert type(seq) is int
    assert ts is not None
    assert ts.dtype == np.float64
    assert ts.tolist() == [1763800000.25]


def test_seq_and_ts_are_optional(layout: FeatureLayout) -> None:
    values, seq, ts = decode_payload(b'{"values": [1, 2, 3, 4]}', layout, LIMITS)
    assert values.shape == (1, 4)
    assert seq is None
    assert ts is None


def test_named_sample_takes_the_manifest_order(layout: FeatureLayout) -> None:
    values, _, _ = decode_payload(b'{"values": {"f3": 3, "f1": 1, "f0": 0, "f2": 2}}', layout, LIMITS)
    np.testing.assert_array_equal(values, [[0, 1, 2, 3]])


def test_several_samples(layout: FeatureLayout) -> None:
    payload = b'{"seq": 7, "ts": [10, 10.5, 11], "values": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]}'
    values, seq, ts = decode_payload(payload, layout, LIMITS)
    np.testing.assert_array_equal(values, np.arange(1, 13, dtype=np.float32).reshape(3, 4))
    assert seq == 7
    assert ts is not None
    assert ts.tolist() == [10, 10.5, 11]


def test_several_named_samples(layout: FeatureLayout) -> None:
    payload = b'{"values": [{"f0": 1, "f1": 2, "f2": 3, "f3": 4}, {"f3": 8, "f2": 7, "f1": 6, "f0": 5}]}'
    values, _, _ = decode_payload(payload, layout, LIMITS)
    np.testing.assert_array_equal(values, np.arange(1, 9, dtype=np.float32).reshape(2, 4))


def test_stream_key_mapping(manifest: Manifest) -> None:
    named = _named_manifest(manifest, ["Pressure", "Current", "Temp", "Flow"])
    layout = FeatureLayout.from_manifest(named, {"p_bar": "Pressure", "i": "Current"})
    values, _, _ = decode_payload(b'{"values": {"p_bar": 1, "i": 2, "Temp": 3, "Flow": 4}}', layout, LIMITS)
    np.testing.assert_array_equal(values, [[1, 2, 3, 4]])
    with pytest.raises(PayloadError) as err:  # the renamed feature's own name no longer addresses it
        decode_payload(b'{"values": {"Pressure": 1, "i": 2, "Temp": 3, "Flow": 4}}', layout, LIMITS)
    assert err.value.reason == "unknown-feature"


@pytest.mark.parametrize(
    "keys",
    [{"x": "nope"}, {"a": "f0", "b": "f0"}, {"f1": "f0"}],
    ids=["unknown-target", "two-keys-one-feature", "key-is-another-feature"],
)
def test_bad_key_mapping_is_a_config_error(manifest: Manifest, keys: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        FeatureLayout.from_manifest(manifest, keys)


def test_limits_from_runtime_config() -> None:
    limits = PayloadLimits.from_runtime(RuntimeConfig(max_payload_bytes=1000, max_samples_per_message=5))
    assert (limits.max_bytes, limits.max_samples) == (1000, 5)
    with pytest.raises(ConfigError):
        PayloadLimits(max_depth=2)


def test_message_defaults() -> None:
    m = Message("s", np.zeros((1, 4), np.float32), None, None)
    assert m.delivery is None  # nothing to acknowledge
    assert m.model == ""
    assert m.received > 0
    assert m.received_wall > 1e9


HOSTILE = [
    ("too-large", b'{"values": [1, 2, 3, 4], "seq": 1}' + b" " * 70_000),
    ("not-utf8", b'{"values": [1, 2, 3, 4], "x": "\xff\xfe"}'),
    ("not-json", b'{"values": [1, 2, 3, 4]'),
    ("not-json", b'{"values": [1, 2, 3, 4]} trailing'),
    ("not-json", b"\xef\xbb\xbf" + b'{"values": [1, 2, 3, 4]}'),  # a UTF-8 BOM
    ("not-json", b""),
    ("too-deep", b'{"values": ' + b"[" * 20 + b"1" + b"]" * 20 + b"}"),
    ("duplicate-key", b'{"values": [1, 2, 3, 4], "values": [1, 2, 3, 4]}'),
    ("duplicate-key", b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f0": 5}}'),
    ("bad-number", b'{"values": [' + b"7" * 5000 + b", 2, 3, 4]}"),
    ("non-finite", b'{"values": [NaN, 2, 3, 4]}'),
    ("non-finite", b'{"values": [1, Infinity, 3, 4]}'),
    ("non-finite", b'{"values": [1, 2, -Infinity, 4]}'),
    ("non-finite", b'{"values": [1, 2, 3, 1e999]}'),
    ("non-finite", b'{"values": [1, 2, 3, ' + b"9" * 5000 + b".0]}"),
    ("non-finite", b'{"values": [1, 2, 3, 1e39]}'),  # finite in float64, not in float32
    ("non-finite", b'{"values": [1, 2, 3, ' + b"9" * 400 + b"]}"),
    ("non-finite", b'{"values": [[1, 2, 3, 4], [1, 2, 3, 1e39]]}'),
    ("bad-structure", b"[1, 2, 3, 4]"),
    ("bad-structure", b'"values"'),
    ("bad-structure", b'{"seq": 1}'),
    ("bad-structure", b'{"values": [1, 2, 3, 4], "sequence": 1}'),
    ("bad-structure", b'{"values": "1,2,3,4"}'),
    ("bad-structure", b'{"values": [[1, 2, 3, 4], 5]}'),
    ("bad-value", b'{"values": [true, 2, 3, 4]}'),
    ("bad-value", b'{"values": [[1, 2, 3, 4], [1, 2, 3, false]]}'),
    ("bad-value", b'{"values": [1, 2, 3, null]}'),
    ("bad-value", b'{"values": [1, 2, 3, "4"]}'),
    ("bad-value", b'{"values": [[1, 2, 3, "4"], [1, 2, 3, 4]]}'),
    ("bad-value", b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": [4]}}'),
    ("wrong-arity", b'{"values": [1, 2, 3]}'),
    ("wrong-arity", b'{"values": []}'),
    ("wrong-arity", b'{"values": [[1, 2, 3, 4], [1, 2, 3]]}'),
    ("unknown-feature", b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f9": 5}}'),
    ("missing-feature", b'{"values": {"f0": 1, "f1": 2, "f2": 3}}'),
    ("too-many-samples", b'{"values": [' + b",".join([b"[1, 2, 3, 4]"] * 257) + b"]}"),
    ("bad-seq", b'{"seq": -1, "values": [1, 2, 3, 4]}'),
    ("bad-seq", b'{"seq": 1.5, "values": [1, 2, 3, 4]}'),
    ("bad-seq", b'{"seq": true, "values": [1, 2, 3, 4]}'),
    ("bad-seq", b'{"seq": "1", "values": [1, 2, 3, 4]}'),
    ("bad-seq", b'{"seq": 9223372036854775807, "values": [[1, 2, 3, 4], [1, 2, 3, 4]]}'),
    ("bad-ts", b'{"ts": 1763800000250, "values": [1, 2, 3, 4]}'),  # milliseconds
    ("bad-ts", b'{"ts": -1, "values": [1, 2, 3, 4]}'),
    ("bad-ts", b'{"ts": "now", "values": [1, 2, 3, 4]}'),
    ("bad-ts", b'{"ts": 1e999, "values": [1, 2, 3, 4]}'),
    ("bad-ts", b'{"ts": [1, 2], "values": [1, 2, 3, 4]}'),
    ("bad-ts", b'{"ts": 5, "values": [[1, 2, 3, 4], [1, 2, 3, 4]]}'),
    ("bad-ts", b'{"ts": [1, true], "values": [[1, 2, 3, 4], [1, 2, 3, 4]]}'),
]


@pytest.mark.parametrize(("reason", "payload"), HOSTILE, ids=[f"{r}-{i}" for i, (r, _) in enumerate(HOSTILE)])
def test_hostile_payload_is_rejected_with_its_reason(layout: FeatureLayout, reason: str, payload: bytes) -> None:
    with pytest.raises(PayloadError) as err:
        decode_payload(payload, layout, LIMITS)
    assert err.value.reason == reason, err.value.detail
    assert reason in REASONS
    assert err.value.detail


def test_every_reason_is_exercised() -> None:
    assert {reason for reason, _ in HOSTILE} == set(REASONS)


def test_deep_nesting_is_refused_before_parsing(layout: FeatureLayout) -> None:
    big = PayloadLimits(max_bytes=2_000_000)
    for payload in (b"[" * 100_000, b'{"values": ' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(PayloadError) as err:
            decode_payload(payload, layout, big)
        assert err.value.reason == "too-deep"


def test_one_megabyte_payload(layout: FeatureLayout) -> None:
    rows = b",".join([b"[1.25, 2.5, 3.75, 5.0]"] * 45_000)
    payload = b'{"values": [' + rows + b"]}"
    assert len(payload) > 1_000_000
    with pytest.raises(PayloadError) as err:
        decode_payload(payload, layout, LIMITS)
    assert err.value.reason == "too-large"
    with pytest.raises(PayloadError) as err:  # within the byte limit it still hits the sample limit
        decode_payload(payload, layout, PayloadLimits(max_bytes=2_000_000))
    assert err.value.reason == "too-many-samples"


def test_brackets_inside_keys_are_not_nesting(manifest: Manifest) -> None:
    names = ["a[[[[[[[[[[", "b{{{{{{{{{{", "c]]", 'd\\"[[[[[[[[[[']
    layout = FeatureLayout.from_manifest(_named_manifest(manifest, names))
    payload = json.dumps({"values": [dict(zip(names, [1, 2, 3, 4], strict=False))] * 20}).encode()
    values, _, _ = decode_payload(payload, layout, LIMITS)
    assert values.shape == (20, 4)


def test_non_bytes_payload(layout: FeatureLayout) -> None:
    values, _, _ = decode_payload(bytearray(b'{"values": [1, 2, 3, 4]}'), layout, LIMITS)  # type: ignore[arg-type]
    assert values.shape == (1, 4)
    for bad in ("text", 7, None):
        with pytest.raises(PayloadError):
            decode_payload(bad, layout, LIMITS)  # type: ignore[arg-type]


def test_mutated_payloads_raise_only_payload_errors(layout: FeatureLayout) -> None:
    """Random byte edits of valid payloads: decoded, or a PayloadError — never anything else."""
    seeds = [
        b'{"seq": 42, "ts": 1763800000.25, "values": [0.1, 0.2, 0.3, 0.4]}',
        b'{"seq": 1, "ts": [1.0, 2.0], "values": [[1, 2, 3, 4], [5, 6, 7, 8]]}',
        b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": 4}}',
    ]
    alphabet = b'[]{}",:0123456789.eE+-tfnNI\\ \xff\x00'
    rng = random.Random(7)
    outcomes = {"ok": 0, "rejected": 0}
    reasons: set[str] = set()
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[i] = rng.choice(alphabet)
            elif op < 0.7:
                data.insert(i, rng.choice(alphabet))
            else:
                del data[i]
        try:
            values, _, _ = decode_payload(bytes(data), layout, LIMITS)
        except PayloadError as exc:
            reasons.add(exc.reason)
            outcomes["rejected"] += 1
        else:
            assert values.dtype == np.float32
            assert np.isfinite(values).all()
            outcomes["ok"] += 1
    assert outcomes["ok"] > 0
    assert outcomes["rejected"] > 0
    assert reasons <= set(REASONS)


def _verdict(decode: Callable[[], tuple[np.ndarray, int | None, np.ndarray | None]]) -> object:
    try:
        values, seq, ts = decode()
    except PayloadError as exc:
        return exc.reason
    return values.tobytes(), values.shape, seq, None if ts is None else ts.tobytes()


def test_fast_path_agrees_with_the_validator(layout: FeatureLayout) -> None:
    """msgspec's path only accepts, and only what the hand-written validator accepts with the same
    numbers: every payload (valid, mutated, duplicate keys, escapes, edge numbers) gets the same verdict."""
    seeds = [
        b'{"seq": 42, "ts": 1763800000.25, "values": [0.1, 0.2, 0.3, 0.4]}',
        b'{"seq": 1, "ts": [1.0, 2.0], "values": [[1, 2, 3, 4], [5, 6, 7, 8]]}',
        b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": 4}}',
        b'{"ts": 5, "values": [[1, 2, 3, 4]], "seq": 9223372036854775807}',
    ]
    fixed = [
        b'{"values": [1, 2, 3, 4], "values": [1, 2, 3, 4]}',
        b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f0": 4}}',
        b'{"val\\u0075es": [1, 2, 3, 4], "values": [1, 2, 3, 4]}',
        b'{"values": [3.4028234663852886e38, -3.4028234663852886e38, 3.4028235e38, 0]}',
        b'{"values": [16777217, 9007199254740993, 340282346638528859811704183484516925440, -0]}',
        b'{"seq": 9223372036854775807, "values": [[1, 2, 3, 4], [1, 2, 3, 4]]}',
        b'{"seq": 9223372036854775808, "values": [1, 2, 3, 4]}',
        b'{"ts": 1e11, "values": [1, 2, 3, 4]}',
        b'{"ts": [1], "values": [1, 2, 3, 4]}',
        b'{"ts": [1, 2], "values": [[1, 2, 3, 4]]}',
        b'{"values": []}',
        b'{"values": [[]]}',
        b'\xef\xbb\xbf{"values": [1, 2, 3, 4]}',
    ]
    alphabet = b'[]{}",:0123456789.eE+-tfnNI\\ \xff\x00'
    rng = random.Random(11)
    payloads = list(seeds) + fixed
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[i] = rng.choice(alphabet)
            else:
                data.insert(i, rng.choice(alphabet))
        payloads.append(bytes(data))
    accepted = 0
    for payload in payloads:
        expected = _verdict(lambda p=payload: payload_module._validate(p, layout, LIMITS))
        assert _verdict(lambda p=payload: decode_payload(p, layout, LIMITS)) == expected, payload
        accepted += not isinstance(expected, str)
    assert accepted > len(seeds)


def test_reject_reasons_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "INPUT.md").read_text()
    missing = [reason for reason in REASONS if f"`{reason}`" not in doc]
    assert not missing, f"docs/INPUT.md does not list {missing}"
