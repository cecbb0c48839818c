"""Experiment tracking of the Tune jobs (``bc-ppo``, ``sweep``) through Ray Tune's own
integrations: Tune writes every trial's TensorBoard events itself (its ``TBXLoggerCallback``,
under the trial's directory), and :func:`tune_callbacks` adds its MLflow callback, one MLflow run
per trial, where ``policylm.platform.tracking`` says (``tracking.json`` in the run directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policylm.platform.tracking import TRACKING_FILE, TrackingConfig, mlflow_uri


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
    (Path(run_dir) / TRACKING_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return callbacks
