"""Sampling row by row inside ``transformers``' greedy ``generate``: each row draws from its
own seeded generator, so a row's text does not depend on the other rows of its batch or on
torch's global random state."""

from __future__ import annotations

from typing import Any


def row_sampler(config: Any, device: Any, temperature: float, seeds: list[int]) -> Any:
    """A logits processor that makes greedy decoding sample: the logits at ``temperature``,
    filtered by the model's top-k (transformers' sampling default, 50, when unset) and
    top-p, plus Gumbel noise drawn from each row's own generator; the argmax is then a
    draw from the softmax of the filtered logits."""
    import torch
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    top_k = 50 if config.top_k is None else config.top_k
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for w in warpers:
                scores = w(input_ids, scores)
            u = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device)
                             for g in gens])
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            return scores + gumbel.to(scores.dtype)

    return LogitsProcessorList([RowSampler()])
