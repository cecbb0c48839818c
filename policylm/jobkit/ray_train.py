"""What the Ray Train jobs (``sft``, ``grpo``) share: refusing to silently continue an old run,
reading dataset splits through Ray Data (every worker gets the whole split; the trainer's sampler
spreads the rows), a worker's CPUs, the ``TorchTrainer`` with fault tolerance and its storage,
resuming a worker, the run's notes (an actor, so workers on any node reach it) and exporting the
final adapter."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from policylm.runtime import runtime_env


def start_run(cfg: Any, name: str) -> tuple[Path, Any, Path]:
    """The opening every Ray Train job shares: the run directory with the resolved config
    (refusing a reused ``out=`` unless ``resume`` or ``overwrite``), the stage timer, the dataset
    directory (checked for the columns the jobs read), the model converted/cached once before
    workers race, and Ray.
    Returns ``(run_dir, stages, data)``."""
    from policylm.jobkit.runs import Stages, open_run
    from policylm.platform.engines.models import resolve_model
    from policylm.platform.training.sft import check_columns, dataset_dir
    from policylm.runtime import check_shared_dir, check_visible, init_ray

    run_dir = open_run(name, cfg).resolve()
    data = dataset_dir(cfg.dataset)
    check_columns(data)
    model = resolve_model(cfg.model)
    init_ray()
    # on several nodes, whatever the workers read or write must be where every node sees it
    check_shared_dir(storage_path(cfg, run_dir), "train.storage_path")
    check_visible([("dataset", str(data)), ("model", model if Path(model).exists() else ""),
                   ("adapter", getattr(cfg, "adapter", "")),
                   ("init_adapter", getattr(cfg, "init_adapter", ""))])
    return run_dir, Stages(), data


def read_splits(data: Path, columns: list[str], fn: Callable, fn_kwargs: dict) -> dict:
    """``{split: Ray Dataset}`` of the splits present: each split's Parquet files read here and
    mapped by ``fn`` (an Arrow table in, one out) in one pass, handed to Ray Data as in-memory
    blocks. Every worker reads a whole split, so a streaming read would parallelise nothing and
    costs seconds of executor start per job (``bench/sft_throughput.py`` reports the job's fixed
    cost)."""
    import ray

    from policylm.platform.training.sft import read_table

    tables = {name: read_table(data, name, columns) for name in ("train", "validation")}
    return {name: ray.data.from_arrow(fn(table, **fn_kwargs))
            for name, table in tables.items() if table is not None}


def worker_cpus(cpus_per_worker: float, num_workers: int) -> float:
    """``cpus_per_worker``, or (0) the cluster's CPUs divided among the workers (no workers:
    all of them, for the job's own process)."""
    import ray

    return cpus_per_worker or max(1.0, float(
        int(ray.cluster_resources().get("CPU", 1) // max(num_workers, 1))))


def fit(loop: Callable, loop_config: dict, splits: dict, cfg: Any, cpus: float, run_dir: Path,
        name: str, tracker: Any = None) -> Any:
    """A ``TorchTrainer`` run of ``loop`` on ``cfg.train.num_workers`` workers (``use_gpu``,
    placed by ``placement``), restarted up to ``max_failures`` times from its latest checkpoint in
    ``storage_path(cfg, run_dir)`` (under :func:`train_run_name`); its result. Every worker reads
    the whole of each split; rank 0's logs go to ``tracker`` as they come."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cpus, **({"GPU": cfg.train.gpus_per_worker} if cfg.train.use_gpu else {})}
    shared_gpu = cfg.train.use_gpu and cfg.train.gpus_per_worker < 1  # nccl needs a GPU per rank
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="gloo") if shared_gpu else None,
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=cfg.train.placement),
        datasets=splits,
        # not split: Ray Data shards would be sharded again by the trainer's sampler
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=train_run_name(name, run_dir), storage_path=storage_path(cfg, run_dir),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env=runtime_env(),
        ),
    )
    with step_progress(loop_config["notes"], f"{name} steps", tracker):
        result = trainer.fit()
    if result.error:
        raise result.error
    if cfg.train.num_workers == 0:
        return local_result(result, loop_config["work_dir"])
    return result


def local_result(result: Any, work_dir: str) -> Any:
    """A local-mode run's result (``num_workers=0``) with its final checkpoint: the newest the
    trainer saved in ``work_dir``, laid out as Ray Train's (``<dir>/checkpoint``). (Ray's local
    mode reports the copy the report callback makes in a temporary directory, deleted at
    once.)"""
    import dataclasses

    from ray.train import Checkpoint

    latest = latest_local_checkpoint(work_dir)
    if latest is None:
        raise RuntimeError(f"the training saved no checkpoint in {work_dir}; set save_steps "
                           "at most max_steps")
    final = Path(work_dir) / "final"
    final.mkdir(exist_ok=True)
    link = final / "checkpoint"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path(latest).resolve(), target_is_directory=True)
    return dataclasses.replace(result, checkpoint=Checkpoint.from_directory(str(final)))


def train(loop: Callable, extra: dict, splits: dict, cfg: Any, cpus: float, run_dir: Path,
          name: str, stages: Any, tracker: Any) -> tuple[Any, list[dict]]:
    """The training stage ``sft`` and ``grpo`` share: the run's notes, :func:`fit` of ``loop``
    (its config: the job's ``cfg``, its work directory, the worker's CPUs, the notes and
    ``extra``), and the notes saved to the run directory even when training failed. Returns
    ``(result, notes)``."""
    from dataclasses import asdict

    notes = open_notes()
    loop_config = {"cfg": asdict(cfg), "work_dir": str(run_dir / "hf"), "cpus_per_worker": cpus,
                   "notes": notes, **extra}
    with stages("train"):
        try:
            result = fit(loop, loop_config, splits, cfg, cpus, run_dir, name, tracker)
        finally:
            records = save_notes(notes, run_dir)
    return result, records


def storage_path(cfg: Any, run_dir: Path) -> str:
    """Where Ray Train keeps checkpoints: ``cfg.train.storage_path`` (a path every node reads, or
    URI such as ``s3://bucket/prefix``), else ``<run_dir>/ray_results``."""
    return cfg.train.storage_path or str(run_dir / "ray_results")


def train_run_name(job: str, run_dir: Path) -> str:
    """Ray Train's name for the run in ``run_dir``: ``<job>-<dir name>-<run id>``, the run id
    from its ``run.json`` (new for every run, kept by ``resume``; else a hash of the directory's
    absolute path; the job's name alone for a run recorded before run ids, where its
    checkpoints are). Ray Train restores whatever it finds under ``(storage_path, name)``, so runs
    that share a ``storage_path``, and a run that replaced another (``overwrite``), must not
    share a name; a resumed run continues from its own checkpoints."""
    import hashlib
    import re

    from policylm.jobkit.runs import run_record

    path = str(Path(run_dir).resolve())
    record = run_record(Path(path))
    if record is not None and not record.get("run_id"):
        return job  # a run from before run ids (resumed): its checkpoints are under the job name
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).name).strip("-.")[:60] or "run"
    run_id = str((record or {}).get("run_id") or hashlib.sha256(path.encode()).hexdigest()[:8])
    return f"{job}-{readable}-{re.sub(r'[^A-Za-z0-9._-]+', '-', run_id)}"


def worker_rows(name: str) -> list[dict]:
    """Inside a worker: every row of split ``name``, in the same order on every worker (Ray Data
    may deliver blocks in any order; the trainer's sampler needs one order to share out)."""
    import ray.train

    from policylm.platform.training.sharding import sort_rows

    it = ray.train.get_dataset_shard(name)
    return sort_rows([r for b in it.iter_batches(batch_size=1024, batch_format="pyarrow")
                      for r in b.to_pylist()])


class RunNotes:
    """The run's notes (attempts, resumes, final figures, where each worker ran), held by an
    actor the driver owns: workers on any node add to it, and the driver writes them out."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.flags: set[str] = set()
        self.steps = (0, 0)
        self.logs: list[tuple[int, dict]] = []

    def step(self, done: int, total: int) -> None:
        self.steps = (done, total)

    def log(self, step: int, metrics: dict) -> None:
        self.logs.append((step, metrics))

    def progress(self, logs_from: int = 0) -> tuple[int, int, list[tuple[int, dict]]]:
        """``(steps done, steps in all, the trainer's logs from index logs_from on)`` as rank 0
        told them (``(0, 0, [])`` before its first step)."""
        return (*self.steps, self.logs[logs_from:])

    def add(self, record: dict) -> None:
        self.records.append(record)

    def once(self, flag: str) -> bool:
        """True the first time ``flag`` is asked for in this run (a fault injected once)."""
        first = flag not in self.flags
        self.flags.add(flag)
        return first

    def all(self) -> list[dict]:
        return list(self.records)


def open_notes() -> Any:
    """A :class:`RunNotes` actor for one run."""
    import ray

    return ray.remote(num_cpus=0)(RunNotes).remote()


def note(notes: Any, record: dict) -> None:
    """Inside a worker: add ``record`` to the run's notes (with the worker's rank, node and
    process)."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    ray.get(notes.add.remote({**record, "rank": ctx.get_world_rank(),
                              "node_id": ray.get_runtime_context().get_node_id(),
                              "pid": os.getpid()}))


def step_callback(notes: Any) -> Any:
    """Inside rank 0: a trainer callback that tells the run's notes each finished step and each
    log of the trainer (losses, learning rate, rewards); the driver's progress bar and tracker
    read them."""
    from transformers import TrainerCallback

    class TellSteps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            notes.step.remote(state.global_step, state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
                   **kwargs: Any) -> None:
            if logs:
                notes.log.remote(state.global_step, dict(logs))

    return TellSteps()


@contextmanager
def step_progress(notes: Any, desc: str, tracker: Any = None) -> Iterator[None]:
    """While the body runs, a progress bar of the training steps rank 0 reported to ``notes``,
    and its logs sent on to ``tracker`` (a :class:`~policylm.platform.tracking.Tracker`), polled
    every 2 s (a slow or failed poll only waits for the next)."""
    import threading

    import ray

    from policylm.platform.console import progress

    stop, bar, seen = threading.Event(), None, 0

    def update() -> None:
        nonlocal bar, seen
        try:
            done, total, logs = ray.get(notes.progress.remote(seen), timeout=30)
        except Exception:  # the notes actor busy or gone: the next poll tries again
            return
        seen += len(logs)
        for step, metrics in logs if tracker is not None else ():
            tracker.log(metrics, step)  # (a tracking server down: a warning, see Tracker)
        if total and bar is None:
            bar = progress(total=total, desc=desc, unit="step")
        if bar is not None and done > bar.n:
            bar.update(done - bar.n)

    def poll() -> None:
        while not stop.wait(2.0):
            update()

    thread = threading.Thread(target=poll, name="policylm-steps", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        update()
        if bar is not None:
            bar.close()


def save_notes(notes: Any, run_dir: Path) -> list[dict]:
    """Write the run's notes as JSON lines to ``train_notes.jsonl`` (and the rows each worker
    trained on, when recorded, to ``rows.jsonl``) in ``run_dir``; returns the notes."""
    import json

    import ray

    records = ray.get(notes.all.remote())
    rows = [r for r in records if "rows" in r]
    records = [r for r in records if "rows" not in r]
    (run_dir / "train_notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if rows:
        (run_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return records


def resume_point(work_dir: str) -> str | None:
    """Inside a worker: the trainer checkpoint to resume from: Ray Train's latest (copied to
    ``work_dir/resume``), else this node's newest complete one (the controller learns of a
    report at its next poll, 2 s: a worker that died sooner leaves Ray none)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            resume = os.path.join(work_dir, "resume")
            shutil.rmtree(resume, ignore_errors=True)
            shutil.copytree(os.path.join(d, "checkpoint"), resume)
            return resume
    return latest_local_checkpoint(work_dir)


def latest_local_checkpoint(work_dir: str) -> str | None:
    """The newest complete ``checkpoint-N`` the HF trainer saved in ``work_dir`` (on this node,
    by an earlier attempt of this run), or None."""
    done = [p for p in Path(work_dir).glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
            and (p / "optimizer.pt").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def export_checkpoint(result: Any, dest: Path) -> Path:
    """The result's final checkpoint (adapter or model, tokenizer) to ``dest``, without the
    optimizer and trainer state."""
    with result.checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / "checkpoint", dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "rng_state*",
                                                      "trainer_state.json", "training_args.bin"))
    return dest


def log_history(result: Any) -> list[dict]:
    """The trainer's log history from the final checkpoint's ``trainer_state.json``."""
    import json

    with result.checkpoint.as_directory() as d:
        state = Path(d) / "checkpoint" / "trainer_state.json"
        return json.loads(state.read_text()).get("log_history", []) if state.is_file() else []
