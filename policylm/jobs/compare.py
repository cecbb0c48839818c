"""Compare two (or more) policies or trajectory sets side by side, e.g. before and after
fine-tuning.

Usage: ``python -m policylm.jobs.compare inputs=[runs/evaluate-a, runs/evaluate-b]
labels=[base, tuned]`` or with policy URIs (``inputs=["hf://smollm2-135m?target_return=500",
"hf://smollm2-135m?adapter=runs/sft/adapter&target_return=500"]``), which are played first on
the same env seeds. Writes ``comparison.json``, ``comparison.png`` (return, length, action
distribution) and ``report.md``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobs.common import Stages, make_run_dir, run_job, save_config, write_json
from policylm.platform.config import field, require


@dataclass
class CompareConfig:
    """Side-by-side statistics of policies (played here) or trajectory directories."""

    inputs: list[str] = field(factory=list, doc="trajectory/run directories or policy URIs")
    labels: list[str] = field(factory=list, doc="a name per input (default: A, B, ...)")
    env_id: str = field("CartPole-v1", doc="env for inputs that are policy URIs")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    episodes: int = field(8, doc="episodes per policy URI (the same env seeds for each)")
    num_workers: int = field(2, doc="rollout actors for policy URIs (0 = in-process)")
    envs_per_worker: int = field(8, doc="envs per actor")
    success_return: float | None = field(None, doc="an episode above this return counts as a "
                                         "success (default: 0 on MiniGrid, none elsewhere)")
    seed: int = field(0, doc="base seed")
    out: str = field("", doc="run directory (default runs/compare-<timestamp>)")

    def validate(self) -> None:
        require(len(self.inputs) >= 2, "inputs", "give at least two inputs: inputs=[a, b]")
        require(not self.labels or len(self.labels) == len(self.inputs), "labels",
                "give one label per input, or none")
        require(len(set(self.labels)) == len(self.labels), "labels", "labels must differ")


def is_directory_input(item: str) -> bool:
    return Path(item).is_dir()


def main(cfg: CompareConfig) -> dict:
    from policylm.jobs.build_dataset import trajectory_dir
    from policylm.jobs.evaluate import play
    from policylm.platform import trajectories as tr
    from policylm.platform.evaluation import summarize_steps
    from policylm.platform.reports import markdown_table, plot_comparison

    labels = cfg.labels or [chr(ord("A") + i) for i in range(len(cfg.inputs))]
    run_dir = make_run_dir("compare", cfg.out)
    save_config(cfg, run_dir)
    stages = Stages()
    uris = [(label, item) for label, item in zip(labels, cfg.inputs, strict=True)
            if not is_directory_input(item)]
    if uris:
        with stages("play"):
            play(uris, cfg.env_id, cfg.env_options, cfg.episodes, run_dir, cfg.num_workers,
                 cfg.envs_per_worker, 1, cfg.seed)
    summaries: dict[str, dict] = {}
    played = tr.read_trajectories(run_dir / "trajectories") if uris else None
    for label, item in zip(labels, cfg.inputs, strict=True):
        if is_directory_input(item):
            steps = tr.read_trajectories(trajectory_dir(item))
        else:
            import pyarrow.compute as pc

            steps = played.filter(pc.equal(played.column(tr.SKILL), label))
        success = cfg.success_return
        envs = set(steps.column(tr.ENV_ID).to_pylist())
        if success is None and envs and all(e.startswith("MiniGrid-") for e in envs):
            success = 0.0  # MiniGrid pays a positive reward only for reaching the goal
        summaries[label] = {"input": item, **summarize_steps(steps, success)}
    plot_comparison(summaries, run_dir / "comparison.png", "policylm compare")
    rows = [[label, s["episodes"], s["return"].get("mean"), s["return"].get("std"),
             s["length_mean"], s["reward_per_step"], s.get("success_rate")]
            for label, s in summaries.items()]
    table = markdown_table(["input", "episodes", "mean return", "std", "mean length",
                            "reward/step", "success rate"], rows)
    actions = sorted({a for s in summaries.values() for a in s["actions"]})
    act_rows = [[a, *(summaries[label]["actions"].get(a, 0.0) for label in labels)]
                for a in actions]
    act_table = markdown_table(["action", *labels], act_rows)
    sources = "\n".join(f"- {label}: `{s['input']}`" for label, s in summaries.items())
    (run_dir / "report.md").write_text(
        f"# Comparison\n\n{sources}\n\n{table}\n\n## Action distribution (share of steps)\n\n"
        f"{act_table}\n\n![comparison](comparison.png)\n")
    write_json(run_dir / "comparison.json", summaries)
    return {"run_dir": str(run_dir), "summaries": summaries}


CONFIG = CompareConfig

if __name__ == "__main__":
    run_job("compare", CompareConfig, main, sys.argv[1:])
