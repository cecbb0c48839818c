"""The SFT job's model builder (LoRA on the top layers only) and its label-only loss against
TRL's own (tiny model, no Ray)."""

import pytest
from peft import get_peft_model

from policylm.platform.training.sft import (
    LoraSettings,
    SftJobConfig,
    load_model,
    sft_args,
    trainer_class,
)


def lora_layers(model) -> set[int]:
    return {int(name.split(".layers.")[1].split(".")[0])
            for name, _ in model.named_parameters() if "lora_A" in name}


def test_lora_on_top_layers_only(tiny_model_dir):
    cfg = SftJobConfig(dataset="x", model=tiny_model_dir, dtype="fp32",
                       lora=LoraSettings(rank=4, alpha=8, layers=1))
    model, _, peft = load_model(cfg)
    n = model.config.num_hidden_layers
    wrapped = get_peft_model(model, peft)
    assert lora_layers(wrapped) == {n - 1}
    # every linear of the block is adapted, as all-linear would
    names = {name.split(".")[-4] for name, _ in wrapped.named_parameters() if "lora_A" in name}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lora_on_every_layer_by_default(tiny_model_dir):
    cfg = SftJobConfig(dataset="x", model=tiny_model_dir, dtype="fp32",
                       lora=LoraSettings(rank=4, alpha=8))
    model, _, peft = load_model(cfg)
    wrapped = get_peft_model(model, peft)
    assert lora_layers(wrapped) == set(range(model.config.num_hidden_layers))


@pytest.mark.parametrize("form", ["chat", "compact"])
def test_label_only_loss_equals_trl_loss_and_gradients(tiny_model_dir, tmp_path, form):
    """The job's trainer projects to the vocabulary only at label positions; its loss and LoRA
    gradients equal TRL's own (fused head over every position) on the same batch."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from policylm.platform.prompts import training_pair

    cfg = SftJobConfig(dataset="x", model=tiny_model_dir, dtype="fp32", batch_size=4,
                       max_steps=1, lora=LoraSettings(rank=4, alpha=8))
    model, tokenizer, peft = load_model(cfg)
    rows = [training_pair(form, "CartPole.", r, t, f"x={t / 10} v=0", a)
            for r, t, a in [(20, 0, "left"), (7.5, 3, "right"), (300, 12, "left"),
                            (1, 140, "right")]]
    data = Dataset.from_list([{"prompt": p, "completion": c} for p, c in rows])
    trainer = trainer_class()(model=model, args=sft_args(cfg, str(tmp_path), False, False),
                              train_dataset=data, processing_class=tokenizer, peft_config=peft)
    batch = next(iter(trainer.get_train_dataloader()))
    n = int((batch["labels"][:, 1:] != -100).sum())
    # per row: the action token and the end token (chat: and the newline after <|im_end|>)
    assert n == 4 * (3 if form == "chat" else 2)
    trainer.model.train()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    losses, grads = [], []
    for fn in (trainer.compute_loss, lambda m, b, **k: SFTTrainer.compute_loss(trainer, m, b, **k)):
        trainer.model.zero_grad()
        loss = fn(trainer.model, dict(batch), num_items_in_batch=torch.tensor(n))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6)
    assert float(grads[0].abs().sum()) > 0
    assert trainer._metrics["train"]["mean_token_accuracy"]  # metrics still logged
    # both paths counted the batch's tokens (what tokens/s is computed from)
    assert trainer._metrics["train"]["num_tokens"] == [2 * int(batch["attention_mask"].sum())]


def test_latest_local_checkpoint_skips_incomplete(tmp_path):
    from policylm.jobkit.ray_train import latest_local_checkpoint

    assert latest_local_checkpoint(str(tmp_path)) is None
    for step, files in ((3, ("optimizer.pt", "trainer_state.json")), (10, ("optimizer.pt",)),
                        (6, ("optimizer.pt", "trainer_state.json"))):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for f in files:
            (d / f).write_text("x")
    (tmp_path / "checkpoint-final").mkdir()
    # checkpoint-10 died mid-save (no trainer_state.json, written last): the newest complete is 6
    assert latest_local_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-6")


def test_rows_longer_than_max_length_fail_early(tmp_path, tiny_model_dir):
    """Rows whose action would be cut off by max_length: an error that names the fix (TRL would
    otherwise drop every row and stop on an empty dataset deep inside the trainer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from policylm.platform.data.datasets import DatasetError
    from policylm.platform.training.sft import SftJobConfig, check_lengths

    n = 4
    table = pa.table({"system": ["long rules " * 40] * n, "target_return": [1.0] * n,
                      "t": [0] * n, "observation": ["x=1"] * n, "completion": ["right"] * n})
    (tmp_path / "train").mkdir()
    pq.write_table(table, tmp_path / "train" / "part-0.parquet")
    cfg = SftJobConfig(dataset=str(tmp_path), model=tiny_model_dir, max_length=64)
    with pytest.raises(DatasetError, match=r"raise max_length .* or use prompt_form=compact"):
        check_lengths(cfg, tmp_path)
    info = check_lengths(SftJobConfig(dataset=str(tmp_path), model=tiny_model_dir,
                                      max_length=512), tmp_path)
    assert info["rows_over_max_length"] == "0/4" and 64 < info["row_tokens_max"] <= 512
    compact = check_lengths(SftJobConfig(dataset=str(tmp_path), model=tiny_model_dir,
                                         max_length=64, prompt_form="compact"), tmp_path)
    assert compact["row_tokens_max"] < 64  # no system text in the compact form


def test_sft_continues_an_adapter_with_the_same_prompts(tmp_path, tiny_model_dir, filled_adapter):
    """init_adapter: the trainer starts from the adapter's own weights (here lora_B = 0.05, a
    new adapter's are 0) and trains them; an adapter trained on other prompts (form, history,
    env text options) or a directory with no adapter is refused by name."""
    from datasets import Dataset

    from policylm.platform.config import ConfigError
    from policylm.platform.records import PromptRecord, write_record
    from policylm.platform.training.sft import build_trainer, check_init_adapter

    adapter = filled_adapter(PromptRecord("compact", text_options={"achievements": "names"}))
    data = tmp_path / "dataset"
    data.mkdir()
    write_record(data, PromptRecord(history=0, text_options={"achievements": "names"}))
    cfg = SftJobConfig(dataset=str(data), model=tiny_model_dir, dtype="fp32",
                       prompt_form="compact", init_adapter=str(adapter), max_steps=1)
    cfg.validate()
    check_init_adapter(cfg, data)  # the same prompts: accepted
    rows = Dataset.from_list([{"prompt": "Target return: 5\nStep: 0\nx=1\nAction: ",
                               "completion": "right"}] * 4)
    trainer = build_trainer(cfg, rows, None, str(tmp_path / "work"), [], False, 8)
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    assert all(float(p.detach().float().mean()) == pytest.approx(0.05) for p in lora_b)
    assert trainer.model.peft_config["default"].r == 4  # the adapter's rank, not lora.rank
    with pytest.raises(ConfigError, match="prompt_form=compact"):
        check_init_adapter(SftJobConfig(dataset=str(data), model=tiny_model_dir,
                                        prompt_form="chat", init_adapter=str(adapter)), data)
    write_record(data, PromptRecord(history=0, text_options={"achievements": "count"}))
    with pytest.raises(ConfigError, match="achievements='names' \\(here 'count'\\)"):
        check_init_adapter(cfg, data)
    write_record(data, PromptRecord(history=2, text_options={"achievements": "names"}))
    with pytest.raises(ConfigError, match="rebuild the dataset with history=0"):
        check_init_adapter(cfg, data)
    with pytest.raises(ConfigError, match=r"init_adapter: .* holds no adapter_config\.json"):
        SftJobConfig(dataset=str(data), init_adapter=str(data)).validate()
