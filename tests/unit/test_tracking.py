"""The tracker: metrics to TensorBoard and an MLflow run, read back with MLflow's client."""

import json

import pytest

from policylm.platform.tracking import Tracker, TrackingConfig, flat, numbers, track


def test_numbers_and_params_by_hand():
    assert numbers({"loss": 1.5, "n": 3, "ok": True, "none": None, "nan": float("nan"),
                    "name": "x", "curve": [1, 2], "eval": {"mean": 2.0, "se": None}}) == {
        "loss": 1.5, "n": 3.0, "ok": 1.0, "eval.mean": 2.0}
    assert flat({"lr": 0.1, "lora": {"rank": 8}, "targets": [1, 2], "empty": {}}) == {
        "lr": "0.1", "lora.rank": "8", "targets": "[1, 2]", "empty": "{}"}


def test_a_run_holds_the_metrics_and_settings(tmp_path):
    from mlflow import MlflowClient

    with track(TrackingConfig(), tmp_path, "sft", {"lr": 0.001, "lora": {"rank": 4}}) as t:
        t.log({"loss": 2.0, "lr": 1e-3}, 1)
        t.log({"loss": 1.5, "note": "text"}, 2)
    info = json.loads((tmp_path / "tracking.json").read_text())
    assert info["mlflow"]["uri"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    client = MlflowClient(info["mlflow"]["uri"])
    run = client.get_run(info["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["policylm.job"] == "sft"
    assert run.data.params == {"lr": "0.001", "lora.rank": "4"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5)]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_failed_job_marks_its_run_failed_and_nothing_when_off(tmp_path):
    from mlflow import MlflowClient

    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError), track(TrackingConfig(tensorboard=False), tmp_path / "a",
                                            "grpo", {}) as t:
        t.log({"reward": 0.5}, 0)
        raise RuntimeError("boom")
    info = json.loads((tmp_path / "a" / "tracking.json").read_text())
    run = MlflowClient(info["mlflow"]["uri"]).get_run(info["mlflow"]["run_id"])
    assert run.info.status == "FAILED" and not (tmp_path / "a" / "tensorboard").exists()
    (tmp_path / "b").mkdir()
    off = Tracker(TrackingConfig(tensorboard=False, mlflow=False), tmp_path / "b", "sft", {})
    off.log({"loss": 1.0}, 0)
    off.close()
    assert json.loads((tmp_path / "b" / "tracking.json").read_text()) == {"job": "sft"}
    assert not (tmp_path / "b" / "mlflow.db").exists()


def test_a_wandb_run_is_written_offline(tmp_path, wandb_records):
    cfg = TrackingConfig(tensorboard=False, mlflow=False, wandb=True)
    with track(cfg, tmp_path, "sft", {"lr": 0.00123}) as t:
        t.log({"loss": 0.3333333333333333}, 1)
        t.log({"loss": 0.1428571428571428}, 2)
    info = json.loads((tmp_path / "tracking.json").read_text())
    assert info["wandb"]["mode"] == "offline"
    expected = (b"loss", b"0.3333333333333333", b"0.1428571428571428", b"0.00123")
    records = wandb_records(tmp_path, wait_for=expected)
    for text in expected:
        assert text in records, text


def test_a_later_job_keeps_to_its_own_store(tmp_path, monkeypatch):
    """MLflow's callbacks set MLFLOW_TRACKING_URI while they run; a later job of the same
    process still writes to its own run directory (the user's variable, read at start, counts)."""
    from policylm.platform import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'earlier.db'}")
    assert tracking.mlflow_uri(TrackingConfig(), tmp_path / "run") == \
        f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    monkeypatch.setattr(tracking, "USER_URI", "http://mlflow.example:5000")
    assert tracking.mlflow_uri(TrackingConfig(), tmp_path / "run") == "http://mlflow.example:5000"
    assert tracking.mlflow_uri(TrackingConfig(mlflow_uri="sqlite:///x.db"), tmp_path) == \
        "sqlite:///x.db"


def test_a_tracking_server_that_stops_answering_costs_a_warning(tmp_path, caplog):
    with track(TrackingConfig(tensorboard=False), tmp_path, "sft", {}) as t:
        t.client.log_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))
        t.log({"loss": 1.0}, 1)
        t.log({"loss": 0.5}, 2)
    assert t.failures == 2
    assert "MLflow: step 1 not logged (down); 1 so far" in caplog.text
