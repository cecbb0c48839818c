"""Collect trajectories from policies of several skill levels in parallel with rollout actors.

Usage: ``python -m policylm.jobs.collect --config configs/collect_cartpole.yaml`` (or
``policylm collect ...``). Writes ``trajectories/*.parquet`` (one row per step, one file per
chunk of episodes), ``episodes.parquet`` (one row per episode) and ``metadata.json`` (per-skill
counts, return and length statistics). The same config gives the same data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require, resume_field
from policylm.platform.memory import with_memory
from policylm.runtime import init_ray


@dataclass
class PolicySource:
    """A policy to collect from and the skill label its episodes get."""

    skill: str = field(doc="skill label written to the skill column (weak, medium, expert...)")
    uri: str = field(doc="policy URI: random:, mix:<uri>?eps=p, rllib://DIR, file://PATH ...")


@dataclass
class CollectConfig:
    """Collect episodes from each policy with a group of rollout actors."""

    env_id: str = field("CartPole-v1", doc="Gymnasium env id")
    env_options: dict = field(factory=dict,
                              doc="options for the env adapter (e.g. max_episode_steps)")
    policies: list[PolicySource] = field(
        factory=lambda: [PolicySource("weak", "random:")],
        doc="list of {skill, uri}; each policy plays episodes_per_policy episodes",
    )
    episodes_per_policy: int = field(20, doc="episodes per policy")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(8, doc="envs each actor steps together (one policy call per step)")
    chunk_size: int = field(8, doc="episodes per task and per Parquet file")
    seed: int = field(0, doc="base seed; episode seeds derive from it, the plan is deterministic")
    gamma: float = field(1.0, doc="discount of the rtg column (1.0 = undiscounted)")
    kill_after_episodes: int = field(0, doc="testing only: one worker exits after N episodes")
    out: str = field("", doc="run directory (default runs/collect-<timestamp>)")
    overwrite: bool = overwrite_field()
    resume: bool = resume_field("chunks already written are kept, the rest played")

    def validate(self) -> None:
        require(bool(self.policies), "policies", "give at least one {skill, uri}")
        skills = [p.skill for p in self.policies]
        require(self.episodes_per_policy >= 1, "episodes_per_policy", "must be >= 1")
        require(self.num_workers >= 0, "num_workers", "must be >= 0 (0 runs in-process)")
        require(self.envs_per_worker >= 1, "envs_per_worker", "must be >= 1")
        require(self.chunk_size >= 1, "chunk_size", "must be >= 1")
        require(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        for s in skills:
            require(s.replace("_", "").isalnum(), "policies.skill",
                    f"{s!r} must be letters, digits or _ (it names files)")


def collect(cfg: CollectConfig, run_dir: Path) -> dict:
    """Play the plan with a :class:`RolloutGroup` and write trajectories, episodes, metadata."""
    from policylm.actors.rollout import RolloutGroup, RolloutSpec, check_policies
    from policylm.platform.console import progress
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import plan_chunks

    adapter = make_adapter(cfg.env_id, **cfg.env_options)
    check_policies([p.uri for p in cfg.policies], adapter)
    sources = [(p.skill, p.uri) for p in cfg.policies]
    chunks = plan_chunks(sources, cfg.episodes_per_policy, cfg.seed, cfg.chunk_size)
    traj_dir = run_dir / "trajectories"
    spec = RolloutSpec(cfg.env_id, cfg.env_options, cfg.envs_per_worker, cfg.gamma,
                       str(traj_dir.resolve()), run_dir.name, cfg.kill_after_episodes)
    if cfg.num_workers:
        init_ray()
    group = RolloutGroup(spec, num_workers=cfg.num_workers)
    total = len(sources) * cfg.episodes_per_policy
    with progress(total=total, desc="episodes", unit="ep") as bar:
        def on_chunk(chunk, summaries):
            bar.update(len(chunk.specs))
            bar.set_postfix(last=chunk.chunk_id)

        try:
            group.run(chunks, on_chunk)
            workers = group.workers()
        finally:
            group.shutdown()
    steps = tr.read_trajectories(traj_dir)
    episodes = tr.episode_table(steps)
    tr.write_atomic(episodes, run_dir / "episodes.parquet")
    metadata = {
        "env_id": cfg.env_id,
        "agents": adapter.num_agents,  # > 1: episodes, returns and skill statistics are per agent
        "episodes": episodes.num_rows,
        "steps": steps.num_rows,
        "policies": {s: u for s, u in sources},
        # where the rollout workers ran (process and Ray node ids)
        "workers": workers,
        "episodes_played": group.episodes_played,  # the rest were read back (resume)
        "skills": tr.skill_stats(episodes),
        "overall_return": tr.return_stats(episodes.column("return").to_pylist()),
    }
    write_json(run_dir / "metadata.json", with_memory(metadata))
    return metadata


def main(cfg: CollectConfig) -> dict:
    run_dir = open_run("collect", cfg)
    stages = Stages()
    with stages("collect"):
        metadata = collect(cfg, run_dir)
    return {"run_dir": str(run_dir), "trajectories": str(run_dir / "trajectories"),
            "stage_seconds": stages.seconds, **metadata}


CONFIG = CollectConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("collect", CollectConfig, main, sys.argv[1:])
