"""``report.md`` of a ``policylm control`` run (``policylm.jobs.control``): the data and its
reference returns, the fine-tuned LLM at every target beside the MLP BC baselines and GRPO, in
returns and normalised scores, the paired differences at the highest target, and the goal."""

from __future__ import annotations

from typing import Any

from policylm.platform.seeds import describe_seeds


def normalised(stats: dict, refs: dict) -> dict:
    """The mean and standard error of ``stats`` (return statistics) as a D4RL normalised score:
    ``100 (x - refs['min']) / (refs['max'] - refs['min'])``; None where unknown."""
    scale = 100.0 / (refs["max"] - refs["min"])
    mean, se = stats.get("mean"), stats.get("se")
    return {"mean": None if mean is None else (mean - refs["min"]) * scale,
            "se": None if se is None else se * scale}


def scores_table(evals: dict, bcs: dict, grpo_part: dict | None, refs: dict, top: float
                 ) -> list[dict]:
    """One row per policy and target: the return statistics and the normalised score. The
    fine-tuned LLM at every target, each BC baseline and the GRPO adapter at ``top``."""
    from policylm.platform.evaluation.metrics import target_label

    tuned = evals["fine-tuned"]
    rows = [{"policy": "fine-tuned", "target": m["target"], "return": m,
             "normalised": normalised(m, refs), "invalid_rate": tuned["invalid_rate"].get(label)}
            for label, m in tuned["targets"].items()]
    others = {name: b["eval"] for name, b in bcs.items()}
    if grpo_part is not None:
        others["grpo"] = grpo_part["eval"]
    label = target_label(top)
    for name, ev in others.items():
        rows.append({"policy": name, "target": top if name == "grpo" else None,
                     "return": ev["targets"][label],
                     "normalised": normalised(ev["targets"][label], refs),
                     "invalid_rate": ev["invalid_rate"].get(label)})
    return rows


def goal(scores: list[dict], top: float, spearman: float | None) -> dict:
    """The issue's bar: the fine-tuned LLM's normalised score at the highest target >= 0.9 of
    the stronger MLP BC baseline's, and Spearman(target, mean) >= 0.8; the moonshot: above it."""
    llm = next(r["normalised"]["mean"] for r in scores
               if r["policy"] == "fine-tuned" and r["target"] == top)
    bc = max((r for r in scores if r["policy"].startswith("bc-")),
             key=lambda r: r["normalised"]["mean"])
    base = bc["normalised"]["mean"]
    ratio = llm / base if base and base > 0 else None
    return {"llm": llm, "baseline": bc["policy"], "baseline_score": base, "ratio": ratio,
            "bar": 0.9, "spearman": spearman,
            "passed": ratio is not None and ratio >= 0.9 and spearman is not None
            and spearman >= 0.8,
            "moonshot": ratio is not None and ratio > 1.0}


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def report(cfg: Any, metrics: dict) -> str:
    """Markdown summary of a control run (``metrics``: the run's ``metrics.json``)."""
    from policylm.platform.evaluation.metrics import mean_se
    from policylm.platform.evaluation.reports import markdown_table

    refs = metrics["references"]
    lines = [f"# policylm control: `{cfg.env_id}`", "",
             f"Episodes of {cfg.env_options.get('max_episode_steps', 'the env default')} steps. "
             "Normalised score, as D4RL and Minari compute it: 100 (return - random) / "
             f"(expert - random), with random = {refs['min']:.1f} (the random policy's mean "
             f"return) and expert = {refs['max']:.1f} (the `{refs['expert']}` skill's).", "",
             "## Data", "",
             markdown_table(["skill", "episodes", "mean return ± s.e.", "normalised ± s.e."],
                            [[k, s.get("count"), mean_se(s), mean_se(normalised(s, refs))]
                             for k, s in metrics["skills"].items()]), ""]
    mn = metrics["minari"]
    lines += [f"Minari dataset `{mn['dataset_id']}` ({mn['episodes']} episodes, {mn['steps']} "
              f"steps) in `{mn['store']}`, with these reference returns "
              "(`minari.get_normalized_score`).", ""]
    sft = metrics["sft"]
    ev_loss = sft["eval_loss"][-1][1] if sft["eval_loss"] else None
    lines += ["## Training", "",
              f"- LoRA SFT: {sft['train_loss'][-1][0] if sft['train_loss'] else 0} steps, "
              f"{sft['train_tokens']} tokens at {_num(sft['train_tokens_per_s'])} tokens/s; "
              f"validation loss {_num(ev_loss, '.3f')}"]
    for name, b in metrics["bc"].items():
        lines.append(f"- MLP BC `{name}` ({b['skills']} rows: {b['rows']}): final training "
                     f"loss {_num(b['train_loss'][-1][1], '.4f')}, validation loss "
                     f"{_num(b['validation_loss'], '.4f')}")
    g = metrics.get("grpo")
    if g:
        last = {k: v[-1][1] for k, v in g["rewards"].items() if v}
        lines.append("- GRPO from the adapter: last step's rewards "
                     + ", ".join(f"{k} {v:.3f}" for k, v in last.items())
                     + f"; env reward: rollout `{g['env_reward'].get('policy')}`, horizon "
                     f"{g['env_reward'].get('horizon')}")
    lines += ["", "## Scores", "",
              markdown_table(["policy", "target", "return ± s.e.", "normalised ± s.e.",
                              "invalid answers"],
                             [[r["policy"], _num(r["target"], "g"), mean_se(r["return"]),
                               mean_se(r["normalised"]), _num(r["invalid_rate"], ".3f")]
                              for r in metrics["scores"]]), "",
              "Invalid answers: text that does not parse as an action, played as the LLM "
              f"policy's fallback (`{cfg.evaluate.policy_params.get('fallback', 'first')}`); "
              "n/a: the policy writes no text.", "",
              f"Spearman(target, mean return) of the fine-tuned LLM: "
              f"{_num(metrics['evaluate']['fine-tuned']['spearman_means'], '.2f')}. Every policy "
              "plays the same env seeds. "
              + describe_seeds(cfg.evaluate.seed, cfg.evaluate.episodes),
              "", "![target vs actual](target_vs_actual.png)", "",
              "## Paired differences at the highest target (policy - fine-tuned LLM)", ""]
    pairs = {name: b["difference_vs_fine_tuned"] for name, b in metrics["bc"].items()}
    if g:
        pairs["grpo"] = g["difference_vs_fine_tuned"]
    lines.append(markdown_table(
        ["policy", "pairs", "return difference ± s.e.", "within noise"],
        [[k, d["pairs"], mean_se(d), d["within_noise"]] for k, d in pairs.items()]))
    imitation = metrics.get("imitation")
    if imitation:
        n = next(iter(imitation.values()))["rows"]
        lines += ["", f"## Imitation on {n} held-out rows", "",
                  "Mean squared error between each policy's action and the data's, per action "
                  "number, on validation rows (the LLM answers each row's own prompt; an "
                  "invalid answer counts as its fallback action):", "",
                  markdown_table(["policy", "action MSE", "invalid answers"],
                                 [[k, _num(v["mse"], ".4f"), _num(v["invalid_rate"], ".3f")]
                                  for k, v in imitation.items()])]
    goal = metrics["goal"]
    lines += ["", "## Goal", "",
              f"- fine-tuned LLM at the highest target: normalised {_num(goal['llm'])} against "
              f"the stronger MLP BC (`{goal['baseline']}`) {_num(goal['baseline_score'])}: "
              f"ratio {_num(goal['ratio'], '.2f')} (bar {goal['bar']}); Spearman "
              f"{_num(goal['spearman'], '.2f')} (bar 0.8): "
              f"{'met' if goal['passed'] else 'NOT met'}; above the MLP: "
              f"{'yes' if goal['moonshot'] else 'no'}",
              "", "## Acting speed (env steps per second of play, all envs together)", ""]
    speeds = {f"LLM {k}": v["steps_per_s"] for k, v in metrics["evaluate"].items()}
    speeds.update({f"MLP {k}": b["steps_per_s"] for k, b in metrics["bc"].items()})
    if g:
        speeds["LLM grpo"] = g["steps_per_s"]
    lines += [f"- {k}: {_num(v)}" for k, v in speeds.items()]
    lines += ["", "## Stage times (s)", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in metrics["stage_seconds"].items()]
    return "\n".join(lines) + "\n"
