"""Build a return-conditioned chat dataset from trajectories with Ray Data.

Usage: ``python -m policylm.jobs.build_dataset --config configs/build_dataset_cartpole.yaml
trajectories=runs/collect-.../trajectories`` (or ``policylm build-dataset ...``).

Stages: select episodes (bounds, skills, SQL ``where`` over the episode table, DuckDB) ->
Ray Data: keep their rows, recompute return-to-go per episode (``groupby().map_groups``),
turn rows into chat rows -> split train/validation by episode -> write Parquet shards
(``dataset/train``, ``dataset/validation``), JSONL (``train.jsonl``, ``validation.jsonl``) and
``stats.json``. ``stats_only=true`` prints the statistics and writes nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from policylm.jobkit.runs import Stages, log, open_run, run_job, write_json
from policylm.platform import console
from policylm.platform.config import field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.runtime import check_shared_dir, check_visible, init_ray

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class BuildDatasetConfig:
    """Turn trajectories into return-conditioned chat rows (Parquet shards and JSONL)."""

    trajectories: str | list[str] = field(
        "", doc="trajectory directory, or a collect run directory; or a list of them (their "
        "envs must share one prompt, e.g. the BabyAI tasks)")
    min_return: float | None = field(None, doc="keep episodes with return >= this")
    max_return: float | None = field(None, doc="keep episodes with return <= this")
    max_length: int | None = field(None, doc="keep episodes with at most this many steps")
    skills: list[str] = field(factory=list, doc="keep only these skill labels (empty: all)")
    where: str = field("", doc="SQL condition over the episode table, e.g. \"return > 50\"")
    gamma: float = field(1.0, doc="discount for return-to-go (1.0 = undiscounted)")
    return_scale: float = field(1.0, doc="divide return-to-go by this in the prompt")
    target: str = field(
        "return_to_go", doc="each row's target: return_to_go (the return that followed the "
                            "step) or played (the target the policy acted for when it played "
                            "the step, as its prompt wrote it: rejection-sampling fine-tuning "
                            "keeps the kept steps' own prompts; gamma and return_scale then do "
                            "not apply)")
    history: int = field(0, doc="earlier steps of the episode in each row's prompt, as a "
                         "transcript (k to 2k - 1 of them; BALROG keeps 16); recorded with the "
                         "dataset, and by sft with the adapter, so the policy acts with the same "
                         "history")
    validation_fraction: float = field(0.1, doc="share of episodes held out for validation")
    max_rows_per_skill: int = field(
        0, doc="training rows kept per skill label, sampled evenly over its steps (0: all); "
               "balances skills and bounds the SFT budget")
    balance: str = field(
        "skill", doc="with max_rows_per_skill: skill (even over each skill's steps), step "
                     "(the same total; within each step bucket 0-7, 8-15, 16-31, ... every "
                     "skill keeps as many rows as it can, so early steps are not all weak) or "
                     "action (per skill, every action keeps as many rows as it can up to one "
                     "level, so rare decisive actions are all kept; discrete actions)")
    num_shards: int = field(4, doc="Parquet files per split (Ray Train splits them over workers)")
    jsonl: bool = field(True, doc="also write train.jsonl / validation.jsonl")
    stats_only: bool = field(False, doc="print statistics of the selection and write nothing")
    out: str = field("", doc="run directory (default runs/build-dataset-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.trajectories), "trajectories",
                "give the trajectory directory: trajectories=runs/collect-.../trajectories")
        require(0.0 <= self.validation_fraction < 1.0, "validation_fraction", "must be in [0, 1)")
        require(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        require(self.return_scale > 0, "return_scale", "must be > 0")
        require(self.max_rows_per_skill >= 0, "max_rows_per_skill", "must be >= 0 (0: all)")
        from policylm.platform.data.datasets import BALANCES

        require(self.balance in BALANCES, "balance", f"use {', '.join(BALANCES)}")
        from policylm.platform.data.datasets import TARGETS

        require(self.target in TARGETS, "target", f"use {', '.join(TARGETS)}")
        require(self.num_shards >= 1, "num_shards", "must be >= 1")
        require(self.history >= 0, "history", "must be >= 0 (0: no history)")
        require(self.max_length is None or self.max_length >= 1, "max_length", "must be >= 1")


def selection_stats(episodes, selected, rows: int | None = None) -> dict:
    from policylm.platform.data import trajectories as tr

    kept_ids = set(selected.column(tr.EPISODE_ID).to_pylist())
    all_ids = episodes.column(tr.EPISODE_ID).to_pylist()
    return {
        "episodes_total": episodes.num_rows,
        "episodes_kept": len(kept_ids),
        "episodes_dropped": sum(1 for e in all_ids if e not in kept_ids),
        "steps_kept": int(sum(selected.column("length").to_pylist())),
        "skills": tr.skill_stats(selected) if selected.num_rows else {},
        "return": tr.return_stats(selected.column("return").to_pylist()),
        **({"rows": rows} if rows is not None else {}),
    }


def source_ids(table: pa.Table, k: int, n: int) -> pa.Table:
    """Episode ids unique over ``n`` sources: ``<k>:<id>`` for source ``k`` when there are
    several (two collect runs both hold ``expert-p0-e00000``), unchanged for one."""
    import pyarrow.compute as pc

    from policylm.platform.data import trajectories as tr

    if n == 1:
        return table
    i = table.schema.get_field_index(tr.EPISODE_ID)
    ids = pc.binary_join_element_wise(f"{k}", table.column(i), ":")
    return table.set_column(i, tr.EPISODE_ID, ids)


STEPS_PER_PARTITION = 100_000


def group_partitions(steps: int, episodes: int, cpus: int) -> int:
    """Partitions of the group-by-episode shuffle: one per CPU of the cluster, more for large
    data (``STEPS_PER_PARTITION`` steps each), never more than the episodes or Ray Data's
    default of 200 (each partition is a task: 200 of them cost tens of seconds on small
    data)."""
    return max(1, min(episodes, 200, max(cpus, -(-steps // STEPS_PER_PARTITION))))


def dataset_text_options(sources: list[Path]) -> dict | None:
    """The env text options the sources' rows were played with (None where no file records
    them); sources played with different ones raise a DatasetError: one dataset, one text."""
    from policylm.platform.data import datasets as dsx
    from policylm.platform.data import trajectories as tr

    known = {str(src): opts for src in sources
             if (opts := tr.text_options_of(src)) is not None}
    if len({json.dumps(o, sort_keys=True) for o in known.values()}) > 1:
        listed = "; ".join(f"{src}: {opts}" for src, opts in known.items())
        raise dsx.DatasetError(f"the trajectories were played with different env text options "
                               f"({listed}); build one dataset per setting")
    return next(iter(known.values()), None)


def main(cfg: BuildDatasetConfig) -> dict:
    import pyarrow as pa

    from policylm.platform.data import datasets as dsx
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.records import PromptRecord, write_record

    stages = Stages()
    sources = [cfg.trajectories] if isinstance(cfg.trajectories, str) else cfg.trajectories
    srcs = [tr.trajectory_dir(s) for s in sources]
    if len({str(p.resolve()) for p in srcs}) != len(srcs):
        raise dsx.DatasetError(f"trajectories lists a directory twice: {sources}")
    with stages("select"):
        files = [tr.trajectory_files(src) for src in srcs]
        steps = pa.concat_tables([
            source_ids(tr.read_trajectories(src, columns=[
                tr.RUN_ID, tr.EPISODE_ID, tr.ENV_ID, tr.POLICY_URI, tr.SKILL, tr.SEED,
                tr.AGENT_ID, tr.T, tr.REWARD, tr.TERMINATED, tr.TRUNCATED, tr.ACTION_INDEX]),
                k, len(srcs))
            for k, src in enumerate(srcs)])
        episodes = tr.episode_table(steps)
        flt = dsx.EpisodeFilter(cfg.min_return, cfg.max_return, cfg.max_length, cfg.skills,
                                cfg.where)
        selected = dsx.select_episodes(episodes, flt)
        env_ids = sorted(set(steps.column(tr.ENV_ID).to_pylist()))
        if cfg.target == "played":  # refused here, before any Ray work, if steps lack one
            import pyarrow.parquet as pq

            for f in (f for fs in files for f in fs):  # the one column, where files have it
                has = tr.TARGET_RETURN in pq.read_schema(f).names
                dsx.check_played_targets(pq.read_table(f, columns=[tr.TARGET_RETURN]) if has
                                         else pa.table({}))
        by_action = steps.select([tr.EPISODE_ID, tr.SKILL, tr.ACTION_INDEX]) \
            if cfg.max_rows_per_skill and cfg.balance == "action" else None
        del steps
    stats = selection_stats(episodes, selected)
    if cfg.stats_only:
        console.say(json.dumps(stats, indent=2), "stdout")
        return {"stats": stats}
    if selected.num_rows == 0:
        raise dsx.DatasetError(
            f"no episode of {episodes.num_rows} passes the filters {flt}; loosen them "
            "(stats_only=true shows the returns)"
        )
    systems = {make_adapter(e).system_text() for e in env_ids}
    if len(systems) != 1:
        raise dsx.DatasetError(f"{', '.join(map(str, srcs))} mix envs {env_ids} whose prompts "
                               "differ; build one dataset per env")
    text_options = dataset_text_options(srcs)
    run_dir = open_run("build-dataset", cfg)
    # the system text as the rows' env made it (its text options), else as the env makes it now
    system = make_adapter(env_ids[0], **text_options).system_text() if text_options \
        else systems.pop()
    keep = dsx.episode_ids(selected)
    split = {e: dsx.split_of(e, cfg.validation_fraction) for e in keep}
    actions = dsx.action_counts(by_action, split) if by_action is not None else None
    fractions = dsx.row_fractions(selected, split, cfg.max_rows_per_skill, cfg.balance,
                                  actions) if cfg.max_rows_per_skill else {}

    with stages("transform"):
        import pyarrow.compute as pc
        import ray

        init_ray()
        # Ray Data reads and writes on any node: on several, both need shared storage
        check_visible([("trajectories", str(src)) for src in srcs])
        check_shared_dir(str(run_dir), "out")
        parts = [ray.data.read_parquet([str(f) for f in fs]).map_batches(
            source_ids, fn_kwargs={"k": k, "n": len(srcs)}, batch_format="pyarrow")
            for k, fs in enumerate(files)]
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        ds = ds.map_batches(dsx.keep_rows, fn_kwargs={"episode_ids": keep},
                            batch_format="pyarrow")
        steps_kept = int(pc.sum(selected.column("length")).as_py() or 0)
        ds = ds.groupby(tr.EPISODE_ID, num_partitions=group_partitions(
            steps_kept, len(keep), int(ray.cluster_resources().get("CPU", 1)))).map_groups(
            dsx.episode_rows, fn_kwargs={"gamma": cfg.gamma, "scale": cfg.return_scale,
                                         "history": cfg.history, "target": cfg.target},
            batch_format="pyarrow")
        ds = ds.map_batches(dsx.to_chat_rows, fn_kwargs={"system": system},
                            batch_format="pyarrow")

        def tag(batch: pa.Table) -> pa.Table:
            ids = batch.column(tr.EPISODE_ID).to_pylist()
            batch = batch.append_column(dsx.SPLIT, pa.array([split[e] for e in ids], pa.string()))
            if not fractions:
                return batch
            train = pc.equal(batch.column(dsx.SPLIT), "train")
            return pa.concat_tables([dsx.sample_rows(batch.filter(train), fractions,
                                                     cfg.balance),
                                     batch.filter(pc.invert(train))])

        ds = ds.map_batches(tag, batch_format="pyarrow").materialize()

    out_dir = run_dir / "dataset"
    counts: dict[str, dict] = {}
    with stages("write"):
        for name in ("train", "validation"):
            # in (episode, step) order: the shuffle's order varies from run to run, and what
            # indexes the rows in file order (MLP BC's seeded minibatches, the imitation rows)
            # would then differ between runs of the same seed
            part = ds.filter(expr=f"{dsx.SPLIT} == '{name}'").sort(
                [tr.EPISODE_ID, tr.T]).materialize()  # read once
            n = part.count()
            counts[name] = {"rows": n}
            if n == 0:
                log.warning("split %s is empty", name)
                continue
            part.repartition(min(cfg.num_shards, n)).write_parquet(str(out_dir / name))
            table = pa.concat_tables(part.iter_batches(batch_format="pyarrow"))
            counts[name]["episodes"] = len(set(table.column(tr.EPISODE_ID).to_pylist()))
            counts[name]["rows_per_skill"] = dsx.rows_per_skill(table)
            if cfg.jsonl:
                dsx.write_chat_jsonl(table, out_dir / f"{name}.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_record(out_dir, PromptRecord(history=cfg.history, text_options=text_options))
    stats.update({"splits": counts, "system": system, "history": cfg.history,
                  "text_options": text_options,
                  "train_row_fractions": fractions,
                  "stage_seconds": stages.seconds})
    write_json(run_dir / "stats.json", with_memory(stats))
    log.info("dataset: %s", {k: v["rows"] for k, v in counts.items()})
    return {"run_dir": str(run_dir), "dataset": str(out_dir), **stats}


CONFIG = BuildDatasetConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("build-dataset", BuildDatasetConfig, main, sys.argv[1:])
