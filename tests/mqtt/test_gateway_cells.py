"""The hand-written recurrences of examples/models exported for cpu-int8 and served by the gateway
through a real mosquitto: an nn.LSTMCell loop, an nn.GRUCell loop, a peephole LSTM and a coupled
input/forget gate LSTM (these two declare their ONNX LSTM weights: one LSTM node per step), and
a minimal gated unit (traced as written). Interleaved streams get, sample by sample, what the
artifact gives each stream alone, and what the PyTorch module gives on the whole sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.model.artifact import load_artifact
from runtime.service import Service
from runtime.tools.local_broker import Broker
from tests.support.export_cases import import_models, step_artifact
from tests.support.mqtt_helpers import publish_many
from tests.support.service_helpers import Outcomes, gateway_config, started, wait_counters

pytestmark = [pytest.mark.mqtt, pytest.mark.torch]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
MODELS = [
    ("cell_loops.py", "LSTMCellLoop"),
    ("cell_loops.py", "GRUCellLoop"),
    ("peephole.py", "PeepholeLSTM"),
    ("coupled_gate.py", "CoupledGateLSTM"),
    ("minimal_gru.py", "MinimalGRU"),
]
STREAMS, STEPS, FEATURES = 3, 25, 4


def _export(tmp: Path, file: str, name: str) -> tuple[object, Path, np.ndarray]:
    """(PyTorch module, cpu-int8 artifact, the raw calibration data [T, F])."""
    import torch

    torch.manual_seed(0)
    model = getattr(import_models(EXAMPLES / file), name)().eval()
    torch.save(model.state_dict(), tmp / "w.pt")
    raw = np.random.default_rng(1).normal([10.0, -3.0, 0.5, 200.0], [2.0, 0.5, 0.1, 20.0], (300, FEATURES))
    (tmp / "normal.csv").write_text("a;b;c;d\n" + "\n".join(";".join(f"{v:.5f}" for v in row) for row in raw) + "\n")
    args = ["--model", f"{EXAMPLES / file}:{name}", "--weights", str(tmp / "w.pt"), "--target", "cpu-int8"]
    assert main(["export", *args, "--calibration", str(tmp / "normal.csv"), "--out", str(tmp / "art")]) == 0
    return model, tmp / "art", raw


@pytest.mark.parametrize(("file", "name"), MODELS, ids=[name for _, name in MODELS])
def test_a_cell_model_runs_in_the_gateway(broker: Broker, tmp_path: Path, file: str, name: str) -> None:
    import torch

    model, artifact, raw = _export(tmp_path, file, name)
    manifest = load_artifact(artifact).manifest
    assert manifest.time_steps == 1
    assert manifest.normalization is not None
    hook = Outcomes()
    service = started(Service(gateway_config(broker, artifact), outcome_hook=hook))
    try:
        data = {f"m{i}": raw[i * STEPS : (i + 1) * STEPS] + 0.1 * i for i in range(STREAMS)}
        items = [
            (f"plant/{stream}/telemetry", f'{{"seq": {t}, "values": {values[t].tolist()}}}'.encode())
            for t in range(STEPS)
            for stream, values in data.items()
        ]
        publish_many(broker, items)
        snap = wait_counters(service, lambda c: c.processed == len(items))
        assert snap.steps == len(items)
        assert not snap.rejected
        tolerance = next(p.tolerance for p in manifest.parity if p.gate == "quantized-vs-float")
        for stream, values in data.items():
            x = manifest.normalization.apply(values)[None]
            alone, _ = step_artifact(artifact, x)
            served = hook.outputs(stream)
            np.testing.assert_allclose(served, alone[0], atol=1e-5)
            with torch.no_grad():
                sequence = model(torch.from_numpy(x)).numpy()[0]  # type: ignore[operator]
            assert np.max(np.abs(served - sequence)) < tolerance
    finally:
        service.stop()
