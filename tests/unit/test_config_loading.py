"""edge_config.loading: positions, hints, environment overrides, secrets, relative paths, file checks."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from edge_config.errors import ConfigError
from edge_config.loading import load_config
from edge_config.schema import GatewayConfig, StreamConfig, consistency_problems
from edge_config.secrets import default_secret_dirs
from tests.support.artifact_variants import write_fp16_artifact, write_int8_artifact
from tests.support.onnx_artifacts import write_lstm_artifact

GOOD = """\
broker:
  host: mqtt.local
  port: 1883
streams:
  - name: presses
    topics: [plant/+/+/telemetry]
    stream_id: plant/{line}/{machine}/telemetry
    model: det
models:
  det:
    path: model
    target: cpu
targets:
  cpu:
    type: cpu
runtime:
  max_batch: 64
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_lstm_artifact(tmp_path / "model")
    return tmp_path


def write(folder: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, **kwargs: object) -> list[str]:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("secret_dirs", [])
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return str(info.value).splitlines()


def load(path: Path, **kwargs: object) -> GatewayConfig:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("secret_dirs", [])
    return load_config(path, **kwargs)  # type: ignore[arg-type]


def test_good_config_loads_and_resolves_paths_against_its_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # a service starts in /: paths must not depend on the working directory
    config = load(write(folder, GOOD))
    assert config.models["det"].path == folder / "model"
    assert config.runtime.max_batch == 64
    assert config.broker.password is None


def test_misspelled_key_names_key_line_column_and_closest_key(folder: Path) -> None:
    path = write(folder, GOOD.replace("  max_batch: 64", "  max_bacth: 64"))
    (line,) = problems(path)
    assert line == f"{path}:17:3: runtime.max_bacth: unknown key 'max_bacth' (did you mean 'max_batch'?)"


def test_all_problems_are_reported_one_per_line_in_file_order(folder: Path) -> None:
    text = GOOD.replace("  port: 1883", "  port: high\n  kepalive_s: 5").replace("    type: cpu", "    type: cpus")
    lines = problems(write(folder, text))
    assert len(lines) == 3
    assert re.fullmatch(r".*:3:9: broker\.port: Input should be a valid integer.*got 'high'", lines[0])
    assert re.fullmatch(
        r".*:4:3: broker\.kepalive_s: unknown key 'kepalive_s' \(did you mean 'keepalive_s'\?\)", lines[1]
    )
    assert re.fullmatch(
        r".*:16:11: targets\.cpu\.type: Input should be 'cpu', .*got 'cpus' \(did you mean 'cpu'\?\)", lines[2]
    )


def test_missing_required_key_points_at_its_parent_and_explains_it(folder: Path) -> None:
    lines = problems(write(folder, GOOD.replace("    model: det\n", "")))
    assert len(lines) == 1
    assert re.fullmatch(r".*:5:5: streams\[0\]\.model: missing required key 'model' \(Name of the model .*\)", lines[0])


def test_missing_sections(folder: Path) -> None:
    lines = problems(write(folder, "broker:\n  host: x\n"))
    assert [line.split(": ", 1)[1] for line in lines] == [
        (
            "streams: missing required key 'streams' "
            "(Inputs: topic filters, stream ids, payload format, and the model serving them.)"
        ),
        "models: missing required key 'models' (Models by name: artifact folder, target, scoring overrides.)",
    ]


def test_wrong_types_in_a_union_are_one_problem(folder: Path) -> None:
    (line,) = problems(write(folder, GOOD.replace("    type: cpu", "    type: cpu\n    options: {device_type: [1]}")))
    assert re.fullmatch(
        r".*:16:28: targets\.cpu\.options\.device_type: Input should be a valid string or a valid integer "
        r"or a valid number or a valid boolean",
        line,
    )


def test_undefined_model_and_target_references_name_their_place_and_closest_name(folder: Path) -> None:
    text = GOOD.replace("    model: det", "    model: dett").replace("    target: cpu", "    target: gpu")
    lines = problems(write(folder, text))
    assert re.fullmatch(
        r".*:8:12: streams\[0\]\.model: 'dett' is not defined under models \(did you mean 'det'\?\)", lines[0]
    )
    assert re.fullmatch(
        r".*:12:13: models\.det\.target: 'gpu' is not defined under targets \(did you mean 'cpu'\?\)", lines[1]
    )


def test_invalid_topic_filters_name_the_list_item(folder: Path) -> None:
    text = GOOD.replace("[plant/+/+/telemetry]", "[plant/+/+/telemetry, plant/#/x, a/b+/c, '$share/g/a/+']").replace(
        "    stream_id: plant/{line}/{machine}/telemetry\n", ""
    )
    lines = problems(write(folder, text))
    assert [re.sub(r"^.*?:\d+:\d+: ", "", line).split(":")[0] for line in lines] == [
        "streams[0].topics[1]",
        "streams[0].topics[2]",
        "streams[0].topics[3]",
    ]
    assert "'#' must be the whole last level" in lines[0]
    assert "'+' must be a whole level" in lines[1]
    assert "shared subscriptions" in lines[2]


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("plant/{line}/{machine}", "has 3 levels but topic filter 'plant/+/+/telemetry' has 4"),
        ("plant/{line}/{machine}/status", "'status' of stream_id"),
        ("{site}/{line}/{machine}/telemetry", "level 1 '{site}'"),
        ("plant/{line}/{line}/telemetry", "names {line} twice"),
        ("plant/+/+/telemetry", "names no level"),
        ("plant/{li ne}/+/telemetry", "must be a literal, +, # or {name}"),
    ],
)
def test_templates_that_do_not_fit_the_filter(folder: Path, template: str, fragment: str) -> None:
    (line,) = problems(write(folder, GOOD.replace("plant/{line}/{machine}/telemetry", f'"{template}"')))
    assert re.match(r".*:7:16: streams\[0\]\.stream_id: ", line)
    assert fragment in line


@pytest.mark.parametrize(
    ("topic_filter", "template", "topic", "stream_id"),
    [
        ("plant/+/+/telemetry", "plant/{line}/{machine}/telemetry", "plant/L1/press-3/telemetry", "L1/press-3"),
        ("plant/+/+/telemetry", "plant/{line}/+/telemetry", "plant/L1/press-3/telemetry", "L1"),
        ("site/+/#", "site/{area}/#", "site/north/a/b", "north"),
    ],
)
def test_templates_that_fit_resolve_in_the_runtime(
    topic_filter: str, template: str, topic: str, stream_id: str
) -> None:
    """What the config accepts, runtime.mqtt.topics resolves, to the id the docs promise."""
    from runtime.mqtt.topics import StreamIdResolver

    stream = StreamConfig(name="s", topics=[topic_filter], stream_id=template, model="m")
    assert consistency_problems(GatewayConfig(streams=[stream], models={"m": {"path": "x", "target": "cpu"}})) == []
    route = StreamIdResolver([stream]).resolve(topic)
    assert route is not None
    assert route.stream == stream_id


def test_duplicate_keys_are_refused_at_the_repetition(folder: Path) -> None:
    (line,) = problems(write(folder, GOOD + "  max_batch: 32\n"))
    assert re.fullmatch(
        r".*:18:3: runtime\.max_batch: duplicate key 'max_batch' \(first at line 17\) \(remove one\)", line
    )


def test_yaml_syntax_error_has_a_position(folder: Path) -> None:
    (line,) = problems(write(folder, "broker:\n  host: [unclosed\n"))
    assert re.match(rf"{re.escape(str(folder))}/gateway\.yaml:\d+:\d+: YAML syntax", line)


def test_env_overrides_nested_keys_as_yaml_scalars(folder: Path) -> None:
    env = {
        "EDGEWATCH_BROKER__PORT": "1884",
        "EDGEWATCH_RUNTIME__MAX_BATCH": "32",
        "EDGEWATCH_RUNTIME__METRICS_ADDRESS": "",  # YAML: null
        "EDGEWATCH_MODELS__DET__THRESHOLD": "4.5",
        "EDGEWATCH_STREAMS__0__TOPICS": "[plant/+/+/telemetry, plant/+/+/backfill]",
        "EDGEWATCH_BROKER__TLS__MIN_VERSION": '"1.3"',  # creates broker.tls
        "EDGEWATCH_EXPECT_PROVIDER": "ignored: no '__', a tool setting",
    }
    text = GOOD.replace("    stream_id: plant/{line}/{machine}/telemetry\n", "")
    config = load(write(folder, text), environ=env)
    assert config.broker.port == 1884
    assert config.runtime.max_batch == 32
    assert config.runtime.metrics_address is None
    assert config.models["det"].threshold == 4.5
    assert config.streams[0].topics == ["plant/+/+/telemetry", "plant/+/+/backfill"]
    assert config.broker.tls is not None
    assert config.broker.tls.min_version == "1.3"


def test_env_problems_name_the_variable(folder: Path) -> None:
    env = {"EDGEWATCH_BROKER__PORT": "x", "EDGEWATCH_BROKR__HOST": "h", "EDGEWATCH_RUNTIME__MAX_BACHT": "1"}
    lines = problems(write(folder, GOOD), environ=env)
    assert (
        "$EDGEWATCH_BROKER__PORT: broker.port: "
        "Input should be a valid integer, unable to parse string as an integer, got 'x'" in lines
    )
    assert "$EDGEWATCH_BROKR__HOST: 'brokr' is not a config section (did you mean EDGEWATCH_BROKER__…?)" in lines
    assert (
        "$EDGEWATCH_RUNTIME__MAX_BACHT: runtime.max_bacht: unknown key 'max_bacht' (did you mean 'max_batch'?)" in lines
    )


def test_password_from_env_is_verbatim(folder: Path) -> None:
    config = load(write(folder, GOOD), environ={"EDGEWATCH_BROKER__PASSWORD": "0123"})  # YAML would make it 123
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "0123"


def test_password_file_relative_to_config_and_trailing_newline_dropped(folder: Path) -> None:
    (folder / "mqtt.pw").write_text("s3cret\n")
    config = load(write(folder, GOOD.replace("  port: 1883", "  port: 1883\n  password_file: mqtt.pw")))
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "s3cret"


def test_password_from_credentials_directory_then_run_secrets(folder: Path) -> None:
    creds, run_secrets = folder / "creds", folder / "run-secrets"
    creds.mkdir()
    run_secrets.mkdir()
    path = write(folder, GOOD)
    assert load(path, secret_dirs=[creds, run_secrets]).broker.password is None  # never required
    (run_secrets / "edgewatch-mqtt-password").write_text("from-run-secrets")
    assert load(path, secret_dirs=[creds, run_secrets]).broker.password.get_secret_value() == "from-run-secrets"  # type: ignore[union-attr]
    (creds / "edgewatch-mqtt-password").write_text("from-systemd\n")
    assert load(path, secret_dirs=[creds, run_secrets]).broker.password.get_secret_value() == "from-systemd"  # type: ignore[union-attr]


def test_default_secret_dirs_put_systemd_credentials_first() -> None:
    assert default_secret_dirs({"CREDENTIALS_DIRECTORY": "/run/credentials/edgewatch.service"}) == [
        Path("/run/credentials/edgewatch.service"),
        Path("/run/secrets"),
    ]
    assert default_secret_dirs({}) == [Path("/run/secrets")]


def test_missing_password_file_and_both_password_sources_are_refused(folder: Path) -> None:
    (line,) = problems(write(folder, GOOD.replace("  port: 1883", "  port: 1883\n  password_file: nope.pw")))
    assert re.fullmatch(rf".*:4:18: broker\.password_file: {re.escape(str(folder))}/nope\.pw does not exist", line)
    (folder / "pw").write_text("a")
    (line,) = problems(write(folder, GOOD.replace("  port: 1883", "  port: 1883\n  password: x\n  password_file: pw")))
    assert "broker.password and broker.password_file are both set" in line


def test_missing_artifact_folder_and_files_skipped_with_check_files_false(folder: Path) -> None:
    path = write(folder, GOOD.replace("    path: model", "    path: models/nothere"))
    (line,) = problems(path)
    assert re.fullmatch(
        rf".*:11:11: models\.det\.path: {re.escape(str(folder))}/models/nothere does not exist \(.*\)", line
    )
    assert load(path, check_files=False).models["det"].path == folder / "models" / "nothere"


def test_tampered_model_and_broken_manifest(folder: Path) -> None:
    path = write(folder, GOOD)
    (folder / "model" / "model.onnx").write_bytes(b"not the exported model")
    (line,) = problems(path)
    assert "models.det.path:" in line
    assert "does not match the sha256" in line
    (folder / "model" / "manifest.json").write_text("{")
    (line,) = problems(path)
    assert "models.det.path:" in line
    assert "unreadable manifest" in line


def test_int8_model_on_openvino_target_is_refused_with_the_reason(folder: Path) -> None:
    write_int8_artifact(folder / "int8")
    text = GOOD.replace("    path: model", "    path: int8").replace("    type: cpu", "    type: openvino")
    (line,) = problems(write(folder, text))
    assert re.fullmatch(
        r".*:12:13: models\.det\.target: artifact 'test-lstm' \(cpu-int8\) does not suit target 'cpu' \(openvino\): "
        r"'dynamic' quantization on openvino: DynamicQuantizeLSTM has a CPU kernel only "
        r"\(export for this target with --target .*\)",
        line,
    )


def test_precision_not_accepted_by_target_and_fp16_on_cpu(folder: Path) -> None:
    write_fp16_artifact(folder / "fp16")
    text = GOOD.replace("    path: model", "    path: fp16").replace(
        "    type: cpu", "    type: cpu\n    precisions: [fp32]"
    )
    lines = problems(write(folder, text))  # one line per reason, both at the model's target
    assert len(lines) == 2
    assert all(re.match(r".*:12:13: models\.det\.target: ", x) for x in lines)
    assert "precision fp16 is not in the target's precisions [fp32]" in lines[0]
    assert "'fp16' quantization on cpu: the CPU provider has no float16 LSTM kernel" in lines[1]


def test_fallback_chain_is_checked_for_every_accelerator(folder: Path) -> None:
    write_fp16_artifact(folder / "fp16")
    text = GOOD.replace("    path: model", "    path: fp16").replace(
        "    type: cpu", "    type: tensorrt\n    fallback_providers: [cuda, openvino]"
    )
    (line,) = problems(write(folder, text))
    assert "'fp16' quantization on openvino" in line
    assert "tensorrt:" not in line


def test_cpu_is_not_a_fallback_provider(folder: Path) -> None:
    (line,) = problems(write(folder, GOOD.replace("    type: cpu", "    type: cuda\n    fallback_providers: [cpu]")))
    assert "targets.cpu.fallback_providers: 'cpu' is not a fallback provider; set `fallback: allow-cpu`" in line


def test_stream_feature_mapping_must_name_model_features(folder: Path) -> None:
    text = GOOD.replace("    model: det", "    model: det\n    features: {temp: f0, t: f0, p: pressure}")
    lines = problems(write(folder, text))
    assert any("streams[0].features.t: feature 'f0' is already mapped from payload key 'temp'" in x for x in lines)
    assert any(
        "streams[0].features.p: 'pressure' is not a feature of model 'det' (its features: f0, f1, f2, f3)" in x
        for x in lines
    )


def test_tls_files_and_checkpoint_folder_are_checked(folder: Path) -> None:
    text = GOOD.replace("  port: 1883", "  port: 8883\n  tls:\n    ca_file: ca.pem").replace(
        "  max_batch: 64", "  max_batch: 64\n  checkpoint_path: state/ckpt"
    )
    lines = problems(write(folder, text))
    assert any("broker.tls.ca_file:" in x and "ca.pem does not exist" in x for x in lines)
    assert any("runtime.checkpoint_path: folder" in x and "does not exist" in x for x in lines)
    (folder / "ca.pem").write_text("x")
    (folder / "state").mkdir()
    assert load(write(folder, text)).runtime.checkpoint_path == folder / "state" / "ckpt"
