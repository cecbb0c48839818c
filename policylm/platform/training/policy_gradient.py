"""The clipped policy-gradient objective of GRPO/PPO over stored log-probabilities (torch, no
Ray): the loss to minimise, with the share of clipped terms, an optional KL penalty to a
reference policy (the k3 estimator: ``exp(ref - new) - (ref - new) - 1``, >= 0) and optional
per-entry importance weights for actions another policy played (the decoupled objective of
asynchronous training: the ratio is taken against the proximal policy, the learner's own before
the update, and each term weighted by ``proximal / behaviour``, truncated)."""

from __future__ import annotations

from typing import Any


def clipped_loss(logp_new: Any, logp_old: Any, adv: Any, epsilon: float = 0.2,
                 epsilon_high: float | None = None, logp_ref: Any = None, beta: float = 0.0,
                 mask: Any = None, weight: Any = None) -> tuple[Any, dict[str, float]]:
    """``-mean(w * min(ratio * adv, clip(ratio, 1 - eps, 1 + eps_high) * adv)) + beta * KL`` over
    the ``mask``ed entries (tensors of one shape: one entry per action token), with ``ratio =
    exp(logp_new - logp_old)`` and ``w`` the importance ``weight`` of each entry (a constant:
    no gradient flows through it; None: 1). Returns ``(loss, {"clip_fraction", "kl"})``;
    ``kl`` is None (not computed) without a reference policy and a positive ``beta``."""
    import torch

    high = epsilon if epsilon_high is None else epsilon_high
    m = torch.ones_like(logp_new) if mask is None else mask.to(logp_new.dtype)
    n = m.sum().clamp(min=1)
    ratio = torch.exp(logp_new - logp_old)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high)
    objective = torch.minimum(ratio * adv, clipped * adv)
    if weight is not None:
        objective = objective * weight.detach()
    loss = -(objective * m).sum() / n
    stats = {"clip_fraction": float((((ratio < 1 - epsilon) | (ratio > 1 + high)).to(m.dtype)
                                     * m).sum() / n), "kl": None}
    if logp_ref is not None and beta:
        d = logp_ref - logp_new
        kl = ((torch.exp(d) - d - 1) * m).sum() / n
        loss = loss + beta * kl
        stats["kl"] = float(kl.detach())
    return loss, stats
