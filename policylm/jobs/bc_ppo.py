"""Demonstrations -> behaviour cloning (RLlib BC) -> PPO, against PPO from scratch and transfer.

Usage: ``python -m policylm.jobs.bc_ppo --config configs/bc_ppo_doorkey.yaml`` (or ``policylm
bc-ppo ...``). Stages:

1. demos: trajectories from ``demo_policy`` (any policy URI, e.g. an LLM), optionally filtered;
   their quality (success rate, mean return) goes into the report. With
   ``baseline_demo_policy`` (e.g. the scripted bot when the demonstrator is an LLM), stages
   1-3 run again for it under ``baseline_demos/``, ``baseline_rllib_demos/``, ``baseline_bc/``.
2. convert: Ray Data maps the trajectory Parquet to RLlib's offline columns (``rllib_demos/``).
3. bc: RLlib BC (new API stack) reads that through Ray Data and trains a PPO-shaped module.
4. transfer source: PPO on ``transfer_env_id`` (same spaces) unless a checkpoint is given.
5. ppo: one Tune trial per (method, seed), the same frame budget each: ``bc-ppo`` (policy
   from BC, value head zeroed), ``bc-ppo-baseline`` (the same from the baseline
   demonstrator's BC), ``scratch`` (random init), ``transfer`` (the source's weights),
   ``external`` (the policy of ``init=``, a ``pytorch://`` or ``rllib://`` URI trained
   elsewhere, copied into a PPO module of its shape; value head zeroed).
6. report: ``return_vs_frames.png``, ``visitation_<method>.png``, ``report.md``,
   ``metrics.json``; TensorBoard logs under ``trials/*/tensorboard``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from policylm.jobkit.runs import Stages, log, open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TRAIN_SEED
from policylm.platform.tracking import TrackingConfig
from policylm.runtime import check_shared_dir, init_ray

METHODS = ("bc-ppo", "scratch", "transfer", "external", "bc-ppo-baseline")


@dataclass
class PPOSettings:
    """PPO settings shared by every trial (RLlib names)."""

    lr: float = field(3e-4, doc="learning rate")
    train_batch_size: int = field(2048, doc="env frames per PPO iteration")
    minibatch_size: int = field(256, doc="PPO minibatch size")
    num_epochs: int = field(4, doc="passes over each iteration's batch")
    entropy_coeff: float = field(0.01, doc="entropy bonus")
    gamma: float = field(0.99, doc="discount")
    lambda_: float = field(0.95, doc="GAE lambda")
    vf_loss_coeff: float = field(0.5, doc="value loss weight")
    hidden: list = field(factory=lambda: [64, 64], doc="MLP hidden sizes (BC uses the same)")
    envs: int = field(8, doc="vectorised envs per trial")


@dataclass
class BcPpoConfig:
    """Demonstrations -> BC -> PPO, with PPO from scratch and transfer as baselines."""

    env_id: str = field("MiniGrid-DoorKey-5x5-v0", doc="Gymnasium env id")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    demo_policy: str = field("python:policylm.platform.envs.minigrid_bot:MiniGridBot",
                             doc="policy URI that demonstrates (hf://.., openai://.., python:..)")
    baseline_demo_policy: str = field(
        "", doc="a second demonstrator (e.g. the scripted bot when demo_policy is an LLM): its "
        "demonstrations go through the same filter, BC and PPO as method 'bc-ppo-baseline'")
    demo_episodes: int = field(100, doc="demonstration episodes to play (each demonstrator)")
    demos: str = field("", doc="existing trajectories (a collect run's trajectories/ directory) "
                       "to use instead of playing demo_policy")
    demo_min_return: float | None = field(None, doc="keep demo episodes with return >= this "
                                          "(MiniGrid: 0.01 keeps successes only)")
    demo_top_k: int = field(0, doc="keep only the k best demo episodes (0 = all)")
    num_workers: int = field(2, doc="rollout actors playing the demos (0 = in this process)")
    bc_steps: int = field(400, doc="BC gradient steps")
    bc_batch_size: int = field(256, doc="BC minibatch size")
    bc_lr: float = field(1e-3, doc="BC learning rate")
    methods: list = field(factory=lambda: list(METHODS[:3]), doc=f"methods to run, of {METHODS}")
    init: str = field("", doc="method 'external': the policy PPO starts from, a pytorch:// "
                      "(plain MLP) or rllib:// URI whose spaces fit env_id")
    transfer_env_id: str = field("MiniGrid-Empty-5x5-v0",
                                 doc="env the transfer baseline is pretrained on (same spaces)")
    transfer_frames: int = field(30_000, doc="PPO frames on transfer_env_id")
    transfer_checkpoint: str = field("", doc="an RLModule directory to transfer from instead")
    seeds: list = field(factory=lambda: [0, 1, 2], doc="seeds per method")
    frames: int = field(150_000, doc="PPO frame budget per method and seed")
    threshold: float = field(0.9, doc="return that counts as solved (MiniGrid: 0.9 of the "
                             "maximum 1.0; CartPole-v1: 450)")
    report_thresholds: list = field(factory=list, doc="more returns the report gives each "
                                    "method's median frames to (threshold is the one judged)")
    ppo: PPOSettings = field(factory=PPOSettings, doc="PPO settings shared by all methods")
    eval_episodes: int = field(20, doc="episodes per evaluation: before PPO (frame 0) and every "
                                       "eval_interval frames, the same env seeds each time")
    eval_interval: int = field(0, doc="frames between evaluations (0: frames / 8); the curve "
                                      "and frames-to-threshold use these evaluations only")
    heldout_fraction: float = field(0.2, doc="share of the kept demo episodes held out of BC "
                                             "(its accuracy is measured on them)")
    max_concurrent_trials: int = field(2, doc="PPO trials at once (one CPU each)")
    tracking: TrackingConfig = field(factory=TrackingConfig, doc="TensorBoard and MLflow "
                                     "(tracking.<key>)")
    out: str = field("", doc="run directory (default runs/bc-ppo-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        require(bool(self.methods) and not bad, "methods", f"use some of {list(METHODS)}")
        external = "external" in self.methods
        require(external or not self.init, "init", "is used by the method 'external': add it "
                "to methods, e.g. methods=[external, scratch]")
        require(not external or self.init.startswith(("pytorch://", "rllib://")), "init",
                "the method 'external' starts PPO from a policy: give init=rllib://<checkpoint> "
                "or init=pytorch://<weights>?class=<module:Class>")
        baseline = "bc-ppo-baseline" in self.methods
        require(baseline == bool(self.baseline_demo_policy), "baseline_demo_policy",
                "is what the method 'bc-ppo-baseline' imitates: give both or neither, e.g. "
                "baseline_demo_policy=python:policylm.platform.envs.babyai_bot:BabyAIBot "
                "methods=[bc-ppo, bc-ppo-baseline, scratch]")
        require(bool(self.seeds) and all(isinstance(s, int) for s in self.seeds), "seeds",
                "give a list of integer seeds, e.g. [0, 1, 2]")
        require(self.demo_episodes >= 1, "demo_episodes", "must be >= 1")
        require(self.demo_top_k >= 0, "demo_top_k", "must be >= 0 (0 keeps all)")
        require(self.bc_steps >= 1, "bc_steps", "must be >= 1")
        require(self.frames >= self.ppo.train_batch_size, "frames",
                f"must be at least one PPO batch ({self.ppo.train_batch_size})")
        require(self.ppo.minibatch_size <= self.ppo.train_batch_size, "ppo.minibatch_size",
                "must not exceed ppo.train_batch_size")
        require(self.eval_episodes >= 1, "eval_episodes", "must be >= 1")
        require(self.max_concurrent_trials >= 1, "max_concurrent_trials", "must be >= 1")


def demonstrations(cfg: BcPpoConfig, run_dir: Path, policy: str, demos: str = "",
                   name: str = "demos") -> tuple[Path, dict]:
    """Play ``policy`` into ``run_dir/name`` (or read the trajectories of ``demos``), filter
    the episodes, and return the kept trajectory directory and the statistics of all and kept
    episodes."""
    import pyarrow.compute as pc

    from policylm.jobs.collect import CollectConfig, PolicySource, collect
    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.datasets import (
        EpisodeFilter,
        keep_rows,
        select_episodes,
        split_of,
    )

    source = Path(demos) if demos else run_dir / name / "trajectories"
    if not demos:
        collect(CollectConfig(env_id=cfg.env_id, env_options=cfg.env_options,
                              policies=[PolicySource("demo", policy)],
                              episodes_per_policy=cfg.demo_episodes, num_workers=cfg.num_workers,
                              envs_per_worker=4, chunk_size=10, seed=TRAIN_SEED),
                run_dir / name)
    steps = tr.read_trajectories(source)
    episodes = tr.episode_table(steps)
    kept = select_episodes(episodes, EpisodeFilter(min_return=cfg.demo_min_return))
    if cfg.demo_top_k:
        kept = kept.sort_by([("return", "descending")]).slice(0, cfg.demo_top_k)
    if kept.num_rows == 0:
        raise ValueError(f"no demonstration episode passed the filter (demo_min_return="
                         f"{cfg.demo_min_return}); lower it or play more demo_episodes")
    ids = kept.column("episode_id").to_pylist()
    held = [e for e in ids if split_of(e, cfg.heldout_fraction) == "validation"]
    if not held and len(ids) >= 2 and cfg.heldout_fraction > 0:
        held = ids[-1:]  # too few episodes for the hash to pick one: hold out the last
    train = [e for e in ids if e not in held]
    out = run_dir / name / "kept"
    tr.write_atomic(keep_rows(steps, train), out / "kept.parquet")
    if held:
        tr.write_atomic(keep_rows(steps, held), run_dir / name / "heldout" / "heldout.parquet")

    def stats(table: object) -> dict:
        returns = table.column("return")
        return {"episodes": table.num_rows, "frames": int(pc.sum(table.column("length")).as_py()),
                "mean_return": float(pc.mean(returns).as_py()),
                "success_rate": float(pc.mean(pc.greater(returns, 0.0).cast("float64")).as_py())}

    return out, {"policy": demos or policy, "all": stats(episodes),
                 "kept": stats(kept), "trained_episodes": len(train),
                 "heldout_episodes": len(held)}


def convert(traj_dir: Path, out: Path) -> Path:
    """Ray Data: trajectory Parquet -> RLlib offline columns (one block per file keeps episodes
    whole)."""
    import ray

    from policylm.platform.data.rllib_offline import to_rllib_rows

    ds = ray.data.read_parquet(str(traj_dir.resolve()), file_extensions=["parquet"])
    ds.map_batches(to_rllib_rows, batch_format="pyarrow", batch_size=None).write_parquet(
        str(out.resolve()))
    return out


def behaviour_cloning(cfg: BcPpoConfig, data: Path, run_dir: Path,
                      heldout: Path | None = None, name: str = "bc") -> dict:
    """RLlib BC over the converted demos into a PPO-shaped module; returns its directory, its
    accuracy on the actions of held-out demonstration episodes (``accuracy``; None without
    any) against chance and the majority action there, and on the training rows."""
    import numpy as np
    import pyarrow.parquet as pq
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

    from policylm.platform.console import progress
    from policylm.platform.data.rllib_offline import action_accuracy
    from policylm.platform.envs import FlatObsEnv
    from policylm.rllib.checkpoints import module_logits_fn
    from policylm.tune.ppo_trials import model_config, module_dir

    env = FlatObsEnv({"env_id": cfg.env_id, "env_options": cfg.env_options})
    bc = (
        BCConfig()
        .environment(observation_space=env.observation_space, action_space=env.action_space)
        # one pre-learner actor of one CPU leaves a CPU for Ray Data's read tasks on 2 cores
        .offline_data(input_=[str(data.resolve())], dataset_num_iters_per_learner=1,
                      map_batches_kwargs={"concurrency": 1, "num_cpus": 1})
        .training(lr=cfg.bc_lr, train_batch_size_per_learner=cfg.bc_batch_size)
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=DefaultPPOTorchRLModule,
            model_config=model_config(cfg.ppo.hidden)))
        .debugging(seed=int(cfg.seeds[0]))
    )
    env.close()
    algo = bc.build_algo()
    losses = []
    for _ in progress(range(cfg.bc_steps), desc="BC steps", unit="step"):
        result = algo.train()
        losses.append(float(result["learners"]["default_policy"]["policy_loss"]))
    path = module_dir(algo.save_to_path(str((run_dir / name).resolve())))
    algo.stop()
    module = RLModule.from_checkpoint(str(path))

    def accuracy(rows: Path) -> dict:
        table = pq.read_table(rows, columns=["obs", "actions"])
        logits = module_logits_fn(module)(np.stack(table.column("obs").to_numpy(
            zero_copy_only=False)))
        actions = table.column("actions").to_numpy()
        counts = np.bincount(actions, minlength=logits.shape[1])
        return {"accuracy": action_accuracy(logits, actions),
                "chance": 1.0 / logits.shape[1], "majority": float(counts.max() / counts.sum()),
                "rows": len(actions)}

    train = accuracy(data)
    held = accuracy(heldout) if heldout is not None else None
    return {"module": str(path), **(held or {"accuracy": None, "chance": train["chance"],
                                             "majority": None, "rows": 0}),
            "train_accuracy": train["accuracy"], "train_rows": train["rows"],
            "loss_first": losses[0], "loss_last": losses[-1]}


def imitate(cfg: BcPpoConfig, run_dir: Path, stages: Stages, policy: str, demos: str,
            key: str, metrics: dict) -> str:
    """One demonstrator's stages (demos, convert, BC) under ``<key>demos``/``<key>bc`` in the
    run and in ``metrics``; returns the BC module's directory."""
    with stages(f"{key}demos"):
        kept, metrics[f"{key}demos"] = demonstrations(cfg, run_dir, policy, demos,
                                                      f"{key}demos")
        log.info("%sdemos: %s", key, metrics[f"{key}demos"])
    with stages(f"{key}convert"):
        data = convert(kept, run_dir / f"{key}rllib_demos")
        held_dir = run_dir / f"{key}demos" / "heldout"
        held = convert(held_dir, run_dir / f"{key}rllib_heldout") if held_dir.is_dir() else None
    with stages(f"{key}bc"):
        bc = metrics[f"{key}bc"] = behaviour_cloning(cfg, data, run_dir, held, f"{key}bc")
        log.info("%sBC accuracy on held-out demos %s (chance %.3f), on training rows %.3f", key,
                 bc["accuracy"], bc["chance"], bc["train_accuracy"])
    return bc["module"]


def trial_spec(cfg: BcPpoConfig, run_dir: Path, method: str, seed: int, init_path: str,
               env_id: str | None = None, frames: int | None = None) -> dict:
    init = {"bc-ppo": "bc", "bc-ppo-baseline": "bc", "scratch": "scratch",
            "transfer": "transfer", "external": "external"}[method]
    name = f"{method}-seed{seed}"
    return {"name": name, "method": method, "env_id": env_id or cfg.env_id,
            "env_options": cfg.env_options if env_id is None else {}, "seed": seed,
            "frames": frames or cfg.frames, "ppo": asdict(cfg.ppo), "init": init,
            "init_path": init_path, "eval_episodes": cfg.eval_episodes,
            "eval_interval": cfg.eval_interval,
            "out_dir": str((run_dir / "trials" / name).resolve())}


def main(cfg: BcPpoConfig) -> dict:
    from policylm.platform.evaluation.bc_ppo_report import write_report
    from policylm.tune.ppo_trials import run_trials
    from policylm.tune.tracking import tune_callbacks

    run_dir = open_run("bc-ppo", cfg)
    stages = Stages()
    init_ray()
    callbacks = tune_callbacks(cfg.tracking, run_dir, "bc-ppo")
    check_shared_dir(str(run_dir), "out")  # RLlib's readers and Tune's trials use it
    metrics: dict = {"env_id": cfg.env_id, "threshold": cfg.threshold, "frames": cfg.frames}
    inits = {"scratch": ""}
    if "external" in cfg.methods:  # first: a policy that does not fit fails before any work
        with stages("external"):
            from policylm.rllib.initial_weights import prepare_init

            inits["external"], model, metrics["external"] = prepare_init(
                cfg.init, cfg.env_id, cfg.env_options, run_dir / "external" / "module")
            metrics["external"]["model_config"] = model
    for method, policy, demos, key in (
            ("bc-ppo", cfg.demo_policy, cfg.demos, ""),
            ("bc-ppo-baseline", cfg.baseline_demo_policy, "", "baseline_")):
        if method in cfg.methods:
            inits[method] = imitate(cfg, run_dir, stages, policy, demos, key, metrics)
    if "transfer" in cfg.methods:
        with stages("transfer_source"):
            source = cfg.transfer_checkpoint
            if not source:
                (res,) = run_trials([trial_spec(cfg, run_dir / "source", "scratch", cfg.seeds[0],
                                                "", cfg.transfer_env_id, cfg.transfer_frames)],
                                    run_dir / "tune", "transfer-source", 1, callbacks)
                source = res["module"]
                metrics["transfer_source"] = {"env_id": cfg.transfer_env_id,
                                              "frames": res["frames"],
                                              "eval_return": res["eval_after"]["mean"]}
            inits["transfer"] = source
    with stages("ppo"):
        specs = [trial_spec(cfg, run_dir, m, s, inits[m]) for m in cfg.methods for s in cfg.seeds]
        for spec in specs:
            if spec["method"] == "external":  # the source's shape, not ppo.hidden
                spec["model_config"] = metrics["external"]["model_config"]
        results = run_trials(specs, run_dir / "tune", "ppo", cfg.max_concurrent_trials,
                             callbacks)
    with stages("report"):
        metrics.update(write_report(cfg, run_dir, results, metrics))
    metrics["stage_seconds"] = stages.seconds
    write_json(run_dir / "metrics.json", with_memory(metrics))
    return {"run_dir": str(run_dir), **metrics}


CONFIG = BcPpoConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("bc-ppo", BcPpoConfig, main, sys.argv[1:])
