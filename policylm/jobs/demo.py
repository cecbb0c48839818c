"""The main job on the embedded defaults (what ``make demo`` runs).

Usage: ``python -m policylm.jobs.demo`` (or ``policylm demo``; ``--config configs/demo.yaml``
and ``key=value`` overrides, e.g. ``collect.episodes_per_policy=8``).

Stages: train weak/medium/expert PPO checkpoints with RLlib -> collect from them (plus a random
policy) in parallel with rollout actors -> build the return-conditioned dataset with Ray Data ->
``report.md``. Later stages (SFT, evaluation) join as they land.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from policylm.jobs import build_dataset, collect, train_experts
from policylm.jobs.common import Stages, make_run_dir, run_job, save_config, write_json
from policylm.platform.config import field, require


@dataclass
class DemoConfig:
    """Experts -> collection -> return-conditioned dataset, on one env."""

    env_id: str = field("CartPole-v1", doc="Gymnasium env id (used by every stage)")
    include_random: bool = field(True, doc="also collect from a random policy (skill 'random')")
    experts: train_experts.TrainExpertsConfig = field(
        factory=train_experts.TrainExpertsConfig, doc="PPO expert training (experts.<key>)")
    collect: collect.CollectConfig = field(
        factory=collect.CollectConfig, doc="collection (collect.<key>; policies come from experts)")
    dataset: build_dataset.BuildDatasetConfig = field(
        factory=build_dataset.BuildDatasetConfig, doc="dataset building (dataset.<key>)")
    out: str = field("", doc="run directory (default runs/demo-<timestamp>)")

    def validate(self) -> None:
        require(not self.collect.kill_after_episodes, "collect.kill_after_episodes",
                "fault injection is for tests; leave it 0 in the demo")
        self.experts.validate()
        self.collect.validate()


def report(metadata: dict, experts: dict, stats: dict, seconds: dict) -> str:
    """Markdown summary of the run."""
    lines = ["# policylm demo", "", f"Env: `{metadata['env_id']}`", "", "## Experts (RLlib PPO)",
             "", "| skill | iteration | greedy return (mean) |", "|---|---|---|"]
    for skill, e in experts.items():
        lines.append(f"| {skill} | {e['iteration']} | {e['eval']['mean']:.1f} |")
    lines += ["", "## Collected episodes", "",
              "| skill | episodes | mean | median | min | max | std |",
              "|---|---|---|---|---|---|---|"]
    for skill, s in metadata["skills"].items():
        r = s["return"]
        lines.append(f"| {skill} | {s['episodes']} | {r['mean']:.1f} | {r['median']:.1f} | "
                     f"{r['min']:.0f} | {r['max']:.0f} | {r['std']:.1f} |")
    lines += ["", "## Dataset", ""]
    for name, c in stats["splits"].items():
        lines.append(f"- {name}: {c['rows']} rows, {c.get('episodes', 0)} episodes, "
                     f"per skill {c.get('rows_per_skill', {})}")
    lines += ["", "## Stage times (s)", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"


def main(cfg: DemoConfig) -> dict:
    run_dir = make_run_dir("demo", cfg.out)
    save_config(cfg, run_dir)
    stages = Stages()
    with stages("train_experts"):
        ex = train_experts.main(dataclasses.replace(
            cfg.experts, env_id=cfg.env_id, out=str(run_dir / "experts")))
    policies = [collect.PolicySource(skill, e["uri"]) for skill, e in ex["experts"].items()]
    if cfg.include_random:
        policies.insert(0, collect.PolicySource("random", "random:"))
    with stages("collect"):
        col = collect.main(dataclasses.replace(
            cfg.collect, env_id=cfg.env_id, policies=policies, out=str(run_dir / "collect")))
    with stages("build_dataset"):
        ds = build_dataset.main(dataclasses.replace(
            cfg.dataset, trajectories=col["trajectories"], out=str(run_dir / "dataset")))
    metrics = {"experts": ex["experts"], "collect": {k: col[k] for k in ("episodes", "steps",
               "skills")}, "dataset": ds["splits"], "stage_seconds": stages.seconds}
    write_json(run_dir / "metrics.json", metrics)
    (run_dir / "report.md").write_text(report(col, ex["experts"], ds, stages.seconds))
    print(f"policylm demo: report in {run_dir / 'report.md'}")
    return {"run_dir": str(run_dir), **metrics}


CONFIG = DemoConfig

if __name__ == "__main__":
    run_job("demo", DemoConfig, main, sys.argv[1:])
