"""runtime.engine.alerts: JSON shape and field order, stable ids, and both JSON Schemas in docs/schemas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig
from runtime.engine.alerts import Alert, TopFeature, alert_id
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.ingest.payload import FeatureLayout, PayloadLimits, decode_payload
from tests.support.core_artifacts import session, write_persistence_artifact

jsonschema = pytest.importorskip("jsonschema")
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
SHA = "0123456789abcdef" * 4


def _schema(name: str) -> dict[str, object]:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "id": alert_id("line/1", 42, 1.0, SHA),
        "stream": "line/1",
        "state": "raised",
        "score": 3.5,
        "threshold": 1.25,
        "started": 1763800000.25,
        "ts": 1763800000.25,
        "seq": 42,
        "model": "press",
        "model_sha256": SHA,
        "top_features": (TopFeature("Pressure", 2.5, 7.5, 5.0), TopFeature("Current", 0.75)),
    }
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def test_to_json_is_compact_and_ordered() -> None:
    data = _alert().to_json()
    assert data.startswith(b'{"id":"')
    assert b" " not in data.replace(json.dumps(_alert().message).encode(), b"")  # compact but for the message
    doc = json.loads(data)
    order = ["id", "stream", "state", "score", "threshold", "started", "ts", "seq", "model", "model_sha256"]
    order.append("top_features")
    assert list(doc)[: len(order)] == order  # version 1's fields first, as they were
    assert list(doc)[len(order) :] == ["schema_version", "model_name", "severity", "message"]
    top = [
        {"feature": "Pressure", "contribution": 2.5, "observed": 7.5, "expected": 5.0, "direction": "above"},
        {"feature": "Current", "contribution": 0.75},
    ]
    assert doc["top_features"] == top
    assert list(doc)[: len(order)] == _schema("alert.schema.json")["required"]  # the documented order
    assert doc["schema_version"] == 2
    assert doc["model_name"] == "press"  # no artifact name given: the config key
    assert doc["severity"] == "minor"  # 3.5 / 1.25 = 2.8
    assert doc["message"] == (
        "line/1: anomaly (minor, score 3.5 = 2.8x threshold 1.25): Pressure 7.5 vs 5 expected (above) "
        "[model press 0123456789ab]"
    )


@pytest.mark.parametrize(
    ("score", "threshold", "severity"),
    [(1.0, 1.0, "info"), (1.01, 1.0, "minor"), (3.0, 1.0, "major"), (9.99, 1.0, "major"), (10.0, 1.0, "critical")],
)
def test_severity_levels_follow_the_score_threshold_ratio(score: float, threshold: float, severity: str) -> None:
    assert _alert(score=score, threshold=threshold).severity == severity


def test_probability_severity_compares_odds() -> None:
    assert _alert(score=0.99, threshold=0.5, probability=True).severity == "critical"  # odds 99 vs 1
    assert _alert(score=0.6, threshold=0.5, probability=True).severity == "minor"
    assert _alert(score=1.0, threshold=0.5, probability=True).severity == "critical"
    assert "odds" in _alert(score=0.99, threshold=0.5, probability=True).message


def test_a_version_1_consumer_finds_every_field_it_knew_unchanged() -> None:
    """The old schema (no new properties allowed) minus additionalProperties: every v1 field still validates."""
    old = _schema("alert.schema.json")
    v1 = {**old, "properties": {k: v for k, v in old["properties"].items() if k in old["required"] or k == "reason"}}
    v1.pop("additionalProperties")
    jsonschema.validate(json.loads(_alert().to_json()), v1)


def test_alert_json_validates() -> None:
    schema = _schema("alert.schema.json")
    evicted = _alert(state="cleared", seq=None, top_features=(), reason="evicted", evicted_at=1763803650.0)
    shifted = _alert(score=1.0, shift=1.4)
    for alert in (
        _alert(),
        _alert(state="cleared", seq=None, top_features=()),
        _alert(stream="ünïcode/ŝ"),
        evicted,
        shifted,
    ):
        jsonschema.validate(json.loads(alert.to_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(_alert().to_json()), "state": "new"}, schema)


def test_ids_are_stable_and_distinct() -> None:
    assert alert_id("s", 1, 5.0, SHA) == alert_id("s", 1, 99.0, SHA)  # seq wins over ts
    ids = {
        alert_id("s", 1, 5.0, SHA),
        alert_id("s", 2, 5.0, SHA),
        alert_id("t", 1, 5.0, SHA),
        alert_id("s", 1, 5.0, "f" * 64),
        alert_id("s", None, 5.0, SHA),
        alert_id("s", None, 5.5, SHA),
        alert_id('s","seq:1', None, 5.0, SHA),  # no way to forge another stream's id with quotes
    }
    assert len(ids) == 7
    # Pinned: consumers deduplicate across gateway versions, so the derivation must not drift.
    assert alert_id("s", 1, 5.0, SHA) == "90acbd06c6d8d920"
    assert alert_id("s", None, 5.0, SHA) == "da806259bba4d4a6"


def test_non_finite_alerts_cannot_exist() -> None:
    with pytest.raises(ValueError, match="must be finite"):
        _alert(score=float("nan"))


def test_alerts_from_the_engine_validate(tmp_path: Path) -> None:
    """raised → update → cleared from a real engine run, each validated against the schema."""
    artifact = write_persistence_artifact(tmp_path, threshold=1.0)
    policy = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=2, update_interval_s=1.0)
    now = [0.0]
    model = ModelConfig(path=tmp_path, target="cpu", alerts=policy, baseline=BaselineConfig(learn_steps=0))
    engine = Engine(artifact, session(artifact), model, name="press", clock=lambda: now[0])
    x = np.zeros((40, 4), np.float32)
    x[10:20:2] = 3.0  # a stream that jumps back and forth: the persistence forecast is always wrong
    schema = _schema("alert.schema.json")
    seen = []
    for t in range(40):
        now[0] = float(t)
        with_seq = t % 2 == 0  # half the messages without seq: the schema allows null
        seq = t if with_seq else None
        message = Message("line/7", x[t : t + 1], seq, None, received=float(t), received_wall=1763800000.0 + t)
        for alert in engine.process([message])[0].alerts:
            jsonschema.validate(json.loads(alert.to_json()), schema)
            seen.append(alert)
    raised = next(a for a in seen if a.state == "raised")
    feature = raised.top_features[0]
    assert feature.observed is not None
    assert feature.expected is not None
    # persistence model: the expected value is the previous sample, in raw units
    assert {feature.observed, feature.expected} <= {0.0, 3.0}
    assert feature.direction == ("above" if feature.observed > feature.expected else "below")
    assert raised.model_name == artifact.manifest.name
    assert next(a.state for a in seen) == "raised"
    assert [a.state for a in seen][-1] == "cleared"
    assert "update" in {a.state for a in seen}
    assert len({a.id for a in seen}) == 1


VALID_INPUT = [
    b'{"seq": 42, "ts": 1763800000.25, "values": [0.1, 0.2, 0.3, 0.4]}',
    b'{"values": {"f0": 1, "f1": 2, "f2": 3, "f3": 4}}',
    b'{"seq": 0, "ts": [1, 2], "values": [[1, 2, 3, 4], [5, 6, 7, 8]]}',
    b'{"values": [{"f0": 1, "f1": 2, "f2": 3, "f3": 4}]}',
]
INVALID_INPUT = [
    b'{"values": [true, 2, 3, 4]}',
    b'{"values": [1, 2, 3, "4"]}',
    b'{"seq": -1, "values": [1, 2, 3, 4]}',
    b'{"seq": 1.5, "values": [1, 2, 3, 4]}',
    b'{"ts": 1763800000250, "values": [1, 2, 3, 4]}',
    b'{"values": [1, 2, 3, 4], "extra": 1}',
    b'{"values": [1, 2, 3, 1e39]}',
    b'{"values": []}',
    b'{"seq": 1}',
]


def test_input_schema_agrees_with_the_decoder(tmp_path: Path) -> None:
    schema = _schema("input.schema.json")
    layout = FeatureLayout.from_manifest(write_persistence_artifact(tmp_path).manifest)
    for payload in VALID_INPUT:
        jsonschema.validate(json.loads(payload), schema)
        decode_payload(payload, layout, PayloadLimits())
    for payload in INVALID_INPUT:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(payload), schema)


def test_after_a_reload_alerts_carry_the_new_models_name(tmp_path: Path) -> None:
    """The config key stays; model_name and model_sha256 say which artifact serves the stream now."""
    from runtime.model.artifact import load_artifact
    from runtime.state.transfer import transfer_state

    old_art = write_persistence_artifact(tmp_path / "v1", threshold=1.0)
    write_persistence_artifact(tmp_path / "v2", threshold=1.0)
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps({**manifest, "name": "press-v2"}))
    new_art = load_artifact(tmp_path / "v2")
    policy = AlertPolicy(raise_k=1, raise_n=1, clear_m=2, warmup_steps=1, update_interval_s=None)
    model = ModelConfig(path=tmp_path, target="cpu", alerts=policy, baseline=BaselineConfig(learn_steps=0))
    old = Engine(old_art, session(old_art), model, name="press")
    x = np.zeros((60, 4), np.float32)
    x[3] = 5.0
    seen = [a for t in range(5) for a in old.process([Message("s", x[t : t + 1], t, None)])[0].alerts]
    assert [(a.state, a.model, a.model_name) for a in seen] == [("raised", "press", old_art.manifest.name)]
    new = Engine(new_art, session(new_art), model, name="press")
    transfer_state(old, new)
    later = [a for t in range(5, 60) for a in new.process([Message("s", x[t : t + 1], t, None)])[0].alerts]
    assert [(a.state, a.id, a.model, a.model_name) for a in later] == [("cleared", seen[0].id, "press", "press-v2")]
    assert "press-v2" in later[0].message


def test_a_shift_alert_under_the_threshold_says_so_and_is_at_least_minor() -> None:
    shifted = _alert(score=1.0, threshold=1.25, shift=1.4)  # the sum, not this step's score, holds it
    doc = json.loads(shifted.to_json())
    assert doc["shift"] == 1.4
    assert doc["severity"] == "minor"
    assert "a persistent shift from its own level (1.4x the detector's limit)" in doc["message"]
    assert "shift" not in json.loads(_alert().to_json())  # absent unless the sum holds the step
    assert _alert(score=5.0, threshold=1.25, shift=1.4).severity == "major"  # the score's own level counts
