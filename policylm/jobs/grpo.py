"""GRPO over dataset states on Ray Train (TRL ``GRPOTrainer`` + PEFT LoRA). Online GRPO over
episodes played by rollout actors is its own command, ``policylm grpo-episodes``
(``policylm.jobs.grpo_episodes``).

Usage: ``policylm grpo --config configs/grpo_cartpole.yaml dataset=runs/dataset
adapter=runs/sft/adapter`` (or ``python -m policylm.jobs.grpo ...``).

Prompts are the states of a return-conditioned dataset in the prompt form the policy uses (the
one recorded with the starting adapter, by default); each prompt gets ``num_generations``
sampled completions, scored by the weighted reward functions of
``policylm.platform.training.rewards`` (``format``, ``bc``, ``env``), and the LoRA adapter is
updated with TRL's clipped GRPO objective (KL to the starting policy with ``beta`` > 0). Starts
from an SFT adapter (``adapter=``, trained further) or the base model with a new adapter. Writes
``adapter/`` (``hf://<model>?adapter=<run>/adapter``), ``metrics.json`` (reward per step, per
function) and ``reward.png``. ``use_vllm`` generates with vLLM on GPU workers.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from policylm.jobkit.runs import (
    log,
    run_job,
    settings,
    write_json,
)
from policylm.platform.config import field, overwrite_field, require, validate_section
from policylm.platform.memory import with_memory
from policylm.platform.records import FORMS
from policylm.platform.tracking import TrackingConfig
from policylm.platform.training.rewards import REWARDS
from policylm.platform.training.scaling import TrainConfig
from policylm.platform.training.sft import LoraSettings, dataset_columns


@dataclass
class GrpoSettings:
    """What both GRPO commands share: the env, the starting policy, sampling and the objective."""

    env_id: str = field("CartPole-v1", doc="the env (its action codec parses the answers)")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    model: str = field("smollm2-135m", doc="base model: smollm2-135m or a local directory")
    adapter: str = field("", doc="start from this LoRA adapter (an sft run's adapter/); "
                                 "empty: a new adapter on the base model")
    prompt_form: str = field("", doc=f"{' | '.join(FORMS)}; empty: the form recorded with the "
                                     "adapter, else chat")
    lora: LoraSettings = field(factory=LoraSettings, doc="settings of a new adapter (lora.<key>)")
    max_completion_length: int = field(8, doc="tokens per completion")
    temperature: float = field(1.0, doc="sampling temperature of the completions")
    beta: float = field(0.0, doc="KL coefficient to the starting policy (0: no reference model)")
    epsilon: float = field(0.2, doc="clipping range of the policy ratio")
    lr: float = field(1e-5, doc="learning rate")
    dtype: str = field("auto", doc="auto (bf16 where fast), bf16 or fp32")
    seed: int = field(0, doc="seed")
    tracking: TrackingConfig = field(factory=TrackingConfig, doc="TensorBoard and MLflow "
                                     "(tracking.<key>)")

    def validate(self) -> None:
        require(self.lr > 0, "lr", "must be > 0")
        require(self.prompt_form in ("", *FORMS), "prompt_form", f"use one of {FORMS}")

    def sft_view(self) -> Any:
        """The SFT settings that load the model (dtype, attention, LoRA) the same way."""
        from policylm.platform.training.sft import SftJobConfig

        return SftJobConfig(model=self.model, lora=self.lora, dtype=self.dtype,
                            prompt_form=self.prompt_form or "chat")


@dataclass
class GrpoJobConfig(GrpoSettings):
    """Improve the LLM policy with GRPO over the states of a dataset (Ray Train + TRL)."""

    REFUSED_KEYS: ClassVar[dict[str, str]] = {
        "mode": "online GRPO over episodes is its own command now: policylm grpo-episodes "
                "(the same keys without mode); policylm grpo trains over dataset states"}

    dataset: str = field("", doc="build-dataset run directory (or its dataset/)")
    rewards: dict = field(factory=lambda: {"format": 0.5, "bc": 1.0},
                          doc=f"reward function -> weight; known: {', '.join(REWARDS)}")
    env_reward: dict = field(factory=lambda: {"policy": "random:", "horizon": 20, "gamma": 0.99},
                             doc="env reward: the rollout policy URI after the completion's "
                                 "action, the horizon in steps (the action's included), gamma")
    num_generations: int = field(8, doc="completions per prompt (the GRPO group)")
    max_steps: int = field(50, doc="optimizer steps")
    batch_size: int = field(16, doc="completions per worker per step (a multiple of "
                                    "num_generations: batch_size / num_generations prompts)")
    max_rows: int = field(0, doc="use at most this many training states (0: all)")
    logging_steps: int = field(1, doc="log rewards every N steps")
    save_steps: int = field(25, doc="checkpoint every N steps")
    use_vllm: bool = field(False, doc="generate with vLLM (GPU workers, the vllm extra)")
    train: TrainConfig = field(factory=TrainConfig, doc="Ray Train workers (train.<key>)")
    resume: bool = field(False, doc="continue the run already in out= from its checkpoint")
    out: str = field("", doc="run directory (default runs/grpo-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        super().validate()
        require(bool(self.dataset), "dataset", "give the build-dataset run directory")
        require(self.num_generations >= 2, "num_generations", "must be >= 2 (a group)")
        require(self.batch_size % self.num_generations == 0, "batch_size",
                f"must be a multiple of num_generations ({self.num_generations})")
        require(self.max_steps >= 1, "max_steps", "must be >= 1")
        require(bool(self.rewards) and set(self.rewards) <= set(REWARDS), "rewards",
                f"give weights for some of {', '.join(REWARDS)}")
        validate_section(self.train, "train")

    def sft_view(self) -> Any:
        return dataclasses.replace(super().sft_view(), dataset=self.dataset, train=self.train)


def to_grpo_rows(batch: Any, form: str = "chat", lead: str = "") -> Any:
    """Dataset rows -> ``prompt`` (in the policy's form, with the few-shot examples ``lead`` the
    starting adapter was trained with), ``expected`` (the dataset's action text, for the bc
    reward), ``t`` and, when the dataset has it, ``env_state`` (for the env reward)."""
    import pyarrow as pa

    from policylm.platform.data.trajectories import ENV_STATE
    from policylm.platform.training.rewards import completion_text
    from policylm.platform.training.sft import to_prompt_completion

    pairs = to_prompt_completion(batch, form, lead=lead)
    cols = {"prompt": pairs.column("prompt"),
            "expected": [completion_text(c).strip()
                         for c in pairs.column("completion").to_pylist()],
            "t": batch.column("t")}
    if ENV_STATE in batch.schema.names:
        cols[ENV_STATE] = batch.column(ENV_STATE)
    return pa.table(cols)


def resolve_start(cfg: GrpoSettings) -> None:
    """Make the starting adapter and a local model path absolute (actors and workers run in
    other directories), and settle the prompt form: the one given, else the one recorded with
    the adapter or model, else chat."""
    from policylm.platform.config import ConfigError
    from policylm.platform.records import read_record

    if cfg.adapter:
        cfg.adapter = str(Path(cfg.adapter).resolve())
    if Path(cfg.model).exists():
        cfg.model = str(Path(cfg.model).resolve())
    record = read_record(cfg.adapter or None, cfg.model)
    if record.think:
        raise ConfigError(f"{cfg.adapter or cfg.model} was trained to think before acting "
                          "(mode=think); grpo trains policies that answer with the action alone, "
                          "so start from an adapter trained on rows without thoughts")
    cfg.prompt_form = cfg.prompt_form or record.prompt_form


def grpo_args(cfg: GrpoJobConfig, output_dir: str, weights: list[float], progress: bool) -> Any:
    """TRL ``GRPOConfig`` for the job's settings."""
    import torch
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.epsilon,
        learning_rate=cfg.lr, max_steps=cfg.max_steps, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        reward_weights=weights, report_to="none", seed=cfg.seed, use_cpu=not cfg.train.use_gpu,
        bf16=cfg.sft_view().torch_dtype() == torch.bfloat16, use_vllm=cfg.use_vllm,
        vllm_mode="colocate", disable_tqdm=not progress, gradient_checkpointing=False,
        dataloader_num_workers=0, ddp_find_unused_parameters=False,
    )


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: the whole split of states (TRL's sampler and accelerate give each
    worker its share of every step's prompts), TRL GRPOTrainer, Ray reporting."""
    import ray.train
    import torch
    from datasets import Dataset
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from trl import GRPOTrainer

    from policylm.jobkit.ray_train import note, resume_point, step_callback, worker_rows
    from policylm.platform.config import config_from_dict
    from policylm.platform.envs import make_adapter
    from policylm.platform.training.rewards import reward_funcs
    from policylm.platform.training.sft import load_trainable
    from policylm.platform.training.sharding import pick_rows

    cfg = config_from_dict(GrpoJobConfig, config["cfg"])
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    notes = config["notes"]
    rows = [{**r, "row": i} for i, r in enumerate(pick_rows(worker_rows("train"), cfg.max_rows,
                                                              cfg.seed))]
    env = make_adapter(cfg.env_id, **cfg.env_options)
    funcs, weights = reward_funcs(cfg.rewards, env, cfg.env_reward)
    model, tokenizer, peft = load_trainable(cfg.sft_view(), cfg.adapter)
    rank0 = ray.train.get_context().get_world_rank() == 0

    class Trainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):  # the rows this worker's step uses
            if cfg.train.record_rows:
                note(notes, {"split": "train", "step": self.state.global_step,
                             "rows": [x["row"] for x in inputs]})
            return super()._generate_and_score_completions(inputs)

    trainer = Trainer(model=model, reward_funcs=funcs,
                      args=grpo_args(cfg, config["work_dir"], weights, rank0),
                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=peft, callbacks=[RayTrainReportCallback(),
                                                   *([step_callback(notes)] if rank0 else [])])
    trainer = prepare_trainer(trainer)
    resume = resume_point(config["work_dir"])
    note(notes, {"attempt": "start", "resumed": resume is not None, "train_rows": len(rows)})
    out = trainer.train(resume_from_checkpoint=resume)
    if rank0:
        note(notes, {"step": trainer.state.global_step,
                     "train_runtime": out.metrics.get("train_runtime")})


def main(cfg: GrpoJobConfig) -> dict:
    resolve_start(cfg)
    from policylm.jobkit import ray_train
    from policylm.platform.records import adapter_record, read_record, write_record
    from policylm.platform.tracking import track

    run_dir, stages, data = ray_train.start_run(cfg, "grpo")
    with stages("data"):
        lead = read_record(cfg.adapter or None, cfg.model).lead
        splits = ray_train.read_splits(data, dataset_columns(data), to_grpo_rows,
                                       {"form": cfg.prompt_form, "lead": lead})
        splits = {"train": splits["train"]}  # max_rows: a seeded subset, in the workers
    cpus = ray_train.worker_cpus(cfg.train.cpus_per_worker, cfg.train.num_workers)
    with track(cfg.tracking, run_dir, "grpo", settings(cfg)) as tracker:
        result, records = ray_train.train(train_loop_per_worker, {}, splits, cfg, cpus, run_dir,
                                          "grpo", stages, tracker)
        adapter = ray_train.export_checkpoint(result, run_dir / "adapter")
        write_record(adapter, adapter_record(cfg.prompt_form, data, lead))  # as the rows
        metrics = summarize(ray_train.log_history(result), stages.seconds)
        attempts = [n for n in records if n.get("attempt") == "start" and n["rank"] == 0]
        finals = [n for n in records if "train_runtime" in n]
        # the trainer's time of the last attempt (a resumed run's rate would mix attempts)
        metrics["train_runtime_s"] = finals[-1]["train_runtime"] \
            if len(attempts) == 1 and finals else None
        metrics["attempts"] = len(attempts)
        if not cfg.beta:
            metrics["kl"] = None  # not computed: TRL measures KL only with beta > 0
        tracker.log({"final": metrics}, finals[-1]["step"] if finals else 0)
    write_json(run_dir / "metrics.json", with_memory(metrics))
    plot_rewards(metrics, run_dir / "reward.png")
    log.info("adapter: %s (use hf://%s?adapter=%s)", adapter, cfg.model, adapter)
    return {"run_dir": str(run_dir), "adapter": str(adapter), **metrics}


def summarize(history: list[dict], seconds: dict) -> dict:
    """Reward per logged step (total and per function, with its spread) and KL where logged."""
    steps = [h for h in history if "reward" in h]
    per_func = sorted({k for h in steps for k in h if k.startswith("rewards/")
                       and k.endswith("/mean")})
    return {"reward": [(h["step"], h["reward"]) for h in steps],
            "reward_std": [(h["step"], h.get("reward_std")) for h in steps],
            "rewards": {k.split("/")[1]: [(h["step"], h[k]) for h in steps if k in h]
                        for k in per_func},
            "kl": [(h["step"], h["kl"]) for h in steps if "kl" in h],
            "stage_seconds": seconds}


def plot_rewards(metrics: dict, path: Path) -> None:
    from policylm.platform.evaluation.reports import plot_curves

    plot_curves([("total (weighted)", metrics["reward"], "-"),
                 *((name, curve, "--") for name, curve in metrics["rewards"].items())],
                path, "optimizer step", "mean reward of the completions", "GRPO reward")


CONFIG = GrpoJobConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("grpo", GrpoJobConfig, main, sys.argv[1:])
