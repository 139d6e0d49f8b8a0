"""Signed artifacts (issue 12): the signature covers model.onnx and manifest.json, a gateway
trusts configured public keys and, when told to, refuses unsigned or wrongly signed models.

Before: manifest.json was unprotected (a threshold of 1e12 was served silently) and a model
edited with its sha256 recomputed in the manifest passed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_config.errors import ArtifactError
from edge_config.manifest import read_manifest, sha256_bytes, write_manifest
from edge_config.schema import TrustConfig
from edge_config.signing import SIGNATURE_NAME, generate_keys, sign_artifact
from exporter.artifact_writer import write_artifact
from runtime.cli import main
from runtime.model.artifact import load_artifact
from tests.support.onnx_artifacts import lstm_forecaster_model, write_lstm_artifact


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    pairs = {}
    for name in ("ours", "theirs"):
        generate_keys(folder / f"{name}.pem", folder / f"{name}.pub")
        pairs[name] = (folder / f"{name}.pem", folder / f"{name}.pub")
    return pairs


def _sign(directory: Path, key: Path) -> None:
    sign_artifact(directory, key, (directory / "model.onnx").read_bytes(), (directory / "manifest.json").read_bytes())


@pytest.fixture
def signed(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> Path:
    art = write_lstm_artifact(tmp_path / "artifact", features=4, hidden=8, layers=1, threshold=1.0)
    _sign(art, keys["ours"][0])
    return art


def _trust(keys: dict[str, tuple[Path, Path]], *names: str, require: bool = True) -> TrustConfig:
    return TrustConfig(public_keys=[keys[n][1] for n in names], require_signature=require)


def _refused(directory: Path, trust: TrustConfig, *fragments: str) -> None:
    with pytest.raises(ArtifactError) as info:
        load_artifact(directory, trust)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_a_signed_artifact_loads_under_its_key(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    artifact = load_artifact(signed, _trust(keys, "theirs", "ours"))
    assert artifact.signer is not None
    assert json.loads((signed / SIGNATURE_NAME).read_text())["key_id"] == artifact.signer


def test_a_tampered_manifest_is_refused(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    raw = json.loads((signed / "manifest.json").read_text())
    raw["calibration"]["threshold"] = 1e12  # the attack of the issue: a detector that never alerts
    (signed / "manifest.json").write_text(json.dumps(raw))
    load_artifact(signed)  # the sha256 alone cannot tell: the model bytes are untouched
    _refused(signed, _trust(keys, "ours"), "manifest.json changed since signing")
    _refused(signed, _trust(keys, "ours", require=False), "manifest.json changed since signing")


def test_an_edited_model_with_its_sha256_recomputed_is_refused(
    signed: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    other = lstm_forecaster_model(4, hidden=8, layers=1, seed=99).SerializeToString()
    (signed / "model.onnx").write_bytes(other)
    write_manifest(read_manifest(signed).model_copy(update={"sha256": sha256_bytes(other)}), signed)
    load_artifact(signed)  # passes the sha256 check: that is the point
    _refused(signed, _trust(keys, "ours"), "model.onnx and manifest.json changed since signing")


def test_a_signature_by_another_key_is_refused(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    _refused(signed, _trust(keys, "theirs"), "not in trust.public_keys")
    _refused(signed, _trust(keys, "theirs", require=False), "not in trust.public_keys")
    _sign(signed, keys["theirs"][0])  # re-signed by a key we do not trust
    _refused(signed, _trust(keys, "ours"), "not in trust.public_keys")


def test_unsigned_is_refused_when_required_and_served_with_a_warning_otherwise(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    art = write_lstm_artifact(tmp_path / "artifact", features=4, hidden=8, layers=1)
    _refused(art, _trust(keys, "ours"), "unsigned artifact")
    with caplog.at_level(logging.WARNING, "edgewatch.artifact"):
        assert load_artifact(art, _trust(keys, "ours", require=False)).signer is None
    assert "unsigned artifact served" in caplog.text


def test_write_artifact_signs_and_keys_generate(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    source = write_lstm_artifact(tmp_path / "source", features=4, hidden=8, layers=1)
    model, manifest = (source / "model.onnx").read_bytes(), read_manifest(source)
    out = write_artifact(tmp_path / "out", model, manifest, force=False, sign=keys["ours"][0])
    assert load_artifact(out, _trust(keys, "ours")).signer is not None
    assert main(["keys", "generate", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")]) == 0
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "x.pub")]) == 2
