"""Continuous control as text (the RLFT4RL workflow), beside the MLP a user would train instead.

Usage: ``policylm control --config configs/halfcheetah.yaml`` (or ``python -m
policylm.jobs.control ...``).

Stages: the demo's (RLlib PPO experts at the skills' returns, collection of them and a random
policy on rollout actors, the return-conditioned dataset, LoRA SFT) -> ``export-minari`` of the
collected episodes into ``<run>/minari`` with the random and expert reference returns -> the
fine-tuned LLM at every target -> MLP behaviour cloning on the same training rows (all of them,
and the best skill's rows only) -> GRPO from the adapter with the env reward over the dataset's
states -> the GRPO adapter at the highest target. Every evaluation plays the same env seeds, so
the differences at the highest target are paired. Scores are normalised as D4RL and Minari do:
``100 (return - random) / (expert - random)``. Writes ``report.md`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import Stages, log, open_run, run_job, write_json
from policylm.jobs import demo, export_minari, grpo
from policylm.platform import console
from policylm.platform.config import field, require, validate_section
from policylm.platform.evaluation.control_report import goal, report, scores_table
from policylm.platform.memory import with_memory


@dataclass
class BcBaselineConfig:
    """The MLP behaviour-cloning baselines, trained on the SFT's training rows."""

    hidden: list = field(factory=lambda: [256, 256], doc="MLP hidden layer sizes")
    steps: int = field(3000, doc="Adam steps")
    batch_size: int = field(256, doc="rows per step")
    lr: float = field(1e-3, doc="learning rate")
    seed: int = field(0, doc="seed of the initial weights and the minibatches")

    def validate(self) -> None:
        require(self.steps >= 1, "steps", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class ControlConfig(demo.DemoConfig):
    """The demo's stages, a Minari export, MLP BC baselines and GRPO from the adapter."""

    minari_id: str = field("", doc="Minari id of the export (default "
                           "policylm/<env>-mixed-v0), written to <run>/minari")
    bc: BcBaselineConfig = field(factory=BcBaselineConfig, doc="MLP BC baselines (bc.<key>)")
    imitation_rows: int = field(256, doc="held-out dataset rows on which every policy's action "
                                "is compared with the data's (mean squared error); 0: none")
    grpo_from_adapter: bool = field(True, doc="train GRPO from the SFT adapter and evaluate it "
                                    "at the highest target")
    grpo: grpo.GrpoJobConfig = field(
        factory=lambda: grpo.GrpoJobConfig(rewards={"format": 0.5, "bc": 1.0, "env": 1.0}),
        doc="GRPO from the adapter (grpo.<key>; its dataset, model, adapter, env and run "
            "directory come from the stages before)")

    def validate(self) -> None:
        super().validate()
        require(self.imitation_rows >= 0, "imitation_rows", "must be >= 0 (0: none)")
        require(export_minari.valid_minari_id(self.minari_id or default_minari_id(self.env_id)),
                "minari_id", f"{self.minari_id!r} must look like namespace/name-v0")
        require(self.include_random, "include_random",
                "the random policy's return is the normalised score's 0; leave it true")
        validate_section(self.bc, "bc")
        if self.grpo_from_adapter:
            validate_section(dataclasses.replace(self.grpo, dataset="<from the dataset stage>"),
                             "grpo")


def default_minari_id(env_id: str) -> str:
    """``policylm/<env name>-mixed-v0``: ``HalfCheetah-v5`` -> ``policylm/halfcheetah-mixed-v0``
    (a namespace such as ``ALE/`` is dropped)."""
    return f"policylm/{env_id.rsplit('/', 1)[-1].split('-')[0].lower()}-mixed-v0"


def returns_at(run_dir: str | Path, target: float) -> dict:
    """``{(seed, agent): return}`` of an evaluation run's episodes at ``target``."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.metrics import returns_by_seed, target_label

    episodes = tr.episode_table(tr.read_trajectories(Path(run_dir) / "trajectories"))
    mine = episodes.filter(
        [s == target_label(target) for s in episodes.column(tr.SKILL).to_pylist()])
    return returns_by_seed(mine)


def train_baselines(cfg: ControlConfig, dataset: str, trajectories: str, best_skill: str,
                    run_dir: Path) -> dict[str, dict]:
    """MLP BC on every training row (``bc-all``) and on the best skill's rows (``bc-best``),
    saved as ``file://`` checkpoints; their losses and URIs by name."""
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.network import action_width, save_mlp_policy
    from policylm.platform.training.bc import BcDataError, bc_rows, train_bc

    space = make_adapter(cfg.env_id, **cfg.env_options).action_space
    out = {}
    for name, skills in (("bc-all", None), ("bc-best", [best_skill])):
        obs, actions = bc_rows(dataset, trajectories, "train", skills)
        try:
            held = bc_rows(dataset, trajectories, "validation", skills)
        except BcDataError:  # no validation rows (of that skill)
            held = None
        fit = train_bc(obs, actions, space, hidden=cfg.bc.hidden, steps=cfg.bc.steps,
                       batch_size=cfg.bc.batch_size, lr=cfg.bc.lr, seed=cfg.bc.seed,
                       validation=held)
        path = save_mlp_policy(run_dir / name / "policy.pt", fit.net, obs.shape[1],
                               action_width(space), cfg.bc.hidden, cfg.env_id)
        out[name] = {"uri": f"file://{path}", "rows": len(obs), "skills": skills or "all",
                     "train_loss": fit.losses, "validation_loss": fit.validation_loss}
    return out


def imitation_errors(cfg: ControlConfig, policies: dict[str, str], dataset: str,
                     trajectories: str, batch: int = 32) -> dict[str, dict] | None:
    """How closely each policy imitates the data on up to ``cfg.imitation_rows`` held-out
    (validation) rows, evenly spread: the mean squared error between its action and the data's,
    per action number (None without held-out rows). An LLM policy answers each row's own
    prompt (its target, step and observation text; an invalid answer is its fallback action,
    and counted), a network policy the row's observation vector."""
    import numpy as np

    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.datasets import OBSERVATION, TARGET_RETURN
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.training.bc import BcDataError, dataset_rows, env_arrays

    try:
        rows = dataset_rows(dataset, "validation", columns=[tr.EPISODE_ID, tr.T, tr.SKILL,
                                                            OBSERVATION, TARGET_RETURN])
    except BcDataError:
        rows = None
    if rows is not None:
        rows = rows.filter([v is not None for v in rows.column(TARGET_RETURN).to_pylist()])
    if rows is None or rows.num_rows == 0:
        log.warning("imitation: the dataset has no held-out rows with a target; none measured "
                    "(raise dataset.validation_fraction)")
        return None
    pick = np.unique(np.linspace(0, rows.num_rows - 1, min(rows.num_rows, cfg.imitation_rows))
                     .astype(np.int64))
    rows = rows.take(pick)
    obs, actions = env_arrays(rows, trajectories)
    texts = rows.column(OBSERVATION).to_pylist()
    targets = rows.column(TARGET_RETURN).to_pylist()
    steps, n = rows.column(tr.T).to_pylist(), rows.num_rows
    adapter = make_adapter(cfg.env_id, **cfg.env_options)
    out = {}
    for name, uri in policies.items():
        policy = policy_from_uri(uri, adapter)
        if hasattr(policy, "decide"):  # the LLM policy: each row's prompt
            got = [d.action for i in range(0, n, batch) for d in policy.decide(
                texts[i:i + batch], targets[i:i + batch], steps[i:i + batch],
                [np.random.default_rng(i + j) for j in range(len(texts[i:i + batch]))])]
        else:
            got = policy.act(list(obs), list(range(n)))
        pred = np.asarray(got, np.float32).reshape(n, -1)
        stats = policy.stats() or {}
        out[name] = {"rows": n, "mse": float(((pred - actions) ** 2).mean()),
                     "invalid_rate": stats.get("invalid_rate")}
    return out


def grpo_stage(cfg: ControlConfig, parts: dict, best: str, tuned_at_top: dict, run_dir: Path,
               stages: Stages) -> dict:
    """GRPO from the SFT adapter over the dataset's states (an empty ``env_reward.policy``:
    the best skill's policy finishes each rollout), then the GRPO adapter at the highest
    target, paired with the fine-tuned LLM's returns there (``tuned_at_top``)."""
    from policylm.platform.evaluation.metrics import paired_difference

    top = max(cfg.evaluate.targets)
    policies = {p.skill: p.uri for p in demo.skill_policies(cfg, parts["experts"]["experts"])}
    env_reward = {**cfg.grpo.env_reward,
                  "policy": cfg.grpo.env_reward.get("policy") or policies[best]}
    with stages("grpo"):
        trained = grpo.main(dataclasses.replace(
            cfg.grpo, dataset=parts["dataset"]["dataset"], model=cfg.sft.model,
            adapter=parts["sft"]["adapter"], env_id=cfg.env_id,
            env_options=dict(cfg.env_options), env_reward=env_reward, out=str(run_dir / "grpo")))
    with stages("evaluate_grpo"):
        played = demo.play_uri(cfg, demo.llm_uri(cfg, trained["adapter"]), [top],
                               run_dir / "evaluate-grpo")
    return {"adapter": trained["adapter"], "rewards": trained["rewards"],
            "env_reward": env_reward, "eval": played,
            "difference_vs_fine_tuned": paired_difference(
                tuned_at_top, returns_at(played["run_dir"], top))}


def main(cfg: ControlConfig) -> dict:
    from policylm.platform.evaluation.metrics import paired_difference
    from policylm.platform.evaluation.reports import plot_target_vs_actual

    run_dir = open_run("control", cfg).resolve()
    stages = Stages()
    parts = demo.train_policy(cfg, run_dir, stages)
    col, ds, tuned = parts["collect"], parts["dataset"], parts["sft"]
    skills = {k: s["return"] for k, s in col["skills"].items()}
    best = max((k for k in skills if k != "random"), key=lambda k: skills[k]["mean"])
    with stages("export_minari"):
        minari = export_minari.main(export_minari.ExportMinariConfig(
            trajectories=col["trajectories"], store=str(run_dir / "minari"),
            dataset_id=cfg.minari_id or default_minari_id(cfg.env_id), ref_min="random",
            ref_max=best, max_episode_steps=int(cfg.env_options.get("max_episode_steps") or 0),
            description=f"policylm control run {run_dir.name}: {', '.join(skills)} episodes"))
    refs = {**minari["ref_scores"], "expert": best}  # the random and best skill's mean returns
    top = max(cfg.evaluate.targets)
    with stages("evaluate"):
        evals = demo.evaluate_policies(cfg, tuned["adapter"], run_dir)
    with stages("bc"):
        bcs = train_baselines(cfg, ds["dataset"], col["trajectories"], best, run_dir)
    with stages("evaluate_bc"):
        for name, b in bcs.items():
            b["eval"] = demo.play_uri(cfg, b["uri"], [top], run_dir / f"evaluate-{name}")
    tuned_at_top = returns_at(evals["fine-tuned"]["run_dir"], top)
    for b in bcs.values():
        b["difference_vs_fine_tuned"] = paired_difference(
            tuned_at_top, returns_at(b["eval"]["run_dir"], top))
    grpo_part = grpo_stage(cfg, parts, best, tuned_at_top, run_dir, stages) \
        if cfg.grpo_from_adapter else None
    imitation = None
    if cfg.imitation_rows:
        with stages("imitation"):
            imitation = imitation_errors(
                cfg, {"fine-tuned": demo.llm_uri(cfg, tuned["adapter"]),
                      **{k: b["uri"] for k, b in bcs.items()},
                      **({"grpo": demo.llm_uri(cfg, grpo_part["adapter"])} if grpo_part else {})},
                ds["dataset"], col["trajectories"])
    scores = scores_table(evals, bcs, grpo_part, refs, top)
    data = col["overall_return"]
    plot_target_vs_actual(evals["fine-tuned"], run_dir / "target_vs_actual.png",
                          f"{cfg.sft.model} + LoRA on {cfg.env_id}", (data["min"], data["max"]),
                          label="fine-tuned", baseline=evals.get("untrained"))
    metrics = {"experts": parts["experts"]["experts"], "skills": skills, "references": refs,
               "minari": minari, "dataset": ds["splits"],
               "sft": {k: tuned[k] for k in ("adapter", "train_loss", "eval_loss", "train_tokens",
                                             "train_tokens_per_s")},
               "evaluate": {k: {"targets": v["targets"], "spearman_means": v["spearman_means"],
                                "invalid_rate": v["invalid_rate"],
                                "steps_per_s": steps_per_s(v)} for k, v in evals.items()},
               "bc": {k: {**{f: b[f] for f in b if f != "eval"},
                          "stats": b["eval"]["targets"], "steps_per_s": steps_per_s(b["eval"])}
                      for k, b in bcs.items()},
               "grpo": None if grpo_part is None else {
                   **{f: grpo_part[f] for f in grpo_part if f != "eval"},
                   "stats": grpo_part["eval"]["targets"],
                   "steps_per_s": steps_per_s(grpo_part["eval"])},
               "scores": scores, "imitation": imitation,
               "goal": goal(scores, top, evals["fine-tuned"]["spearman_means"]),
               "stage_seconds": stages.seconds}
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(report(cfg, metrics))
    console.say(f"policylm control: report in {run_dir / 'report.md'}", "stdout")
    return {"run_dir": str(run_dir), **metrics}


def steps_per_s(evaluation: dict) -> float | None:
    """Env steps acted per second of an evaluation's play stage (None when unknown)."""
    from policylm.platform.data import trajectories as tr

    seconds = evaluation.get("stage_seconds", {}).get("play")
    steps = tr.read_trajectories(Path(evaluation["run_dir"]) / "trajectories",
                                 columns=[tr.T]).num_rows
    return steps / seconds if seconds and steps else None


CONFIG = ControlConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("control", ControlConfig, main, sys.argv[1:])
