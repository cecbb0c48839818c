"""Play -> keep the best episodes -> fine-tune -> play again -> compare (the Crafter workflow,
for any env).

Usage: ``policylm self-improve --config configs/crafter_self_improve.yaml``. Stages:

1. play: the base LLM (``policy``, sampling at ``temperature``; a base model or one with its
   ``adapter=``) plays ``episodes`` episodes;
2. filter: ``policylm filter`` keeps the best (``filter.*``: achievements, reward, turns);
3. dataset + sft: the kept episodes become rows (every kept step; its target the return that
   followed it, or with ``dataset.target=played`` the target the base acted for; other
   ``dataset.*`` settings as build-dataset's, e.g. ``balance``) and SFT trains an
   adapter on them (``sft.*``), continuing the base's adapter when it has one;
4. replay: the fine-tuned policy, prompted with the best trained return or (``dataset.target=
   played``) the base's target, plays held-out seeds beside the base, and (``replay_training``)
   the training seeds;
5. compare: ``policylm compare`` over both (achievement rate, per-achievement success,
   Crafter score, reward per step, most common actions, charts, ``eval_fn``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policylm.jobkit.runs import Stages, log, open_run, run_job, write_json
from policylm.jobs import build_dataset, sft
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.platform.seeds import TEST_SEED, TRAIN_SEED
from policylm.runtime import init_ray


@dataclass
class FilterSettings:
    """Which played episodes train (see ``policylm filter``)."""

    min_achievements: int | None = field(None, doc="at least N achievements")
    min_reward: float | None = field(None, doc="return at least R")
    max_turns: int | None = field(None, doc="at most T steps")
    achievement_types: str = field("", doc="comma-separated achievement names")
    min_achievement_types: int | None = field(None, doc="how many of achievement_types")
    top_k: int = field(0, doc="then keep only the k best by return (0: all that pass)")


@dataclass
class SelfImproveConfig:
    """Play with the base LLM, keep the best episodes, fine-tune on them, play again, compare."""

    env_id: str = field("Crafter", doc="env id (Crafter, or any env policylm adapts)")
    env_options: dict = field(factory=lambda: {"length": 100},
                              doc="adapter options (Crafter: length = episode step cap)")
    policy: str = field("hf://smollm2-135m", doc="the base policy URI (an LLM; with adapter= "
                        "the SFT continues that adapter)")
    temperature: float = field(1.0, doc="sampling temperature while playing")
    episodes: int = field(16, doc="episodes the base plays to learn from (the training seeds)")
    heldout_episodes: int = field(16, doc="episodes on held-out seeds (never trained on) that "
                                          "base and tuned both play: the comparison that "
                                          "counts")
    num_workers: int = field(2, doc="rollout actors (0 = in this process, no Ray)")
    envs_per_worker: int = field(8, doc="envs per actor (one batched engine call per step)")
    filter: FilterSettings = field(factory=FilterSettings, doc="filter.<key>")
    sft: sft.SftJobConfig = field(factory=lambda: sft.SftJobConfig(max_steps=60, batch_size=16,
                                                                    eval_steps=0, save_steps=60),
                                  doc="SFT settings (sft.<key>; dataset and out are set here)")
    dataset: build_dataset.BuildDatasetConfig = field(
        factory=lambda: build_dataset.BuildDatasetConfig(validation_fraction=0.0),
        doc="build-dataset settings for the kept episodes' rows (dataset.<key>; trajectories "
            "and out are set here, where is joined with filter.top_k's). dataset.target=played: "
            "each row keeps the target the base acted for, so the kept steps train under the "
            "prompts they were played with (for a return-conditioned base such as a fine-tuned "
            "adapter)")
    target_return: float | None = field(
        None, doc="the target in the tuned policy's prompt; default: the best trained episode's "
                  "return, or with dataset.target=played the base's target_return")
    replay_training: bool = field(True, doc="the tuned policy also replays the training seeds "
                                  "(compare-train/)")
    tuned_params: dict = field(
        factory=lambda: {"norm": "sum"},
        doc="hf:// parameters for the tuned policy over the base's (default norm=sum: it learned "
            "the actions' frequencies, which pmi would subtract)")
    eval_fn: str = field("", doc="module:function with your own metric for compare")
    seed: int = field(TRAIN_SEED, doc="base seed of the episodes the base plays to learn from")
    heldout_seed: int = field(TEST_SEED, doc="base seed of the held-out episodes (default: the "
                              "test range, policylm.platform.seeds; refused when one is a "
                              "training seed)")
    out: str = field("", doc="run directory (default runs/self-improve-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(self.episodes >= 1, "episodes", "must be >= 1")
        require(self.heldout_episodes >= 1, "heldout_episodes", "must be >= 1")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(self.filter.top_k >= 0, "filter.top_k", "must be >= 0")
        require(self.policy.startswith("hf://"), "policy",
                "the fine-tuned model is trained from an hf:// policy's model")
        from policylm.platform.config import validate_section

        validate_section(dataclasses.replace(self.dataset, trajectories="kept"), "dataset")
        from policylm.platform.rollout.runner import derive_seed

        # before any work: the held-out episodes' env seeds are none of the played ones
        shared = {derive_seed(self.seed, e) for e in range(self.episodes)} \
            & {derive_seed(self.heldout_seed, e) for e in range(self.heldout_episodes)}
        require(not shared, "heldout_seed", f"gives {len(shared)} env seeds that the training "
                f"play (seed={self.seed}) also uses; choose another heldout_seed")


def main(cfg: SelfImproveConfig) -> dict:
    from policylm.actors.rollout import play_policies
    from policylm.jobs import compare
    from policylm.jobs import filter as quality
    from policylm.platform.policies import split_uri, with_params

    run_dir = open_run("self-improve", cfg).resolve()
    stages = Stages()
    init_ray()
    base = with_params(cfg.policy, temperature=cfg.temperature)
    with stages("play"):
        play_policies([("base", base)], cfg.env_id, cfg.env_options, cfg.episodes,
                      run_dir / "base", cfg.num_workers, cfg.envs_per_worker, 1, cfg.seed)
    with stages("filter"):
        f = cfg.filter
        kept = quality.main(quality.FilterConfig(
            trajectories=str(run_dir / "base"), min_achievements=f.min_achievements,
            min_reward=f.min_reward, max_turns=f.max_turns,
            achievement_types=f.achievement_types,
            min_achievement_types=f.min_achievement_types, out=str(run_dir / "kept")))
        if kept["kept"] == 0:
            raise ValueError("no played episode passed the filter; loosen filter.* or play "
                             "more episodes")
    with stages("dataset"):
        import pyarrow.parquet as pq

        where = ""
        best = pq.read_table(run_dir / "kept" / "episodes.parquet").sort_by(
            [("return", "descending")])
        if f.top_k:
            best = best.slice(0, f.top_k)
            ids = ", ".join(f"'{e}'" for e in best.column("episode_id").to_pylist())
            where = f"episode_id IN ({ids})"
        trained = trained_summary(best, kept["total_episodes"])
        log.info("training on %s", trained)
        _, model, params = split_uri(cfg.policy)
        if cfg.target_return is not None:
            target = cfg.target_return
        elif cfg.dataset.target == "played":  # the rows hold the base's prompts: prompt as it did
            target = float(params.get("target_return", 0.0))
        else:
            target = float(best.column("return")[0].as_py())
        if cfg.dataset.where:
            where = f"({cfg.dataset.where})" + (f" AND {where}" if where else "")
        build_dataset.main(dataclasses.replace(cfg.dataset, trajectories=str(run_dir / "kept"),
                                               where=where, out=str(run_dir / "dataset")))
    with stages("sft"):
        tuned = sft.main(dataclasses.replace(
            cfg.sft, dataset=str(run_dir / "dataset"), model=model,
            init_adapter=params.get("adapter", cfg.sft.init_adapter), out=str(run_dir / "sft")))
    adapter = tuned["adapter"]
    # return_to_go rows were (return to go, state) -> action: the tuned policy is asked for the
    # best trained return (prompted with the default target 0 it imitated episodes' idle tails)
    fine = with_params(base, adapter=adapter, target_return=target, **cfg.tuned_params)
    log.info("tuned policy: %s", fine)
    with stages("heldout"):  # base and tuned on seeds no episode was trained on, paired
        held = compare.main(compare.CompareConfig(
            inputs=[base, fine], labels=["base", "tuned"], env_id=cfg.env_id,
            env_options=cfg.env_options, episodes=cfg.heldout_episodes,
            num_workers=cfg.num_workers, envs_per_worker=cfg.envs_per_worker,
            eval_fn=cfg.eval_fn, seed=cfg.heldout_seed, out=str(run_dir / "compare")))
    train: dict = {"summaries": None}
    if cfg.replay_training:
        with stages("replay"):  # and the training seeds, reported apart
            play_policies([("tuned", fine)], cfg.env_id, cfg.env_options, cfg.episodes,
                          run_dir / "tuned-train", cfg.num_workers, cfg.envs_per_worker, 1,
                          cfg.seed)
            train = compare.main(compare.CompareConfig(
                inputs=[str(run_dir / "base"), str(run_dir / "tuned-train")],
                labels=["base", "tuned"], eval_fn=cfg.eval_fn,
                out=str(run_dir / "compare-train")))
    seeds = {"training": played_seeds(run_dir / "base"),
             "heldout": played_seeds(run_dir / "compare")}
    log.info("report: %s (held-out seeds)%s", run_dir / "compare" / "report.md",
             f"; training seeds: {run_dir / 'compare-train' / 'report.md'}"
             if cfg.replay_training else "")
    metrics = {"kept": kept, "trained": trained, "adapter": adapter, "tuned_policy": fine,
               "target_return": target, "heldout": held["summaries"],
               "training_seeds": train["summaries"], "seeds": seeds,
               "stage_seconds": stages.seconds}
    write_json(run_dir / "metrics.json", with_memory(metrics))
    return {"run_dir": str(run_dir), **metrics}


def trained_summary(episodes: Any, played: int) -> dict:
    """The episodes SFT trains on (after the filter and ``top_k``): how many, their share of the
    episodes played, mean return and (Crafter) mean achievements."""
    from policylm.platform.data.trajectories import return_stats

    n = episodes.num_rows
    achievements = episodes.column("n_achievements").to_pylist() \
        if "n_achievements" in episodes.column_names else None
    return {"episodes": n, "share": n / played if played else None,
            "mean_return": return_stats(episodes.column("return").to_pylist())["mean"],
            "mean_achievements": return_stats(achievements)["mean"] if achievements else None}


def played_seeds(run: Path) -> list[int]:
    """The env seeds a run's episodes started from."""
    from policylm.platform.data import trajectories as tr

    return sorted(set(tr.episode_table(tr.read_trajectories(tr.trajectory_dir(run)))
                      .column(tr.SEED).to_pylist()))


CONFIG = SelfImproveConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("self-improve", SelfImproveConfig, main, sys.argv[1:])
