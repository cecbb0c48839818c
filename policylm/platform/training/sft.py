"""Supervised fine-tuning without Ray: the SFT settings, reading a built dataset's splits in
TRL's prompt-completion form, loading the model with LoRA, and the trainer (TRL's
``SFTTrainer`` with the loss computed only at the action tokens). ``policylm sft`` runs it on Ray
Train workers (``policylm.jobs.sft``); Tune trials run it in their own process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policylm.platform.config import field, overwrite_field, require
from policylm.platform.data.datasets import DatasetError
from policylm.platform.records import FORMS
from policylm.platform.tracking import TrackingConfig
from policylm.platform.training.scaling import TrainConfig

log = logging.getLogger("policylm")


@dataclass
class LoraSettings:
    """PEFT LoRA settings."""

    rank: int = field(16, doc="LoRA rank r")
    alpha: int = field(32, doc="LoRA alpha (scale = alpha / rank)")
    dropout: float = field(0.0, doc="LoRA dropout")
    target_modules: str = field("all-linear", doc="modules to adapt: all-linear or a,b,c")
    layers: int = field(0, doc="adapt only the top N decoder layers (0: all); the backward pass "
                               "then stops below them, which saves its time below)")


@dataclass
class SftJobConfig:
    """Fine-tune a causal LM on a return-conditioned chat dataset with Ray Train + TRL."""

    dataset: str = field("", doc="build-dataset run directory (or its dataset/ directory)")
    model: str = field("smollm2-135m", doc="base model: smollm2-135m or a local model directory")
    lora: LoraSettings = field(factory=LoraSettings, doc="LoRA settings (lora.<key>)")
    prompt_form: str = field("chat", doc=f"how rows become text: {' | '.join(FORMS)} (compact: "
                                         "no chat template or system text, 2.6x fewer tokens "
                                         "per CartPole row; recorded with the adapter)")
    full_finetune: bool = field(False, doc="train every weight instead of a LoRA adapter")
    init_adapter: str = field("", doc="continue training this LoRA adapter (an sft or grpo "
                              "adapter/ directory) instead of a new one; lora.* are then its "
                              "own, and its prompt form, history and env text must be the "
                              "dataset's")
    epochs: float = field(1.0, doc="passes over the training rows (ignored if max_steps > 0)")
    max_steps: int = field(-1, doc="optimizer steps; > 0 overrides epochs")
    batch_size: int = field(16, doc="rows per device per step")
    grad_accum: int = field(1, doc="gradient accumulation steps")
    lr: float = field(5e-4, doc="peak learning rate")
    warmup_ratio: float = field(0.03, doc="share of steps for linear warm-up")
    max_length: int = field(256, doc="tokens per row (longer rows are truncated)")
    packing: bool = field(False, doc="pack rows into max_length blocks (TRL packing)")
    gradient_checkpointing: bool = field(
        False, doc="recompute activations in the backward pass (TRL's default is on; off is "
                   "faster for short rows; turn it on for long sequences or large models)")
    target_dropout: float = field(0.0, doc="share of rows (a stable draw per row) whose target "
                                  "is written as ? (the null target), so a policy acting with "
                                  "return guidance (guidance=w) reads null prompts it knows")
    shots: int = field(0, doc="few-shot examples in every row's prompt (recorded with the "
                       "adapter, so its hf:// policy prompts with them too)")
    shots_from: str = field("", doc="with shots: the trajectory or run directory whose best "
                            "episodes give the examples")
    shots_seed: int = field(0, doc="with shots: the seed of the examples' draw")
    eval_steps: int = field(50, doc="validation loss every N steps (0: only at the end)")
    max_eval_rows: int = field(512, doc="validation rows used for the loss (a fixed subset)")
    save_steps: int = field(50, doc="checkpoint every N steps")
    logging_steps: int = field(5, doc="log the training loss every N steps")
    dtype: str = field("auto", doc="auto (bf16 where fast), bf16 or fp32")
    attn_implementation: str = field(
        "auto", doc="auto (eager on CPU, sdpa on GPU), eager, sdpa or any transformers "
                    "attention backend")
    train: TrainConfig = field(factory=TrainConfig, doc="Ray Train workers (train.<key>)")
    seed: int = field(0, doc="seed")
    resume: bool = field(False, doc="continue the run already in out= from its latest "
                                    "checkpoint (e.g. after the driver was stopped)")
    kill_at_step: int = field(0, doc="testing only: worker 0 exits once at this step")
    tracking: TrackingConfig = field(factory=TrackingConfig, doc="TensorBoard and MLflow "
                                     "(tracking.<key>)")
    out: str = field("", doc="run directory (default runs/sft-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.dataset), "dataset", "give the build-dataset run directory")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.max_steps > 0 or self.epochs > 0, "epochs", "give epochs > 0 or max_steps")
        require(self.save_steps >= 1, "save_steps", "must be >= 1")
        require(self.lora.rank >= 1, "lora.rank", "must be >= 1")
        require(self.lora.layers >= 0, "lora.layers", "must be >= 0 (0: every layer)")
        require(self.prompt_form in FORMS, "prompt_form", f"use one of {', '.join(FORMS)}")
        require(0 <= self.target_dropout < 1, "target_dropout", "must be in [0, 1)")
        require(self.shots >= 0, "shots", "must be >= 0")
        require(not self.shots or bool(self.shots_from), "shots_from",
                "shots needs the trajectory or run directory to draw examples from")
        if self.init_adapter:
            require(not self.full_finetune, "init_adapter", "continues a LoRA adapter; drop "
                    "full_finetune=true")
            require(Path(self.init_adapter, "adapter_config.json").is_file(), "init_adapter",
                    f"{self.init_adapter} holds no adapter_config.json; give an adapter "
                    "directory (an sft or grpo run's adapter/)")
        self.train.validate()

    def torch_dtype(self) -> Any:
        """The training dtype ``dtype`` resolves to on this job's device."""
        from policylm.platform.engines.hf import pick_dtype

        return pick_dtype(self.dtype, "cuda" if self.train.use_gpu else "cpu")


def dataset_dir(path: str) -> Path:
    """Accept a build-dataset run directory or its ``dataset/`` directory."""
    p = Path(path)
    d = p / "dataset" if (p / "dataset" / "train").is_dir() else p
    if not (d / "train").is_dir():
        raise FileNotFoundError(f"{p}: no train/ split found; pass a build-dataset run directory")
    return d


TRAIN_COLUMNS = ["system", "target_return", "t", "observation", "completion"]


def rows_think(data: Path) -> bool:
    """True when some training row of the dataset in ``data`` was played with a thought (its
    system text asks for one, ``policylm.platform.prompts.think_system``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from policylm.platform.prompts import INSTRUCTION

    for f in sorted((data / "train").glob("*.parquet")):
        systems = pc.unique(pq.read_table(f, columns=["system"]).column("system")).to_pylist()
        if any(s and s.endswith(INSTRUCTION) for s in systems):
            return True
    return False


def shots_of(cfg: SftJobConfig) -> list:
    """The few-shot examples every row of ``cfg``'s training holds (``shots``); none without."""
    from policylm.platform.policies.shots import pick_shots

    return pick_shots(cfg.shots_from, cfg.shots, cfg.shots_seed) if cfg.shots else []


def to_prompt_completion(batch: Any, form: str = "chat", target_dropout: float = 0.0,
                         lead: str = "") -> Any:
    """Dataset rows (Arrow) -> TRL's prompt-completion form in the given prompt form
    (``policylm.platform.prompts``), after each row's earlier steps where the dataset holds
    history: the loss is on the completion, the action. ``target_dropout``: the share of rows
    whose target is the null target (``?``), chosen by a stable draw per (episode, step).
    ``lead``: the few-shot examples every prompt carries (``policylm.platform.policies.shots``)."""
    import pyarrow as pa

    from policylm.platform.data.datasets import HISTORY, row_draw, steps_of
    from policylm.platform.data.trajectories import EPISODE_ID
    from policylm.platform.prompts import training_pair

    cols = [batch.column(c).to_pylist() for c in TRAIN_COLUMNS]
    past = batch.column(HISTORY).to_pylist() if HISTORY in batch.schema.names \
        else [None] * batch.num_rows
    if target_dropout > 0:  # a salt of its own: row sampling draws from row_draw too
        ids, steps = batch.column(EPISODE_ID).to_pylist(), cols[2]
        cols[1] = [None if row_draw(f"{e}#null-target", t) < target_dropout else r
                   for e, t, r in zip(ids, steps, cols[1], strict=True)]
    pairs = [training_pair(form, *row, steps_of(h), lead)
             for *row, h in zip(*cols, past, strict=True)]
    return pa.table({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})


def check_columns(data: Path) -> None:
    """Fail early, naming the fix, on a dataset written before a column the job reads."""
    import pyarrow.parquet as pq

    first = next((data / "train").glob("*.parquet"), None)
    if first is None:
        raise FileNotFoundError(f"{data / 'train'}: no Parquet shards; rebuild the dataset")
    missing = [c for c in TRAIN_COLUMNS if c not in pq.read_schema(first).names]
    if missing:
        raise DatasetError(f"{data}: rows lack column(s) {missing}; the dataset was built by an "
                           "older policylm: run policylm build-dataset again")


def load_model(cfg: SftJobConfig) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, peft LoraConfig or None)`` as the job's settings say (dtype,
    attention backend, LoRA or full fine-tuning)."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylm.platform.engines.models import resolve_model

    dtype = cfg.torch_dtype()
    path = resolve_model(cfg.model)
    attn = cfg.attn_implementation if cfg.attn_implementation != "auto" \
        else ("sdpa" if cfg.train.use_gpu else "eager")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    peft = None
    if not cfg.full_finetune:
        targets: str | list[str] = cfg.lora.target_modules
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
        top = {}
        if cfg.lora.layers:
            n = model.config.num_hidden_layers
            if targets == "all-linear":  # PEFT wants names when layers are chosen
                targets = _decoder_linears(model)
            top = {"layers_to_transform": list(range(max(0, n - cfg.lora.layers), n))}
        peft = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                          lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                          target_modules=targets, **top)
    return model, AutoTokenizer.from_pretrained(path), peft


def _decoder_linears(model: Any) -> list[str]:
    """Names of the linear layers inside the decoder blocks (what ``all-linear`` adapts)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and ".layers." in name})


def sft_args(cfg: SftJobConfig, output_dir: str, has_eval: bool, progress: bool = True) -> Any:
    """TRL ``SFTConfig`` for the job's settings (shared with ``bench/sft_throughput.py``)."""
    import torch
    from trl import SFTConfig

    dtype = cfg.torch_dtype()
    return SFTConfig(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=2 * cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, lr_scheduler_type="linear", logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        eval_strategy="steps" if has_eval and cfg.eval_steps > 0 else "no",
        eval_steps=cfg.eval_steps or None, report_to="none", seed=cfg.seed,
        use_cpu=not cfg.train.use_gpu, bf16=dtype == torch.bfloat16, max_length=cfg.max_length,
        packing=cfg.packing, disable_tqdm=not progress,
        ddp_find_unused_parameters=False, dataloader_num_workers=0,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


def trainer_class() -> type:
    """TRL's ``SFTTrainer`` with three changes.

    - The training loss projects to the vocabulary only at the positions that carry a label
      (the action tokens). TRL's fused head computes log-probabilities, entropy and top-1 over
      every position, in fp32: on compact CartPole rows (34 tokens, 2 of them labels) that was
      1.4 of 2.5 s per step in a profile.
    - Rows reach the workers through :class:`policylm.platform.training.sharding.EvenShardSampler`:
      every worker holds the whole split, and across workers every row is trained exactly once
      per epoch, with the same number of steps on every worker.
    - Evaluation covers every validation row exactly once across workers and reports the loss
      per label token over all of them (``eval_loss``) and the share of label tokens predicted
      right (``eval_mean_token_accuracy``).

    ``row_recorder`` (set on the instance) is called with ``(split, epoch, row indices)`` for
    every batch a worker trains on or evaluates (``policylm sft record_rows=true``)."""
    import torch
    from trl import SFTTrainer

    from policylm.platform.training.sharding import EvenShardSampler

    class ShardLoader(torch.utils.data.DataLoader):
        """A plain DataLoader over a rank-aware batch sampler (not passed through accelerate,
        which would shard it again), reshuffled per epoch by the Trainer's ``set_epoch``."""

        def set_epoch(self, epoch: int) -> None:
            self.batch_sampler.set_epoch(epoch)

    class LabelOnlySFTTrainer(SFTTrainer):
        # called with (split, epoch, row indices) for every batch when set (see docstring)
        row_recorder: Any = None

        def _recorder(self, split: str) -> Any:
            if self.row_recorder is None:
                return None
            return lambda epoch, rows: self.row_recorder(split, epoch, rows)

        def _shard_loader(self, data: Any, split: str, batch_size: int, shuffle: bool) -> Any:
            data = self._remove_unused_columns(data, split)
            sampler = EvenShardSampler(len(data), max(1, self.args.world_size),
                                       self.args.process_index, batch_size, seed=self.args.seed,
                                       shuffle=shuffle, record=self._recorder(split))
            return ShardLoader(data, batch_sampler=sampler, collate_fn=self.data_collator)

        def get_train_dataloader(self) -> Any:
            return self._shard_loader(self.train_dataset, "train",
                                      self.args.per_device_train_batch_size, True)

        def _label_logits(self, model: Any, inputs: dict) -> tuple[Any, Any]:
            """Logits at the positions before each label, and the labels they predict."""
            labels = inputs["labels"]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100  # the position before each label predicts it
            kwargs = {k: v for k, v in inputs.items() if k != "labels"}
            logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits.float()
            return logits, labels[:, 1:][keep[:, :-1]]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            logits, target = self._label_logits(model, inputs)
            n = num_items_in_batch if num_items_in_batch is not None else target.numel()
            loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum") \
                / torch.as_tensor(n, device=logits.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():  # the metrics TRL logs, on the label positions
                logp = torch.log_softmax(logits, dim=-1)
                entropy = -(logp.exp() * logp).sum(-1).sum()
                correct = (logits.argmax(-1) == target).sum()
                count = self.accelerator.gather_for_metrics(torch.as_tensor(
                    target.numel(), device=logits.device)).sum().clamp(min=1)
                for key, value in (("entropy", entropy), ("mean_token_accuracy", correct)):
                    total = self.accelerator.gather_for_metrics(value.float()).sum()
                    self._metrics["train"][key].append((total / count).item())
                # tokens seen, counted as TRL counts them (num_tokens / train_runtime = tokens/s)
                mask = inputs.get("attention_mask")
                local = mask.sum() if mask is not None else torch.as_tensor(
                    inputs["position_ids"].size(1), device=logits.device)
                self._total_train_tokens += int(self.accelerator.gather_for_metrics(local).sum()) \
                    // self._tp_size
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            loader = self._shard_loader(self.eval_dataset if eval_dataset is None
                                        else eval_dataset, "validation",
                                        self.args.eval_batch_size, False)
            # records of one evaluation share its number (in the epoch field)
            self._evaluations = getattr(self, "_evaluations", 0) + 1
            loader.set_epoch(self._evaluations)
            model = self.model
            was_training = model.training
            model.eval()
            sums = torch.zeros(3, dtype=torch.float64, device=self.args.device)
            with torch.no_grad():
                for batch in loader:
                    batch = self._prepare_inputs(batch)
                    logits, target = self._label_logits(model, batch)
                    sums[0] += torch.nn.functional.cross_entropy(logits, target,
                                                                 reduction="sum").double()
                    sums[1] += (logits.argmax(-1) == target).sum()
                    sums[2] += target.numel()
            model.train(was_training)
            sums = self.accelerator.reduce(sums, reduction="sum")
            count = max(float(sums[2]), 1.0)
            metrics = {f"{metric_key_prefix}_loss": float(sums[0]) / count,
                       f"{metric_key_prefix}_mean_token_accuracy": float(sums[1]) / count,
                       f"{metric_key_prefix}_label_tokens": int(sums[2])}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state,
                                                             self.control, metrics)
            return metrics

    return LabelOnlySFTTrainer


def dataset_columns(data: Path) -> list[str]:
    """The columns training reads: :data:`TRAIN_COLUMNS`, and ``history`` (earlier steps) and
    ``env_state`` (for env-grounded rewards) where the dataset has them."""
    import pyarrow.parquet as pq

    from policylm.platform.data.datasets import HISTORY
    from policylm.platform.data.trajectories import ENV_STATE, EPISODE_ID

    names = pq.read_schema(next((data / "train").glob("*.parquet"))).names
    return TRAIN_COLUMNS + [c for c in (EPISODE_ID, HISTORY, ENV_STATE) if c in names]


def read_table(data: Path, split: str, columns: list[str] | None = None,
               limit: int | None = None) -> Any:
    """A split's Parquet files as one Arrow table of ``columns`` (default
    :func:`dataset_columns`), its first ``limit`` rows only if given; None when the split has no
    files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((data / split).glob("*.parquet"))
    if not files:
        return None
    columns = columns or dataset_columns(data)
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    return table if limit is None else table.slice(0, limit)


def read_rows(data: Path, split: str, form: str, fn: Any = None,
              target_dropout: float = 0.0, lead: str = "", limit: int | None = None) -> list[dict]:
    """A split's rows (its first ``limit`` only if given) in TRL's prompt-completion form (or
    mapped by ``fn(table, form)``), read here (no Ray Data): for in-process training (Tune
    trials, the benchmarks)."""
    table = read_table(data, split, limit=limit)
    if table is None:
        return []
    if fn is not None:
        return fn(table, form).to_pylist()
    return to_prompt_completion(table, form, target_dropout, lead).to_pylist()


def build_trainer(cfg: SftJobConfig, train: Any, valid: Any, work_dir: str, callbacks: list,
                  progress: bool, max_eval_rows: int) -> Any:
    """The job's trainer (label-only loss) over ``train``/``valid`` (``datasets.Dataset`` or
    None), with the model, LoRA and SFTConfig the settings say; validation capped at a fixed
    subset of ``max_eval_rows`` rows (seeded, the same on every worker). Shared by the Ray Train
    workers and Tune trials."""
    if valid is not None and len(valid) > max_eval_rows:
        import numpy as np

        pick = np.random.default_rng(cfg.seed).choice(len(valid), max_eval_rows, replace=False)
        valid = valid.select(sorted(int(i) for i in pick))
    model, tokenizer, peft = load_trainable(cfg, cfg.init_adapter)
    has_eval = valid is not None and len(valid) > 0
    args = sft_args(cfg, work_dir, has_eval, progress=progress)
    return trainer_class()(model=model, args=args, train_dataset=train,
                           eval_dataset=valid if has_eval else None,
                           processing_class=tokenizer, peft_config=peft, callbacks=callbacks)


def row_tokens(rows: list[dict], tokenizer: Any) -> list[int]:
    """Tokens of each prompt-completion row as the trainer sees it (chat rows through the
    chat template, compact rows as prompt + completion)."""
    out = []
    for r in rows:
        if isinstance(r["prompt"], list):
            text = tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        else:
            text = r["prompt"] + r["completion"]
        out.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def check_lengths(cfg: SftJobConfig, data: Path, sample: int = 256, lead: str = "") -> dict:
    """Fail early when the rows do not fit ``max_length``: TRL cuts a long row from the end, so
    its action (the only labelled tokens) is lost and the row dropped; with every row too long
    training would stop on an empty dataset. Some rows too long: a warning."""
    from transformers import AutoTokenizer

    from policylm.platform.engines.models import resolve_model

    rows = read_rows(data, "train", cfg.prompt_form, lead=lead, limit=sample)
    if not rows or cfg.packing:
        return {}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    lengths = row_tokens(rows, tokenizer)
    over = sum(n > cfg.max_length for n in lengths)
    info = {"row_tokens_max": max(lengths), "row_tokens_median": sorted(lengths)[len(lengths) // 2],
            "rows_over_max_length": f"{over}/{len(lengths)}"}
    hint = (f"raise max_length (e.g. max_length={1 << max(lengths).bit_length()}) or use "
            "prompt_form=compact (no system text)" + (" or fewer shots" if lead else ""))
    if over == len(lengths):
        raise DatasetError(f"every sampled row is longer than max_length={cfg.max_length} tokens "
                         f"(median {info['row_tokens_median']}, longest {max(lengths)}), so the "
                         f"actions would be cut off and no row would train; {hint}")
    if over:
        log.warning("%d of %d sampled rows exceed max_length=%d and will be dropped; %s", over,
                    len(lengths), cfg.max_length, hint)
    return info


def check_init_adapter(cfg: SftJobConfig, data: Path) -> None:
    """Refuse an ``init_adapter`` trained on other prompts than ``data``'s rows would make (its
    prompt form, history or env text options differ): continuing it would mix two texts."""
    from policylm.platform.config import ConfigError
    from policylm.platform.records import PromptFormError, check_text_options, read_record

    if not cfg.init_adapter:
        return
    was, rows = read_record(cfg.init_adapter), read_record(data)
    where = f"init_adapter={cfg.init_adapter}"
    if was.prompt_form != cfg.prompt_form:
        raise ConfigError(f"{where} was trained with prompt_form={was.prompt_form}; train on "
                          f"with prompt_form={was.prompt_form}")
    if was.history != rows.history:
        raise ConfigError(f"{where} was trained on rows with history={was.history}, the "
                          f"dataset's rows hold history={rows.history}; rebuild the dataset "
                          f"with history={was.history}")
    try:
        check_text_options(was.text_options, rows.text_options or {}, str(data))
    except PromptFormError as err:
        raise ConfigError(f"{where}: {err} (the dataset's rows were played with other env "
                          "options)") from err


def load_trainable(cfg: SftJobConfig, adapter: str = "") -> tuple[Any, Any, Any]:
    """``(model, tokenizer, peft config or None)``: the base model with ``adapter`` loaded
    trainable, or (no adapter) with a new LoRA adapter's config as ``cfg`` sets it."""
    model, tokenizer, peft = load_model(cfg)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        peft = None
    return model, tokenizer, peft
