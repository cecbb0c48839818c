"""Supervised fine-tuning of the return-conditioned policy on Ray Train (TRL + PEFT LoRA).

Usage: ``python -m policylm.jobs.sft --config configs/sft_cartpole.yaml
dataset=runs/build-dataset-...`` (or ``policylm sft ...``).

A ``TorchTrainer`` runs ``num_workers`` workers (gloo on CPU, nccl on GPU); each reads its shard
of the chat dataset through Ray Data and trains with TRL's ``SFTTrainer`` (prompt = system + user
turns, completion = the assistant's action: the loss is on the action tokens only), following
Ray's Transformers integration (``prepare_trainer``, ``RayTrainReportCallback``). Checkpoints
are reported to Ray Train; with ``max_failures`` a run whose worker dies resumes from the latest.
Writes ``adapter/`` (LoRA safetensors + tokenizer: ``hf://<model>?adapter=<run>/adapter``),
``metrics.json`` (loss curves, tokens/s) and ``loss.png``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from policylm.jobkit.runs import log, run_job, settings, write_json
from policylm.platform.config import ConfigError
from policylm.platform.memory import with_memory
from policylm.platform.policies.shots import render_shots
from policylm.platform.records import adapter_record, write_record
from policylm.platform.training.sft import (
    SftJobConfig,
    build_trainer,
    check_init_adapter,
    check_lengths,
    dataset_columns,
    rows_think,
    shots_of,
    to_prompt_completion,
)


def _fault_callback(step: int, notes: Any) -> Any:
    """Testing: worker 0 exits at ``step``, once per run (whatever node it restarts on)."""
    from transformers import TrainerCallback

    class KillOnce(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            import ray
            import ray.train

            from policylm.jobkit.ray_train import note

            if (state.global_step == step and ray.train.get_context().get_world_rank() == 0
                    and ray.get(notes.once.remote("kill"))):
                note(notes, {"fault": f"killed at step {step}"})
                os._exit(1)

    return KillOnce()


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: the whole of each split, TRL SFTTrainer (whose sampler gives this
    worker its share of the rows), Ray reporting."""
    import ray.train
    import torch
    from datasets import Dataset
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from policylm.jobkit.ray_train import note, resume_point, step_callback, worker_rows
    from policylm.platform.config import config_from_dict

    cfg = config_from_dict(SftJobConfig, config["cfg"])
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    notes = config["notes"]

    def split(name: str) -> Dataset | None:
        rows = worker_rows(name) if name in config["splits"] else []
        return Dataset.from_list(rows) if rows else None

    train, valid = split("train"), split("validation")
    rank0 = ray.train.get_context().get_world_rank() == 0
    callbacks = [RayTrainReportCallback(), *([step_callback(notes)] if rank0 else [])]
    if cfg.kill_at_step:
        callbacks.append(_fault_callback(cfg.kill_at_step, notes))
    trainer = build_trainer(cfg, train, valid, config["work_dir"], callbacks, rank0,
                            cfg.max_eval_rows)
    if cfg.train.record_rows:
        trainer.row_recorder = lambda name, epoch, rows: note(
            notes, {"split": name, "epoch": epoch, "rows": rows})
    has_eval = trainer.eval_dataset is not None
    trainer = prepare_trainer(trainer)
    resume = resume_point(config["work_dir"])
    note(notes, {"attempt": "start", "resumed": resume is not None,
                 "train_rows": len(train) if train is not None else 0,
                 "validation_rows": len(trainer.eval_dataset) if has_eval else 0})
    out = trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate()["eval_loss"] if has_eval else None  # every rank takes part
    if rank0:
        tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
        note(notes, {"final_eval_loss": final, "step": trainer.state.global_step,
                     "train_runtime": out.metrics.get("train_runtime"), "num_tokens": tokens})


def main(cfg: SftJobConfig) -> dict:
    from policylm.jobkit import ray_train
    from policylm.platform.tracking import track

    run_dir, stages, data = ray_train.start_run(cfg, "sft")
    check_init_adapter(cfg, data)
    if cfg.init_adapter:  # the workers read it: the same directory whatever their working one
        cfg = replace(cfg, init_adapter=str(Path(cfg.init_adapter).resolve()))
    shots = shots_of(cfg)
    think = rows_think(data)  # rows that thought before acting: their adapter acts so too
    if think and cfg.prompt_form != "chat":
        raise ConfigError(f"{cfg.dataset}: its rows think before acting (played with mode=think), "
                          "which only the chat form holds; train with prompt_form=chat")
    lead = render_shots(shots)
    with stages("data"):
        lengths = check_lengths(cfg, data, lead=lead)
        splits = ray_train.read_splits(data, dataset_columns(data), to_prompt_completion,
                                       {"form": cfg.prompt_form,
                                        "target_dropout": cfg.target_dropout, "lead": lead})
    cpus = ray_train.worker_cpus(cfg.train.cpus_per_worker, cfg.train.num_workers)
    with track(cfg.tracking, run_dir, "sft", settings(cfg)) as tracker:
        result, records = ray_train.train(train_loop_per_worker, {"splits": sorted(splits)},
                                          splits, cfg, cpus, run_dir, "sft", stages, tracker)
        adapter = ray_train.export_checkpoint(
            result, run_dir / ("model" if cfg.full_finetune else "adapter"))
        # the dataset's history and env text, and the examples: the adapter's policy prompts
        # with them
        write_record(adapter, adapter_record(cfg.prompt_form, data, lead, think))
        metrics = {**summarize(result, records, stages.seconds, cfg.train.num_workers), **lengths,
                   "shots": [asdict(s) for s in shots]}
        tracker.log({"final": metrics}, metrics["train_loss"][-1][0] if metrics["train_loss"]
                    else 0)
    write_json(run_dir / "metrics.json", with_memory(metrics))
    plot_losses(metrics, run_dir / "loss.png")
    log.info("adapter: %s (use hf://%s?adapter=%s)", adapter, cfg.model, adapter)
    return {"run_dir": str(run_dir), "adapter": str(adapter), **metrics}


def summarize(result: Any, notes: list[dict], seconds: dict, workers: int) -> dict:
    """Loss curves and throughput from the trainer's log history (last checkpoint's state) and
    the run's notes (attempts, resumes, final validation loss, where the workers ran)."""
    from policylm.jobkit.ray_train import log_history

    history = log_history(result)
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    tokens = max((h.get("num_tokens", 0) for h in history), default=0)
    finals = [n for n in notes if "step" in n]
    last = finals[-1] if finals else {}
    if last.get("final_eval_loss") is not None and (not evals or evals[-1][0] != last["step"]):
        evals.append((last["step"], last["final_eval_loss"]))
    starts = [n for n in notes if n.get("attempt") == "start"]
    attempts = [n for n in starts if n["rank"] == 0]
    # a resumed attempt's token count includes earlier attempts' tokens: no rate then
    runtime = last.get("train_runtime") if len(attempts) == 1 else None
    return {"train_loss": train, "eval_loss": evals, "train_tokens": tokens,
            "train_runtime_s": runtime,
            # training tokens per second inside the trainer (the last attempt's time; the job's
            # total with start-up and data is in stage_seconds)
            "train_tokens_per_s": last["num_tokens"] / runtime if runtime else None,
            "attempts": len(attempts), "resumed": any(n["resumed"] for n in attempts),
            # the last attempt's workers (each attempt starts every worker once)
            "workers": sorted(({k: n[k] for k in ("rank", "node_id", "train_rows",
                                                  "validation_rows")}
                               for n in starts[-max(workers, 1):]), key=lambda w: w["rank"]),
            "stage_seconds": seconds}


def plot_losses(metrics: dict, path: Path) -> None:
    from policylm.platform.evaluation.reports import plot_curves

    plot_curves([("training loss", metrics["train_loss"], "-"),
                 ("validation loss", metrics["eval_loss"], "o-")], path, "optimizer step",
                "loss (nats per action token)", "SFT loss")


CONFIG = SftJobConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("sft", SftJobConfig, main, sys.argv[1:])
