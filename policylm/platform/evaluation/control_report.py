"""``report.md`` of a ``policylm control`` run (``policylm.jobs.control``): the data and its
reference returns, the fine-tuned LLM at every target beside the MLP BC baselines and GRPO, in
returns and normalised scores, the paired differences at the highest target, and the goal."""

from __future__ import annotations

from typing import Any

from policylm.platform.seeds import describe_seeds


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _pm(stats: dict, fmt: str = ".1f") -> str:
    if stats.get("mean") is None:
        return "n/a"
    se = stats.get("se")
    return format(stats["mean"], fmt) + ("" if se is None else f" ± {format(se, fmt)}")


def report(cfg: Any, metrics: dict) -> str:
    """Markdown summary of a control run (``metrics``: the run's ``metrics.json``)."""
    from policylm.platform.evaluation.reports import markdown_table

    refs = metrics["references"]
    lines = [f"# policylm control: `{cfg.env_id}`", "",
             f"Episodes of {cfg.env_options.get('max_episode_steps', 'the env default')} steps. "
             "Normalised score, as D4RL and Minari compute it: 100 (return - random) / "
             f"(expert - random), with random = {refs['min']:.1f} (the random policy's mean "
             f"return) and expert = {refs['max']:.1f} (the `{refs['expert']}` skill's).", "",
             "## Data", "",
             markdown_table(["skill", "episodes", "mean return ± s.e.", "normalised"],
                            [[k, s.get("count"), _pm(s),
                              _num(100 * (s["mean"] - refs["min"]) / (refs["max"] - refs["min"]))]
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
                             [[r["policy"], _num(r["target"], "g"), _pm(r["return"]),
                               _pm(r["normalised"]), _num(r["invalid_rate"], ".3f")]
                              for r in metrics["scores"]]), "",
              "Invalid answers (text that does not parse as an action) act randomly instead; n/a: "
              "the policy writes no text.", "",
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
        [[k, d["pairs"], _pm(d), d["within_noise"]] for k, d in pairs.items()]))
    imitation = metrics.get("imitation")
    if imitation:
        n = next(iter(imitation.values()))["rows"]
        lines += ["", f"## Imitation on {n} held-out rows", "",
                  "Mean squared error between each policy's action and the data's, per action "
                  "number, on validation rows (the LLM answers each row's own prompt; invalid "
                  "answers count as their fallback action):", "",
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
