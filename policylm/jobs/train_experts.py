"""Train PPO with RLlib on an env and save checkpoints at chosen iterations as skill levels.

Usage: ``python -m policylm.jobs.train_experts --config configs/train_experts_cartpole.yaml``
(or ``policylm train-experts ...``). Writes ``checkpoints/<skill>/`` (RLlib checkpoints, usable
as ``rllib://<dir>``), ``experts.json`` (URI, iteration, greedy evaluation return per skill),
``collect.yaml`` (a ready config for ``policylm collect``) and ``metrics.json``.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policylm.jobkit.runs import Stages, log, open_run, run_job, settings, write_json
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.platform.tracking import TrackingConfig
from policylm.runtime import init_ray


@dataclass
class TrainExpertsConfig:
    """Train PPO with RLlib; keep the checkpoints nearest each skill's return."""

    env_id: str = field("CartPole-v1", doc="Gymnasium env id")
    env_options: dict = field(factory=dict,
                              doc="options for the env adapter (e.g. max_episode_steps)")
    select: str = field("return", doc="'iteration': skills map to PPO iterations; 'return': to "
                        "target greedy returns, each skill keeps the checkpoint nearest its target")
    skills: dict = field(factory=lambda: {"weak": 25, "medium": 150, "expert": 500},
                         doc="skill label -> iteration (select=iteration) or target return")
    max_iterations: int = field(40, doc="select=return: stop here even if a target is not met")
    tolerance: float = field(0.05, doc="select=return: stop once every skill is within this share "
                             "of the largest target")
    num_env_runners: int = field(1, doc="RLlib env-runner actors (each takes one "
                                 "CPU; 0: the learner's process samples)")
    envs_per_runner: int = field(4, doc="vectorised envs per env runner")
    train_batch_size: int = field(2000, doc="env steps per PPO iteration")
    minibatch_size: int = field(250, doc="PPO minibatch size")
    num_epochs: int = field(6, doc="PPO epochs per iteration")
    lr: float = field(3e-4, doc="learning rate")
    hidden: list = field(factory=lambda: [64, 64], doc="MLP hidden layer sizes")
    ppo: dict = field(factory=dict, doc="more PPOConfig.training() settings, e.g. {gamma: 0.99, "
                      "lambda_: 0.95, vf_clip_param: 10000} (MuJoCo returns need a wide value "
                      "clip; RLlib's default is 10)")
    eval_episodes: int = field(5, doc="greedy evaluation episodes per iteration (select=return: "
                               "on the live module) and per kept checkpoint")
    seed: int = field(0, doc="seed for PPO and evaluation")
    tracking: TrackingConfig = field(factory=TrackingConfig, doc="TensorBoard and MLflow "
                                     "(tracking.<key>)")
    out: str = field("", doc="run directory (default runs/train-experts-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.skills), "skills", "give at least one skill: {weak: 1, expert: 25}")
        require(self.select in ("iteration", "return"), "select", "use 'iteration' or 'return'")
        for skill, v in self.skills.items():
            if self.select == "iteration":
                require(isinstance(v, int) and v >= 1, f"skills.{skill}",
                        f"iteration must be an integer >= 1, got {v!r}")
            else:
                require(isinstance(v, int | float), f"skills.{skill}",
                        f"target return must be a number, got {v!r}")
        require(self.max_iterations >= 1, "max_iterations", "must be >= 1")
        require(self.train_batch_size >= self.minibatch_size, "minibatch_size",
                "must not exceed train_batch_size")
        require(self.eval_episodes >= 1, "eval_episodes", "must be >= 1")
        own = {"train_batch_size_per_learner": "train_batch_size",
               "minibatch_size": "minibatch_size", "num_epochs": "num_epochs", "lr": "lr"}
        known = {k for f in _ppo_training() for k in inspect.signature(f).parameters} \
            if self.ppo else set()
        for key in self.ppo:
            require(key not in own, f"ppo.{key}", f"set it with {own.get(key)}= instead")
            require(key in known, f"ppo.{key}", "is not a PPOConfig.training() setting; known: "
                    + ", ".join(sorted(known - {"self", "kwargs"})))


def _ppo_training() -> tuple[Any, Any]:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.rllib.algorithms.ppo import PPOConfig

    return PPOConfig.training, AlgorithmConfig.training


def evaluate_uri(env_id: str, env_options: dict, uri: str, episodes: int, seed: int,
                 module: Any = None) -> dict:
    """Mean/median/min/max return of ``uri`` over ``episodes`` episodes, in-process;
    ``module``: a live RLModule played greedily under the name ``uri`` (not loaded from it)."""
    from policylm.platform.data.trajectories import episode_table, return_stats
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.base import network_policy
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks
    from policylm.rllib.checkpoints import checked_logits_fn

    adapter = make_adapter(env_id, **env_options)
    runner = EpisodeRunner(adapter, num_envs=min(episodes, 8))
    if module is not None:
        runner.policies[uri] = network_policy(adapter, checked_logits_fn(module, adapter, uri))
    (chunk,) = plan_chunks([("eval", uri)], episodes, seed, chunk_size=episodes)
    table = runner.run(chunk.specs, run_id="eval")
    runner.close()
    return return_stats(episode_table(table).column("return").to_pylist())


def main(cfg: TrainExpertsConfig) -> dict:
    from ray.rllib.algorithms.ppo import PPOConfig

    from policylm.platform.console import progress
    from policylm.platform.envs import FlatObsEnv
    from policylm.platform.tracking import track

    run_dir = open_run("train-experts", cfg)
    stages = Stages()
    init_ray()
    ppo = (
        PPOConfig()
        .environment(FlatObsEnv, env_config={"env_id": cfg.env_id, "env_options": cfg.env_options})
        .env_runners(num_env_runners=cfg.num_env_runners,
                     num_envs_per_env_runner=cfg.envs_per_runner)
        .training(train_batch_size_per_learner=cfg.train_batch_size,
                  minibatch_size=cfg.minibatch_size, num_epochs=cfg.num_epochs, lr=cfg.lr,
                  **cfg.ppo)
        .rl_module(model_config={"fcnet_hiddens": list(cfg.hidden)})
        .debugging(seed=cfg.seed)
    )
    env_cfg = (cfg.env_id, cfg.env_options)
    experts: dict[str, dict] = {}
    history = []
    iterations = (max(cfg.skills.values()) if cfg.select == "iteration" else cfg.max_iterations)
    tracked = track(cfg.tracking, run_dir, "train-experts", settings(cfg))
    with tracked as tracker, stages("train"):
        algo = ppo.build_algo()
        bar = progress(range(1, iterations + 1), desc="PPO iterations", unit="it")
        for it in bar:
            result = algo.train()
            ret = result.get("env_runners", {}).get("episode_return_mean")
            row = {"iteration": it, "episode_return_mean": ret}
            if cfg.select == "iteration":
                keep = [s for s, v in cfg.skills.items() if v == it]
            else:  # evaluate greedily, keep for each skill the checkpoint nearest its target
                # (the env runners' module: the learner's weights, synced after the update;
                # saved only when a skill keeps it)
                row["eval"] = evaluate_uri(*env_cfg, f"rllib-live://iteration-{it}",
                                           cfg.eval_episodes, cfg.seed + 10_000,
                                           module=algo.get_module())["mean"]
                keep = [s for s, target in cfg.skills.items()
                        if s not in experts
                        or abs(row["eval"] - target) < abs(experts[s]["eval_mean"] - target)]
            history.append(row)
            learner = result.get("learners", {}).get("default_policy", {})
            tracker.log({**row, **{f"learner.{k}": learner[k] for k in (
                "policy_loss", "vf_loss", "entropy", "mean_kl_loss") if k in learner}}, it)
            bar.set_postfix(ret=f"{ret:.1f}" if ret is not None else "n/a",
                            eval=f"{row.get('eval', float('nan')):.1f}")
            for skill in keep:
                path = Path(algo.save_to_path(str((run_dir / "checkpoints" / skill).resolve())))
                experts[skill] = {"uri": f"rllib://{path}", "iteration": it,
                                  "train_return_mean": ret, "eval_mean": row.get("eval")}
            scale = cfg.tolerance * max(abs(v) for v in cfg.skills.values())
            if cfg.select == "return" and len(experts) == len(cfg.skills) and all(
                abs(experts[s]["eval_mean"] - t) <= scale for s, t in cfg.skills.items()
            ):
                break
        algo.stop()
    with stages("evaluate"):
        for skill, info in experts.items():
            info["eval"] = evaluate_uri(*env_cfg, info["uri"], cfg.eval_episodes,
                                        cfg.seed + 20_000)
            log.info("%s (iteration %d): greedy return %.1f", skill, info["iteration"],
                     info["eval"]["mean"])
    write_json(run_dir / "experts.json", experts)
    collect_cfg = {
        "env_id": cfg.env_id,
        "env_options": cfg.env_options,
        "policies": [{"skill": s, "uri": e["uri"]} for s, e in experts.items()],
    }
    (run_dir / "collect.yaml").write_text(
        f"# policylm collect --config {run_dir / 'collect.yaml'}\n" + yaml.safe_dump(collect_cfg)
    )
    metrics = {"experts": experts, "history": history, "stage_seconds": stages.seconds}
    write_json(run_dir / "metrics.json", with_memory(metrics))
    return {"run_dir": str(run_dir), **metrics}


CONFIG = TrainExpertsConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("train-experts", TrainExpertsConfig, main, sys.argv[1:])
