"""`edgewatch config init | check | show`, and the example configs in examples/."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from edge_config.loading import load_config
from runtime.cli import main
from tests.support.artifact_variants import write_fp16_artifact, write_int8_artifact
from tests.support.onnx_artifacts import write_lstm_artifact

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGEWATCH_…__… variable or credential directory of the machine running the tests."""
    import os

    for name in list(os.environ):
        if (name.startswith("EDGEWATCH_") and "__" in name) or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_output_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    code, out, _ = run(
        capsys,
        "config",
        "init",
        "--broker",
        "mqtt.local:1884",
        "--model",
        str(model),
        "--topic",
        "plant/+/+/telemetry",
        "--prefix",
        "acme/edge",
    )
    assert code == 0
    elsewhere = tmp_path / "etc" / "gateway.yaml"  # saved away from the model: its path is absolute
    elsewhere.parent.mkdir()
    elsewhere.write_text(out)
    code, ok, err = run(capsys, "config", "check", str(elsewhere))
    assert (code, err) == (0, "")
    assert "ok: 1 stream(s), 1 model(s), 1 target(s)" in ok
    config = load_config(elsewhere, environ={}, secret_dirs=[])
    assert (config.broker.host, config.broker.port, config.runtime.topic_prefix) == ("mqtt.local", 1884, "acme/edge")
    assert config.models["test-lstm"].path == model.resolve()
    assert list(config.targets) == ["cpu"]  # the manifest's first preset provider


def test_init_is_complete_and_commented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "[::1]:1883", "--model", str(model), "--topic", "a/+")
    data = yaml.safe_load(out)
    assert set(data) == {"broker", "streams", "models", "targets", "runtime", "trust"}
    assert data["broker"]["host"] == "::1"
    assert set(data["runtime"]) == {
        "max_batch",
        "max_wait_ms",
        "queue_max",
        "drop_policy",
        "max_payload_bytes",
        "max_samples_per_message",
        "max_streams",
        "idle_ttl_s",
        "stale_after_s",
        "max_seq_jump",
        "reset_min_interval_s",
        "max_ts_future_s",
        "checkpoint_path",
        "checkpoint_interval_s",
        "metrics_address",
        "topic_prefix",
        "stats_interval_s",
        "score_stream",
        "outgoing_max",
        "outgoing_max_bytes",
    }
    assert "password" not in data["broker"]  # never written, only explained
    lines = out.splitlines()
    for prev, line in itertools.pairwise(lines):  # every key has its comment right above it
        if re.match(r"^\s*[\w-]+:", line):  # (a map entry's name follows its section header)
            assert prev.lstrip().startswith("#") or prev.rstrip().endswith(":"), line
    assert "# This model's features, in order: f0, f1, f2, f3" in out
    assert "# password: never written here." in out


@pytest.mark.parametrize(
    ("hostname", "client_id"),
    [
        ("gw-7", "edgewatch-gw-7"),
        ("Plant 3.Hall_B.local", "edgewatch-Plant-3-Hall_B-local"),
        ("héllo/+#", "edgewatch-h-llo"),
        ("", "edgewatch"),
        ("x" * 200, "edgewatch-" + "x" * 54),
    ],
)
def test_init_derives_a_unique_client_id_from_the_host_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, hostname: str, client_id: str
) -> None:
    """Two gateways with the same client id on one broker take each other's session over forever."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "b:1883", "--model", str(model), "--topic", "a/+")
    assert yaml.safe_load(out)["broker"]["client_id"] == client_id


def test_init_writes_a_checkpoint_path_that_check_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """State is checkpointed by default (README): beside the config, or in --state-dir."""
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "b:1883", "--model", str(model), "--topic", "a/+")
    assert yaml.safe_load(out)["runtime"]["checkpoint_path"] == "state.ckpt"
    saved = tmp_path / "etc" / "gateway.yaml"
    saved.parent.mkdir()
    saved.write_text(out)
    assert run(capsys, "config", "check", str(saved))[0] == 0
    config = load_config(saved, environ={}, secret_dirs=[])
    assert config.runtime.checkpoint_path == saved.parent / "state.ckpt"
    assert config.runtime.checkpoint_interval_s == 900.0

    state = tmp_path / "var" / "lib" / "edgewatch"
    args = ["config", "init", "--broker", "b:1883", "--model", str(model), "--topic", "a/+", "--state-dir", str(state)]
    _, out, _ = run(capsys, *args)
    assert yaml.safe_load(out)["runtime"]["checkpoint_path"] == str(state / "state.ckpt")
    saved.write_text(out)
    code, _, err = run(capsys, "config", "check", str(saved))
    assert code == 2
    assert "does not exist" in err  # the state directory is the user's (systemd: StateDirectory=edgewatch)
    state.mkdir(parents=True)
    assert run(capsys, "config", "check", str(saved))[0] == 0


def test_init_picks_target_from_manifest_and_refuses_a_target_that_cannot_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp16 = write_fp16_artifact(tmp_path / "fp16")
    code, out, _ = run(capsys, "config", "init", "--broker", "h:1883", "--model", str(fp16), "--topic", "a/+")
    assert code == 0
    assert list(yaml.safe_load(out)["targets"]) == ["cuda"]
    int8 = write_int8_artifact(tmp_path / "int8")
    code, out, err = run(
        capsys, "config", "init", "--broker", "h:1883", "--model", str(int8), "--topic", "a/+", "--target", "openvino"
    )
    assert code == 2
    assert out == ""
    assert (
        "cannot run on openvino: 'dynamic' quantization on openvino: DynamicQuantizeLSTM has a CPU kernel only" in err
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--broker", "mqtt.local"], "--broker 'mqtt.local': expected HOST:PORT"),
        (["--broker", "h:99999"], "expected HOST:PORT"),
        (["--topic", "a/#/b"], "--topic: '#' must be the whole last level"),
        (["--prefix", "$SYS"], "--prefix '$SYS': topic_prefix must be non-empty"),
    ],
)
def test_init_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    base = {"--broker": "h:1883", "--model": str(model), "--topic": "a/+"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    code, out, err = run(capsys, "config", "init", *[x for kv in base.items() for x in kv])
    assert code == 2
    assert out == ""
    assert fragment in err


def test_check_misspelled_key_exit_2_names_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "h:1883", "--model", str(model), "--topic", "a/+")
    path = tmp_path / "gw.yaml"
    path.write_text(out.replace("  keepalive_s: 30", "  keepalive: 30"))
    line = 1 + out.splitlines().index("  keepalive_s: 30")
    code, stdout, err = run(capsys, "config", "check", str(path))
    assert (code, stdout) == (2, "")
    assert err == f"{path}:{line}:3: broker.keepalive: unknown key 'keepalive' (did you mean 'keepalive_s'?)\n"


def test_show_applies_env_and_masks_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "h:1883", "--model", str(model), "--topic", "a/+")
    path = tmp_path / "gw.yaml"
    path.write_text(out)
    monkeypatch.setenv("EDGEWATCH_BROKER__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("EDGEWATCH_BROKER__PORT", "1999")
    code, shown, err = run(capsys, "config", "show", str(path))
    assert (code, err) == (0, "")
    assert "hunter2-secret" not in shown
    data = yaml.safe_load(shown)
    assert data["broker"]["password"] == "***"
    assert data["broker"]["port"] == 1999


def test_show_masks_a_password_read_from_a_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_lstm_artifact(tmp_path / "model")
    _, out, _ = run(capsys, "config", "init", "--broker", "h:1883", "--model", str(model), "--topic", "a/+")
    (tmp_path / "gw.yaml").write_text(out)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "edgewatch-mqtt-password").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    code, shown, _ = run(capsys, "config", "show", str(tmp_path / "gw.yaml"))
    assert code == 0
    assert "from-credentials" not in shown
    assert yaml.safe_load(shown)["broker"]["password"] == "***"


def test_there_are_three_examples() -> None:
    assert [p.name for p in EXAMPLES] == ["gateway-intel-openvino.yaml", "gateway-jetson.yaml", "gateway-x86.yaml"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_check_without_files(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config", "check", "--no-files", str(example))
    assert (code, err) == (0, "")
    assert "files not checked" in out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_names_its_missing_model_folder_without_no_files(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "config", "check", str(example))
    assert code == 2
    assert re.search(r"models\.\w+\.path: .*/examples/models/[\w-]+ does not exist", err)


# Which artifact each example's model is exported with, and the example's model name.
_WRITERS = {
    "gateway-x86.yaml": ("pump", write_int8_artifact),
    "gateway-intel-openvino.yaml": ("pump", write_lstm_artifact),
    "gateway-jetson.yaml": ("conveyor", write_fp16_artifact),
}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_full_check_with_real_artifacts(
    example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the machine-specific paths are overridden (via the environment, as on a gateway)."""
    model, writer = _WRITERS[example.name]
    monkeypatch.setenv(f"EDGEWATCH_MODELS__{model.upper()}__PATH", str(writer(tmp_path / "model")))
    monkeypatch.setenv("EDGEWATCH_RUNTIME__CHECKPOINT_PATH", str(tmp_path / "state.ckpt"))
    code, out, err = run(capsys, "config", "check", str(example))
    assert (code, err) == (0, "")
    assert "files not checked" not in out


@pytest.mark.torch
def test_examples_pass_full_check_with_the_exported_example_forecaster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export commands written in the examples' comments, run for real (into tmp_path):
    each example passes `config check` with the artifact they make."""
    pytest.importorskip("torch")
    repo = EXAMPLES[0].parents[1]
    for example, model, preset in [
        ("gateway-x86.yaml", "PUMP", "cpu-int8"),
        ("gateway-intel-openvino.yaml", "PUMP", "openvino-fp32"),
        ("gateway-jetson.yaml", "CONVEYOR", "gpu-fp16"),
    ]:
        out = tmp_path / preset
        code = main(
            [
                "export",
                "--model",
                f"{repo}/examples/models/forecaster.py:Forecaster",
                "--weights",
                f"{repo}/examples/models/forecaster.pt",
                "--target",
                preset,
                "--out",
                str(out),
            ]
        )
        capsys.readouterr()
        assert code == 0, preset
        assert f"--target {preset} --out examples/models/" in (repo / "examples" / example).read_text()
        monkeypatch.setenv(f"EDGEWATCH_MODELS__{model}__PATH", str(out))
        monkeypatch.setenv("EDGEWATCH_RUNTIME__CHECKPOINT_PATH", str(tmp_path / "state.ckpt"))
        code, _, err = run(capsys, "config", "check", str(repo / "examples" / example))
        assert (code, err) == (0, ""), example
        monkeypatch.delenv(f"EDGEWATCH_MODELS__{model}__PATH")


def test_x86_example_refuses_a_float16_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEWATCH_MODELS__PUMP__PATH", str(write_fp16_artifact(tmp_path / "model")))
    monkeypatch.setenv("EDGEWATCH_RUNTIME__CHECKPOINT_PATH", str(tmp_path / "state.ckpt"))
    code, _, err = run(capsys, "config", "check", str(EXAMPLES[2]))
    assert code == 2
    assert "$EDGEWATCH_MODELS__PUMP__PATH: models.pump.target:" not in err  # the target line is in the file
    assert re.search(
        r"gateway-x86\.yaml:\d+:\d+: models\.pump\.target: .*precision fp16 is not in the target's precisions", err
    )
