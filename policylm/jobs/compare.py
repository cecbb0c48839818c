"""Compare two (or more) policies or trajectory sets side by side, e.g. before and after
fine-tuning.

Usage: ``python -m policylm.jobs.compare inputs=[runs/evaluate-a, runs/evaluate-b]
labels=[base, tuned]`` or with policy URIs (``inputs=["hf://smollm2-135m?target_return=500",
"hf://smollm2-135m?adapter=runs/sft/adapter&target_return=500"]``), which are played first on
the same env seeds. Writes ``comparison.json``, ``comparison.png`` (return, length, action
distribution) and ``report.md``. Runs with achievements (Crafter) also get the achievement rate,
per-achievement success rates (``achievements.png``) and the Crafter score; ``eval_fn=
module:function`` adds the user's own metrics (the function takes one input's trajectory table
and returns a number or a dict of numbers).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.seeds import TEST_SEED, describe_seeds


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
    success_return: float | None = field(None, doc="an episode reaching this return counts as a "
                                         "success (default: 0 on MiniGrid, none elsewhere)")
    high_quality: int = field(3, doc="achievements that count an episode in the achievement "
                              "rate (runs with achievements)")
    eval_fn: str = field("", doc="module:function over one input's trajectory table returning "
                         "a number or {name: number}; joins the report")
    top_actions: int = field(5, doc="most common actions listed per input")
    video: int = field(0, doc="episodes per policy-URI input recorded as a GIF "
                       "(videos/<label>.gif); run directories with videos/ are linked")
    seed: int = field(TEST_SEED, doc="base seed of the env seeds policy URIs play (default: the "
                      "test range, policylm.platform.seeds; 10000: the validation range)")
    out: str = field("", doc="run directory (default runs/compare-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(len(self.inputs) >= 2, "inputs", "give at least two inputs: inputs=[a, b]")
        require(0 <= self.video <= self.episodes, "video", "must be in [0, episodes]")
        require(not self.labels or len(self.labels) == len(self.inputs), "labels",
                "give one label per input, or none")
        require(len(set(self.labels)) == len(self.labels), "labels", "labels must differ")
        require(not self.eval_fn or ":" in self.eval_fn, "eval_fn",
                "write module:function, e.g. eval_fn=mypkg.metrics:survival")


def is_directory_input(item: str) -> bool:
    return Path(item).is_dir()


def load_eval_fn(spec: str) -> Any:
    """``module:function`` -> the function (errors name the spec)."""
    import importlib

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"eval_fn {spec!r} cannot be loaded ({err})") from err
    if not callable(fn):
        raise ValueError(f"eval_fn {spec!r} is not a function")
    return fn


def custom_metrics(fn: Any, steps: Any, spec: str) -> dict[str, float]:
    """Run the user's function and check it returned numbers."""
    value = fn(steps)
    items = value.items() if isinstance(value, dict) else [(spec.partition(":")[2], value)]
    try:
        return {str(k): float(v) for k, v in items}
    except (TypeError, ValueError) as err:
        raise ValueError(f"eval_fn {spec!r} must return a number or {{name: number}}, got "
                         f"{value!r}") from err


def main(cfg: CompareConfig) -> dict:
    from policylm.actors.rollout import play_policies
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.achievements import (
        UNLOCKED,
        achievement_summary,
        achievements_by_seed,
        episodes_with_achievements,
        paired_achievement_difference,
    )
    from policylm.platform.evaluation.metrics import (
        mean_se,
        paired_difference,
        returns_by_seed,
        success_threshold,
        summarize_steps,
    )
    from policylm.platform.evaluation.reports import (
        markdown_table,
        plot_achievements,
        plot_comparison,
    )

    labels = cfg.labels or [chr(ord("A") + i) for i in range(len(cfg.inputs))]
    run_dir = open_run("compare", cfg)
    stages = Stages()
    uris = [(label, item) for label, item in zip(labels, cfg.inputs, strict=True)
            if not is_directory_input(item)]
    if uris:
        with stages("play"):
            play_policies(uris, cfg.env_id, cfg.env_options, cfg.episodes, run_dir,
                          cfg.num_workers, cfg.envs_per_worker, 1, cfg.seed)
    summaries: dict[str, dict] = {}
    by_seed: dict[str, dict] = {}
    unlocked: dict[str, dict] = {}  # achievement runs: each episode's achievements by seed
    user_fn = load_eval_fn(cfg.eval_fn) if cfg.eval_fn else None
    played = tr.read_trajectories(run_dir / "trajectories") if uris else None
    for label, item in zip(labels, cfg.inputs, strict=True):
        if is_directory_input(item):
            steps = tr.read_trajectories(tr.trajectory_dir(item))
        else:
            import pyarrow.compute as pc

            steps = played.filter(pc.equal(played.column(tr.SKILL), label))
        success = cfg.success_return
        envs = sorted(set(steps.column(tr.ENV_ID).to_pylist()))
        if success is None and len(envs) == 1:
            success = success_threshold(envs[0])  # CartPole 475, MiniGrid > 0
        summaries[label] = {"input": item, **summarize_steps(steps, success)}
        by_seed[label] = returns_by_seed(tr.episode_table(steps))
        if UNLOCKED in steps.column_names:
            episodes = episodes_with_achievements(steps)
            summaries[label]["achievements"] = achievement_summary(steps, cfg.high_quality,
                                                                   episodes=episodes)
            unlocked[label] = achievements_by_seed(episodes)
        if user_fn is not None:
            summaries[label]["custom"] = custom_metrics(user_fn, steps, cfg.eval_fn)
    plot_comparison(summaries, run_dir / "comparison.png", "policylm compare")
    first = labels[0]
    for label in labels[1:]:  # on the env seeds both inputs played
        summaries[label][f"difference_vs_{first}"] = paired_difference(by_seed[first],
                                                                        by_seed[label])
        if first in unlocked and label in unlocked:
            summaries[label][f"achievement_difference_vs_{first}"] = \
                paired_achievement_difference(unlocked[first], unlocked[label])
    rows = [[label, s["episodes"], mean_se(s["return"]), s["return"].get("std"),
             s["length_mean"], s["reward_per_step"],
             None if s.get("success_rate") is None else mean_se(
                 {"mean": s["success_rate"], "se": s.get("success_rate_se")}, 2)]
            for label, s in summaries.items()]
    table = markdown_table(["input", "episodes", "mean return ± s.e.", "std", "mean length",
                            "reward/step", "success rate ± s.e."], rows)
    table += "\n\n" + differences_section(summaries, labels, markdown_table)
    actions = sorted({a for s in summaries.values() for a in s["actions"]})
    act_rows = [[a, *(summaries[label]["actions"].get(a, 0.0) for label in labels)]
                for a in actions]
    act_table = markdown_table(["action", *labels], act_rows)
    sources = "\n".join(f"- {label}: `{s['input']}`" for label, s in summaries.items())
    if uris:
        sources += ("\n\nPolicy URIs play the same env seeds. "
                    + describe_seeds(cfg.seed, cfg.episodes))
    top = "\n".join(f"- {label}: " + ", ".join(
        f"{a} {share:.0%}" for a, share in sorted(s["actions"].items(), key=lambda kv: -kv[1])
        [: cfg.top_actions]) for label, s in summaries.items())
    extra = achievements_section(summaries, run_dir, cfg.high_quality, plot_achievements,
                                 markdown_table)
    custom = sorted({k for s in summaries.values() for k in s.get("custom", {})})
    if custom:
        extra += "\n## " + cfg.eval_fn + "\n\n" + markdown_table(
            ["input", *custom], [[label, *(s["custom"].get(k) for k in custom)]
                                 for label, s in summaries.items()]) + "\n"
    extra += videos_section(cfg, labels, uris, run_dir)
    (run_dir / "report.md").write_text(
        f"# Comparison\n\n{sources}\n\n{table}\n\n## Most common actions\n\n{top}\n\n"
        f"## Action distribution (share of steps)\n\n{act_table}\n\n"
        f"![comparison](comparison.png)\n{extra}")
    write_json(run_dir / "comparison.json", summaries)
    return {"run_dir": str(run_dir), "summaries": summaries}


def videos_section(cfg: CompareConfig, labels: list[str], uris: list[tuple[str, str]],
                   run_dir: Path) -> str:
    """With ``video``: each policy-URI input's first seeds recorded here
    (``policylm.platform.evaluation.videos``); and, for run-directory inputs, links to the GIFs
    their own run recorded."""
    from policylm.platform.envs import make_adapter
    from policylm.platform.evaluation.videos import record, video_section
    from policylm.platform.rollout.runner import derive_seed

    if not cfg.video:
        return ""
    adapter = make_adapter(cfg.env_id, **cfg.env_options)
    seeds = [derive_seed(cfg.seed, e) for e in range(cfg.video)]
    videos = {label: record(adapter, uri, None, seeds,
                            run_dir / "videos" / f"{file_name(label)}.gif")
              for label, uri in uris}
    links = [f"- {label}: [{g}]({os.path.relpath(g.resolve(), run_dir.resolve())})"
             for label, item in zip(labels, cfg.inputs, strict=True)
             if is_directory_input(item) for g in sorted(Path(item).glob("videos/*.gif"))]
    return video_section(videos) + ("\n".join(links) + "\n" if links else "")


def file_name(label: str) -> str:
    """A label as a file name: characters other than letters, digits, ``.``, ``-`` and ``_``
    become ``_``."""
    return re.sub(r"[^\w.-]", "_", label)


def differences_section(summaries: dict, labels: list[str], table: Any) -> str:
    """Each input's paired difference from the first on the env seeds both played: mean ±
    standard error, and whether it is within noise (|difference| < 2 s.e.)."""
    from policylm.platform.evaluation.metrics import mean_se

    first = labels[0]
    rows = []
    for label in labels[1:]:
        ach = summaries[label].get(f"achievement_difference_vs_{first}", {})
        for measure, d in [("return", summaries[label][f"difference_vs_{first}"]),
                           ("achievements per episode", ach.get("achievements")),
                           ("Crafter score (bootstrap s.e.)", ach.get("crafter_score"))]:
            if d is None:
                continue
            verdict = {True: "within noise", False: "beyond noise", None: "unknown"}[
                d["within_noise"]]
            rows.append([f"{label} - {first}", measure, d["pairs"],
                         "n/a" if d["mean"] is None else mean_se(d, 2), verdict])
    if not rows:
        return ""
    return ("Paired differences on the env seeds both inputs played (within noise: "
            "|difference| < 2 standard errors):\n\n" + table(
                ["difference", "measure", "pairs", "mean ± s.e.", "verdict"], rows))


def achievements_section(summaries: dict, run_dir: Path, high_quality: int, plot: Any,
                         table: Any) -> str:
    """Report lines and ``achievements.png`` for inputs that record achievements."""
    from policylm.platform.evaluation.reports import success_rate_table

    runs = {label: s["achievements"] for label, s in summaries.items() if "achievements" in s}
    if not runs:
        return ""
    plot({label: a["success_rates"] for label, a in runs.items()},
         run_dir / "achievements.png", "achievement success rates")
    rows = [[label, f"{a['achievement_rate']:.0%}", a["mean_achievements"],
             summaries[label]["return"].get("mean"), summaries[label]["reward_per_step"],
             a.get("crafter_score")] for label, a in runs.items()]
    per = success_rate_table({label: a["success_rates"] for label, a in runs.items()})
    return ("\n## Achievements\n\n" + table(
        ["input", f"achievement rate (>= {high_quality})", "mean achievements", "mean reward",
         "reward/step", "Crafter score (%)"], rows) + "\n\n" + per
        + "\n\n![achievements](achievements.png)\n")


CONFIG = CompareConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("compare", CompareConfig, main, sys.argv[1:])
