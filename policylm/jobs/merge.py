"""Merge a LoRA adapter into its base model: a plain model directory that transformers (and
vLLM) load without PEFT.

Usage: ``python -m policylm.jobs.merge adapter=runs/sft-.../adapter model=smollm2-135m
out=runs/merged`` (or ``policylm merge ...``); then ``hf://runs/merged`` is a policy URI.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import log, open_run, run_job
from policylm.platform.config import field, overwrite_field, require


@dataclass
class MergeConfig:
    """Merge a PEFT LoRA adapter into the base model and save the result."""

    adapter: str = field("", doc="adapter directory (policylm sft writes <run>/adapter)")
    model: str = field("smollm2-135m", doc="the base model the adapter was trained on")
    dtype: str = field("fp32", doc="dtype of the saved weights: fp32 or bf16")
    out: str = field("", doc="output directory (default runs/merge-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.adapter), "adapter", "give the adapter directory")
        require(self.dtype in ("fp32", "bf16"), "dtype", "use fp32 or bf16")


def merge(model: str, adapter: str, out: Path, dtype: str = "fp32") -> Path:
    """Load base + adapter, merge the LoRA weights, save model and tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylm.platform.engines.hf import merge_adapter
    from policylm.platform.engines.models import resolve_model
    from policylm.platform.records import read_record, write_record

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json; pass an adapter dir")
    path = resolve_model(model)
    base = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    merged = merge_adapter(base, adapter, model)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    # the adapter's whole record (form, history, few-shot lead, think): prompts as it did
    write_record(out, read_record(adapter))
    return out


def main(cfg: MergeConfig) -> dict:
    out = open_run("merge", cfg)
    merge(cfg.model, cfg.adapter, out, cfg.dtype)
    log.info("merged model in %s (policy URI: hf://%s)", out, out.resolve())
    return {"run_dir": str(out)}


CONFIG = MergeConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("merge", MergeConfig, main, sys.argv[1:])
