"""`edgewatch targets`: the installed ORT flavour and providers, and where a model's nodes run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import onnxruntime as ort
import pytest

from runtime.cli import main
from runtime.commands.targets import node_table
from tests.support.artifact_variants import write_fp16_artifact, write_int8_artifact
from tests.support.onnx_artifacts import write_lstm_artifact

OPENVINO = "OpenVINOExecutionProvider"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HAVE_OPENVINO = OPENVINO in ort.get_available_providers()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGEWATCH_") and "__" in name:
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["targets", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_node_table() -> None:
    table = node_table({"A": {"LSTM": 2, "Add": 1}, "CPUExecutionProvider": {"Split": 2}})
    assert table.splitlines() == [
        "op type  A  CPUExecutionProvider",
        "Add      1  0",
        "LSTM     2  0",
        "Split    0  2",
        "total    3  2",
    ]


def test_lists_flavour_providers_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    assert code == 0
    assert re.search(rf"^onnxruntime: onnxruntime(-openvino)? {re.escape(ort.__version__)}$", out, re.MULTILINE)
    assert re.search(r"^available providers: .*CPUExecutionProvider", out, re.MULTILINE)
    for preset in ("cpu-fp32", "cpu-int8", "gpu-fp16", "openvino-fp32", "npu-int8"):
        assert re.search(rf"^  {preset} ", out, re.MULTILINE)


def test_the_expected_provider_of_this_environment_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """.ci/test sets EDGEWATCH_EXPECT_PROVIDER in the OpenVINO environment: a broken install fails here
    instead of quietly skipping every OpenVINO test."""
    expected = os.environ.get("EDGEWATCH_EXPECT_PROVIDER", "CPUExecutionProvider")
    _, out = run(capsys)
    assert expected in re.search(r"^available providers: (.*)$", out, re.MULTILINE).group(1).split(", ")  # type: ignore[union-attr]


def test_model_table_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--model", str(write_lstm_artifact(tmp_path / "m")), "--target", "cpu")
    assert code == 0
    assert re.search(r"^  op type\s+CPUExecutionProvider$", out, re.MULTILINE)
    assert re.search(r"^  LSTM\s+2$", out, re.MULTILINE)
    assert re.search(r"^  total\s+12$", out, re.MULTILINE)
    assert re.search(r"^warm-up: \d+\.\d\d ms$", out, re.MULTILINE)
    assert out.rstrip().endswith("fallback policy allow-cpu: met")


def test_int8_model_shows_its_cpu_only_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--model", str(write_int8_artifact(tmp_path / "m")))  # default: the manifest's cpu
    assert code == 0
    assert re.search(r"^  DynamicQuantizeLSTM\s+2$", out, re.MULTILINE)


def test_strict_target_without_its_provider_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys, "--model", str(write_lstm_artifact(tmp_path / "m")), "--target", "cuda", "--fallback", "strict"
    )
    assert code == 1
    assert "fallback policy NOT met: test-lstm: CUDAExecutionProvider is not available" in out


def test_allow_cpu_target_without_its_provider_runs_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "--model", str(write_lstm_artifact(tmp_path / "m")), "--target", "cuda")
    assert code == 0
    assert "warning: 12 node(s) run on CPUExecutionProvider, outside CUDAExecutionProvider" in out
    assert "fallback policy allow-cpu: met" in out


def test_config_targets_are_listed_with_their_chain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--config", str(EXAMPLES / "gateway-jetson.yaml"))
    assert code == 0
    assert re.search(
        r"^  jetson: TensorrtExecutionProvider → CUDAExecutionProvider "
        r"\(fallback allow-cpu, precisions fp16\) — missing here: ",
        out,
        re.MULTILINE,
    )


def test_intel_example_target_on_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's own target (options included) on the fp32 model: all nodes on OpenVINO where
    it is installed; refused (strict) where it is not."""
    monkeypatch.setenv("EDGEWATCH_TARGETS__INTEL__OPTIONS__CACHE_DIR", str(tmp_path / "cache"))
    model = write_lstm_artifact(tmp_path / "m")
    code, out = run(
        capsys, "--config", str(EXAMPLES / "gateway-intel-openvino.yaml"), "--model", str(model), "--target", "intel"
    )
    if HAVE_OPENVINO:
        assert code == 0, out
        assert re.search(rf"^  op type\s+{OPENVINO}$", out, re.MULTILINE)
        assert re.search(r"^  LSTM\s+2$", out, re.MULTILINE)
        assert "fallback policy strict: met" in out
        assert any((tmp_path / "cache").iterdir())
    else:
        assert code == 1
        assert "fallback policy NOT met: test-lstm: OpenVINOExecutionProvider is not available" in out


def test_jetson_example_without_a_gpu_refuses_the_fp16_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_fp16_artifact(tmp_path / "m")
    code, out = run(
        capsys, "--config", str(EXAMPLES / "gateway-jetson.yaml"), "--model", str(model), "--target", "jetson"
    )
    assert code == 1
    assert "fallback policy NOT met: test-lstm: no available provider can run this fp16 artifact" in out


def test_unknown_target_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_lstm_artifact(tmp_path / "m")
    code, out = run(capsys, "--config", str(EXAMPLES / "gateway-x86.yaml"), "--model", str(model), "--target", "gpu")
    assert code == 2
    assert "--target 'gpu' is not a target of the config (targets: cpu)" in out
