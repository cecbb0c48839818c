"""Train a policy for a benchmark suite and benchmark it, the untrained model next to it.

Usage: ``policylm train-suite --config configs/babyai_balrog.yaml`` (or ``python -m
policylm.jobs.train_suite ...``).

Stages: scripted demonstrations at several skills on every task of the suite (collect, on rollout
actors) -> one return-conditioned dataset over all tasks (their prompts are one) -> LoRA SFT on
Ray Train -> with ``grpo.iterations`` > 0, online episodic GRPO from the SFT adapter on the
suite's env that plays every task -> ``benchmark`` of the fine-tuned (and the GRPO-trained, paired
with it) and the untrained model on held-out seeds (checked against every seed trained on) ->
``report.md`` next to the suite's published figures.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.jobs import benchmark, build_dataset, collect, grpo_episodes, sft
from policylm.platform import console
from policylm.platform.config import field, overwrite_field, require, validate_section
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TEST_SEED, describe_seeds

BOT = "python:policylm.platform.envs.babyai_bot:BabyAIBot"
# the GRPO stage's keys that the suite and the earlier stages set
GRPO_FROM_STAGES = ("env_id", "env_options", "model", "adapter", "target_return", "out")


@dataclass
class SuiteBenchmarkConfig:
    """How the fine-tuned and the untrained model are benchmarked."""

    episodes: int | None = field(None, doc="episodes per task (default: the suite's)")
    target_return: float = field(1.0, doc="target return in the fine-tuned model's prompt")
    temperature: float = field(0.0, doc="softmax temperature over the scored actions (0: argmax)")
    compare_base: bool = field(True, doc="also benchmark the untrained model")
    heldout: bool = field(True, doc="also benchmark the fine-tuned model on the suite's held-out "
                          "twin where it has one (balrog-babyai: babyai-mixed-test, missions of "
                          "the colour-object pairs no training mission names)")
    goal: float | None = field(36.0, doc="score (%) the fine-tuned model is measured against "
                               "(36.0: Llama-3.1-8B on BALROG BabyAI); None: no goal")
    seed: int = field(TEST_SEED, doc="base seed of the held-out benchmark episodes (default: the "
                      "test range, policylm.platform.seeds)")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(5, doc="envs per actor (one batched engine call per step)")


@dataclass
class TrainSuiteConfig:
    """Demonstrations -> dataset -> LoRA SFT -> benchmark, on every task of a suite"""

    suite: str = field("balrog-babyai", doc="benchmark suite whose tasks are trained on")
    demonstrators: list[collect.PolicySource] = field(
        factory=lambda: [collect.PolicySource("expert", BOT),
                         collect.PolicySource("good", f"{BOT}?eps=0.25"),
                         collect.PolicySource("weak", f"{BOT}?eps=0.6")],
        doc="[{skill, uri}] that play every task (default: the BabyAI bot at three skills)")
    collect: collect.CollectConfig = field(
        factory=collect.CollectConfig, doc="collection per task (collect.<key>; env and "
        "policies come from the suite and demonstrators)")
    task_episodes: dict = field(
        factory=dict, doc="episodes per demonstrator for the named tasks, e.g. {putnext: 80} "
                          "(the others: collect.episodes_per_policy); more rows for the tasks "
                          "that fail")
    dataset: build_dataset.BuildDatasetConfig = field(
        factory=build_dataset.BuildDatasetConfig, doc="dataset building (dataset.<key>)")
    sft: sft.SftJobConfig = field(factory=sft.SftJobConfig,
                                  doc="LoRA SFT (sft.<key>; its dataset is the stage before's)")
    grpo: grpo_episodes.GrpoEpisodesConfig = field(
        factory=lambda: grpo_episodes.GrpoEpisodesConfig(iterations=0),
        doc="online episodic GRPO from the SFT adapter (grpo.<key>; 0 iterations, the default, "
            "skips it; its env is the suite's that plays every task, its env options, model, "
            "adapter, target and run directory come from the stages before)")
    benchmark: SuiteBenchmarkConfig = field(factory=SuiteBenchmarkConfig,
                                            doc="benchmarking (benchmark.<key>)")
    out: str = field("", doc="run directory (default runs/train-suite-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        from policylm.platform.evaluation.suites import SUITES

        require(self.suite in SUITES, "suite", f"one of {', '.join(SUITES)}")
        require(bool(self.demonstrators), "demonstrators", "give at least one {skill, uri}")
        names = [t.name for t in SUITES[self.suite].tasks]
        unknown = sorted(set(self.task_episodes) - set(names))
        require(not unknown, "task_episodes", f"{unknown} not in {self.suite}: "
                f"{', '.join(names)}")
        require(all(isinstance(n, int) and n >= 1 for n in self.task_episodes.values()),
                "task_episodes", "give each task a whole number of episodes >= 1")
        require(self.benchmark.temperature >= 0, "benchmark.temperature", "must be >= 0")
        validate_section(self.collect, "collect")
        if self.grpo.iterations:
            validate_section(self.grpo, "grpo")
            default = grpo_episodes.GrpoEpisodesConfig()
            given = [k for k in GRPO_FROM_STAGES if getattr(self.grpo, k) != getattr(default, k)]
            require(not given, f"grpo.{given[0] if given else ''}", "comes from the suite and "
                    "the stages before (env: the suite's env that plays every task; env options: "
                    "collect.env_options; model: sft.model; target: benchmark.target_return): "
                    "remove it")
            SUITES[self.suite].rl_task()  # a suite without one env for every task is refused


def achievement_rates(runs: list[str], results: dict[str, dict]) -> dict[str, dict]:
    """Per-achievement success rates by source: the demonstrations of each skill (their
    training seeds, pooled over tasks), then each benchmarked model (its held-out seeds; one
    entry per task where the suite has several)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs.crafter import ACHIEVEMENTS
    from policylm.platform.evaluation.achievements import UNLOCKED, achievement_summary

    columns = [tr.RUN_ID, tr.EPISODE_ID, tr.ENV_ID, tr.POLICY_URI, tr.SKILL, tr.SEED,
               tr.AGENT_ID, tr.T, tr.REWARD, tr.TERMINATED, tr.TRUNCATED, UNLOCKED]
    demos = [tr.read_trajectories(tr.trajectory_dir(r), columns=columns) for r in runs]
    rates = {}
    for skill in dict.fromkeys(s for t in demos for s in t.column(tr.SKILL).to_pylist()):
        steps = [t.filter(pc.equal(t.column(tr.SKILL), skill)) for t in demos]
        summary = achievement_summary(pa.concat_tables(steps), names=ACHIEVEMENTS)
        rates[f"demonstrations ({skill}, train seeds)"] = summary["success_rates"]
    for label, r in results.items():
        for task, t in r["tasks"].items():
            name = label if len(r["tasks"]) == 1 else f"{label} {task}"
            rates[name] = t["achievements"]["success_rates"]
    return rates


def report(cfg: TrainSuiteConfig, results: dict[str, dict], data: dict, tuned: dict,
           seconds: dict, rl: dict | None = None) -> str:
    """Markdown summary: per task and overall scores of each model, GRPO's paired difference
    from the fine-tuned model, the goal, stage times."""
    from policylm.platform.evaluation.metrics import mean_se
    from policylm.platform.evaluation.reports import markdown_table
    from policylm.platform.evaluation.suites import get_suite

    labels = list(results)
    first = results[labels[0]]
    rows = [[task] + [mean_se(results[lb]["tasks"][task]) for lb in labels]
            for task in first["tasks"]]
    rows.append(["**overall**"] + [mean_se(results[lb]["overall"]) for lb in labels])
    refs = [[r["model"], mean_se({"mean": r["score"], "se": r["se"]})]
            for r in first["references"]]
    goal = cfg.benchmark.goal
    final = "after GRPO" if "after GRPO" in results else "fine-tuned"
    tuned_score = results[final]["overall"]["score"]
    lines = [f"# {cfg.suite}: {cfg.sft.model} + LoRA SFT on demonstrations"
             + (", then episodic GRPO" if rl else ""), "",
             markdown_table(["task"] + [f"{lb} % ± s.e." for lb in labels], rows), "",
             markdown_table(["published", "% ± s.e."], refs), ""]
    if "fine-tuned, held-out pairs" in results:
        lines += ["fine-tuned, held-out pairs: the fine-tuned model on "
                  f"`{results['fine-tuned, held-out pairs']['suite']}`, the same tasks with "
                  "missions that name only the colour-object pairs no training mission names "
                  "(generalisation; no published figures).", ""]
    if rl is not None:
        d = results["after GRPO"]["baseline"]
        per_task = ", ".join(f"{t} {mean_se(x)}" for t, x in d["tasks"].items())
        lines += [f"After GRPO minus fine-tuned, paired over the {d['overall']['pairs']} "
                  f"episodes both played (points): **{mean_se(d['overall'])}** overall; "
                  f"{per_task}.", ""]
    if goal is not None:
        met = tuned_score is not None and tuned_score >= goal
        over = results[final]["overall"]
        diff = "" if tuned_score is None else (
            f"; {final} minus the goal: {mean_se({**over, 'mean': tuned_score - goal})} points")
        lines += [f"Goal: {final} >= {goal:g} %: {'met' if met else 'NOT met'} "
                  f"({mean_se(over)}{diff}).", ""]
    lines += ["## Data and training", "",
              f"- demonstrations: {', '.join(f'{d.skill} `{d.uri}`' for d in cfg.demonstrators)}"
              f", {cfg.collect.episodes_per_policy} episodes each per task"
              + "".join(f" ({n} on {t})" for t, n in cfg.task_episodes.items()),
              f"- dataset rows: {data['splits']['train']['rows']} train, "
              f"{data['splits'].get('validation', {}).get('rows', 0)} validation",
              f"- SFT: {tuned['train_loss'][-1][0] if tuned['train_loss'] else 0} steps, final "
              f"loss {tuned['train_loss'][-1][1]:.3f}" if tuned["train_loss"] else "- SFT: -",
              *([f"- GRPO on `{get_suite(cfg.suite).rl_task().env_id}`: "
                 f"{len(rl['iterations'])} iterations of {cfg.grpo.seeds_per_iteration} groups x "
                 f"{cfg.grpo.group_size} episodes; mean return per iteration "
                 + " / ".join(f"{i['mean_return']:.2f}" for i in rl["iterations"])]
                if rl else []),
              "", "Benchmark episodes are on held-out seeds (checked against the "
              "demonstrations'); per-model reports in `benchmark-*/report.md`. "
              + describe_seeds(cfg.benchmark.seed), "",
              "## Stage times (s)", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"


def achievements_section(rates: dict[str, dict], plot: Path) -> str:
    """The report's per-achievement table and plot (``plot``), one column per source."""
    from policylm.platform.evaluation.reports import plot_achievements, success_rate_table

    plot_achievements(rates, plot, "success rate per achievement")
    return ("\n## Achievements\n\nThe share of episodes that unlocked each achievement: the "
            "demonstrations on their training seeds, the models on the benchmark's held-out "
            "seeds.\n\n" + success_rate_table(rates)
            + f"\n\n![achievements]({plot.name})\n")


def main(cfg: TrainSuiteConfig) -> dict:
    from policylm.platform.evaluation.suites import get_suite
    from policylm.platform.policies import with_params

    suite = get_suite(cfg.suite)
    run_dir = open_run("train-suite", cfg).resolve()
    stages = Stages()
    runs: list[str] = []
    for task in suite.tasks:
        with stages(f"collect {task.name}"):
            col = collect.main(dataclasses.replace(
                cfg.collect, env_id=task.env_id, policies=list(cfg.demonstrators),
                episodes_per_policy=cfg.task_episodes.get(task.name,
                                                          cfg.collect.episodes_per_policy),
                env_options={**task.env_options, **cfg.collect.env_options},
                out=str(run_dir / "collect" / task.name)))
        runs.append(col["trajectories"])
    with stages("build_dataset"):
        data = build_dataset.main(dataclasses.replace(
            cfg.dataset, trajectories=runs, out=str(run_dir / "dataset")))
    with stages("sft"):
        tuned = sft.main(dataclasses.replace(cfg.sft, dataset=data["dataset"],
                                             out=str(run_dir / "sft")))
    b = cfg.benchmark
    rl = None
    if cfg.grpo.iterations:
        rl_task = suite.rl_task()
        with stages("grpo"):
            rl = grpo_episodes.main(dataclasses.replace(
                cfg.grpo, env_id=rl_task.env_id, model=cfg.sft.model,
                env_options={**rl_task.env_options, **cfg.collect.env_options},
                adapter=tuned["adapter"], target_return=b.target_return,
                out=str(run_dir / "grpo")))
        runs.append(str(run_dir / "grpo" / "trajectories"))  # no benchmark seed was trained on
    base = with_params(f"hf://{cfg.sft.model}", temperature=b.temperature)
    policies = {"fine-tuned": with_params(base, adapter=tuned["adapter"],
                                          target_return=b.target_return)}
    if rl is not None:
        policies["after GRPO"] = with_params(base, adapter=rl["adapter"],
                                             target_return=b.target_return)
    if b.compare_base:
        policies["untrained"] = base
    results = {}
    # (label, policy, suite, run directory, baseline)
    # the GRPO-trained model is paired with the fine-tuned model's episodes (played first)
    plays = [(label, uri, cfg.suite, f"benchmark-{label.replace(' ', '-')}",
              str(run_dir / "benchmark-fine-tuned") if label == "after GRPO" else "")
             for label, uri in policies.items()]
    if b.heldout and suite.heldout:
        plays.append(("fine-tuned, held-out pairs", policies["fine-tuned"], suite.heldout,
                      "benchmark-fine-tuned-held-out-pairs", ""))
    for label, uri, name, directory, baseline in plays:
        with stages(f"benchmark {label}"):
            results[label] = benchmark.main(benchmark.BenchmarkConfig(
                policy=uri, suite=name, episodes=b.episodes, train_data=runs, seed=b.seed,
                # the policy acts on the observations its demonstrations were recorded with
                env_options=dict(cfg.collect.env_options), baseline=baseline,
                num_workers=b.num_workers, envs_per_worker=b.envs_per_worker,
                out=str(run_dir / directory)))
    metrics = {"suite": cfg.suite,
               "scores": {lb: {"overall": r["overall"], "tasks": r["tasks"],
                               "invalid_rate": r["invalid_rate"]} for lb, r in results.items()},
               "goal": b.goal, "dataset": data["splits"],
               **({"grpo": {"iterations": rl["iterations"], "wall_s": rl["wall_s"],
                            "against_fine_tuned": results["after GRPO"]["baseline"]}}
                  if rl is not None else {}),
               "sft": {k: tuned[k] for k in ("adapter", "train_loss", "eval_loss",
                                             "train_tokens")},
               "stage_seconds": stages.seconds}
    text = report(cfg, results, data, tuned, stages.seconds, rl)
    if suite.metric == "achievements":
        metrics["achievements"] = achievement_rates(runs[:len(suite.tasks)], results)
        text += achievements_section(metrics["achievements"], run_dir / "achievements.png")
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(text)
    score = results["fine-tuned"]["overall"]["score"]
    console.say(f"policylm train-suite: fine-tuned {score:.1f} % on {cfg.suite}; report in "
                f"{Path(run_dir) / 'report.md'}", "stdout")
    return {"run_dir": str(run_dir), **metrics}


CONFIG = TrainSuiteConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("train-suite", TrainSuiteConfig, main, sys.argv[1:])
