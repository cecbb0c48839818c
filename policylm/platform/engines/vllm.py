"""The vLLM engine (GPU clusters; ``pip install 'policylm[vllm]'``), same contract as ``hf``.

Scoring sends one token prompt per (prompt, candidate): the prompt's tokens and the candidate's
scored tokens (the contract's :func:`~policylm.platform.engines.contract.scored_tokens`, the same
as the ``hf`` engine's), with ``prompt_logprobs=0`` and ``max_tokens=1``; the candidate's
log-likelihood is the sum of the returned log-probs at its positions. vLLM does not read its
prefix cache for requests with prompt log-probabilities (it recomputes the whole prompt to
return them), so scoring encodes every prompt whole; generation does use the cache. LoRA
adapters go through ``LoRARequest``, and so
does :meth:`VLLMEngine.set_lora` (online training): the weights are written as a PEFT adapter
and loaded in place under one LoRA id, a new version each call.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from policylm.platform.engines.contract import (
    EngineError,
    Generation,
    dtype_name,
    end_of_turn_id,
    row_seeds,
    scored_tokens,
)
from policylm.platform.prompts import ChatTemplate


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here (``None`` when it can): not installed, or no CUDA GPU."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "vllm is not installed (pip install 'policylm[vllm]' on a GPU machine)"
    import torch

    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and none is visible"
    return None


class VLLMEngine:
    """``vllm.LLM`` with prefix caching and optional LoRA."""

    name = "vllm"

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.5, max_lora_rank: int = 64,
                 enable_lora: bool = False):
        reason = vllm_unavailable_reason()
        if reason:
            raise EngineError(f"engine=vllm cannot run here: {reason}; use engine=hf")
        from transformers import AutoTokenizer
        from vllm import LLM

        from policylm.platform.engines.models import resolve_model

        path = resolve_model(model)
        self.model_name = model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.template = ChatTemplate(self.tokenizer)
        self.llm = LLM(model=path, dtype=dtype_name(dtype), enable_prefix_caching=True,
                       enable_lora=bool(adapter) or enable_lora, max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("policylm-adapter", 1, adapter)
        self.end_id = end_of_turn_id(self.tokenizer)
        self.version = 0

    def set_lora(self, weights: dict[str, Any], scaling: float) -> int:
        """Play with these LoRA weights (a PEFT state dict: ``...lora_A.weight`` and
        ``...lora_B.weight``) from now on, replacing earlier ones: written as a PEFT adapter and
        loaded in place by vLLM under one LoRA id. Returns the number of layers adapted."""
        import json
        import tempfile

        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        a_keys = [k for k in weights if ".lora_A." in k]
        if not a_keys:
            raise EngineError("set_lora got no lora_A/lora_B weights")
        rank = int(weights[a_keys[0]].shape[0])
        modules = sorted({k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in a_keys})
        self.version += 1
        path = tempfile.mkdtemp(prefix=f"policylm-lora-v{self.version}-")
        save_file({k: v.contiguous() for k, v in weights.items()},
                  f"{path}/adapter_model.safetensors")
        with open(f"{path}/adapter_config.json", "w") as f:
            json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
                       "lora_alpha": scaling * rank, "target_modules": modules,
                       "lora_dropout": 0.0, "bias": "none",
                       "base_model_name_or_path": self.model_name}, f)
        self.lora = LoRARequest("policylm-live", 2, path, load_inplace=True)
        return len(a_keys)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None, sessions: Sequence[Hashable] | None = None
              ) -> list[np.ndarray]:
        """See the engine contract; ``sessions`` is accepted and unused: vLLM recomputes prompts
        whose log-probabilities are asked for instead of reading its prefix cache."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        requests, spans = [], []
        tokens = scored_tokens([[self.encode(c) for c in cs] for cs in candidates], self.end_id)
        for i, (p, cs) in enumerate(zip(prompts, tokens, strict=True)):
            ids = self.encode(p)
            for j, cand in enumerate(cs):
                requests.append(TokensPrompt(prompt_token_ids=ids + cand))
                spans.append((i, j, len(ids), cand))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        scores = [np.zeros(len(cs)) for cs in candidates]
        for out, (i, j, start, cand) in zip(outputs, spans, strict=True):
            lps: list[Any] = out.prompt_logprobs
            scores[i][j] = sum(lps[start + k][tok].logprob for k, tok in enumerate(cand))
        return scores

    def generate(self, prompts: Sequence[str], *args: Any, **kwargs: Any) -> list[str]:
        """The texts of :meth:`generate_details` (the same parameters)."""
        return [g.text for g in self.generate_details(prompts, *args, **kwargs)]

    def generate_details(self, prompts: Sequence[str], max_new_tokens: int = 16,
                         temperature: float = 0.0, seed: int | None = None,
                         seeds: Sequence[int | None] | None = None) -> list[Generation]:
        """See the engine contract: sampling takes a seed per request (vLLM's per-request
        generator), so a row's text does not depend on the rest of the batch."""
        from vllm import SamplingParams

        row = row_seeds(len(prompts), seed, seeds) if temperature > 0 else [None] * len(prompts)
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=s,
                                 stop_token_ids=[self.end_id]) for s in row]
        outputs = self.llm.generate(list(prompts), params, lora_request=self.lora,
                                    use_tqdm=False)
        out = []
        for o in outputs:
            c = o.outputs[0]
            reason = "length" if c.finish_reason == "length" else "stop"
            out.append(Generation(c.text.strip(), [int(t) for t in c.token_ids], reason))
        return out
