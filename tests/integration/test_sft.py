"""SFT on Ray Train with TRL + PEFT on a tiny model: learning, resume after a killed worker,
merging."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policylm.jobs.sft import SftJobConfig, main
from policylm.platform.prompts import read_form

pytestmark = pytest.mark.integration


def sft_cfg(data, model, out, **kw):
    base = dict(dataset=str(data), model=model, max_steps=6, batch_size=8, lr=3e-3,
                lora={"rank": 8, "alpha": 16}, eval_steps=3, save_steps=3, logging_steps=1,
                max_eval_rows=32, num_workers=2, cpus_per_worker=0.5, dtype="fp32",
                out=str(out))
    base.update(kw)
    from policylm.platform.config import load_config

    overrides = [f"{k}={json.dumps(v)}" for k, v in base.items()]
    return load_config(SftJobConfig, None, overrides)


def lora_b_norm(adapter_dir):
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


def test_sft_on_two_workers_learns(small_dataset, tiny_model_dir, tmp_path):
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run"))
    losses = [loss for _, loss in result["train_loss"]]
    assert len(losses) == 6 and losses[-1] < losses[0]  # the loss fell
    evals = [loss for _, loss in result["eval_loss"]]
    assert evals and evals[-1] < evals[0] + 1e-6
    adapter = Path(result["adapter"])
    assert (adapter / "adapter_config.json").is_file()
    assert lora_b_norm(adapter) > 0  # LoRA B starts at zero: the adapter weights changed
    assert (tmp_path / "run" / "loss.png").is_file()
    # usable as a policy URI, and it scores differently from the base model
    from policylm.platform.engines import get_engine

    base = get_engine(tiny_model_dir, "", "hf", "fp32")
    tuned = get_engine(tiny_model_dir, str(adapter), "hf", "fp32")
    prompt = [base.chat_prompt("CartPole.", "Target return: 20\nStep: 0\nx=0 v=0 a=0 w=0")]
    assert not np.allclose(base.score(prompt, [["left", "right"]]),
                           tuned.score(prompt, [["left", "right"]]), atol=1e-5)

    from policylm.jobs.merge import merge

    merged_dir = merge(tiny_model_dir, str(adapter), tmp_path / "merged")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([base.encode(prompt[0])])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                         str(adapter))(ids).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    assert read_form(str(adapter)) == read_form(str(merged_dir)) == "chat"


def test_sft_resumes_after_a_killed_worker(small_dataset, tiny_model_dir, tmp_path):
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run", kill_at_step=4,
                          num_workers=1, cpus_per_worker=1, max_failures=2,
                          prompt_form="compact"))
    assert (tmp_path / "run" / ".fault-injected").read_text().startswith("killed at step 4")
    assert result["attempts"] == 2 and result["resumed"]  # restarted from the step-3 checkpoint
    assert [s for s, _ in result["train_loss"]][-1] == 6  # and finished the run
    # trained in the compact prompt form, which the adapter records for the policy
    assert read_form(result["adapter"]) == "compact"
    # the same out= again would silently continue this run: refused unless resume=true
    from policylm.platform.config import ConfigError

    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(ConfigError, match="resume=true"):
        main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
