"""Online episodic GRPO (``policylm grpo mode=episodes``): rollout actors play G episodes from each
of B env seeds with the current policy; the learner (``policylm.platform.training.episodic_grpo``,
in this process) turns their group-normalised returns into advantages and updates the LoRA adapter
with the clipped objective; the new LoRA weights reach the actors through the object store before
the next iteration (no files on shared disk). Continuous actions are generated
(``max_completion_length`` tokens at ``temperature``) and trained token by token. Per iteration it
logs the mean and max return, the share of groups without spread (filtered), KL, the clip fraction
and the seconds spent in rollout, training and weight sync. Writes ``adapter/``, ``metrics.json``,
``return_per_iteration.png`` and ``report.md`` (per-iteration table and budget).
"""

from __future__ import annotations

import os
import time
from typing import Any

from policylm.jobs.common import log, open_run, settings, write_json
from policylm.runtime import init_ray


def main(cfg: Any) -> dict:
    """Run ``cfg`` (a ``GrpoJobConfig`` whose start ``policylm.jobs.grpo.main`` resolved)."""
    import pyarrow as pa
    from peft import get_peft_model

    from policylm.actors.rollout import RolloutGroup, RolloutSpec
    from policylm.platform.console import progress
    from policylm.platform.data import trajectories as tr
    from policylm.platform.engines.models import resolve_model
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import with_params
    from policylm.platform.prompts import read_history, read_lead, write_form
    from policylm.platform.rollout.runner import plan_chunks
    from policylm.platform.tracking import Tracker
    from policylm.platform.training.episodic_grpo import EpisodicLearner, build_batch, subsample
    from policylm.platform.training.sft import load_trainable

    steps_back = read_history(cfg.adapter or None, cfg.model)  # the adapter's, kept
    lead = read_lead(cfg.adapter or None, cfg.model)  # its few-shot examples, kept too
    run_dir = open_run("grpo", cfg).resolve()
    resolve_model(cfg.model)
    env = make_adapter(cfg.env_id, **cfg.env_options)
    model, tokenizer, peft = load_trainable(cfg.sft_view(), cfg.adapter)
    if peft is not None:
        model = get_peft_model(model, peft)
    learner = EpisodicLearner(model, tokenizer, env, cfg.prompt_form, cfg.temperature, cfg.lr,
                              cfg.epsilon, cfg.beta, cfg.minibatch)
    # the actors load the base model; the learner's LoRA weights (the starting adapter's too)
    # reach them before every iteration
    base = (f"hf://{cfg.model}?target_return={cfg.target_return}&temperature={cfg.temperature}"
            f"&prompt={cfg.prompt_form}&dtype={cfg.dtype}&live=grpo&history={steps_back}")
    if lead:  # the examples the starting adapter was trained with (its weights come live)
        base += f"&lead_from={cfg.adapter}"
    if learner.generated:  # continuous actions: generated text, parsed by the codec
        base += f"&mode=generate&max_new_tokens={cfg.max_completion_length}&fallback=random"
    # rollout and training take turns, so the actors may use every core while they play
    threads = max(1, (os.cpu_count() or 1) // max(1, cfg.rollout_workers))
    spec = RolloutSpec(cfg.env_id, cfg.env_options, cfg.envs_per_worker, 1.0,
                       str(run_dir / "trajectories"), run_dir.name, torch_threads=threads)
    if cfg.rollout_workers:
        init_ray()
    tracker, finished = Tracker(cfg.tracking, run_dir, "grpo", settings(cfg)), False
    group = RolloutGroup(spec, num_workers=cfg.rollout_workers)
    history: list[dict] = []
    try:
        for it in progress(range(cfg.iterations), desc="GRPO iterations", unit="it"):
            t0 = time.perf_counter()
            weights, scaling = learner.lora_weights()
            group.set_lora(weights, scaling, version=it)
            t1 = time.perf_counter()
            members = [(f"it{it:04d}-g{g}", with_params(base, seed_offset=g + 1))
                       for g in range(cfg.group_size)]
            group.run(plan_chunks(members, cfg.seeds_per_iteration, cfg.seed + 7919 * it,
                                  cfg.envs_per_worker, shared_seeds=True))
            t2 = time.perf_counter()
            files = sorted((run_dir / "trajectories").glob(f"it{it:04d}-*.parquet"))
            steps, stale = current_episodes(
                pa.concat_tables([tr.read_trajectories(f) for f in files]), it)
            batch = build_batch(steps, env, cfg.prompt_form, learner, cfg.target_return,
                                history=steps_back, lead=lead)
            kept_steps = len(batch.prompts)
            batch = subsample(batch, cfg.train_steps, cfg.seed + it)
            stats = learner.update(batch, cfg.epochs_per_iteration)
            t3 = time.perf_counter()
            returns = tr.episode_table(steps).column("return").to_numpy()
            row = {"iteration": it, "mean_return": float(returns.mean()),
                   "mean_return_se": tr.return_stats(returns)["se"],
                   "max_return": float(returns.max()), "episodes": len(returns),
                   "groups": batch.groups, "filtered_groups": batch.filtered_groups,
                   "filtered_fraction": batch.filtered_groups / max(batch.groups, 1),
                   "stale_episodes": stale,
                   "steps_kept": kept_steps, "steps_trained": stats["rows"],
                   "loss": stats["loss"], "kl": stats["kl"],
                   "clip_fraction": stats["clip_fraction"], "sync_s": round(t1 - t0, 3),
                   "rollout_s": round(t2 - t1, 3), "train_s": round(t3 - t2, 3)}
            history.append(row)
            tracker.log(row, it)
            if stats["rows"] == 0:
                log.info("iteration %d: mean return %.1f: nothing trained (all %d groups had "
                         "the same return in each)", it, row["mean_return"], row["groups"])
            else:
                log.info("iteration %d: mean return %.1f ± %.1f (max %.0f), %d/%d groups "
                         "filtered, kl %s, clip %.3f, rollout %.1fs train %.1fs sync %.2fs", it,
                         row["mean_return"], row["mean_return_se"] or 0.0, row["max_return"],
                         row["filtered_groups"], row["groups"],
                         "not computed" if row["kl"] is None else f"{row['kl']:.4f}",
                         row["clip_fraction"], row["rollout_s"], row["train_s"], row["sync_s"])
        finished = True
    finally:
        group.shutdown()
        tracker.close(failed=not finished)
    adapter = run_dir / "adapter"
    learner.model.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    write_form(adapter, cfg.prompt_form, steps_back, lead)
    metrics = {"mode": "episodes", "iterations": history,
               "target_return": cfg.target_return, "group_size": cfg.group_size,
               "seeds_per_iteration": cfg.seeds_per_iteration}
    write_json(run_dir / "metrics.json", metrics)
    from policylm.platform.evaluation.reports import plot_curves

    plot_curves([("mean return", [(h["iteration"], h["mean_return"]) for h in history], "o-"),
                 ("max return", [(h["iteration"], h["max_return"]) for h in history], "--")],
                run_dir / "return_per_iteration.png", "iteration", "episode return",
                f"episodic GRPO on {cfg.env_id} (target {cfg.target_return:g})")
    write_report(cfg, history, run_dir)
    log.info("adapter: %s (use hf://%s?adapter=%s)", adapter, cfg.model, adapter)
    return {"run_dir": str(run_dir), "adapter": str(adapter), **metrics}


def current_episodes(steps: Any, version: int) -> tuple[Any, int]:
    """The steps of episodes played with weights ``version`` (the policy being trained), and
    how many episodes were played with other weights and dropped."""
    import pyarrow.compute as pc

    from policylm.platform.data import trajectories as tr

    ok = pc.fill_null(pc.equal(steps.column(tr.POLICY_VERSION), version), False)
    stale = set(steps.filter(pc.invert(ok)).column(tr.EPISODE_ID).to_pylist())
    if stale:
        log.warning("%d episodes were played with other weights than version %d; dropped",
                    len(stale), version)
    return steps.filter(ok), len(stale)


def write_report(cfg: Any, history: list[dict], run_dir: Any) -> None:
    """``report.md``: the budget, the return curve and one row per iteration."""
    from policylm.platform.evaluation.reports import markdown_table

    episodes = sum(h["episodes"] for h in history)
    seconds = sum(h["rollout_s"] + h["train_s"] + h["sync_s"] for h in history)
    from policylm.platform.evaluation.metrics import mean_se

    rows = [[h["iteration"], mean_se({"mean": h["mean_return"], "se": h["mean_return_se"]}),
             h["max_return"], f"{h['filtered_groups']}/{h['groups']}",
             h["steps_trained"] or "0 (nothing trained)",
             "not computed" if h["kl"] is None else h["kl"], h["clip_fraction"],
             h["rollout_s"], h["train_s"], h["sync_s"]] for h in history]
    (run_dir / "report.md").write_text(
        f"# Episodic GRPO on {cfg.env_id}\n\nStart: `{cfg.adapter or cfg.model}`; target "
        f"{cfg.target_return:g}, temperature {cfg.temperature:g}, lr {cfg.lr:g}.\n\nBudget: "
        f"{len(history)} iterations x {cfg.seeds_per_iteration} seeds x {cfg.group_size} "
        f"episodes = {episodes} episodes; {sum(h['steps_trained'] for h in history)} steps "
        f"trained; {seconds / 60:.1f} min of rollout, training and sync.\n\n"
        "![return per iteration](return_per_iteration.png)\n\n" + markdown_table(
            ["iteration", "mean return ± s.e.", "max return", "filtered groups",
             "steps trained", "KL", "clip fraction", "rollout s", "train s", "sync s"], rows)
        + "\n\nThe mean return is over the iteration's episodes (training seeds: each "
        "iteration plays new ones); KL is computed only with beta > 0.\n")
