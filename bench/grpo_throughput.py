"""Completions per second of single-step GRPO (over dataset states) through `policylm grpo` (1 Ray
Train worker) against TRL's `GRPOTrainer` run in this process on the same prompts, model and
settings (the job's own model loading, GRPOConfig and reward functions).

Both sides train on the same rows in the same order (the job's seeded choice of ``max_rows``
rows from the split in one fixed order, which the in-process side makes with the same
functions) and count ``steps x batch_size`` completions over the trainer's ``train_runtime``, so
Ray start-up and data loading are outside the figure. The in-process side runs before and after
the job (its median is the baseline). The last line is one JSON object with the figures,
``ratio`` (policylm / in-process, target >= 0.9); the script exits 1 below it.
Run: .venv/bin/python bench/grpo_throughput.py [--model smollm2-135m --steps 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import finish


def in_process(cfg: Any, data: Path, out: Path) -> float:
    """TRL GRPOTrainer here with the job's model, GRPOConfig and rewards; completions/s."""
    import gc

    from datasets import Dataset
    from trl import GRPOTrainer

    from policylm.jobs.grpo import grpo_args, to_grpo_rows
    from policylm.platform.envs import make_adapter
    from policylm.platform.training.rewards import reward_funcs
    from policylm.platform.training.sft import load_trainable, read_rows
    from policylm.platform.training.sharding import pick_rows, sort_rows

    rows = read_rows(data / "dataset", "train", cfg.prompt_form, to_grpo_rows)
    rows = [{**r, "row": i} for i, r in enumerate(pick_rows(sort_rows(rows), cfg.max_rows,
                                                              cfg.seed))]
    env = make_adapter(cfg.env_id)
    funcs, weights = reward_funcs(cfg.rewards, env, cfg.env_reward)
    model, tokenizer, peft = load_trainable(cfg.sft_view(), cfg.adapter)
    args = grpo_args(cfg, str(out), weights, progress=False)
    args.save_strategy = "no"
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=peft)
    runtime = trainer.train().metrics["train_runtime"]
    del trainer, model
    gc.collect()
    return cfg.max_steps * cfg.batch_size / runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=4)
    args = parser.parse_args()
    import dataclasses

    import ray
    from sft_throughput import make_dataset

    from policylm.jobs.grpo import GrpoJobConfig
    from policylm.jobs.grpo import main as grpo_main
    from policylm.platform.config import config_from_dict

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root)
        ray.shutdown()  # building the dataset started Ray; the in-process side runs without it
        cfg = config_from_dict(GrpoJobConfig, {
            "dataset": str(root / "ds"), "model": args.model, "prompt_form": "compact",
            "max_steps": args.steps, "batch_size": args.batch, "save_steps": args.steps,
            "num_generations": args.generations, "max_rows": 256,
            "max_completion_length": args.completion_length, "out": str(root / "grpo")})
        base = [in_process(cfg, root / "ds", root / "plain")]
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        result = grpo_main(dataclasses.replace(cfg))
        ray.shutdown()  # the in-process side gets the whole machine, as the worker did
        base.append(in_process(cfg, root / "ds", root / "plain2"))
    runtime = result["train_runtime_s"]
    ours = args.steps * args.batch / runtime
    finish("grpo_throughput", ("policylm grpo, 1 worker, completions/s", ours),
           ("TRL GRPOTrainer in-process, same rows, completions/s", statistics.median(base)),
           target=0.9, model=args.model, steps=args.steps, batch=args.batch,
           num_generations=args.generations, max_completion_length=args.completion_length,
           in_process_runs=[round(b, 2) for b in base])


if __name__ == "__main__":
    main()
