"""What Ray Train costs SFT: training tokens per second of `policylm sft` with 1 worker against the
same trainer, settings, model and data run in this process (no Ray), both timed from reading
the dataset to the end of training (so Ray Train's worker start-up, its dataset hand-over and
the model load inside the worker all count against it). Target: ratio >= 0.9.

The job's time is also split into its fixed cost (``job_fixed_cost_s``: worker start-up, the
dataset hand-over, the model load in the worker) and its steady rate (``job_trainer_tokens_per_s``,
the trainer's own ``num_tokens / train_runtime``).

Second figure: the job's trainer (TRL's SFTTrainer with the loss computed at the action tokens
only) against plain TRL ``SFTTrainer`` in this process, both timed by the trainer alone
(``num_tokens / train_runtime``): ``label_only_ratio``.

The in-process side runs before and after the job (its median is the baseline). The last line
is one JSON object; the script exits 1 below the target.
Run: .venv/bin/python bench/sft_throughput.py [--model smollm2-135m --steps 60 --batch 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import finish


def make_dataset(root: Path) -> Path:
    """A small CartPole chat dataset: constant-right and random policies."""
    from policylm.jobs.build_dataset import BuildDatasetConfig
    from policylm.jobs.build_dataset import main as build
    from policylm.jobs.collect import CollectConfig, PolicySource
    from policylm.jobs.collect import main as collect

    collect(CollectConfig(policies=[PolicySource("right", "constant:right"),
                                    PolicySource("random", "random:")],
                          episodes_per_policy=16, num_workers=0, out=str(root / "collect")))
    build(BuildDatasetConfig(trajectories=str(root / "collect"), validation_fraction=0.0,
                             out=str(root / "ds")))
    return root / "ds"


def job_trainer_in_process(data: Path, cfg: Any, out: Path) -> float:
    """The job's trainer here: read the split, load the model, train; tokens per wall second
    from reading the dataset to the end of training."""
    import gc

    from datasets import Dataset

    from policylm.platform.training.sft import build_trainer, read_rows
    from policylm.platform.training.sharding import sort_rows

    t0 = time.perf_counter()
    rows = sort_rows(read_rows(data / "dataset", "train", cfg.prompt_form))
    trainer = build_trainer(cfg, Dataset.from_list(rows), None, str(out), [], False, 0)
    trainer.args.save_strategy = "no"
    trainer.train()
    seconds = time.perf_counter() - t0
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    del trainer
    gc.collect()
    return tokens / seconds


def trainer_rate(data: Path, cfg: Any, out: Path, job_trainer: bool) -> float:
    """Tokens per second as the trainer counts them (``num_tokens / train_runtime``), for the
    job's trainer or plain TRL ``SFTTrainer`` with the same model and SFTConfig."""
    import gc

    from datasets import Dataset
    from trl import SFTTrainer

    from policylm.platform.training.sft import load_model, read_rows, sft_args, trainer_class

    rows = read_rows(data / "dataset", "train", cfg.prompt_form)
    model, tokenizer, peft = load_model(cfg)
    args = sft_args(cfg, str(out), has_eval=False, progress=False)
    args.save_strategy = "no"
    cls = trainer_class() if job_trainer else SFTTrainer
    trainer = cls(model=model, args=args, train_dataset=Dataset.from_list(rows),
                  processing_class=tokenizer, peft_config=peft)
    result = trainer.train()
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    del trainer, model
    gc.collect()
    return tokens / result.metrics["train_runtime"]


def job_config(data: Path, model: str, steps: int, batch: int, out: Path, form: str) -> Any:
    from policylm.jobs.sft import SftJobConfig
    from policylm.platform.config import load_config

    return load_config(SftJobConfig, None, [
        f"dataset={data}", f"model={model}", f"max_steps={steps}", f"batch_size={batch}",
        "eval_steps=0", f"save_steps={steps}", "logging_steps=1", "train.num_workers=1",
        f"prompt_form={form}", f"out={out}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-form", default="compact", choices=["chat", "compact"])
    args = parser.parse_args()
    import dataclasses

    import ray

    from policylm.jobs.sft import main as sft_main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = job_config(root / "ds", args.model, args.steps, args.batch, root / "sft",
                         args.prompt_form)
        make_dataset(root)
        ray.shutdown()  # building the dataset started Ray; the in-process sides run without it
        short = dataclasses.replace(cfg, max_steps=max(6, args.steps // 5))
        plain = trainer_rate(root / "ds", short, root / "plain", job_trainer=False)
        label_only = trainer_rate(root / "ds", short, root / "label", job_trainer=True)
        here = [job_trainer_in_process(root / "ds", cfg, root / "here")]
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        result = sft_main(cfg)
        ray.shutdown()  # the in-process side gets the whole machine, as the worker did
        here.append(job_trainer_in_process(root / "ds", cfg, root / "here2"))
    seconds = result["stage_seconds"]["data"] + result["stage_seconds"]["train"]
    ours = result["train_tokens"] / seconds
    # the job's time that is not training at its steady rate: worker start-up, the dataset
    # hand-over and the model load in the worker (None when the trainer reported no rate)
    steady = result["train_tokens_per_s"]
    fixed = round(seconds - result["train_tokens"] / steady, 1) if steady else None
    finish("sft_throughput", ("policylm sft, 1 worker, tokens/s (data + train)", ours),
           ("the same trainer in-process, tokens/s (data + train)", statistics.median(here)),
           target=0.9, model=args.model, steps=args.steps, batch=args.batch,
           prompt_form=args.prompt_form, in_process_runs=[round(h, 1) for h in here],
           job_seconds=seconds, job_trainer_tokens_per_s=steady, job_fixed_cost_s=fixed,
           label_only_ratio=round(label_only / plain, 3),
           label_only_tokens_per_s=round(label_only, 1), trl_tokens_per_s=round(plain, 1))


if __name__ == "__main__":
    main()
