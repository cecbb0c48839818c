"""Experiment tracking: a training job's config and metrics, as they happen, in TensorBoard event
files and an MLflow run, besides the run directory's ``metrics.json``.

One :class:`Tracker` per job, in the driver: the jobs on Ray Train forward rank 0's logs to it
(``policylm.jobkit.ray_train``), the others log from their own loop, and Tune jobs use Ray Tune's
MLflow callback (``policylm.tune.tracking``). Where it went is written to ``tracking.json`` in the
run directory. With ``tracking.wandb`` a Weights & Biases run is written too, offline (nothing
leaves the machine until ``wandb sync``). MLflow goes to ``tracking.mlflow_uri``, else
``MLFLOW_TRACKING_URI``, else a local SQLite store, ``<run dir>/mlflow.db`` (``mlflow ui
--backend-store-uri sqlite:///<run dir>/mlflow.db``, with the full ``mlflow`` package, shows
it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from policylm.platform.config import field

log = logging.getLogger("policylm")
TRACKING_FILE = "tracking.json"
MLFLOW_DB = "mlflow.db"


@dataclass
class TrackingConfig:
    """Where a training job's metrics go besides metrics.json."""

    tensorboard: bool = field(True, doc="TensorBoard event files in <run dir>/tensorboard")
    mlflow: bool = field(True, doc="an MLflow run with the job's settings and metrics")
    mlflow_uri: str = field("", doc="MLflow tracking URI (http://host:5000, sqlite:///f.db, "
                            "...); default MLFLOW_TRACKING_URI, else SQLite <run dir>/mlflow.db")
    experiment: str = field("policylm", doc="MLflow experiment name (and W&B project)")
    wandb: bool = field(False, doc="also a Weights & Biases run in offline mode, in <run dir>/"
                        "wandb (upload later with `wandb sync`); needs the wandb package")


# the user's MLFLOW_TRACKING_URI, as the process started: MLflow's own callbacks set the variable
# while they run, which must not send a later job of the same process to an earlier job's store
USER_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


def mlflow_uri(cfg: TrackingConfig, run_dir: Path) -> str:
    """The tracking URI ``cfg`` means for a run in ``run_dir``: its own, else the user's
    ``MLFLOW_TRACKING_URI``, else a SQLite store in the run directory."""
    return cfg.mlflow_uri or USER_URI or f"sqlite:///{(Path(run_dir) / MLFLOW_DB).resolve()}"


def start_wandb() -> Any:
    """The ``wandb`` module (every run policylm starts is offline), or a ConfigError saying
    how to install it."""
    from policylm.platform.config import ConfigError

    try:
        import wandb
    except ImportError:
        raise ConfigError("tracking.wandb=true needs the wandb package: pip install "
                          "'policylm[wandb]' (or pip install wandb), or drop tracking.wandb"
                          ) from None
    os.environ.setdefault("WANDB_SILENT", "true")  # its banner, not its errors
    return wandb


def write_info(run_dir: Path, info: dict) -> None:
    """Where a job's tracking went, as ``tracking.json`` in its run directory."""
    (Path(run_dir) / TRACKING_FILE).write_text(json.dumps(info, indent=2) + "\n")


def flat(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: dotted keys, values as text of at most 500 chars."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = json.dumps(value, default=str)[:500]
    return out


def numbers(metrics: dict) -> dict[str, float]:
    """The finite numbers (and booleans) of ``metrics``, nested keys dotted; text, None and NaN
    are left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in numbers(value).items()})
        elif isinstance(value, Real) and math.isfinite(value):  # numpy scalars too
            out[key] = float(value)
    return out


class Tracker:
    """The job's TensorBoard writer and MLflow run; :meth:`log` sends metrics to both, and
    :meth:`close` ends the run (``FAILED`` when the job raised)."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, job: str, params: dict) -> None:
        self.writer: Any = None
        self.client: Any = None
        self.wandb: Any = None
        self.run_id = ""
        self.failures = 0  # metrics MLflow did not take (a server that stopped answering)
        try:
            self._open(cfg, Path(run_dir), job, params)
        except BaseException:
            self.close(failed=True)  # what opened before the failure
            raise

    def _open(self, cfg: TrackingConfig, run_dir: Path, job: str, params: dict) -> None:
        info: dict[str, Any] = {"job": job}
        name = f"{job}:{run_dir.name}"
        if cfg.wandb:
            self.wandb = start_wandb().init(
                mode="offline", project=cfg.experiment, dir=str(run_dir.resolve()), name=name,
                config=flat(params), job_type=job)
            info["wandb"] = {"dir": str(Path(self.wandb.dir).parent), "mode": "offline",
                             "project": cfg.experiment}
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            info["tensorboard"] = str((run_dir / "tensorboard").resolve())
        if cfg.mlflow:
            from mlflow import MlflowClient
            from mlflow.entities import Param

            uri = mlflow_uri(cfg, run_dir)
            self.client = MlflowClient(uri)
            found = self.client.get_experiment_by_name(cfg.experiment)
            experiment = (found.experiment_id if found is not None
                          else self.client.create_experiment(cfg.experiment))
            run = self.client.create_run(experiment, run_name=name,
                                         tags={"policylm.job": job,
                                               "policylm.run_dir": str(run_dir.resolve())})
            self.run_id = run.info.run_id
            items = [Param(k, v) for k, v in flat(params).items()]
            for i in range(0, len(items), 100):  # MLflow takes 100 params per batch
                self.client.log_batch(self.run_id, params=items[i:i + 100])
            info["mlflow"] = {"uri": uri, "experiment": cfg.experiment,
                              "experiment_id": experiment, "run_id": self.run_id}
        self.info = info
        write_info(run_dir, info)

    def log(self, metrics: dict, step: int) -> None:
        """Log the finite numbers of ``metrics`` at ``step``."""
        values = numbers(metrics)
        if not values:
            return
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(step))
                                                            for k, v in values.items()])
            except Exception as err:  # a tracking server down costs a warning, not the job
                self.failures += 1
                if self.failures in (1, 10, 100):
                    log.warning("MLflow: step %s not logged (%s); %d so far, the job goes on",
                                step, err, self.failures)
        if self.wandb is not None:
            self.wandb.log(values, step=int(step))

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.client is not None:
            if self.run_id:
                self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
            self.client = None
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)
            self.wandb = None


@contextmanager
def track(cfg: TrackingConfig, run_dir: Path, job: str, params: dict) -> Iterator[Tracker]:
    """``with track(cfg, run_dir, job, params) as tracker:`` a :class:`Tracker`, closed at the
    end; its MLflow run is marked ``FAILED`` if the body raised."""
    tracker = Tracker(cfg, run_dir, job, params)
    try:
        yield tracker
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()
