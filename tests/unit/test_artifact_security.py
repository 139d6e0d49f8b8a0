"""A model that fails verification is never served: `load_artifact` refuses, with one clear
ArtifactError, tampered bytes, external-data references (wherever ONNX can hold a tensor),
truncated files, manifests of another format, and manifests that contradict the graph.

Where the test changes the model it usually also re-signs the manifest (sha256 of the new
bytes): that is the harder case, because the sha256 check alone would not catch it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from edge_config.errors import ArtifactError
from edge_config.manifest import StateSpec, read_manifest, sha256_bytes, write_manifest
from runtime.model.artifact import load_artifact
from tests.support.onnx_artifacts import lstm_forecaster_model, write_lstm_artifact


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return write_lstm_artifact(tmp_path / "artifact", features=4, hidden=8, layers=2)


def install(directory: Path, data: bytes | onnx.ModelProto, *, resign: bool = True) -> None:
    """Replace model.onnx; with `resign`, make the manifest's sha256 match the new bytes."""
    raw = data if isinstance(data, bytes) else data.SerializeToString()
    (directory / "model.onnx").write_bytes(raw)
    if resign:
        write_manifest(read_manifest(directory).model_copy(update={"sha256": sha256_bytes(raw)}), directory)


def edit_manifest(directory: Path, **changes: object) -> None:
    raw = json.loads((directory / "manifest.json").read_text())
    raw.update(changes)
    (directory / "manifest.json").write_text(json.dumps(raw))


def refused(directory: Path, *fragments: str) -> str:
    with pytest.raises(ArtifactError) as info:
        load_artifact(directory)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_untouched_artifact_loads(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.model_bytes == (artifact / "model.onnx").read_bytes()
    assert loaded.sha256 == sha256_bytes(loaded.model_bytes)


# --- tampered bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 100, 2000, -1])
def test_one_flipped_byte_is_refused(artifact: Path, position: int) -> None:
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[position] ^= 0x01
    install(artifact, bytes(data), resign=False)
    refused(artifact, "does not match the manifest's", "tampered or replaced")


def test_another_valid_model_in_place_is_refused(artifact: Path) -> None:
    install(artifact, lstm_forecaster_model(seed=1), resign=False)  # same graph, other weights
    refused(artifact, "does not match the manifest's")


# --- external data ----------------------------------------------------------------------


def test_model_saved_with_external_data_is_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    onnx.save_model(
        model,
        artifact / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    assert (artifact / "model.onnx.data").exists()
    install(artifact, (artifact / "model.onnx").read_bytes())
    refused(artifact, "refers to external data", "self-contained")


def _with_external(tensor: TensorProto, location: str = "/etc/passwd") -> TensorProto:
    set_external_data(tensor, location=location, offset=0, length=16)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _const_node(name: str, tensor: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=tensor, name=name)


def test_external_initializer_pointing_outside_is_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    _with_external(model.graph.initializer[3], "../../../../etc/shadow")
    install(artifact, model)
    refused(artifact, "refers to external data")


def test_external_tensor_inside_an_if_subgraph_is_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    branch_tensor = _with_external(numpy_helper.from_array(np.zeros(4, np.float32), "hidden_in_branch"))
    then_graph = helper.make_graph(
        [_const_node("t_out", branch_tensor)],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [4])],
    )
    else_graph = helper.make_graph(
        [_const_node("e_out", numpy_helper.from_array(np.ones(4, np.float32)))],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [4])],
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.append(
        helper.make_node("If", ["cond"], ["unused"], then_branch=then_graph, else_branch=else_graph, name="branch")
    )
    install(artifact, model)
    refused(artifact, "refers to external data", "t_out.value")


def test_external_sparse_initializer_is_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    values = _with_external(numpy_helper.from_array(np.ones(2, np.float32), "sparse_w"))
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "sparse_w_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [8]))
    install(artifact, model)
    refused(artifact, "refers to external data", "sparse_w")


def test_external_tensor_in_a_local_function_is_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    tensor = _with_external(numpy_helper.from_array(np.zeros(2, np.float32), "fn_const"))
    model.functions.append(
        helper.make_function(
            "edgewatch.test", "Helper", [], ["y"], [_const_node("fn_out", tensor)], [helper.make_opsetid("", 17)]
        )
    )
    install(artifact, model)
    refused(artifact, "refers to external data", "fn_out.value")


def test_external_data_entries_without_the_location_flag_are_refused(artifact: Path) -> None:
    model = lstm_forecaster_model()
    tensor = model.graph.initializer[3]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "model.onnx.data"
    assert tensor.data_location == TensorProto.DEFAULT
    install(artifact, model)
    refused(artifact, "refers to external data")


# --- truncated and empty files ----------------------------------------------------------


def test_truncated_file_fails_the_sha256(artifact: Path) -> None:
    data = (artifact / "model.onnx").read_bytes()
    install(artifact, data[: len(data) // 2], resign=False)
    refused(artifact, "does not match the manifest's")


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_and_resigned_file_is_refused(artifact: Path, fraction: float) -> None:
    data = (artifact / "model.onnx").read_bytes()
    install(artifact, data[: int(len(data) * fraction)])
    message = refused(artifact)
    assert any(s in message for s in ("not a valid ONNX model", "no graph nodes", "ONNX checker")), message


def test_file_cut_right_after_the_graph_fails_the_checker(artifact: Path) -> None:
    """Protobuf parses a model cut at a field boundary: only structural checks can catch it."""
    model = lstm_forecaster_model()
    full = model.SerializeToString()
    del model.opset_import[:]  # opset_import is serialized after the graph
    cut = model.SerializeToString()
    assert full.startswith(cut)
    assert len(cut) < len(full)
    install(artifact, cut)
    refused(artifact, "fails the ONNX checker", "opset_import")


def test_empty_model_file_is_refused(artifact: Path) -> None:
    install(artifact, b"")
    refused(artifact, "no graph nodes")


def test_missing_or_unreadable_model(artifact: Path) -> None:
    (artifact / "model.onnx").unlink()
    refused(artifact, "cannot read model")
    (artifact / "model.onnx").mkdir()
    refused(artifact, "cannot read model")


# --- manifests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"format": 2}, "manifest format 2 is not supported"),
        ({"format": "1"}, "manifest format '1' is not supported"),
    ],
)
def test_manifest_of_another_format_is_refused(artifact: Path, content: dict[str, object], fragment: str) -> None:
    edit_manifest(artifact, **content)
    refused(artifact, fragment)


def test_manifest_that_is_not_an_object_or_has_unknown_keys(artifact: Path) -> None:
    (artifact / "manifest.json").write_text("[1, 2]")
    refused(artifact, "manifest format 'list' is not supported")
    (artifact / "manifest.json").write_text("{not json")
    refused(artifact, "unreadable manifest")
    write_lstm_artifact(artifact)
    edit_manifest(artifact, extra_field=1)
    refused(artifact, "invalid manifest at extra_field")


def test_missing_manifest(artifact: Path) -> None:
    (artifact / "manifest.json").unlink()
    refused(artifact, "no manifest")


def test_manifest_names_a_state_input_the_graph_lacks(artifact: Path) -> None:
    manifest = read_manifest(artifact)
    renamed = [manifest.state[0].model_copy(update={"input": "h0.encoder"}), manifest.state[1]]
    write_manifest(manifest.model_copy(update={"state": renamed}), artifact)
    refused(artifact, "graph has no input(s) ['h0.encoder']")


def test_manifest_outputs_in_another_order(artifact: Path) -> None:
    manifest = read_manifest(artifact)
    write_manifest(manifest.model_copy(update={"outputs": ["y", "cn.lstm", "hn.lstm"]}), artifact)
    refused(artifact, "graph outputs ['y', 'hn.lstm', 'cn.lstm'] differ")


def test_manifest_state_shape_differs_from_the_graph(artifact: Path) -> None:
    """The runtime sizes its state slab from the manifest: a wrong hidden size must stop here."""
    manifest = read_manifest(artifact)
    state = [StateSpec.model_validate({**s.model_dump(), "shape": [2, "batch", 16]}) for s in manifest.state]
    write_manifest(manifest.model_copy(update={"state": state}), artifact)
    refused(artifact, "graph and manifest disagree", "h0.lstm is [2, '?', 8] in the graph but [2, 'batch', 16]")


def test_manifest_feature_count_differs_from_the_graph(tmp_path: Path) -> None:
    five = write_lstm_artifact(tmp_path / "five", features=5)
    four = write_lstm_artifact(tmp_path / "four", features=4)
    install(five, (four / "model.onnx").read_bytes())  # a 4-feature graph under a 5-feature manifest
    refused(five, "graph and manifest disagree", "x is ['?', '?', 4] in the graph but ['batch', 'time', 5]")


def test_a_dynamically_quantized_artifact_still_passes(tmp_path: Path) -> None:
    """The added ONNX checker must accept ORT's contrib ops (DynamicQuantizeLSTM, com.microsoft)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    artifact = write_lstm_artifact(tmp_path / "a")
    quantization.quantize_dynamic(
        str(artifact / "model.onnx"), str(tmp_path / "q.onnx"), weight_type=quantization.QuantType.QInt8
    )
    quantized = (tmp_path / "q.onnx").read_bytes()
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load_model_from_string(quantized).graph.node}
    install(artifact, quantized)
    assert load_artifact(artifact).model_bytes == quantized
