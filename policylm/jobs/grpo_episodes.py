"""Online episodic GRPO (``policylm grpo-episodes``): rollout actors play G episodes from each of
B env seeds with the current policy; the learner (``policylm.platform.training.episodic_grpo``,
in this process) turns their group-normalised returns into advantages and updates the LoRA adapter
with the clipped objective; the new LoRA weights reach the actors through the object store before
the next iteration (no files on shared disk); with ``max_staleness=k`` they play up to k
iterations ahead while the learner trains, every episode stamped with the weight version that
played it and the learner correcting for it. Continuous actions are generated
(``max_completion_length`` tokens at ``temperature``) and trained token by token. Per iteration it
logs the mean and max return, the share of groups without spread (filtered), KL, the clip fraction
and the seconds spent in rollout, training and weight sync. Writes ``adapter/``, ``metrics.json``,
``return_per_iteration.png`` and ``report.md`` (per-iteration table and budget).

Usage: ``policylm grpo-episodes --config configs/grpo_episodes_cartpole.yaml
adapter=runs/demo/sft/adapter`` (or ``python -m policylm.jobs.grpo_episodes ...``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from policylm.jobkit.runs import log, open_run, run_job, settings, write_json
from policylm.jobs.grpo import GrpoSettings, resolve_start
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TEST_SEED, describe_seeds
from policylm.runtime import init_ray, passive_openmp


@dataclass
class GrpoEpisodesConfig(GrpoSettings):
    """Improve the LLM policy with online GRPO over episodes that rollout actors play."""

    REFUSED_KEYS: ClassVar[dict[str, str]] = {
        "resume": "grpo-episodes starts over (its optimizer state is not saved between "
                  "iterations): use overwrite=true or a new out=",
        "mode": "grpo-episodes plays episodes; give its keys without mode"}

    iterations: int = field(10, doc="rollout + update rounds")
    seeds_per_iteration: int = field(4, doc="env seeds (groups) per iteration")
    group_size: int = field(4, doc="episodes per seed (the GRPO group)")
    target_return: float = field(500.0, doc="the target in the prompt")
    step_advantage: float = field(0.0, doc="weight w of GiGPO's step-level advantage: a step's "
                                  "advantage is A_episode + w * A_step, A_step its discounted "
                                  "return-to-go normalised among the group's steps that saw the "
                                  "same observation (0: episode-level GRPO)")
    step_gamma: float = field(0.95, doc="discount of the return-to-go in A_step")
    epochs_per_iteration: int = field(1, doc="passes over an iteration's steps")
    minibatch: int = field(64, doc="steps per optimizer step")
    micro_tokens: int = field(512, doc="the learner's forward and backward passes hold at most "
                              "this many tokens at once (a minibatch's pieces; their gradients "
                              "are summed, so the update is the same and memory follows the "
                              "piece)")
    train_steps: int = field(0, doc="train on at most this many steps per iteration, drawn "
                             "uniformly from the kept episodes (0: all)")
    max_staleness: int = field(0, doc="0 plays and trains in turns; k > 0 lets the actors play "
                               "ahead while the learner trains, with weights at most k updates "
                               "old (needs rollout_workers >= 1)")
    max_importance_weight: float = field(2.0, doc="truncation of the importance weight of steps "
                                         "older weights played")
    rollout_workers: int = field(2, doc="rollout actors (0: in this process)")
    envs_per_worker: int = field(8, doc="envs per rollout actor")
    heldout_episodes: int = field(0, doc="after training, the starting and the trained policy "
                                  "each play this many held-out env seeds (the same ones) at "
                                  "target_return; the report gives both means and their paired "
                                  "difference (0: none)")
    heldout_seed: int = field(TEST_SEED, doc="base seed of the held-out env seeds (default: the "
                              "test range, policylm.platform.seeds; 10000: the validation range, "
                              "for choosing settings; refused when one is a training seed)")
    heldout_guidance: float = field(0.0, doc="return guidance w of the held-out play (0: none; "
                                    "see policylm evaluate)")
    out: str = field("", doc="run directory (default runs/grpo-episodes-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        super().validate()
        require(self.group_size >= 2, "group_size", "must be >= 2 (a group)")
        require(self.micro_tokens >= 1, "micro_tokens", "must be >= 1")
        require(self.step_advantage >= 0, "step_advantage", "must be >= 0 (0: episode-level "
                "advantages only)")
        require(0 < self.step_gamma <= 1, "step_gamma", "must be in (0, 1]")
        require(self.iterations >= 1, "iterations", "must be >= 1")
        require(self.seeds_per_iteration >= 1, "seeds_per_iteration", "must be >= 1")
        require(self.max_staleness >= 0, "max_staleness", "must be >= 0 (0: synchronous)")
        require(self.max_staleness == 0 or self.rollout_workers >= 1, "max_staleness",
                "playing ahead needs rollout actors beside the learner: set "
                "rollout_workers >= 1, or max_staleness=0 to play in this process")
        require(self.max_importance_weight >= 1, "max_importance_weight", "must be >= 1")
        require(self.heldout_episodes >= 0, "heldout_episodes", "must be >= 0 (0: none)")
        require(self.heldout_guidance >= 0, "heldout_guidance", "must be >= 0 (0: none)")


def main(cfg: GrpoEpisodesConfig) -> dict:
    """Run ``cfg``: iterations of play and update, then the held-out comparison."""
    resolve_start(cfg)
    if cfg.max_staleness and "OMP_WAIT_POLICY" not in os.environ and not passive_openmp():
        log.warning("torch was imported before the job started, so the learner's idle threads "
                    "spin and slow the rollout actors beside them; set OMP_WAIT_POLICY=PASSIVE "
                    "in the environment")
    import pyarrow as pa
    from peft import get_peft_model

    from policylm.actors.rollout import RolloutGroup, RolloutSpec
    from policylm.platform.console import progress
    from policylm.platform.data import trajectories as tr
    from policylm.platform.engines.models import resolve_model
    from policylm.platform.envs import make_adapter
    from policylm.platform.records import (
        PromptRecord,
        check_text_options,
        read_record,
        write_record,
    )
    from policylm.platform.tracking import Tracker
    from policylm.platform.training.episodic_grpo import build_batch, subsample
    from policylm.platform.training.learner import EpisodicLearner
    from policylm.platform.training.sft import load_trainable

    env = make_adapter(cfg.env_id, **cfg.env_options)
    check_heldout(cfg, env)
    start = read_record(cfg.adapter or None, cfg.model)
    steps_back, lead = start.history, start.lead  # the adapter's history and examples, kept
    # the actors play the base model with live weights: the starting adapter's text is checked
    # here
    check_text_options(start.text_options, env.text_options, cfg.env_id)
    run_dir = open_run("grpo-episodes", cfg).resolve()
    resolve_model(cfg.model)
    model, tokenizer, peft = load_trainable(cfg.sft_view(), cfg.adapter)
    if peft is not None:
        model = get_peft_model(model, peft)
    learner = EpisodicLearner(model, tokenizer, env, cfg.prompt_form, cfg.temperature, cfg.lr,
                              cfg.epsilon, cfg.beta, cfg.minibatch, cfg.max_staleness,
                              cfg.max_importance_weight, cfg.micro_tokens)
    # the actors load the base model; the learner's LoRA weights (the starting adapter's too)
    # reach them before every iteration
    base = (f"hf://{cfg.model}?target_return={cfg.target_return}&temperature={cfg.temperature}"
            f"&prompt={cfg.prompt_form}&dtype={cfg.dtype}&live=grpo&history={steps_back}")
    if lead:  # the examples the starting adapter was trained with (its weights come live)
        base += f"&lead_from={cfg.adapter}"
    # continuous actions: generated text, parsed by the codec
    generate = (f"&mode=generate&max_new_tokens={cfg.max_completion_length}&fallback=random"
                if learner.generated else "")
    base += generate
    threads = actor_threads(os.cpu_count() or 1, cfg.rollout_workers, cfg.max_staleness > 0)
    spec = RolloutSpec(cfg.env_id, cfg.env_options, cfg.envs_per_worker, 1.0,
                       str(run_dir / "trajectories"), run_dir.name, torch_threads=threads)
    if cfg.rollout_workers:
        init_ray()
    tracker, finished = Tracker(cfg.tracking, run_dir, "grpo-episodes", settings(cfg)), False
    group = RolloutGroup(spec, num_workers=cfg.rollout_workers)
    rollouts = Rollouts(group, cfg, base)
    history: list[dict] = []
    t_start = time.perf_counter()
    try:
        for it in range(cfg.max_staleness + 1):  # iterations 0..k play with the first weights
            rollouts.launch(it, learner)
        for it in progress(range(cfg.iterations), desc="GRPO iterations", unit="it"):
            t0 = time.perf_counter()
            played = rollouts.result(it)
            t1 = time.perf_counter()
            files = sorted((run_dir / "trajectories").glob(f"it{it:04d}-*.parquet"))
            steps, stale = fresh_episodes(
                pa.concat_tables([tr.read_trajectories(f) for f in files]), learner.version,
                cfg.max_staleness)
            batch = build_batch(steps, env, cfg.prompt_form, learner.template, cfg.target_return,
                                history=steps_back, lead=lead, step_weight=cfg.step_advantage,
                                step_gamma=cfg.step_gamma)
            kept_steps = len(batch.prompts)
            batch = subsample(batch, cfg.train_steps, cfg.seed + it)
            stats = learner.update(batch, cfg.epochs_per_iteration)
            t2 = time.perf_counter()
            rollouts.launch(it + cfg.max_staleness + 1, learner)  # with the new weights
            returns = tr.episode_table(steps).column("return").to_numpy()
            row = {"iteration": it, "mean_return": float(returns.mean()),
                   "mean_return_se": tr.return_stats(returns)["se"],
                   "max_return": float(returns.max()), "episodes": len(returns),
                   "groups": batch.groups, "filtered_groups": batch.filtered_groups,
                   "filtered_fraction": batch.filtered_groups / max(batch.groups, 1),
                   "stale_episodes": stale, "behaviour_version": played["version"],
                   "staleness": stats["staleness"],
                   "importance_weight": stats["importance_weight"],
                   "weight_truncated": stats["weight_truncated"],
                   "steps_kept": kept_steps, "steps_trained": stats["rows"],
                   "loss": stats["loss"], "kl": stats["kl"],
                   "clip_fraction": stats["clip_fraction"], "sync_s": played["sync_s"],
                   "rollout_s": played["rollout_s"], "wait_s": round(t1 - t0, 3),
                   "train_s": round(t2 - t1, 3), "wall_s": round(t2 - t_start, 3),
                   # when (seconds into the loop) the episodes were played and the update ran
                   "rollout_from_s": round(played["from"] - t_start, 3),
                   "rollout_to_s": round(played["to"] - t_start, 3),
                   "train_from_s": round(t1 - t_start, 3)}
            history.append(row)
            tracker.log(row, it)
            log_iteration(row)
        finished = True
    finally:
        rollouts.close()
        tracker.close(failed=not finished)
    adapter = run_dir / "adapter"
    learner.model.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    write_record(adapter, PromptRecord(cfg.prompt_form, steps_back, lead,
                                       text_options=env.text_options))
    wall = history[-1]["wall_s"]
    metrics = {"mode": "episodes", "iterations": history,
               "target_return": cfg.target_return, "group_size": cfg.group_size,
               "seeds_per_iteration": cfg.seeds_per_iteration,
               "max_staleness": cfg.max_staleness, "wall_s": wall,
               "iterations_per_hour": round(3600 * len(history) / wall, 2) if wall else None}
    write_json(run_dir / "metrics.json", with_memory(metrics))
    from policylm.platform.evaluation.reports import plot_curves

    plot_curves([("mean return", [(h["iteration"], h["mean_return"]) for h in history], "o-"),
                 ("max return", [(h["iteration"], h["max_return"]) for h in history], "--")],
                run_dir / "return_per_iteration.png", "iteration", "episode return",
                f"episodic GRPO on {cfg.env_id} (target {cfg.target_return:g})")
    if cfg.heldout_episodes:
        metrics["heldout"] = heldout_comparison(cfg, run_dir, adapter, generate)
        write_json(run_dir / "metrics.json", with_memory(metrics))
    write_report(cfg, history, run_dir, metrics.get("heldout"))
    log.info("adapter: %s (use hf://%s?adapter=%s)", adapter, cfg.model, adapter)
    return {"run_dir": str(run_dir), "adapter": str(adapter), **metrics}


def actor_threads(cores: int, workers: int, overlap: bool) -> int:
    """Torch threads per rollout actor. Taking turns with the learner, the actors may use every
    core while they play; overlapping, each keeps to one thread (its work is mostly the env
    and prompts, which one thread runs as fast as two) and the learner keeps torch's default,
    every core (an even split leaves the update one core)."""
    return max(1, cores // max(1, workers)) if not overlap else 1


class Rollouts:
    """The iterations' rollouts, played one after another in a background thread: each with
    the weights the learner had when it was launched (version and LoRA tensors), so the job
    launches iteration ``it + max_staleness + 1`` right after update ``it`` and the actors play
    ahead while the learner trains (``max_staleness`` 0: launched after the update it waits
    for, the synchronous loop)."""

    def __init__(self, group: Any, cfg: Any, base: str):
        from concurrent.futures import ThreadPoolExecutor

        self.group, self.cfg, self.base = group, cfg, base
        # in this process (no actors) the rollout plays in this thread, when launched
        self.pool = None if group.local is not None else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="grpo-rollouts")
        self.played: dict[int, Any] = {}

    def launch(self, it: int, learner: Any) -> None:
        """Queue iteration ``it`` (past the last: nothing) with the learner's current weights."""
        if it >= self.cfg.iterations:
            return
        t0 = time.perf_counter()
        weights, scaling = learner.lora_weights()
        args = (it, learner.version, weights, scaling, time.perf_counter() - t0)
        if self.pool is None:
            done = self._play(*args)
            self.played[it] = lambda: done
        else:
            self.played[it] = self.pool.submit(self._play, *args).result

    def result(self, it: int) -> dict:
        """Wait for iteration ``it``'s episodes (a failure in the thread is raised here)."""
        return self.played.pop(it)()

    def _play(self, it: int, version: int, weights: dict, scaling: float,
              copy_s: float) -> dict:
        from policylm.platform.rollout.runner import plan_groups

        cfg = self.cfg
        t0 = time.perf_counter()
        self.group.set_lora(weights, scaling, version=version)
        t1 = time.perf_counter()
        # one policy; a group's episodes sample apart (streams), all in batches of envs_per_worker
        self.group.run(plan_groups(self.base, f"it{it:04d}", cfg.seeds_per_iteration,
                                   cfg.group_size, iteration_seed(cfg, it), cfg.envs_per_worker))
        t2 = time.perf_counter()
        return {"version": version, "sync_s": round(copy_s + t1 - t0, 3),
                "rollout_s": round(t2 - t1, 3), "from": t1, "to": t2}

    def close(self) -> None:
        """Drop the queued rollouts, stop the actors (a rollout under way fails with them) and
        wait for the thread."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.group.shutdown()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def iteration_seed(cfg: Any, it: int) -> int:
    """The base seed of iteration ``it``'s env seeds (group ``b`` plays
    ``derive_seed(iteration_seed, b)``)."""
    return cfg.seed + 7919 * it


def check_heldout(cfg: Any, env: Any) -> None:
    """Before any work: refuse held-out env seeds that a training iteration plays, and return
    guidance where the actions are generated (``env``'s codec lists none)."""
    from policylm.platform.config import ConfigError
    from policylm.platform.rollout.runner import derive_seed

    if not cfg.heldout_episodes:
        return
    if cfg.heldout_guidance and env.codec.valid_actions is None:
        raise ConfigError(f"heldout_guidance: {cfg.env_id}'s actions are generated, and return "
                          "guidance contrasts the scores of listed actions; set it to 0")
    train = {derive_seed(iteration_seed(cfg, it), e) for it in range(cfg.iterations)
             for e in range(cfg.seeds_per_iteration)}
    shared = train & {derive_seed(cfg.heldout_seed, e) for e in range(cfg.heldout_episodes)}
    if shared:
        raise ConfigError(f"heldout_seed: {cfg.heldout_seed} gives {len(shared)} env seeds that "
                          "training also plays; choose a heldout_seed other than seed + 7919 x "
                          "iteration")


def heldout_comparison(cfg: Any, run_dir: Any, adapter: Any, generate: str = "") -> dict:
    """The starting and the trained policy on the same ``heldout_episodes`` held-out env seeds
    at ``target_return``, played by ``policylm compare`` (``heldout/``: its trajectories and
    report; ``generate``: the URI options of generated actions): each one's return statistics
    and success rate, and the paired difference trained - start with its standard error."""
    from policylm.jobs import compare

    query = (f"target_return={cfg.target_return}&temperature={cfg.temperature}"
             f"&prompt={cfg.prompt_form}&dtype={cfg.dtype}&guidance={cfg.heldout_guidance}"
             + generate)
    start = f"hf://{cfg.model}?" + (f"adapter={cfg.adapter}&" if cfg.adapter else "") + query
    policies = {"start": start, "trained": f"hf://{cfg.model}?adapter={adapter}&{query}"}
    summaries = compare.main(compare.CompareConfig(
        inputs=list(policies.values()), labels=list(policies), env_id=cfg.env_id,
        env_options=cfg.env_options, episodes=cfg.heldout_episodes,
        num_workers=cfg.rollout_workers, envs_per_worker=cfg.envs_per_worker,
        seed=cfg.heldout_seed, out=str(run_dir / "heldout")))["summaries"]
    result: dict = {"episodes": cfg.heldout_episodes, "seed": cfg.heldout_seed,
                    "guidance": cfg.heldout_guidance, "policies": policies}
    for label in policies:
        result[label] = {k: summaries[label].get(k) for k in ("return", "success_rate",
                                                              "success_rate_se")}
    d = result["difference"] = summaries["trained"]["difference_vs_start"]
    log.info("held out (%d seeds at target %g): start %.1f, trained %.1f, paired difference "
             "%s", cfg.heldout_episodes, cfg.target_return, result["start"]["return"]["mean"],
             result["trained"]["return"]["mean"], "unknown" if d["se"] is None
             else f"{d['mean']:+.1f} ± {d['se']:.1f} s.e.")
    return result


def log_iteration(row: dict) -> None:
    """One log line per iteration."""
    lag = (f", weights {row['staleness']:.1f} updates old (weight {row['importance_weight']:.2f})"
           if row["staleness"] else "")
    if row["steps_trained"] == 0:
        log.info("iteration %d: mean return %.1f: nothing trained (all %d groups had the same "
                 "return in each)", row["iteration"], row["mean_return"], row["groups"])
        return
    log.info("iteration %d: mean return %.1f ± %.1f (max %.0f), %d/%d groups filtered, kl %s, "
             "clip %.3f%s, rollout %.1fs train %.1fs waited %.1fs", row["iteration"],
             row["mean_return"], row["mean_return_se"] or 0.0, row["max_return"],
             row["filtered_groups"], row["groups"],
             "not computed" if row["kl"] is None else f"{row['kl']:.4f}", row["clip_fraction"],
             lag, row["rollout_s"], row["train_s"], row["wait_s"])


def fresh_episodes(steps: Any, version: int, max_staleness: int = 0) -> tuple[Any, int]:
    """The steps of episodes played with weights ``version - max_staleness`` .. ``version``
    (the learner's), and how many episodes were played with other weights and dropped."""
    import pyarrow.compute as pc

    from policylm.platform.data import trajectories as tr

    played = steps.column(tr.POLICY_VERSION)
    ok = pc.fill_null(pc.and_(pc.greater_equal(played, version - max_staleness),
                              pc.less_equal(played, version)), False)
    stale = set(steps.filter(pc.invert(ok)).column(tr.EPISODE_ID).to_pylist())
    if stale:
        log.warning("%d episodes were played with weights older than version %d (max_staleness "
                    "%d) or unknown ones; dropped", len(stale), version - max_staleness,
                    max_staleness)
    return steps.filter(ok), len(stale)


def write_report(cfg: Any, history: list[dict], run_dir: Any,
                 heldout: dict | None = None) -> None:
    """``report.md``: the budget, the return curve, one row per iteration and, with ``heldout``,
    the held-out comparison of the starting and the trained policy."""
    from policylm.platform.evaluation.metrics import mean_se
    from policylm.platform.evaluation.reports import markdown_table

    episodes = sum(h["episodes"] for h in history)
    wall = history[-1]["wall_s"]
    rows = [[h["iteration"], mean_se({"mean": h["mean_return"], "se": h["mean_return_se"]}),
             h["max_return"], f"{h['filtered_groups']}/{h['groups']}",
             h["steps_trained"] or "0 (nothing trained)", h["behaviour_version"],
             "not computed" if h["kl"] is None else h["kl"], h["clip_fraction"],
             h["importance_weight"], h["rollout_s"], h["train_s"], h["wait_s"]]
            for h in history]
    mode = ("synchronous (the actors wait while the learner trains)" if not cfg.max_staleness
            else f"asynchronous: the actors play with weights up to {cfg.max_staleness} updates "
            "behind the learner's, whose importance weights are truncated at "
            f"{cfg.max_importance_weight:g}")
    (run_dir / "report.md").write_text(
        f"# Episodic GRPO on {cfg.env_id}\n\nStart: `{cfg.adapter or cfg.model}`; target "
        f"{cfg.target_return:g}, temperature {cfg.temperature:g}, lr {cfg.lr:g}; {mode}.\n\n"
        f"Budget: {len(history)} iterations x {cfg.seeds_per_iteration} seeds x "
        f"{cfg.group_size} episodes = {episodes} episodes; "
        f"{sum(h['steps_trained'] for h in history)} steps trained; {wall / 60:.1f} min wall "
        f"clock ({3600 * len(history) / max(wall, 1e-9):.1f} iterations per hour).\n\n"
        "![return per iteration](return_per_iteration.png)\n\n" + markdown_table(
            ["iteration", "mean return ± s.e.", "max return", "filtered groups",
             "steps trained", "played by version", "KL", "clip fraction", "importance weight",
             "rollout s", "train s", "waited s"], rows)
        + "\n\nThe mean return is over the iteration's episodes (training seeds: each "
        "iteration plays new ones), played with the weights of the version shown (the "
        "learner's version is the iteration's number); KL is computed only with beta > 0; "
        "'waited' is the learner's time waiting for the iteration's episodes.\n"
        + heldout_section(cfg, heldout, mean_se, markdown_table))


def heldout_section(cfg: Any, heldout: dict | None, mean_se: Any, table: Any) -> str:
    """The report's held-out comparison (empty without one)."""
    if not heldout:
        return ""
    rows = [[label, f"`{heldout['policies'][label]}`", heldout[label]["return"]["count"],
             mean_se(heldout[label]["return"]), heldout[label]["return"].get("std"),
             None if heldout[label].get("success_rate") is None else mean_se(
                 {"mean": heldout[label]["success_rate"],
                  "se": heldout[label].get("success_rate_se")}, 2)]
            for label in ("start", "trained")]
    d = heldout["difference"]
    ratio = (None if d["se"] is None or d["mean"] is None else
             "no spread" if d["se"] == 0 else f"{d['mean'] / d['se']:.1f}")
    return (f"\n## Held out\n\nBoth policies on the same held-out env seeds (none of them a "
            f"training seed). {describe_seeds(heldout['seed'], heldout['episodes'])} Target "
            f"{cfg.target_return:g}, temperature {cfg.temperature:g}, return guidance "
            f"{heldout['guidance']:g}:\n\n" + table(
                ["policy", "uri", "episodes", "mean return ± s.e.", "std",
                 "success rate ± s.e."], rows)
            + f"\n\nPaired difference trained - start over {d['pairs']} seeds: "
            + mean_se(d)
            + f" (difference / s.e.: {ratio}).\n")


CONFIG = GrpoEpisodesConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("grpo-episodes", GrpoEpisodesConfig, main, sys.argv[1:])
