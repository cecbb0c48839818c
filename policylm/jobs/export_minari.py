"""Export trajectories as a local Minari dataset.

Usage: ``python -m policylm.jobs.export_minari trajectories=runs/collect-.../trajectories
dataset_id=policylm/cartpole-mixed-v0`` (or ``policylm export-minari ...``). The dataset goes to
the Minari store (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) and
``minari.load_dataset(dataset_id)`` reads it back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from policylm.jobkit.runs import log, run_job
from policylm.platform.config import field, require


@dataclass
class ExportMinariConfig:
    """Write trajectories (one env) as a Minari dataset (arrow format)."""

    trajectories: str = field("", doc="trajectory directory, or a collect run directory")
    dataset_id: str = field("", doc="Minari id, (namespace/)name-v<N>, e.g. policylm/cartpole-v0")
    description: str = field("", doc="dataset description stored in its metadata")

    def validate(self) -> None:
        require(bool(self.trajectories), "trajectories", "give the trajectory directory")
        require("-v" in self.dataset_id, "dataset_id",
                f"{self.dataset_id!r} must look like namespace/name-v0")


def main(cfg: ExportMinariConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.minari_io import export_minari
    from policylm.platform.envs import make_adapter

    steps = tr.read_trajectories(tr.trajectory_dir(cfg.trajectories))
    env_ids = sorted(set(steps.column(tr.ENV_ID).to_pylist()))
    if len(env_ids) != 1:
        raise tr.TrajectoryError(f"trajectories mix envs {env_ids}; export one env at a time")
    adapter = make_adapter(env_ids[0])
    ds = export_minari(steps, cfg.dataset_id, adapter.action_space, env_id=env_ids[0],
                       observation_space=adapter.observation_space, description=cfg.description)
    log.info("Minari dataset %s: %d episodes, %d steps", cfg.dataset_id, ds.total_episodes,
             ds.total_steps)
    return {"dataset_id": cfg.dataset_id, "episodes": ds.total_episodes, "steps": ds.total_steps}


CONFIG = ExportMinariConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("export-minari", ExportMinariConfig, main, sys.argv[1:])
