"""Inference engines: the contract (``contract``), the transformers engine (``hf``), the vLLM
engine (``vllm``, GPU) and the embedded model (``models``); :func:`get_engine` keeps one engine per
(model, adapter, engine, dtype) in a process.
"""

from __future__ import annotations

import functools

from policylm.platform.engines.contract import (
    Engine,
    EngineError,
    end_of_turn_id,
    softmax,
)

__all__ = ["Engine", "EngineError", "end_of_turn_id", "get_engine", "softmax"]


@functools.lru_cache(maxsize=4)
def get_engine(model: str, adapter: str = "", engine: str = "hf", dtype: str = "auto",
               live: str = "") -> Engine:
    """One engine per (model, adapter, engine, dtype, live) and process, so the policies of
    several target returns in one rollout actor share one model. ``live`` names an engine
    whose weights online training replaces (``set_lora``): policies that did not ask for that
    name never share it, so they keep the weights they asked for."""
    if engine == "hf":
        from policylm.platform.engines.hf import HFEngine

        return HFEngine(model, adapter=adapter or None, dtype=dtype)
    if engine == "vllm":
        from policylm.platform.engines.vllm import VLLMEngine

        return VLLMEngine(model, adapter=adapter or None, dtype=dtype, enable_lora=bool(live))
    raise EngineError(f"engine {engine!r} is unknown; use engine=hf or engine=vllm")
