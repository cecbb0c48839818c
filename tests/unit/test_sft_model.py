"""The SFT job's model builder: LoRA on the top layers only (tiny model, no Ray)."""

from peft import get_peft_model

from policylm.jobs.sft import LoraSettings, SftJobConfig, load_model


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
