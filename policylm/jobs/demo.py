"""The main job on the embedded defaults (what ``make demo`` runs).

Usage: ``python -m policylm.jobs.demo`` (or ``policylm demo``; ``--config configs/demo.yaml``
and ``key=value`` overrides, e.g. ``collect.episodes_per_policy=8``).

Stages: train weak/medium/expert PPO checkpoints with RLlib -> collect from them (plus a random
policy) in parallel with rollout actors -> build the return-conditioned dataset with Ray Data ->
SFT a LoRA adapter on Ray Train (TRL + PEFT) -> evaluate the fine-tuned policy at several target
returns (some above the best training return) and the untrained model at the same targets ->
``report.md`` with the target-vs-actual plot and the quality bar of return conditioning.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import Stages, open_run, run_job, write_json
from policylm.jobs import build_dataset, collect, evaluate, sft, train_experts
from policylm.platform import console
from policylm.platform.config import field, overwrite_field, require, validate_section
from policylm.platform.memory import with_memory
from policylm.platform.records import read_record
from policylm.platform.seeds import TEST_SEED, describe_seeds


@dataclass
class DemoEvalConfig:
    """How the fine-tuned and the untrained policy are evaluated."""

    targets: list[float] = field(factory=lambda: [25.0, 100.0, 250.0, 500.0, 600.0],
                                 doc="target returns (include some above the best training return)")
    episodes: int = field(8, doc="episodes per target (the same env seeds for every target)")
    temperature: float = field(0.5, doc="softmax temperature over the scored actions (0: argmax; "
                               "argmax ignores the target when the data's weak play is random)")
    adaptive: bool = field(True, doc="remaining target = target - reward so far")
    guidance: float = field(0.0, doc="return guidance weight of the fine-tuned policy (hf:// "
                            "guidance=; train with sft.target_dropout > 0); 0: none")
    policy_params: dict = field(factory=dict, doc="more hf:// settings of both policies, e.g. "
                                "{mode: generate, max_new_tokens: 48} for actions that cannot "
                                "be listed (continuous ones)")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(8, doc="envs per actor (one batched engine call per step)")
    compare_base: bool = field(True, doc="also evaluate the untrained model at the same targets")
    seed: int = field(TEST_SEED, doc="base seed of the evaluation's env seeds (default: the test "
                      "range, policylm.platform.seeds; 10000: the validation range, where the "
                      "temperature and guidance are chosen)")

    def validate(self) -> None:
        require(len(self.targets) >= 1, "evaluate.targets", "give at least one target return")
        require(self.episodes >= 1, "evaluate.episodes", "must be >= 1")
        require(self.temperature >= 0, "evaluate.temperature", "must be >= 0")
        taken = sorted(set(self.policy_params) & {"temperature", "adaptive", "adapter",
                                                  "guidance", "target_return"})
        require(not taken, "evaluate.policy_params", f"{taken} have their own keys "
                "(evaluate.temperature, evaluate.adaptive, evaluate.guidance; the adapter and "
                "target come from the run)")


@dataclass
class DemoConfig:
    """Experts -> collection -> return-conditioned dataset -> SFT -> evaluation, on one env."""

    env_id: str = field("CartPole-v1", doc="Gymnasium env id (used by every stage)")
    env_options: dict = field(factory=dict, doc="env adapter options for every stage (e.g. "
                              "MettaGrid-Arena's num_agents, hearts, max_steps)")
    include_random: bool = field(True, doc="also collect from a random policy (skill 'random')")
    skill_source: str = field(
        "checkpoints", doc="what each skill label plays: 'checkpoints' (its own PPO checkpoint, "
                          "greedy), 'expert-mix' (the expert checkpoint with the epsilon of "
                          "expert_noise: lower skills are noisier experts) or 'policies' (the "
                          "URIs of skill_policies, e.g. scripted agents; no PPO training)")
    skill_policies: list[collect.PolicySource] = field(
        factory=list, doc="skill_source=policies: [{skill, uri}] to collect from")
    expert_noise: dict = field(factory=lambda: {"weak": 0.8, "medium": 0.5},
                               doc="expert-mix: share of random actions per lower skill")
    experts: train_experts.TrainExpertsConfig = field(
        factory=train_experts.TrainExpertsConfig, doc="PPO expert training (experts.<key>)")
    collect: collect.CollectConfig = field(
        factory=collect.CollectConfig, doc="collection (collect.<key>; policies come from experts)")
    dataset: build_dataset.BuildDatasetConfig = field(
        factory=build_dataset.BuildDatasetConfig, doc="dataset building (dataset.<key>)")
    sft: sft.SftJobConfig = field(factory=sft.SftJobConfig,
                                  doc="LoRA SFT (sft.<key>; its dataset is the stage before's)")
    evaluate: DemoEvalConfig = field(factory=DemoEvalConfig, doc="evaluation (evaluate.<key>)")
    out: str = field("", doc="run directory (default runs/demo-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(not self.collect.kill_after_episodes, "collect.kill_after_episodes",
                "fault injection is for tests; leave it 0 in the demo")
        require(self.skill_source in ("checkpoints", "expert-mix", "policies"), "skill_source",
                "use 'checkpoints', 'expert-mix' or 'policies'")
        require(self.skill_source != "policies" or bool(self.skill_policies), "skill_policies",
                "skill_source=policies needs [{skill, uri}, ...]")
        require(all(isinstance(v, int | float) and 0 <= v <= 1
                    for v in self.expert_noise.values()), "expert_noise",
                "give each skill an epsilon in [0, 1], e.g. {weak: 0.8, medium: 0.5}")
        require("expert" not in self.expert_noise, "expert_noise",
                "'expert' is the noiseless expert's label; name the noisy skills otherwise")
        require(self.sft.kill_at_step == 0, "sft.kill_at_step",
                "fault injection is for tests; leave it 0 in the demo")
        for name in ("experts", "collect", "evaluate"):
            validate_section(getattr(self, name), name)


def quality(trained: dict, training: dict, best_skill: dict) -> dict:
    """The success criteria of return conditioning, from the fine-tuned policy's evaluation:
    Spearman(target, mean actual) >= 0.8 over >= 4 targets; at the highest target, mean actual
    >= the training episodes' median return. Reported beside them (``best_data``): whether the
    mean at the highest target reaches the best skill's mean return (``best_skill``: its
    ``mean`` and ``se``), with the difference and its standard error (independent samples)."""
    rows = [m for m in trained["targets"].values() if m.get("count")]
    top = max(rows, key=lambda m: m["target"]) if rows else {}
    rho = trained.get("spearman_means")
    bar = best_skill["mean"]
    diff = top["mean"] - bar if top else None
    ses = (top.get("se"), best_skill.get("se"))
    checks = {
        "spearman": {"value": rho, "bar": 0.8, "targets": len(rows),
                     "passed": rho is not None and rho >= 0.8 and len(rows) >= 4},
        "highest_target": {"target": top.get("target"), "mean": top.get("mean"),
                           "bar": training["median"],
                           "passed": bool(top) and top["mean"] >= training["median"]},
        "best_data": {"target": top.get("target"), "mean": top.get("mean"), "bar": bar,
                      "difference": diff,
                      "se": None if diff is None or None in ses else math.hypot(*ses),
                      "passed": diff is not None and diff >= 0},
    }
    checks["passed"] = checks["spearman"]["passed"] and checks["highest_target"]["passed"]
    return checks


def _num(x: object, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def report(metadata: dict, experts: dict, stats: dict, tuned: dict | None,
           evals: dict[str, dict], checks: dict | None, seconds: dict) -> str:
    """Markdown summary of the run."""
    from policylm.platform.evaluation.metrics import arena_note, mean_se
    from policylm.platform.evaluation.reports import markdown_table

    lines = ["# policylm demo", "", f"Env: `{metadata['env_id']}`", ""]
    if experts:
        lines += ["## Experts (RLlib PPO)", "",
                  markdown_table(["skill", "iteration", "greedy return (mean)"],
                                 [[k, e["iteration"], round(e["eval"]["mean"], 1)]
                                  for k, e in experts.items()]), ""]
    lines += ["## Collected episodes", ""]
    if metadata.get("agents", 1) > 1:
        lines += [f"{metadata['agents']} agents per episode; one row per agent (returns are "
                  "per agent).", ""]
    lines.append(markdown_table(
        ["skill", "episodes", "mean", "median", "min", "max", "std"],
        [[k, s["episodes"], *(round(s["return"][c], 1) for c in ("mean", "median", "min", "max",
                                                                 "std"))]
         for k, s in metadata["skills"].items()]))
    lines += ["", "## Dataset", ""]
    for name, c in stats["splits"].items():
        lines.append(f"- {name}: {c['rows']} rows, {c.get('episodes', 0)} episodes, "
                     f"per skill {c.get('rows_per_skill', {})}")
    if tuned is not None:
        ev = tuned["eval_loss"][-1][1] if tuned["eval_loss"] else None
        lines += ["", "## SFT (Ray Train + TRL + PEFT LoRA)", "",
                  f"- adapter: `{tuned['adapter']}` (prompt form "
                  f"`{read_record(tuned['adapter']).prompt_form}`)",
                  f"- steps: {tuned['train_loss'][-1][0] if tuned['train_loss'] else 0}, "
                  f"training tokens: {tuned['train_tokens']}, "
                  f"tokens/s: {_num(tuned['train_tokens_per_s'])}",
                  f"- final training loss: "
                  f"{_num(tuned['train_loss'][-1][1] if tuned['train_loss'] else None, '.3f')}, "
                  f"validation loss: {_num(ev, '.3f')}", "", "![loss](sft/loss.png)"]
    if evals:
        lines += ["", "## Return conditioning: target vs actual return", ""]
        labels = list(evals)
        targets = list(next(iter(evals.values()))["targets"].values())
        header = ["target"] + [f"{lb} mean ± s.e. (std)" for lb in labels]
        rows = [[t["target"]] + [
            f"{mean_se(evals[lb]['targets'][k])} ({_num(evals[lb]['targets'][k]['std'])})"
            for lb in labels] for k, t in zip(evals[labels[0]]["targets"], targets, strict=True)]
        rows.append(["Spearman"] + [_num(evals[lb]["spearman_means"], ".2f") for lb in labels])
        lines += [markdown_table(header, rows), "",
                  "Every target plays the same env seeds. "
                  + describe_seeds(evals[labels[0]]["seeds"]["base"]), ""]
        note = arena_note(evals[labels[0]]["targets"])
        if note:  # several agents per env seed
            lines += [f"s.e.{note}.", ""]
        lines += ["![target vs actual](target_vs_actual.png)"]
    if checks is not None:
        sp, hi, bd = checks["spearman"], checks["highest_target"], checks["best_data"]
        mark = {True: "pass", False: "FAIL"}
        lines += ["", "## Quality bar", "",
                  f"- Spearman(target, mean actual) over {sp['targets']} targets: "
                  f"{_num(sp['value'], '.2f')} (bar 0.8): {mark[sp['passed']]}",
                  f"- mean return at the highest target ({_num(hi['target'], 'g')}): "
                  f"{_num(hi['mean'])} (bar: training median {hi['bar']:.1f}): "
                  f"{mark[hi['passed']]}",
                  f"- reaches its best data: mean at the highest target {_num(bd['mean'])} "
                  f"against the best skill's mean {bd['bar']:.1f} (difference "
                  f"{_num(bd['difference'], '+.1f')} ± {_num(bd['se'])} s.e.): "
                  f"{'yes' if bd['passed'] else 'no'}"]
    lines += ["", "## Stage times (s)", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"


def skill_policies(cfg: DemoConfig, experts: dict) -> list[collect.PolicySource]:
    """The policy each skill label collects with (see ``skill_source``)."""
    if cfg.skill_source == "policies":
        return list(cfg.skill_policies)
    if cfg.skill_source == "checkpoints":
        return [collect.PolicySource(skill, e["uri"]) for skill, e in experts.items()]
    best = max(experts, key=lambda s: experts[s]["eval"]["mean"])  # labelled "expert"
    out = [collect.PolicySource(skill, f"mix:{experts[best]['uri']}?eps={eps:g}")
           for skill, eps in sorted(cfg.expert_noise.items(), key=lambda kv: -kv[1])]
    return [*out, collect.PolicySource("expert", experts[best]["uri"])]


def llm_uri(cfg: DemoConfig, adapter: str | None) -> str:
    """The evaluation's ``hf://`` URI of the base model with ``adapter`` (None: untrained)."""
    from policylm.platform.policies import with_params

    ev = cfg.evaluate
    base = with_params(f"hf://{cfg.sft.model}", temperature=ev.temperature,
                       adaptive=int(ev.adaptive), **ev.policy_params)
    if adapter is None:
        return base
    return with_params(base, adapter=adapter, **({"guidance": ev.guidance} if ev.guidance else {}))


def evaluate_policies(cfg: DemoConfig, adapter: str | None, run_dir: Path) -> dict[str, dict]:
    """Evaluate the fine-tuned policy (and the untrained model) at every target."""
    ev = cfg.evaluate
    todo = {}
    if adapter is not None:
        todo["fine-tuned"] = llm_uri(cfg, adapter)
    if ev.compare_base or adapter is None:
        todo["untrained"] = llm_uri(cfg, None)
    return {label: play_uri(cfg, uri, list(ev.targets), run_dir / f"evaluate-{label}",
                            dataset=str(run_dir / "collect"))
            for label, uri in todo.items()}


def play_uri(cfg: DemoConfig, uri: str, targets: list[float], out: Path, dataset: str = ""
             ) -> dict:
    """``evaluate`` of ``uri`` at ``targets`` on the run's env and evaluation seeds, into
    ``out`` (``dataset``: trajectories whose return range the plot shades)."""
    ev = cfg.evaluate
    return evaluate.main(evaluate.EvaluateConfig(
        policy=uri, env_id=cfg.env_id, env_options=dict(cfg.env_options), targets=targets,
        episodes=ev.episodes, num_workers=ev.num_workers, envs_per_worker=ev.envs_per_worker,
        seed=ev.seed, dataset=dataset, out=str(out)))


def train_policy(cfg: DemoConfig, run_dir: Path, stages: Stages) -> dict:
    """The stages up to the fine-tuned adapter, each in its own directory of ``run_dir``:
    ``experts`` (the train-experts result; ``{"experts": {}}`` for skill_source=policies),
    ``collect``, ``dataset`` and ``sft`` (each stage's result)."""
    ex: dict = {"experts": {}}
    if cfg.skill_source != "policies":
        with stages("train_experts"):
            ex = train_experts.main(dataclasses.replace(
                cfg.experts, env_id=cfg.env_id,
                env_options={**cfg.experts.env_options, **cfg.env_options},
                out=str(run_dir / "experts")))
    policies = skill_policies(cfg, ex["experts"])
    if cfg.include_random:
        policies.insert(0, collect.PolicySource("random", "random:"))
    with stages("collect"):
        col = collect.main(dataclasses.replace(
            cfg.collect, env_id=cfg.env_id, policies=policies,
            env_options={**cfg.collect.env_options, **cfg.env_options},
            out=str(run_dir / "collect")))
    with stages("build_dataset"):
        ds = build_dataset.main(dataclasses.replace(
            cfg.dataset, trajectories=col["trajectories"], out=str(run_dir / "dataset")))
    with stages("sft"):
        tuned = sft.main(dataclasses.replace(cfg.sft, dataset=ds["dataset"],
                                             out=str(run_dir / "sft")))
    return {"experts": ex, "collect": col, "dataset": ds, "sft": tuned}


def main(cfg: DemoConfig) -> dict:
    from policylm.platform.evaluation.reports import plot_target_vs_actual

    run_dir = open_run("demo", cfg).resolve()
    stages = Stages()
    parts = train_policy(cfg, run_dir, stages)
    ex, col, ds, tuned = (parts[k] for k in ("experts", "collect", "dataset", "sft"))
    with stages("evaluate"):
        evals = evaluate_policies(cfg, tuned["adapter"], run_dir)
    training = col["overall_return"]  # return statistics of every collected episode
    best_skill = max((s["return"] for s in col["skills"].values()), key=lambda r: r["mean"])
    checks = quality(evals["fine-tuned"], training, best_skill)
    plot_target_vs_actual(evals["fine-tuned"], run_dir / "target_vs_actual.png",
                          f"{cfg.sft.model} + LoRA on {cfg.env_id}",
                          (training["min"], training["max"]), label="fine-tuned",
                          baseline=evals.get("untrained"))
    metrics = {"experts": ex["experts"], "collect": {k: col[k] for k in ("episodes", "steps",
               "skills")}, "training_returns": training, "dataset": ds["splits"],
               "sft": {k: tuned[k] for k in ("adapter", "train_loss", "eval_loss", "train_tokens",
                                             "train_tokens_per_s")},
               "evaluate": {k: {"targets": v["targets"], "spearman_means": v["spearman_means"],
                                "invalid_rate": v["invalid_rate"]} for k, v in evals.items()},
               "quality": checks, "stage_seconds": stages.seconds}
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(report(col, ex["experts"], ds, tuned, evals, checks,
                                              stages.seconds))
    console.say(f"policylm demo: report in {run_dir / 'report.md'} (quality bar "
                f"{'met' if checks['passed'] else 'NOT met'})", "stdout")
    return {"run_dir": str(run_dir), **metrics}


CONFIG = DemoConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("demo", DemoConfig, main, sys.argv[1:])
