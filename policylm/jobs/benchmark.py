"""Play a policy on a benchmark suite (BALROG's BabyAI or Crafter tasks) on held-out seeds.

Usage: ``policylm benchmark suite=balrog-babyai policy=hf://smollm2-135m`` (or ``python -m
policylm.jobs.benchmark ...``). Each task plays ``episodes`` env seeds (the same seeds for every
policy benchmarked with the same ``seed``), on rollout actors. Writes ``tasks/<task>/trajectories``,
``metrics.json`` (per task and overall: BALROG's progression in percent with its standard error,
the invalid-action rate), ``report.md`` (the run next to BALROG's published figures) and
``scores.png``. With ``baseline=<an earlier benchmark run>`` (the same suite and seeds, for
example the policy before RL), both also give the paired difference this run minus it, per task
and overall, over the env seeds both played.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from policylm.actors.rollout import play_policies
from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.platform.config import field, overwrite_field, require, resume_field
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TEST_SEED, describe_seeds

if TYPE_CHECKING:
    import pyarrow as pa

    from policylm.platform.evaluation.suites import Task


@dataclass
class BenchmarkConfig:
    """Score a policy on a benchmark suite (BALROG's BabyAI or Crafter tasks), held-out seeds"""

    policy: str = field("hf://smollm2-135m", doc="policy URI")
    suite: str = field("balrog-babyai", doc="balrog-babyai (5 BabyAI tasks), babyai-mixed-test "
                       "(the same tasks, held-out colour-object pairs) or balrog-crafter")
    episodes: int | None = field(None, doc="episodes per task (default: the suite's, 10 as in "
                                 "BALROG)")
    tasks: list[str] = field(factory=list, doc="play only these tasks of the suite (default all)")
    target_return: float | None = field(
        None, doc="target return for return-conditioned LLM policies (default: the policy's)")
    env_options: dict = field(
        factory=dict, doc="env options for every task, over the suite's own (e.g. {memory: "
                          "true}: BabyAI's objects seen before, as the policy was trained with; "
                          "not BALROG's observation, which report.md says)")
    train_data: list[str] = field(
        factory=list, doc="trajectory runs the policy was trained on: the job refuses to score "
                          "on any env seed they hold (held-out seeds, checked)")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(5, doc="envs per actor, acted for in one batched engine call")
    torch_threads: int = field(1, doc="torch threads per actor (raise it with one worker)")
    seed: int = field(TEST_SEED, doc="base seed of the held-out env seeds (default: the test "
                      "range, policylm.platform.seeds; 10000: the validation range, for choosing "
                      "settings)")
    baseline: str = field("", doc="run directory of an earlier benchmark of this suite on the "
                          "same seed: the paired difference this run minus it, per task and "
                          "overall, over the episodes both played")
    video: int = field(0, doc="episodes per task recorded as a GIF (videos/<task>.gif, linked "
                       "from report.md): the task's first seeds played again in this process")
    video_frames: int = field(1000, doc="with video: frames kept per episode, from its start "
                              "(the episode still plays to its end; a Crafter frame is ~7 kB "
                              "of GIF)")
    out: str = field("", doc="run directory (default runs/benchmark-<timestamp>)")
    overwrite: bool = overwrite_field()
    resume: bool = resume_field("tasks and episodes already played are kept, the rest played")

    def validate(self) -> None:
        from policylm.platform.evaluation.suites import SUITES

        require(self.suite in SUITES, "suite", f"one of {', '.join(SUITES)}")
        names = [t.name for t in SUITES[self.suite].tasks]
        unknown = sorted(set(self.tasks) - set(names))
        require(not unknown, "tasks", f"{unknown} not in {self.suite}: {', '.join(names)}")
        require(self.episodes is None or self.episodes >= 1, "episodes", "must be >= 1")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.envs_per_worker >= 1, "envs_per_worker", "must be >= 1")
        require(self.video >= 0 and (self.episodes is None or self.video <= self.episodes),
                "video", "must be in [0, episodes] (episodes per task recorded)")
        require(self.video_frames >= 1, "video_frames", "must be >= 1")


def training_seeds(runs: list[str]) -> set[int]:
    """Every env seed of the given trajectory runs (directories or their trajectories/)."""
    from policylm.platform.data import trajectories as tr

    seeds: set[int] = set()
    for run in runs:
        table = tr.read_trajectories(tr.trajectory_dir(run), columns=[tr.SEED])
        seeds |= set(table.column(tr.SEED).to_pylist())
    return seeds


def task_progressions(steps: pa.Table, metric: str) -> dict[int, float]:
    """Each episode's progression by its env seed, in episode-id order."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.achievements import episodes_with_achievements
    from policylm.platform.evaluation.suites import progression

    if metric == "achievements":
        rows = episodes_with_achievements(steps).to_pylist()
        return {r[tr.SEED]: progression(metric, r["return"], r["n_achievements"])
                for r in sorted(rows, key=lambda r: r[tr.EPISODE_ID])}
    rows = tr.episode_table(steps).to_pylist()
    return {r[tr.SEED]: progression(metric, r["return"])
            for r in sorted(rows, key=lambda r: r[tr.EPISODE_ID])}


def check_baseline(cfg: BenchmarkConfig, tasks: list[Task]) -> Path | None:
    """The baseline run's directory, checked before any play: a finished benchmark of this
    suite on this seed that played every task of this run."""
    import yaml

    from policylm.platform.config import ConfigError

    if not cfg.baseline:
        return None
    base = Path(cfg.baseline).expanduser().resolve()
    if not (base / "metrics.json").is_file() or not (base / "config.yaml").is_file():
        raise ConfigError(f"baseline: {base} is not a finished benchmark run (no metrics.json "
                          "and config.yaml); give the run directory of `policylm benchmark`")
    theirs = yaml.safe_load((base / "config.yaml").read_text()) or {}
    for key in ("suite", "seed"):
        if theirs.get(key) != getattr(cfg, key):
            raise ConfigError(f"baseline: {base} was run with {key}={theirs.get(key)!r}, this "
                              f"run has {key}={getattr(cfg, key)!r}; a paired difference needs "
                              "the same suite and seeds")
    missing = [t.name for t in tasks if not (base / "tasks" / t.name / "trajectories").is_dir()]
    if missing:
        raise ConfigError(f"baseline: {base} did not play {', '.join(missing)}; benchmark "
                          "those tasks there first or pass tasks= to play only the others")
    return base


def against_baseline(base: Path, progressions: dict[str, dict[int, float]],
                     metric: str) -> dict:
    """This run minus the baseline, in points of progression: per task over the seeds both
    played, and overall over every (task, seed) pair (:func:`paired_difference`)."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.metrics import paired_difference

    theirs = {task: task_progressions(tr.read_trajectories(base / "tasks" / task /
                                                           "trajectories"), metric)
              for task in progressions}

    def points(by_task: dict[str, dict[int, float]], tasks: list[str]) -> dict:
        return {(t, s): 100 * v for t in tasks for s, v in by_task[t].items()}

    per_task = {t: paired_difference(points(theirs, [t]), points(progressions, [t]))
                for t in progressions}
    overall = paired_difference(points(theirs, list(progressions)),
                                points(progressions, list(progressions)))
    return {"run": str(base), "tasks": per_task, "overall": overall}


def report(cfg: BenchmarkConfig, metrics: dict) -> str:
    from policylm.platform.evaluation.metrics import mean_se
    from policylm.platform.evaluation.reports import markdown_table
    from policylm.platform.evaluation.suites import get_suite
    from policylm.platform.evaluation.videos import video_section

    suite = get_suite(cfg.suite)
    rows = [[name, t["balrog_name"], t["episodes"], mean_se(t, 1), t["return_mean"],
             t["length_mean"], t["invalid_rate"], t.get("steps_per_s")]
            for name, t in metrics["tasks"].items()]
    overall = metrics["overall"]
    rows.append(["**overall**", "", overall["episodes"], mean_se(overall, 1), None, None,
                 metrics["invalid_rate"], None])
    per_task = markdown_table(["task", "BALROG task", "episodes", "progression % ± s.e.",
                               "mean return", "mean length", "invalid-action rate",
                               "env steps/s"], rows)
    ref_rows = [[r.model, mean_se({"mean": r.score, "se": r.se}, 1), r.source]
                for r in suite.references]
    ref_rows.append([f"**this run** `{cfg.policy}`", mean_se(overall, 1), "metrics.json"])
    refs = markdown_table(["model", f"{suite.name} % ± s.e.", "source"], ref_rows)
    held = metrics["held_out"]
    measure = ("success (reward > 0)" if suite.metric == "success"
               else "the share of the 22 Crafter achievements unlocked")
    return (f"# Benchmark: `{cfg.policy}` on {suite.name}\n\n{per_task}\n\n"
            f"## Next to the published figures\n\n{refs}\n\n"
            f"Progression: {measure}, in percent; the overall score pools every "
            "episode, its s.e. is BALROG's (population std / sqrt(episodes)). "
            f"{describe_seeds(cfg.seed)} The same env seeds for every task and every policy; "
            + ("none of them is in the training data given (checked)." if held else
               "held out by construction (no train_data given to check against).")
            + f"\n\nProtocol: {suite.notes}"
            + (f" Every task here also had env_options={cfg.env_options}, which BALROG's "
               "observation does not have." if cfg.env_options else "")
            + "\n\n![scores](scores.png)\n"
            + achievements_section(metrics["tasks"])
            + baseline_section(metrics.get("baseline"))
            + video_section(metrics.get("videos") or {}))


def achievements_section(tasks: dict[str, dict]) -> str:
    """The report's per-achievement success rates (share of a task's episodes that unlocked
    each) and Crafter score, for tasks scored by achievements (empty for the others)."""
    from policylm.platform.evaluation.reports import success_rate_table

    played = {name: t["achievements"] for name, t in tasks.items() if "achievements" in t}
    if not played:
        return ""
    table = success_rate_table(
        {name: s["success_rates"] for name, s in played.items()},
        [["**Crafter score**", *(s.get("crafter_score") for s in played.values())],
         ["mean achievements", *(s["mean_achievements"] for s in played.values())]])
    return ("\n## Achievements\n\nThe share of episodes that unlocked each achievement, and the "
            "Crafter score (exp of the mean of ln(1 + rate %) over the 22, minus 1):\n\n"
            + table + "\n")


def baseline_section(diff: dict | None) -> str:
    """The report's table of paired differences from the baseline run (empty without one)."""
    from policylm.platform.evaluation.metrics import mean_se
    from policylm.platform.evaluation.reports import markdown_table

    if not diff:
        return ""
    rows = [[name, d["pairs"], mean_se(d, 1), d["within_noise"]]
            for name, d in [*diff["tasks"].items(), ("**overall**", diff["overall"])]]
    return ("\n## Against the baseline\n\nThis run minus `" + diff["run"] + "` on the env seeds "
            "both played, in points of progression (mean ± s.e. of the paired differences):\n\n"
            + markdown_table(["task", "pairs", "difference ± s.e.", "within noise (< 2 s.e.)"],
                             rows) + "\n")


def main(cfg: BenchmarkConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.envs.crafter import ACHIEVEMENTS
    from policylm.platform.evaluation.achievements import achievement_summary
    from policylm.platform.evaluation.reports import plot_scores
    from policylm.platform.evaluation.suites import get_suite, suite_scores
    from policylm.platform.evaluation.videos import record
    from policylm.platform.policies import absolute_paths, with_params
    from policylm.platform.rollout.runner import derive_seed

    suite = get_suite(cfg.suite)
    episodes = cfg.episodes or suite.episodes
    tasks = [t for t in suite.tasks if not cfg.tasks or t.name in cfg.tasks]

    def options(task: Task) -> dict:
        return {**task.env_options, **cfg.env_options}

    trained_on = training_seeds(cfg.train_data)
    clash = trained_on & {derive_seed(cfg.seed, e) for e in range(max(episodes, cfg.video))}
    if clash:
        raise ValueError(f"{len(clash)} benchmark env seeds are in train_data ({sorted(clash)[:3]}"
                         "...); choose another seed= so that the benchmark is held out")
    uri = cfg.policy if cfg.target_return is None else with_params(
        cfg.policy, target_return=cfg.target_return)
    uri = absolute_paths(uri)
    baseline = check_baseline(cfg, tasks)
    run_dir = open_run("benchmark", cfg)
    stages = Stages()
    progressions, per_task, invalid, actions = {}, {}, 0.0, 0
    videos: dict[str, dict] = {}
    for task in tasks:
        task_dir = run_dir / "tasks" / task.name
        task_dir.mkdir(parents=True, exist_ok=True)
        with stages(f"play {task.name}"):
            stats = play_policies([(task.name, uri)], task.env_id, options(task), episodes,
                                  task_dir, cfg.num_workers, cfg.envs_per_worker,
                                  cfg.torch_threads, cfg.seed)
        steps = tr.read_trajectories(task_dir / "trajectories")
        progressions[task.name] = task_progressions(steps, suite.metric)
        counts = stats.get(uri, {})
        played = tr.episode_table(steps)
        per_task[task.name] = {
            "balrog_name": task.balrog_name, "env_id": task.env_id,
            "return_mean": tr.return_stats(played.column("return").to_pylist())["mean"],
            "length_mean": tr.return_stats(played.column("length").to_pylist())["mean"],
            "invalid_rate": counts.get("invalid_rate"),
            # env steps per second of play, every env, the engine and the actors' start included
            "steps_per_s": steps.num_rows / stages.seconds[f"play {task.name}"],
            **({"achievements": achievement_summary(steps, names=ACHIEVEMENTS)}
               if suite.metric == "achievements" else {})}
        if counts.get("actions"):
            invalid, actions = invalid + counts["invalid"], actions + counts["actions"]
        if cfg.video:
            with stages(f"video {task.name}"):
                videos[task.name] = record(
                    make_adapter(task.env_id, **options(task)), uri, cfg.target_return,
                    [derive_seed(cfg.seed, e) for e in range(cfg.video)],
                    run_dir / "videos" / f"{task.name}.gif", max_frames=cfg.video_frames)
    scores = suite_scores(suite, {t: list(p.values()) for t, p in progressions.items()})
    metrics = {
        "suite": suite.name, "policy": cfg.policy, "episodes_per_task": episodes,
        "tasks": {name: {**per_task[name], **s, "mean": s["score"]}
                  for name, s in scores["tasks"].items() if name in per_task},
        "overall": {**scores["overall"], "mean": scores["overall"]["score"]},
        "invalid_rate": invalid / actions if actions else None,
        "held_out": bool(cfg.train_data),
        "references": [vars(r) for r in suite.references],
        **({"videos": videos} if videos else {}),
        **({"baseline": against_baseline(baseline, progressions, suite.metric)}
           if baseline else {}),
        "stage_seconds": stages.seconds,
    }
    plot_scores(metrics, run_dir / "scores.png", f"{cfg.policy.split('?')[0]} on {suite.name}")
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(report(cfg, metrics))
    return {"run_dir": str(run_dir), **metrics}


CONFIG = BenchmarkConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("benchmark", BenchmarkConfig, main, sys.argv[1:])
