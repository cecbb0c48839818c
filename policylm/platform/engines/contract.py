"""The inference-engine contract that every engine passes.

``score(prompts, candidates, prefix=None)`` returns, for each prompt, the log-likelihood of each
of its candidate continuations (natural log, summed over the candidate's tokens). ``prefix`` is
a hint: text every prompt starts with (the chat-formatted system turn), whose key/value cache
the engine keeps across calls. ``sessions`` (optional) gives a key per prompt, an episode's: an
engine may keep the prompt's cache under it and compute the key's next prompt from their longest
common prefix on (``hf`` does; ``vllm`` cannot: it recomputes prompts whose log-probabilities
are asked for); scores are the same either way. ``generate(prompts, ...)`` continues each prompt.
``chat_prompt(system, user)`` formats a conversation with the model's chat template, ending
where the assistant's answer starts; ``chat_prefix(system)`` is its system part;
``chat_messages(messages)`` formats any conversation; ``encode(text)`` gives token ids.

``hf`` (transformers; CPU or GPU) is the default; ``vllm`` needs a GPU and the ``vllm`` extra.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import numpy as np

# dtype names users write -> the canonical names both engines use (torch and vLLM spellings)
DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32",
               "float32": "float32", "fp16": "float16", "float16": "float16", "auto": "auto"}


def dtype_name(dtype: str) -> str:
    """``bf16`` -> ``bfloat16`` (and so on); ``auto`` stays; an unknown name is an
    :class:`EngineError`."""
    if dtype not in DTYPE_NAMES:
        raise EngineError(f"dtype {dtype!r} is unknown; use auto, bf16 or fp32")
    return DTYPE_NAMES[dtype]


def scored_tokens(candidates: Sequence[Sequence[Sequence[int]]], end_id: int
                  ) -> list[list[list[int]]]:
    """The tokens whose log-likelihoods make each candidate's score, for every engine: the
    candidate's own tokens when every candidate of the call is one token long, else its tokens
    and the end of turn (which tells ``go`` from ``go_left``)."""
    single = all(len(c) == 1 for cs in candidates for c in cs)
    return [[list(c) if single else [*c, end_id] for c in cs] for cs in candidates]


class EngineError(ValueError):
    """A model, adapter or engine that cannot be used; the message says why and what to do."""


class Engine(Protocol):
    """What every inference engine offers (see module docstring)."""

    name: str

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None, sessions: Sequence[Hashable] | None = None
              ) -> list[np.ndarray]: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16,
                 temperature: float = 0.0, seed: int | None = None) -> list[str]: ...

    def chat_prompt(self, system: str, user: str) -> str: ...

    def chat_prefix(self, system: str) -> str: ...

    def chat_messages(self, messages: Sequence[dict]) -> str: ...

    def encode(self, text: str) -> list[int]: ...


def render_chat(tokenizer: Any, system: str, user: str) -> str:
    """System and user turns in the tokenizer's chat template, ending where the answer starts."""
    return render_messages(tokenizer, [{"role": "system", "content": system},
                                       {"role": "user", "content": user}])


def render_messages(tokenizer: Any, messages: Sequence[dict]) -> str:
    """A conversation (``[{"role", "content"}]``) in the tokenizer's chat template, ending where
    the assistant's answer starts."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=True)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn: ``<|im_end|>`` in ChatML templates, else EOS."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tokenizer.unk_token_id:
        return tokenizer.eos_token_id
    return tid


def chat_prefix(engine: Engine, system: str) -> str:
    """The text every chat prompt with this system turn starts with, up to where the user's
    words begin (the system turn and the user turn's header), found by rendering two prompts
    that differ only in the user text."""
    a, b = engine.chat_prompt(system, "a"), engine.chat_prompt(system, "b")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def softmax(logps: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from log-likelihoods at a temperature (> 0)."""
    z = np.asarray(logps, dtype=np.float64) / max(temperature, 1e-8)
    z = np.exp(z - z.max())
    return z / z.sum()
