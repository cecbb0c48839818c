"""The vLLM engine (GPU clusters; ``pip install 'policylm[vllm]'``), same contract as ``hf``.

Scoring sends one token prompt per (prompt, candidate): the prompt's tokens, the candidate's and
the end-of-turn token, with ``prompt_logprobs=0`` and ``max_tokens=1``; the candidate's
log-likelihood is the sum of the returned log-probs at its positions. vLLM's automatic prefix
caching shares the system turn across rows. LoRA adapters go through ``LoRARequest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from policylm.platform.engines.contract import (
    EngineError,
    chat_prefix,
    end_of_turn_id,
    render_chat,
    render_messages,
)


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
                 gpu_memory_utilization: float = 0.5, max_lora_rank: int = 64):
        reason = vllm_unavailable_reason()
        if reason:
            raise EngineError(f"engine=vllm cannot run here: {reason}; use engine=hf")
        from transformers import AutoTokenizer
        from vllm import LLM

        from policylm.platform.engines.models import resolve_model

        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.llm = LLM(model=path, dtype="auto" if dtype == "auto" else dtype,
                       enable_prefix_caching=True, enable_lora=bool(adapter),
                       max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("policylm-adapter", 1, adapter)
        self.end_id = end_of_turn_id(self.tokenizer)

    def chat_prompt(self, system: str, user: str) -> str:
        return render_chat(self.tokenizer, system, user)

    def chat_prefix(self, system: str) -> str:
        return chat_prefix(self, system)

    def chat_messages(self, messages: Sequence[dict]) -> str:
        return render_messages(self.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None) -> list[np.ndarray]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        requests, spans = [], []
        for i, (p, cs) in enumerate(zip(prompts, candidates, strict=True)):
            ids = self.encode(p)
            for j, c in enumerate(cs):
                cand = [*self.encode(c), self.end_id]
                requests.append(TokensPrompt(prompt_token_ids=ids + cand))
                spans.append((i, j, len(ids), cand))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        scores = [np.zeros(len(cs)) for cs in candidates]
        for out, (i, j, start, cand) in zip(outputs, spans, strict=True):
            lps: list[Any] = out.prompt_logprobs
            scores[i][j] = sum(lps[start + k][tok].logprob for k, tok in enumerate(cand))
        return scores

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16,
                 temperature: float = 0.0, seed: int | None = None) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                stop_token_ids=[self.end_id])
        outputs = self.llm.generate(list(prompts), params, lora_request=self.lora,
                                    use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]
