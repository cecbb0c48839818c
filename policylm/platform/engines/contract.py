"""The inference-engine contract that every engine passes.

``score(prompts, candidates, prefix=None)`` returns, for each prompt, the log-likelihood of each
of its candidate continuations (natural log, summed over the candidate's tokens). ``prefix`` is
a hint: text every prompt starts with (the chat-formatted system turn), whose key/value cache
the engine keeps across calls. ``sessions`` (optional) gives a key per prompt, an episode's: an
engine may keep the prompt's cache under it and compute the key's next prompt from their longest
common prefix on (``hf`` does; ``vllm`` cannot: it recomputes prompts whose log-probabilities
are asked for); scores are the same either way. ``generate(prompts, ...)`` continues each prompt;
``generate_details`` (the local engines, ``hf`` and ``vllm``) also returns each continuation's
generated token ids and why it stopped (:class:`Generation`). Sampling (``temperature`` > 0)
draws each row from its own random stream, ``seeds[i]`` (or ``(seed, i)``; neither: fresh
entropy), so a row's text depends on its prompt and seed only, never on the other rows of the
call or on a global random state.
``template`` is the model's chat template (:class:`policylm.platform.prompts.ChatTemplate`,
which prompt rendering takes, so the learner renders alike without an engine); ``encode(text)``
gives token ids.

``hf`` (transformers; CPU or GPU) is the default; ``vllm`` needs a GPU and the ``vllm`` extra.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from policylm.platform.prompts import ChatTemplate

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


@dataclass
class Generation:
    """One continuation: its text (special tokens dropped, stripped), the ids of the tokens
    generated (the end of turn included when it stopped there) and why it stopped: ``stop`` (it
    ended its turn) or ``length`` (cut at ``max_new_tokens``)."""

    text: str
    token_ids: list[int]
    finish_reason: str


def finished(tokens: Sequence[int], end_id: int) -> tuple[list[int], str]:
    """``(token ids, finish reason)`` of a generated row: the tokens up to and with the first
    end of turn (``stop``; what follows is padding), else all of them (``length``)."""
    tokens = [int(t) for t in tokens]
    if end_id in tokens:
        return tokens[: tokens.index(end_id) + 1], "stop"
    return tokens, "length"


def derived_seed(*keys: int) -> int:
    """A seed in [0, 2**63) derived from the integers ``keys`` (any sign; none: fresh
    entropy)."""
    import numpy as np

    entropy = [k % 2**64 for k in keys] if keys else None
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) % 2**63


def row_seeds(n: int, seed: int | None = None, seeds: Sequence[int | None] | None = None
              ) -> list[int]:
    """One seed in [0, 2**63) per row of a generate call: ``seeds[i]``, else one derived from
    ``(seed, i)``, else fresh entropy (a ``None`` in ``seeds`` too)."""
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} prompts")
    out = []
    for i in range(n):
        given = seeds[i] if seeds is not None else None
        if given is None:
            given = derived_seed() if seed is None else derived_seed(seed, i)
        out.append(int(given) % 2**63)
    return out


class EngineError(ValueError):
    """A model, adapter or engine that cannot be used; the message says why and what to do."""


class Engine(Protocol):
    """What every inference engine offers (see module docstring)."""

    name: str
    template: ChatTemplate  # the model's chat template (policylm.platform.prompts)

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None, sessions: Sequence[Hashable] | None = None
              ) -> list[np.ndarray]: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16,
                 temperature: float = 0.0, seed: int | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[str]: ...

    def encode(self, text: str) -> list[int]: ...


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn: ``<|im_end|>`` in ChatML templates, else EOS."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tokenizer.unk_token_id:
        return tokenizer.eos_token_id
    return tid


def softmax(logps: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from log-likelihoods at a temperature (> 0)."""
    z = np.asarray(logps, dtype=np.float64) / max(temperature, 1e-8)
    z = np.exp(z - z.max())
    return z / z.sum()


def packed_rows(ids: list[list[int]], cand: list[list[list[int]]], n_pre: int
                ) -> tuple[list[list[int]], list[list[tuple[int, list[int], list[int]]]]]:
    """One row per prompt: its tokens after the prefix, then each candidate's scored tokens
    (:func:`scored_tokens`) but the last. And per row,
    per candidate ``(j, positions, tokens)``: the row positions whose next-token
    distributions score the candidate's scored tokens (the prompt's last, then its own)."""
    rows, reads = [], []
    for r, cs in zip(ids, cand, strict=True):
        row = list(r[n_pre:])
        last, mine = len(row) - 1, []
        for j, c in enumerate(cs):
            start = len(row)
            row += c[:-1]
            mine.append((j, [last, *range(start, start + len(c) - 1)], list(c)))
        rows.append(row)
        reads.append(mine)
    return rows, reads


def packed_layout(rows: list[list[int]], reads: list[list[tuple[int, list[int], list[int]]]],
                  n_pre: int) -> tuple[Any, Any]:
    """``(allowed [B, W, n_pre + W] bool, positions [B, W])`` for packed rows: prompt
    tokens attend causally to the prefix and the prompt; a candidate's tokens attend to the
    prefix, the prompt and their own earlier tokens, at positions continuing the prompt;
    padding attends to itself."""
    import torch

    width = max(len(r) for r in rows)
    allowed = torch.zeros((len(rows), width, n_pre + width), dtype=torch.bool)
    positions = torch.full((len(rows), width), n_pre, dtype=torch.long)
    allowed[:, :, :n_pre] = True
    for b, (row, mine) in enumerate(zip(rows, reads, strict=True)):
        n_prompt = mine[0][1][0] + 1 if mine else len(row)
        spans = [(0, n_prompt)] + [(ps[1], len(ps) - 1) for _, ps, _ in mine]
        for start, length in spans:
            tri = torch.ones((length, length), dtype=torch.bool).tril()
            allowed[b, start:start + length, n_pre + start:n_pre + start + length] = tri
            if start:  # a candidate: sees the whole prompt, continues its positions
                allowed[b, start:start + length, n_pre:n_pre + n_prompt] = True
                positions[b, start:start + length] = torch.arange(
                    n_pre + n_prompt, n_pre + n_prompt + length)
            else:
                positions[b, :length] = torch.arange(n_pre, n_pre + length)
        for k in range(len(row), width):
            allowed[b, k, n_pre + k] = True
    return allowed, positions


def attention_bias(allowed: Any, dtype: Any) -> Any:
    """The additive 4-D attention mask [B, 1, W, K] of a boolean ``allowed`` [B, W, K]: 0 where
    a position may attend, the dtype's lowest value where it may not."""
    import torch

    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype).unsqueeze(1)
