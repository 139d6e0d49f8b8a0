"""SKAB: metrics on hand-made vectors, data loading, and a reduced evaluation through
export + the runtime Engine (skipped when the data is absent)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from exporter.evaluation.metrics import Confusion, changepoint_alarms, confusion, nab_score, pooled


def test_confusion_and_skab_f1() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    preds = np.array([0, 1, 0, 0, 0, 1, 1, 1, 1, 0])
    c = confusion(labels, preds)
    assert c == Confusion(tp=4, fp=1, tn=3, fn=2)
    assert c.f1 == pytest.approx(4 / (4 + 1.5))  # TP / (TP + (FP + FN) / 2)
    assert c.far == pytest.approx(1 / 4)
    assert c.mar == pytest.approx(2 / 6)


def test_always_alarm_gives_skabs_baseline() -> None:
    labels = np.r_[np.zeros(463), np.ones(537)]
    c = confusion(labels, np.ones(1000))
    assert (round(c.f1, 2), c.far, c.mar) == (0.70, 1.0, 0.0)


def test_pooling_sums_rows_not_files() -> None:
    a = (np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))  # perfect on a small file
    b = (np.array([0] * 8 + [1] * 8), np.array([1] * 16))  # always-alarm on a larger one
    c = pooled([a, b])
    assert c == Confusion(tp=12, fp=8, tn=0, fn=0)
    assert c.f1 != pytest.approx((confusion(*a).f1 + confusion(*b).f1) / 2)
    with pytest.raises(ValueError, match="must be equal 1-d shapes"):
        confusion(np.zeros(3), np.zeros(4))


def test_changepoint_alarms_are_both_edges() -> None:
    p = np.array([1, 1, 0, 0, 1, 1, 1, 0])
    assert changepoint_alarms(p).nonzero()[0].tolist() == [0, 2, 4, 7]


def test_nab_score_bounds_and_ordering() -> None:
    ts = np.arange(600.0)
    cps = np.zeros(600)
    cps[[100, 400]] = 1

    def score(alarm_rows: list[int], **kw: object) -> float:
        alarms = np.zeros(600)
        alarms[alarm_rows] = 1
        return nab_score([(ts, cps, alarms)], **kw)  # type: ignore[arg-type]

    assert score([100, 400]) == pytest.approx(100.0)
    assert score([]) == 0.0
    early, late = score([105, 405]), score([150, 450])
    assert 100 > early > late > 0
    assert score([105, 405, 250]) < early  # a false alarm costs A_fp
    assert score([105, 405, 250], profile="low_fp") < score([105, 405, 250])
    assert score([250, 300]) < 0  # only false alarms and misses
    # One hit 50 s into its 60 s window, one miss: SKAB's tanh reward, then the rescaling
    # 100 (raw - null) / (perfect - null) with null = n·A_fn, perfect = n·A_tp.
    x = np.linspace(-np.pi / 2, np.pi / 2, 1000)[int(50 / 60 * 1000)]
    reward = -(1.11 / 2) * np.tanh(x) / np.tanh(np.pi / 2) + 1.11 / 2 - 0.11
    assert score([150]) == pytest.approx(100 * (reward - 1 + 2) / 4)
    assert score([150], profile="low_fn") == pytest.approx(100 * (reward - 2 + 4) / 6)


def test_loading_and_split(skab_dir: Path) -> None:
    from exporter.evaluation.skab import SENSORS, TRAIN_ROWS, load_anomaly_free, load_labelled, resolve_skab_dir

    assert resolve_skab_dir(skab_dir) == skab_dir
    files = load_labelled(skab_dir)
    assert len(files) == 34
    assert sum(len(f) - TRAIN_ROWS for f in files) == 23_801  # the README's test-split size
    assert files[0].values.shape[1] == len(SENSORS)
    reduced = load_labelled(skab_dir, 3)
    assert [f.name.split("/")[0] for f in reduced] == ["valve1", "valve2", "other"]
    free = load_anomaly_free(skab_dir)
    assert len(free) == 9405
    assert free.anomaly is None


def test_development_split_is_valve1_and_the_rest_is_held_out(skab_dir: Path) -> None:
    from exporter.evaluation.skab import SkabError, in_split, load_labelled

    dev = load_labelled(skab_dir, split="dev")
    held = load_labelled(skab_dir, split="held-out")
    assert {f.name.split("/")[0] for f in dev} == {"valve1"}
    assert {f.name.split("/")[0] for f in held} == {"valve2", "other"}
    assert len(dev) + len(held) == 34
    assert [f.name for f in load_labelled(skab_dir, 2, split="held-out")] == ["valve2/0", "other/1"]
    assert in_split("valve1/3", "all")
    assert in_split("other/3", "all")
    with pytest.raises(SkabError, match="unknown split"):
        in_split("valve1/3", "test")


def test_eval_help_states_the_split(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "skab", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "valve1/" in out
    assert "held out: valve2/ and other/" in out
    assert "--split" in out
    assert "--baseline-steps" in out
    assert "--level-steps" in out  # the shift detector's knobs, to measure them on the dev split
    assert "--cusum-k" in out
    assert "--cusum-h" in out
    assert "--threshold-z" not in out  # no evaluation-only threshold


def test_a_bad_shift_detector_option_is_one_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from runtime.cli import main

    assert main(["eval", "skab", "--data", str(tmp_path), "--cusum-h", "0"]) == 2
    assert "--cusum-h" in capsys.readouterr().err


def test_missing_data_folder_is_one_clear_error(tmp_path: Path) -> None:
    from exporter.evaluation.skab import SkabError, resolve_skab_dir

    with pytest.raises(SkabError, match="not a SKAB data folder"):
        resolve_skab_dir(tmp_path)


@pytest.mark.torch
def test_reduced_eval_through_export_and_engine_is_causal(skab_dir: Path, tmp_path: Path) -> None:
    """Two files, a small model: int8 artifacts, predictions from the Engine, and cutting a
    file short changes none of the earlier predictions (nothing comes from the future)."""
    from exporter.evaluation.report import metrics
    from exporter.evaluation.skab import TRAIN_ROWS, load_labelled
    from exporter.evaluation.skab_eval import PUBLISHED, run_published, stream
    from runtime.engine.replay import Recording

    files = load_labelled(skab_dir, 2)
    config = replace(PUBLISHED, train=replace(PUBLISHED.train, hidden=16, epochs=10))
    result = run_published(files, config, ["cpu-int8"], work=tmp_path, log=lambda _l: None)
    results = result.precisions["cpu-int8"]
    assert [r.name for r in results] == [f.name for f in files]
    for f, r in zip(files, results, strict=False):
        assert r.scores.shape == (len(f),)
        assert r.raised.shape == (len(f),)
        assert np.isnan(r.scores[0])
        assert np.isfinite(r.scores[1:]).all()
        assert r.threshold > 0
    m = metrics(files, results)
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == sum(len(f) - TRAIN_ROWS for f in files)
    assert 0.0 <= m["f1"] <= 1.0
    assert set(m["nab"]) == {"standard", "low_fp", "low_fn"}

    f = files[0]
    artifact = tmp_path / f.name / "cpu-int8"
    cut = 700
    short = stream(artifact, {f.name: Recording(f.values[:cut], f.ts[:cut])}, config)[f.name]
    np.testing.assert_array_equal(short.raised, results[0].raised[:cut])
    np.testing.assert_allclose(short.scores, results[0].scores[:cut])


@pytest.mark.torch
def test_eval_cli_writes_predictions_json_and_plots(
    skab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    argv = [
        "eval",
        "skab",
        "--data",
        str(skab_dir),
        "--files",
        "2",
        "--setting",
        "published",
        "--target",
        "cpu-int8",
        "--predictions-out",
        str(tmp_path / "pred"),
        "--json",
        str(tmp_path / "m.json"),
        "--plots",
        str(tmp_path / "plots"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Conv-AE" in out
    assert "edgewatch cpu-int8 (published)" in out
    assert "edgewatch cpu-fp32 (published)" in out
    assert "held-out" in out  # --split all reports both parts apart
    assert "dev" in out
    data = json.loads((tmp_path / "m.json").read_text())
    assert set(data["metrics"]) == {"cpu-int8", "cpu-fp32"}
    assert data["setting"] == "published"
    assert set(data["splits"]["cpu-int8"]) == {"dev", "held-out"}
    assert data["config"]["baseline"]["learn_steps"] == 300  # the gateway's default
    pred = tmp_path / "pred" / "valve1" / "0.csv"
    lines = pred.read_text().splitlines()
    assert lines[0] == "datetime,prediction"
    assert len(lines) - 1 == 1147 - 400
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} <= {"0", "1"}
    assert (tmp_path / "pred" / "valve2" / "0.csv").exists()
    png = tmp_path / "plots" / "valve1" / "0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
