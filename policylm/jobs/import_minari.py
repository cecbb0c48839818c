"""Import a local Minari dataset into the trajectory schema.

Usage: ``python -m policylm.jobs.import_minari dataset_id=policylm/cartpole-v0 skill=expert``
(or ``policylm import-minari ...``). Writes ``trajectories/minari.parquet`` and
``episodes.parquet`` in the run directory, ready for ``policylm build-dataset``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from policylm.jobkit.runs import open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require


@dataclass
class ImportMinariConfig:
    """Read a Minari dataset from the local store into trajectory Parquet."""

    dataset_id: str = field("", doc="Minari dataset id in the local store (MINARI_DATASETS_PATH)")
    skill: str = field("minari", doc="skill label for the imported episodes")
    out: str = field("", doc="run directory (default runs/import-minari-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.dataset_id), "dataset_id", "give the Minari dataset id")


def main(cfg: ImportMinariConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.minari_io import import_minari

    steps = import_minari(cfg.dataset_id, run_id=cfg.dataset_id, skill=cfg.skill)
    run_dir = open_run("import-minari", cfg)
    tr.write_atomic(steps, run_dir / "trajectories" / "minari.parquet")
    episodes = tr.episode_table(steps)
    tr.write_atomic(episodes, run_dir / "episodes.parquet")
    meta = {"dataset_id": cfg.dataset_id, "episodes": episodes.num_rows, "steps": steps.num_rows,
            "skills": tr.skill_stats(episodes)}
    write_json(run_dir / "metadata.json", meta)
    return {"run_dir": str(run_dir), "trajectories": str(run_dir / "trajectories"), **meta}


CONFIG = ImportMinariConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("import-minari", ImportMinariConfig, main, sys.argv[1:])
