"""Export trajectories as a local Minari dataset.

Usage: ``python -m policylm.jobs.export_minari trajectories=runs/collect-.../trajectories
dataset_id=policylm/cartpole-mixed-v0`` (or ``policylm export-minari ...``). The dataset goes to
the Minari store (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) and
``minari.load_dataset(dataset_id)`` reads it back.
"""

from __future__ import annotations

import os
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
    store: str = field("", doc="Minari store directory it is written to (default: "
                       "MINARI_DATASETS_PATH, else ~/.minari/datasets)")
    max_episode_steps: int = field(0, doc="the time limit the episodes were played with, "
                                   "recorded in the dataset's env spec (0: the env's default)")
    ref_min: str = field("", doc="reference return of a random policy (normalised score 0), as "
                         "a number or the skill in the trajectories whose mean return it is, "
                         "e.g. random; empty: none")
    ref_max: str = field("", doc="reference return of an expert (normalised score 100), a number "
                         "or a skill, e.g. expert; give both or neither")

    def validate(self) -> None:
        require(bool(self.trajectories), "trajectories", "give the trajectory directory")
        require(valid_minari_id(self.dataset_id), "dataset_id",
                f"{self.dataset_id!r} must look like namespace/name-v0 (a namespace of two "
                "characters or more, letters, digits, - and _)")
        require(self.max_episode_steps >= 0, "max_episode_steps", "must be >= 0 (0: default)")
        require(bool(self.ref_min) == bool(self.ref_max), "ref_max",
                "give both reference returns (ref_min=random ref_max=expert) or neither")


def valid_minari_id(dataset_id: str) -> bool:
    """Whether Minari accepts ``dataset_id`` (with a version, which an export needs)."""
    from minari.dataset.minari_dataset import DATASET_ID_RE

    match = DATASET_ID_RE.fullmatch(dataset_id)
    return bool(match and match.group("version") is not None)


def reference_return(value: str, steps: object) -> float:
    """``value`` as a number, else the mean episode return of the skill it names in ``steps``
    (a trajectory table); ConfigError naming the skills there when it is neither."""
    from policylm.platform.config import ConfigError
    from policylm.platform.data import trajectories as tr

    try:
        return float(value)
    except ValueError:
        pass
    skills = tr.skill_stats(tr.episode_table(steps))
    if value not in skills:
        raise ConfigError(f"reference {value!r} is neither a number nor a skill of the "
                          f"trajectories ({', '.join(sorted(skills))})")
    return float(skills[value]["return"]["mean"])


def main(cfg: ExportMinariConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.minari_io import export_minari, minari_store
    from policylm.platform.envs import make_adapter

    if cfg.store:  # minari reads its store from the environment (made absolute there)
        os.environ["MINARI_DATASETS_PATH"] = cfg.store
    store = minari_store()
    steps = tr.read_trajectories(tr.trajectory_dir(cfg.trajectories))
    env_ids = sorted(set(steps.column(tr.ENV_ID).to_pylist()))
    if len(env_ids) != 1:
        raise tr.TrajectoryError(f"trajectories mix envs {env_ids}; export one env at a time")
    adapter = make_adapter(env_ids[0])
    refs = None
    if cfg.ref_min:
        refs = (reference_return(cfg.ref_min, steps), reference_return(cfg.ref_max, steps))
        require(refs[1] > refs[0], "ref_max", f"the expert's reference return {refs[1]:g} must "
                f"exceed the random one's {refs[0]:g}")
    ds = export_minari(steps, cfg.dataset_id, adapter.action_space, env_id=env_ids[0],
                       observation_space=adapter.observation_space, description=cfg.description,
                       ref_scores=refs, max_episode_steps=cfg.max_episode_steps or None)
    log.info("Minari dataset %s: %d episodes, %d steps", cfg.dataset_id, ds.total_episodes,
             ds.total_steps)
    return {"dataset_id": cfg.dataset_id, "store": str(store),
            "episodes": ds.total_episodes, "steps": ds.total_steps,
            "ref_scores": None if refs is None else {"min": refs[0], "max": refs[1]}}


CONFIG = ExportMinariConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("export-minari", ExportMinariConfig, main, sys.argv[1:])
