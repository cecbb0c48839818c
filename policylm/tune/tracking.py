"""Experiment tracking of the Tune jobs (``bc-ppo``, ``sweep``) through Ray Tune's own
integrations: Tune writes every trial's TensorBoard events itself (its ``TBXLoggerCallback``,
under the trial's directory), and :func:`tune_callbacks` adds its MLflow callback, one MLflow run
per trial, where ``policylm.platform.tracking`` says (``tracking.json`` in the run directory),
and with ``tracking.wandb`` one offline W&B run per trial (:func:`wandb_callback`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policylm.platform.tracking import (
    TrackingConfig,
    flat,
    mlflow_uri,
    numbers,
    start_wandb,
    write_info,
)


def tune_callbacks(cfg: TrackingConfig, run_dir: Path, job: str) -> list[Any]:
    """The Tune callbacks that track a ``job`` writing ``run_dir``."""
    info: dict[str, Any] = {"job": job}
    callbacks: list[Any] = []
    if cfg.tensorboard:
        info["tensorboard"] = str((Path(run_dir) / "tune").resolve())  # each trial's directory
    if cfg.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = mlflow_uri(cfg, run_dir)
        callbacks.append(MLflowLoggerCallback(
            tracking_uri=uri, experiment_name=cfg.experiment, save_artifact=False,
            tags={"policylm.job": job, "policylm.run_dir": str(Path(run_dir).resolve())}))
        info["mlflow"] = {"uri": uri, "experiment": cfg.experiment, "runs": "one per trial"}
    if cfg.wandb:
        callbacks.append(wandb_callback(cfg.experiment, Path(run_dir), job))
        info["wandb"] = {"dir": str((Path(run_dir) / "wandb").resolve()), "mode": "offline",
                         "project": cfg.experiment, "runs": "one per trial"}
    write_info(run_dir, info)
    return callbacks


def wandb_callback(project: str, run_dir: Path, job: str) -> Any:
    """A Tune callback that keeps one offline W&B run per trial, in this (the driver's) process.
    Ray's ``WandbLoggerCallback`` logs from an actor that Ray kills once ``wandb.finish``
    returns; in offline mode that lost a trial's records now and then (a run file of its header
    only), so the runs live here instead, where nothing is killed under them."""
    from ray.tune import Callback

    wandb = start_wandb()

    class WandbTrials(Callback):
        def __init__(self) -> None:
            self.runs: dict[str, Any] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.runs[trial.trial_id] = wandb.init(
                mode="offline", project=project, group=run_dir.name, job_type=job,
                name=str(trial), dir=str(run_dir.resolve()), config=flat(trial.config),
                reinit="create_new")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if trial.trial_id in self.runs:
                self.runs[trial.trial_id].log(numbers(result),
                                              step=int(result.get("training_iteration", 0)))

        def _end(self, trial: Any, failed: bool) -> None:
            run = self.runs.pop(trial.trial_id, None)
            if run is not None:
                run.finish(exit_code=1 if failed else 0)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self._end(trial, failed=False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, failed=True)

    return WandbTrials()
