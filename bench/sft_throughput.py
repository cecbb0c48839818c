"""Training tokens per second through `policylm sft` (1 Ray Train worker) against TRL's
`SFTTrainer` run in this process on the same data, model and settings; and TRL with packing
against plain padded batches.

Both sides count tokens and time the way the trainer does (``num_tokens`` / ``train_runtime``),
so Ray start-up and tokenisation are outside the figure. The last line is one JSON object with
the figures, ``ratio`` (policylm / in-process, target >= 0.9) and ``packing_ratio``.
Run: .venv/bin/python bench/sft_throughput.py [--model smollm2-135m --steps 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


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


def in_process(data: Path, model: str, steps: int, batch: int, packing: bool, out: Path) -> float:
    """TRL SFTTrainer here, with the settings `policylm sft` uses; returns tokens/s."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from policylm.jobs.sft import to_prompt_completion
    from policylm.platform.engine_hf import pick_dtype
    from policylm.platform.models import resolve_model

    table = pa.concat_tables([pq.read_table(f, columns=["messages"])
                              for f in sorted((data / "dataset" / "train").glob("*.parquet"))])
    rows = to_prompt_completion(table).to_pylist()
    path = resolve_model(model)
    dtype = pick_dtype("auto", "cpu")
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=5e-4, warmup_steps=0.03, logging_steps=1,
                     save_strategy="no", report_to="none", use_cpu=True,
                     bf16=dtype == torch.bfloat16, max_length=256, packing=packing, seed=0,
                     disable_tqdm=True)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=dtype), args=args,
        train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                               target_modules="all-linear"))
    result = trainer.train()
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    return tokens / result.metrics["train_runtime"]


def through_policylm(data: Path, model: str, steps: int, batch: int, out: Path) -> float:
    from policylm.jobs.sft import SftJobConfig, main
    from policylm.platform.config import load_config

    cfg = load_config(SftJobConfig, None, [
        f"dataset={data}", f"model={model}", f"max_steps={steps}", f"batch_size={batch}",
        "eval_steps=0", f"save_steps={steps}", "logging_steps=1", "num_workers=1",
        "cpus_per_worker=2", f"out={out}"])
    return main(cfg)["train_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_dataset(root)
        ours = through_policylm(data, args.model, args.steps, args.batch, root / "sft")
        ray.shutdown()  # the in-process side gets the whole machine, as the workers did
        plain = in_process(data, args.model, args.steps, args.batch, False, root / "plain")
        packed = in_process(data, args.model, args.steps, args.batch, True, root / "packed")
    print(json.dumps({
        "bench": "sft_throughput", "model": args.model, "steps": args.steps,
        "batch": args.batch, "policylm_sft_tokens_per_s": round(ours, 1),
        "trl_in_process_tokens_per_s": round(plain, 1), "ratio": round(ours / plain, 3),
        "target": 0.9, "trl_packed_tokens_per_s": round(packed, 1),
        "packing_ratio": round(packed / plain, 3),
    }))


if __name__ == "__main__":
    main()
