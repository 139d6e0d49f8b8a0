"""runtime.model.session.create_session: the one session factory, on CPU here and on OpenVINO in .venv-openvino."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import runtime.model.session as session_module
from edge_config.errors import TargetError
from edge_config.manifest import read_manifest, write_manifest
from edge_config.schema import TargetConfig
from runtime.model.artifact import Artifact, load_artifact
from runtime.model.session import CPU, create_session, session_options
from tests.support.artifact_variants import write_fp16_artifact, write_int8_artifact
from tests.support.onnx_artifacts import write_lstm_artifact

OPENVINO = "OpenVINOExecutionProvider"

# Runs in .venv-openvino; tests/conftest.py skips it elsewhere, with the reason.
needs_openvino = pytest.mark.openvino


LSTM_GRAPH = {"Add": 1, "Concat": 2, "LSTM": 2, "MatMul": 1, "Split": 2, "Squeeze": 2, "Transpose": 2}


@pytest.fixture
def fp32(tmp_path: Path) -> Artifact:
    return load_artifact(write_lstm_artifact(tmp_path / "fp32"))


def feeds(batch: int, steps: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, steps, 4)).astype(np.float32),
        "h0.lstm": rng.standard_normal((2, batch, 8)).astype(np.float32) * 0.5,
        "c0.lstm": rng.standard_normal((2, batch, 8)).astype(np.float32) * 0.5,
    }


def test_cpu_session_report(fp32: Artifact) -> None:
    session, report = create_session(fp32, TargetConfig(type="cpu"), name="det")
    assert report.name == "det"
    assert report.flavour in ("onnxruntime", "onnxruntime-openvino")
    assert report.version == ort.__version__
    assert report.requested_provider == CPU
    assert report.provider_chain == (CPU,)
    assert report.nodes_by_provider == {CPU: LSTM_GRAPH}
    assert report.assignment_source == "graph-assignment-info"
    assert (report.policy_met, report.off_chain_nodes, report.warnings) == (True, 0, ())
    assert report.warmup_ms > 0
    y, hn, cn = session.run(None, feeds(3, 5))
    assert y.shape == (3, 5, 4)
    assert hn.shape == cn.shape == (2, 3, 8)


def test_no_target_means_plain_cpu(fp32: Artifact) -> None:
    _, report = create_session(fp32, None)
    assert report.name == "test-lstm"
    assert report.provider_chain == (CPU,)
    assert report.fallback == "allow-cpu"


def test_session_is_built_from_verified_bytes_not_the_path(fp32: Artifact) -> None:
    shutil.rmtree(fp32.directory)
    session, _ = create_session(fp32, None)
    assert session.run(None, feeds(1, 1))[0].shape == (1, 1, 4)


def test_session_options_follow_the_target() -> None:
    options = session_options(TargetConfig(type="cpu", intra_op_threads=3), record_assignment=True)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"
    strict = session_options(TargetConfig(type="openvino", fallback="strict"), record_assignment=True)
    assert strict.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    # ORT refuses the switch together with an explicit CPU provider, so a CPU target never sets it.
    cpu_strict = session_options(TargetConfig(type="cpu", fallback="strict"), record_assignment=True)
    with pytest.raises(RuntimeError, match="does not have configuration"):
        cpu_strict.get_session_config_entry("session.disable_cpu_ep_fallback")


def test_int8_runs_on_cpu_with_its_cpu_only_kernel(tmp_path: Path) -> None:
    _, report = create_session(
        load_artifact(write_int8_artifact(tmp_path / "int8")), TargetConfig(type="cpu", fallback="strict")
    )
    assert report.nodes_by_provider[CPU]["DynamicQuantizeLSTM"] == 2
    assert list(report.nodes_by_provider) == [CPU]


def test_precision_that_does_not_suit_the_target_is_refused_before_ort(tmp_path: Path) -> None:
    int8 = load_artifact(write_int8_artifact(tmp_path / "int8"))
    with pytest.raises(
        TargetError, match="'dynamic' quantization on openvino: DynamicQuantizeLSTM has a CPU kernel only"
    ):
        create_session(int8, TargetConfig(type="openvino"))
    fp16 = load_artifact(write_fp16_artifact(tmp_path / "fp16"))
    with pytest.raises(TargetError, match="the CPU provider has no float16 LSTM kernel"):
        create_session(fp16, TargetConfig(type="cpu"))
    with pytest.raises(TargetError, match=r"precision int8 is not in the target's precisions \[fp32\]"):
        create_session(int8, TargetConfig(type="cpu", precisions=["fp32"]))


def test_strict_refuses_when_the_requested_provider_is_absent(fp32: Artifact) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with pytest.raises(TargetError, match=r"CUDAExecutionProvider is not available in onnxruntime(-openvino)? [\d.]+"):
        create_session(fp32, TargetConfig(type="cuda", fallback="strict"))


def test_allow_cpu_runs_without_the_provider_and_says_where_nodes_went(fp32: Artifact) -> None:
    _, report = create_session(fp32, TargetConfig(type="tensorrt", fallback_providers=["cuda"]))
    assert report.provider_chain == (CPU,)
    assert report.policy_met
    assert report.nodes_by_provider == {CPU: LSTM_GRAPH}
    assert report.off_chain_nodes == 12
    assert any("TensorrtExecutionProvider is not available" in w for w in report.warnings)
    assert any("CUDAExecutionProvider is not available" in w for w in report.warnings)
    assert any(
        w.startswith("12 node(s) run on CPUExecutionProvider, outside TensorrtExecutionProvider → CUDA")
        for w in report.warnings
    )
    assert any("the recurrent nodes of test-lstm run on CPU" in w for w in report.warnings)


def test_fp16_without_a_gpu_provider_is_refused_not_left_to_crash_on_cpu(tmp_path: Path) -> None:
    """ORT 1.32 dies with SIGSEGV building a float16 LSTM on the CPU provider; a Jetson target
    (tensorrt → cuda → allow-cpu) on a machine without them must be refused before that."""
    fp16 = load_artifact(write_fp16_artifact(tmp_path / "fp16"))
    target = TargetConfig(type="tensorrt", fallback_providers=["cuda"], precisions=["fp16"])
    with pytest.raises(TargetError, match=r"no available provider can run this fp16 artifact \(CPUExecutionProvider: "):
        create_session(fp16, target)


def test_profiling_fallback_counts_the_same_nodes(fp32: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    """For an ORT without get_provider_graph_assignment_info: counts from the warm-up's profile."""
    monkeypatch.setattr(session_module, "assignment_api_available", lambda: False)
    _, report = create_session(fp32, None)
    assert report.assignment_source == "profiling"
    assert report.nodes_by_provider == {CPU: LSTM_GRAPH}
    assert any("node counts come from profiling" in w for w in report.warnings)


# --- OpenVINO: only in the onnxruntime-openvino environment ------------------------------------


@needs_openvino
@pytest.mark.parametrize("fallback", ["strict", "allow-cpu"])
def test_openvino_runs_every_node_including_the_lstms(fp32: Artifact, fallback: str) -> None:
    _, report = create_session(fp32, TargetConfig(type="openvino", fallback=fallback, options={"device_type": "CPU"}))
    assert report.flavour == "onnxruntime-openvino"
    assert report.nodes_by_provider == {OPENVINO: LSTM_GRAPH}
    assert report.policy_met
    assert report.off_chain_nodes == 0
    assert report.warnings == ()


@needs_openvino
def test_openvino_outputs_equal_cpu_outputs(fp32: Artifact) -> None:
    cpu, _ = create_session(fp32, TargetConfig(type="cpu"))
    ov, _ = create_session(fp32, TargetConfig(type="openvino", fallback="strict"))
    worst = 0.0
    for batch, steps in [(1, 1), (3, 50), (64, 8)]:
        inputs = feeds(batch, steps, seed=batch)
        for a, b in zip(cpu.run(None, inputs), ov.run(None, inputs), strict=True):
            worst = max(worst, float(np.max(np.abs(a - b))))
    # Streaming: one step at a time on OpenVINO, state carried outside, vs the whole sequence on CPU.
    inputs = feeds(4, 30, seed=7)
    y_cpu, hn_cpu, cn_cpu = cpu.run(None, inputs)
    h, c, ys = inputs["h0.lstm"], inputs["c0.lstm"], []
    for t in range(30):
        y, h, c = ov.run(None, {"x": inputs["x"][:, t : t + 1], "h0.lstm": h, "c0.lstm": c})
        ys.append(y)
    for a, b in [(y_cpu, np.concatenate(ys, axis=1)), (hn_cpu, h), (cn_cpu, c)]:
        worst = max(worst, float(np.max(np.abs(a - b))))
    print(f"max |CPU - OpenVINO| = {worst:.3g}")
    assert worst <= 1e-5


@needs_openvino
def test_openvino_reports_and_refuses_a_cpu_only_node(tmp_path: Path) -> None:
    """A manifest that hides an int8 graph: the assignment shows the CPU-only op, strict refuses it."""
    directory = write_int8_artifact(tmp_path / "int8")
    write_manifest(read_manifest(directory).model_copy(update={"precision": "fp32", "quantization": "none"}), directory)
    artifact = load_artifact(directory)
    _, report = create_session(artifact, TargetConfig(type="openvino"))
    assert report.nodes_by_provider[CPU]["DynamicQuantizeLSTM"] == 2
    assert OPENVINO in report.nodes_by_provider
    assert report.off_chain_nodes == sum(report.nodes_by_provider[CPU].values())
    assert any(
        "the recurrent nodes of test-lstm run on CPU, not on OpenVINOExecutionProvider" in w for w in report.warnings
    )
    with pytest.raises(TargetError, match="strict forbids CPU fallback"):
        create_session(artifact, TargetConfig(type="openvino", fallback="strict"))


@needs_openvino
def test_openvino_provider_options_reach_the_provider(fp32: Artifact, tmp_path: Path) -> None:
    """This ORT build does not echo OpenVINO's options (get_provider_options() is empty), so look
    at their effect: the compiled model lands in cache_dir."""
    cache = tmp_path / "ov-cache"
    target = TargetConfig(
        type="openvino", options={"device_type": "CPU", "cache_dir": str(cache), "enable_qdq_optimizer": False}
    )
    _, report = create_session(fp32, target)
    assert report.nodes_by_provider == {OPENVINO: LSTM_GRAPH}
    assert [p.suffix for p in cache.iterdir()] == [".blob"]
