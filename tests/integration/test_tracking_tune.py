"""Ray Tune's own tracking integrations as the Tune jobs use them: one MLflow run and one offline
W&B run per trial, each holding what the trial reported."""

import json

import pytest

from policylm.platform.tracking import TrackingConfig
from policylm.tune.tracking import tune_callbacks

pytestmark = pytest.mark.integration


def test_each_trial_has_its_mlflow_and_wandb_run(ray_local, tmp_path, wandb_records):
    from mlflow import MlflowClient
    from ray import tune

    def trial(config: dict) -> None:  # pickled by value: the workers cannot import tests
        for i in range(3):
            tune.report({"score": config["x"] * 10 + i + 0.25})

    callbacks = tune_callbacks(TrackingConfig(wandb=True), tmp_path, "sweep")
    grid = tune.Tuner(trial, param_space={"x": tune.grid_search([1, 2])},
                      run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="t",
                                                verbose=0, callbacks=callbacks)).fit()
    assert not grid.errors
    info = json.loads((tmp_path / "tracking.json").read_text())
    client = MlflowClient(info["mlflow"]["uri"])
    runs = client.search_runs([client.get_experiment_by_name("policylm").experiment_id])
    scores = sorted(sorted(m.value for m in client.get_metric_history(r.info.run_id, "score"))
                    for r in runs)
    assert scores == [[10.25, 11.25, 12.25], [20.25, 21.25, 22.25]]
    assert {r.data.tags["policylm.job"] for r in runs} == {"sweep"}
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one offline W&B run per trial, in the run directory
    # each run's last score (12.25 or 22.25) ends in "2.25": wait until it is written
    records = [wandb_records(run, wait_for=(b"2.25",)) for run in runs]
    for x in (1, 2):  # each trial's three scores are in one of the runs
        assert sum(all(f"{x * 10 + i}.25".encode() in r for i in range(3)) for r in records) == 1
