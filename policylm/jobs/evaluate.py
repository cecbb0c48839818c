"""Evaluate a policy at several target returns, in parallel on rollout actors.

Usage: ``python -m policylm.jobs.evaluate --config configs/evaluate_cartpole.yaml
policy=hf://smollm2-135m`` (or ``policylm evaluate ...``). Every target plays the same env seeds.
Writes ``trajectories/``, ``metrics.json`` (per target: mean, std, median, min, max of the actual
return; Spearman correlation of target and actual; invalid-action rate), ``report.md`` and
``target_vs_actual.png``; with ``video=N``, ``videos/<target>.gif``: the first N seeds played
again with the frames drawn (``policylm.platform.evaluation.videos``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.actors.rollout import play_policies
from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require, resume_field
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TEST_SEED, describe_seeds, seed_range


@dataclass
class EvaluateConfig:
    """Play a policy at each target return and measure the actual return."""

    policy: str = field("hf://smollm2-135m", doc="policy URI; target_return is set per target")
    env_id: str = field("CartPole-v1", doc="Gymnasium env id")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    targets: list[float] = field(factory=lambda: [25.0, 100.0, 250.0, 500.0],
                                 doc="target returns to prompt with")
    episodes: int = field(8, doc="episodes per target (the same env seeds for every target)")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(8, doc="envs per actor, acted for in one batched engine call "
                                 "(fewer when the episodes would leave an actor idle)")
    torch_threads: int = field(1, doc="torch threads per actor (raise it with one worker)")
    seed: int = field(TEST_SEED, doc="base seed of the env seeds (default: the test range, "
                      "policylm.platform.seeds; 10000 is the validation range, for choosing "
                      "settings)")
    success_return: float | None = field(
        None, doc="return that counts as success (default per env: CartPole-v1 475, MiniGrid "
                  "and BabyAI any positive reward; else none)")
    dataset: str = field("", doc="optional trajectories the policy was trained on: their "
                         "return range is shaded in the plot")
    shots: int = field(0, doc="few-shot examples in an hf:// policy's prompt (its shots=): "
                       "steps of shots_from's best episodes, seeded, listed in metrics.json")
    shots_from: str = field("", doc="trajectory or run directory the examples are drawn from")
    video: int = field(0, doc="episodes per target recorded as a GIF (videos/<target>.gif, "
                       "linked from report.md): the evaluation's first seeds played again in "
                       "this process, with target, step and return drawn on every frame")
    video_fps: int = field(15, doc="frames per second of the videos")
    out: str = field("", doc="run directory (default runs/evaluate-<timestamp>)")
    overwrite: bool = overwrite_field()
    resume: bool = resume_field("episodes already played are kept, the rest played")

    def validate(self) -> None:
        require(len(self.targets) >= 1, "targets", "give at least one target return")
        require(self.episodes >= 1, "episodes", "must be >= 1")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.envs_per_worker >= 1, "envs_per_worker", "must be >= 1")
        require(0 <= self.video <= self.episodes, "video", "must be in [0, episodes]")
        require(not self.shots or bool(self.shots_from), "shots_from",
                "give the trajectory or run directory the examples come from")


def report(cfg: EvaluateConfig, metrics: dict) -> str:
    from policylm.platform.evaluation.metrics import arena_note, mean_se
    from policylm.platform.evaluation.reports import markdown_table, thought_section
    from policylm.platform.evaluation.videos import video_section

    rows = []
    for label, m in metrics["targets"].items():
        rate = m.get("success_rate")
        rows.append([m["target"], m.get("count", 0), mean_se(m), m.get("std"), m.get("median"),
                     m.get("min"), m.get("max"),
                     None if rate is None else mean_se({"mean": rate,
                                                        "se": m.get("success_rate_se")}, 2),
                     metrics["invalid_rate"].get(label)])
    table = markdown_table(["target", "episodes", "mean ± s.e.", "std", "median", "min", "max",
                            "success rate ± s.e.", "invalid-action rate"], rows)
    rho_m, rho_e = metrics["spearman_means"], metrics["spearman_episodes"]
    success = metrics["success_return"]
    return (f"# Evaluation: `{cfg.policy}` on `{cfg.env_id}`\n\n{table}\n\n"
            f"Spearman(target, mean actual) = {'n/a' if rho_m is None else f'{rho_m:.3f}'}; "
            f"over episodes = {'n/a' if rho_e is None else f'{rho_e:.3f}'}. Every target plays "
            f"the same env seeds. {describe_seeds(cfg.seed, cfg.episodes)} s.e.: standard "
            "error of the mean" + arena_note(metrics["targets"]) + ". Success: return >= "
            f"{'n/a (give success_return)' if success is None else f'{success:g}'}; "
            "invalid-action rate n/a: the policy does not count invalid answers.\n\n"
            "![target vs actual](target_vs_actual.png)\n"
            + video_section({f"target {metrics['targets'][label]['target']:g}": v
                             for label, v in (metrics.get("videos") or {}).items()})
            + thought_section(metrics.get("thoughts") or {}))


def main(cfg: EvaluateConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.metrics import (
        success_threshold,
        target_label,
        target_metrics,
    )
    from policylm.platform.evaluation.reports import plot_target_vs_actual, sample_thoughts
    from policylm.platform.policies import absolute_paths, split_uri, with_params

    run_dir = open_run("evaluate", cfg)
    stages = Stages()
    policy = with_params(cfg.policy, shots=cfg.shots, shots_from=cfg.shots_from) \
        if cfg.shots else cfg.policy
    policies = [(target_label(t), absolute_paths(with_params(policy, target_return=t)))
                for t in cfg.targets]
    with stages("play"):
        stats = play_policies(policies, cfg.env_id, cfg.env_options, cfg.episodes, run_dir,
                              cfg.num_workers, cfg.envs_per_worker, cfg.torch_threads, cfg.seed)
    steps = tr.read_trajectories(run_dir / "trajectories")
    episodes = tr.episode_table(steps)
    success = cfg.success_return if cfg.success_return is not None \
        else success_threshold(cfg.env_id)
    metrics = target_metrics(episodes, cfg.targets, success)
    metrics["seeds"] = {"base": cfg.seed, "range": seed_range(cfg.seed)}
    # None: the policy does not count invalid answers (scripted, network, score-mode policies
    # count 0 invalid of N, generate-mode ones their fallbacks)
    metrics["invalid_rate"] = {label: stats.get(uri, {}).get("invalid_rate")
                               for label, uri in policies}
    thoughts = sample_thoughts(steps)  # think mode: what the policy wrote before acting
    if thoughts:
        metrics["thoughts"] = thoughts
        # answers without an action line, as the policies counted them (None: not counted)
        metrics["no_action_rate"] = {label: stats.get(uri, {}).get("no_action_rate")
                                     for label, uri in policies}
    data_range = None
    if cfg.dataset:

        data = tr.episode_table(tr.read_trajectories(tr.trajectory_dir(cfg.dataset)))
        returns = data.column("return").to_pylist()
        data_range = (min(returns), max(returns))
        metrics["training_returns"] = tr.return_stats(returns)
    plot_target_vs_actual(metrics, run_dir / "target_vs_actual.png",
                          f"{cfg.policy.split('?')[0]} on {cfg.env_id}", data_range)
    if cfg.shots:  # the examples every prompt held, drawn as the policy drew them
        import dataclasses

        from policylm.platform.policies.shots import pick_shots

        _, _, params = split_uri(policy)
        metrics["shots"] = [dataclasses.asdict(s) for s in pick_shots(
            cfg.shots_from, cfg.shots, int(params.get("shots_seed", 0)))]
    if cfg.video:
        with stages("video"):
            metrics["videos"] = record_videos(cfg, policies, run_dir)
    metrics["stage_seconds"] = stages.seconds
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(report(cfg, metrics))
    return {"run_dir": str(run_dir), **metrics}


def record_videos(cfg: EvaluateConfig, policies: list[tuple[str, str]], run_dir: Path) -> dict:
    """``{target label: record(...)}``: the first ``cfg.video`` evaluation seeds per target."""
    from policylm.platform.envs import make_adapter
    from policylm.platform.evaluation.videos import record
    from policylm.platform.rollout.runner import derive_seed

    adapter = make_adapter(cfg.env_id, **cfg.env_options)
    seeds = [derive_seed(cfg.seed, e) for e in range(cfg.video)]
    return {label: record(adapter, uri, target, seeds, run_dir / "videos" / f"{label}.gif",
                          cfg.video_fps)
            for (label, uri), target in zip(policies, cfg.targets, strict=True)}


CONFIG = EvaluateConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("evaluate", EvaluateConfig, main, sys.argv[1:])
