"""runtime.engine.alerts: JSON shape and field order, stable ids, and both JSON Schemas in docs/schemas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig
from runtime.engine.alerts import Alert, alert_id
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
        "top_features": (("Pressure", 2.5), ("Current", 0.75)),
    }
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def test_to_json_is_compact_and_ordered() -> None:
    data = _alert().to_json()
    assert data.startswith(b'{"id":"')
    assert b" " not in data
    doc = json.loads(data)
    order = ["id", "stream", "state", "score", "threshold", "started", "ts", "seq", "model", "model_sha256"]
    order.append("top_features")
    assert list(doc) == order
    top = [{"feature": "Pressure", "contribution": 2.5}, {"feature": "Current", "contribution": 0.75}]
    assert doc["top_features"] == top
    assert list(doc) == _schema("alert.schema.json")["required"]  # the documented order


def test_alert_json_validates() -> None:
    schema = _schema("alert.schema.json")
    for alert in (_alert(), _alert(state="cleared", seq=None, top_features=()), _alert(stream="ünïcode/ŝ")):
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
