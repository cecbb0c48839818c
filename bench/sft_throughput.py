"""Training tokens per second through `policylm sft` (1 Ray Train worker) against TRL's
`SFTTrainer` run in this process on the same data, model and settings; the job's trainer (TRL's
SFTTrainer with the label-only loss) in this process, which isolates Ray Train's overhead; TRL
with packing against plain padded batches; and the job's CPU settings (eager attention, no
gradient checkpointing) against TRL's defaults (sdpa, gradient checkpointing on).

Every side counts tokens and time the way the trainer does (``num_tokens`` / ``train_runtime``),
so Ray start-up and tokenisation are outside the figure. The in-process sides run first (Ray
stopped), then `policylm sft`, then plain TRL once more (its median is the baseline). The last
line is one JSON object with the figures, ``ratio`` (policylm / plain TRL in-process, target >=
0.9), ``ray_train_ratio`` (policylm / the same trainer in-process), ``label_only_ratio``,
``packing_ratio`` and ``settings_ratio`` (job settings / TRL defaults).
Run: .venv/bin/python bench/sft_throughput.py [--model smollm2-135m --steps 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


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


def in_process(data: Path, cfg: Any, out: Path, trl_defaults: bool = False,
               job_trainer: bool = False) -> float:
    """TRL SFTTrainer here with the model and SFTConfig `policylm sft` builds from ``cfg`` (or
    with TRL's default attention and gradient checkpointing; or the job's own trainer class);
    returns tokens/s."""
    import dataclasses
    import gc

    from datasets import Dataset
    from trl import SFTTrainer

    from policylm.platform.training.sft import load_model, read_rows, sft_args, trainer_class

    rows = read_rows(data / "dataset", "train", cfg.prompt_form)
    if trl_defaults:
        cfg = dataclasses.replace(cfg, attn_implementation="sdpa", gradient_checkpointing=True)
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
        "eval_steps=0", f"save_steps={steps}", "logging_steps=1", "num_workers=1",
        f"prompt_form={form}", f"out={out}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-form", default="compact", choices=["chat", "compact"])
    args = parser.parse_args()
    import dataclasses
    import statistics

    import ray

    from policylm.jobs.sft import main as sft_main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = job_config(root / "ds", args.model, args.steps, args.batch, root / "sft",
                         args.prompt_form)
        make_dataset(root)
        ray.shutdown()  # building the dataset started Ray; the in-process sides run without it
        plain = [in_process(root / "ds", cfg, root / "plain")]
        same = in_process(root / "ds", cfg, root / "same", job_trainer=True)
        # a packed step holds ~7x the tokens of a padded one (and runs on one core here):
        # a third of the steps measures its tokens/s as well
        packed = in_process(root / "ds", dataclasses.replace(
            cfg, packing=True, max_steps=max(3, args.steps // 3)), root / "packed")
        defaults = in_process(root / "ds", cfg, root / "defaults", trl_defaults=True)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ours = sft_main(cfg)["train_tokens_per_s"]
        ray.shutdown()  # the in-process side gets the whole machine, as the worker did
        plain.append(in_process(root / "ds", cfg, root / "plain2"))
    base = statistics.median(plain)
    print(json.dumps({
        "bench": "sft_throughput", "model": args.model, "steps": args.steps,
        "batch": args.batch, "prompt_form": args.prompt_form,
        "policylm_sft_tokens_per_s": round(ours, 1),
        "trl_in_process_tokens_per_s": round(base, 1),
        "trl_in_process_runs": [round(p, 1) for p in plain], "ratio": round(ours / base, 3),
        "target": 0.9, "job_trainer_in_process_tokens_per_s": round(same, 1),
        "ray_train_ratio": round(ours / same, 3), "label_only_ratio": round(same / base, 3),
        "trl_packed_tokens_per_s": round(packed, 1),
        "packing_ratio": round(packed / base, 3),
        "trl_defaults_tokens_per_s": round(defaults, 1),
        "settings_ratio": round(base / defaults, 3),
    }))


if __name__ == "__main__":
    main()
