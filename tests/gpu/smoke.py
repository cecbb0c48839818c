"""What the GPU smoke suite shares: the device it runs on, a tiny model and tokenizer built in
code (no model files, no hub, no embedded-model wheel), LoRA on it, and peak memory.

The suite needs only torch, transformers and PEFT (no Ray, TRL, pyarrow or gymnasium), so it runs
on an offline GPU machine that has nothing else installed. ``POLICYLM_GPU_SMOKE_DEVICE=cpu`` runs
it on a CPU (a check of the suite itself; the figures that matter come from CUDA).
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

DEVICE_VAR = "POLICYLM_GPU_SMOKE_DEVICE"
ACTIONS = ["left", "right", "stay still"]  # " stay still" has several tokens: the packed path
CORPUS = [
    "R=500 t=12 cart at 0.03 moving left, pole at -0.02 falling right -> right",
    "R=25 t=3 cart at -1.2 moving right, pole at 0.11 falling left -> left",
    "Target return: 250\nStep: 7\nthe pole leans left; stay still or move left",
    "<|im_start|>system\nBalance the pole.<|im_end|>\n<|im_start|>user\nStep: 1<|im_end|>\n",
] * 20
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def device() -> str:
    """``cuda`` where torch sees a GPU, else the override ``$POLICYLM_GPU_SMOKE_DEVICE``, else
    ``""`` (the suite is skipped)."""
    import torch

    if os.environ.get(DEVICE_VAR):
        return os.environ[DEVICE_VAR]
    return "cuda" if torch.cuda.is_available() else ""


def tokenizer() -> Any:
    """A byte-level BPE tokenizer (512 tokens) trained in code on a few prompt lines, with
    ChatML's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


@functools.cache
def model_dir() -> str:
    """A random-weight Llama (2 layers, width 64, weights 10x the usual scale so that training
    can make a token likely) with :func:`tokenizer`, saved once per process in a temporary
    directory."""
    from policylm.platform.engines.models import save_tiny_model

    root = Path(tempfile.mkdtemp(prefix="policylm-gpu-smoke-"))
    return str(save_tiny_model(root / "model", seed=0, tokenizer=tokenizer(),
                               init_std=0.2))


def lora_model(dtype: Any, seed: int = 0) -> tuple[Any, Any]:
    """(PEFT model with a rank-8 LoRA on every linear layer, on :func:`device` in ``dtype``;
    its tokenizer). LoRA B starts at zero, so the model scores as the base model does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=dtype)
    lm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                         target_modules="all-linear"))
    return lm.to(device()), AutoTokenizer.from_pretrained(model_dir())


def compact_prompts(n: int) -> list[str]:
    """``n`` compact-form prompts, rendered by the prompt module the policies use."""
    from policylm.platform.prompts import render_prompt

    return [render_prompt(None, "compact", "", float(25 * (i + 1)), i,
                          f"cart at {0.01 * i:.2f} moving {'left' if i % 2 else 'right'}")
            for i in range(n)]


def wrong_devices(module: Any, want: str) -> list[str]:
    """Names of ``module``'s parameters and buffers not on device type ``want``."""
    import itertools

    return [name for name, t in itertools.chain(module.named_parameters(), module.named_buffers())
            if t.device.type != want]


def peak_memory_gb() -> float | None:
    """Peak CUDA memory allocated by this process in GB; None off CUDA (not measured)."""
    import torch

    if not device().startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 4)
