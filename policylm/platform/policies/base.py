"""The policies every env has (on the contract of ``policylm.platform.policy``): random,
constant, epsilon-mixed and logits-driven (network) policies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs import EnvAdapter
from policylm.platform.policy import Policy


class PolicyError(ValueError):
    """A policy URI that cannot be built; the message names the URI and the reason."""


def with_rates(counts: dict[str, int]) -> dict[str, Any]:
    """``counts`` (actions, invalid and, when counted, no_action) with ``invalid_rate`` and
    ``no_action_rate`` per action: None when no action was counted, and no ``no_action_rate``
    when answers without an action line were not counted (a policy that does not think)."""
    n = counts.get("actions", 0)
    out: dict[str, Any] = {**counts, "invalid_rate": counts.get("invalid", 0) / n if n else None}
    if "no_action" in counts:
        out["no_action_rate"] = counts["no_action"] / n if n else None
    return out


class _SlotRngs:
    """One ``numpy`` Generator per env slot, reseeded at each episode start."""

    def __init__(self) -> None:
        self.rngs: dict[int, np.random.Generator] = {}

    def reset(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng(seed)

    def __getitem__(self, slot: int) -> np.random.Generator:
        if slot not in self.rngs:
            self.rngs[slot] = np.random.default_rng(slot)
        return self.rngs[slot]


class RandomPolicy(Policy):
    """Uniform random actions from the action space."""

    def __init__(self, adapter: EnvAdapter):
        self.space = adapter.action_space
        self.spaces: dict[int, Any] = {}

    def reset(self, slot: int, seed: int) -> None:
        space = copy.deepcopy(self.space)
        space.seed(int(seed) % (2**32))
        self.spaces[slot] = space

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        for s in slots:
            if s not in self.spaces:
                self.reset(s, s)
        return [self.spaces[s].sample() for s in slots]


class ConstantPolicy(Policy):
    """Always the same action, given as action text (``constant:right``)."""

    def __init__(self, adapter: EnvAdapter, text: str):
        self.action = adapter.codec.parse(text)

    def reset(self, slot: int, seed: int) -> None:
        pass

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        return [copy.copy(self.action) for _ in slots]


def check_eps(eps: float) -> float:
    """``eps`` when it is a probability, else ValueError naming it."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    return eps


class MixPolicy(Policy):
    """``inner``'s action, replaced by a random one with probability ``eps`` per step."""

    def __init__(self, adapter: EnvAdapter, inner: Policy, eps: float):
        check_eps(eps)
        self.inner, self.eps = inner, eps
        self.random = RandomPolicy(adapter)
        self.rngs = _SlotRngs()

    def reset(self, slot: int, seed: int) -> None:
        self.inner.reset(slot, seed)
        self.random.reset(slot, seed + 1)
        self.rngs.reset(slot, seed + 2)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        actions = self.inner.act(observations, slots)
        noisy = self.random.act(observations, slots)
        return [n if self.rngs[s].random() < self.eps else a
                for a, n, s in zip(actions, noisy, slots, strict=True)]

    def observe(self, slots: Sequence[int], rewards: Sequence[float]) -> None:
        """The step's rewards, for an inner policy that keeps an adaptive target."""
        self.inner.observe(slots, rewards)

    def stats(self) -> dict[str, Any] | None:
        return self.inner.stats()

    @property
    def thoughts(self) -> Sequence[str | None] | None:  # type: ignore[override]
        """The inner policy's thoughts of the last step (think mode)."""
        return self.inner.thoughts

    @property
    def targets(self) -> Sequence[float | None] | None:  # type: ignore[override]
        """The inner policy's targets of the last step (return-conditioned inner policies)."""
        return self.inner.targets


class LogitsPolicy(Policy):
    """Wraps ``logits_fn(obs_batch[B, D]) -> logits[B, n]`` for a Discrete action space;
    greedy (argmax) or sampled from the softmax with each slot's own random stream."""

    def __init__(self, adapter: EnvAdapter, logits_fn: Callable[[np.ndarray], np.ndarray],
                 sample: bool = False):
        self.adapter, self.logits_fn, self.sample = adapter, logits_fn, sample
        self.rngs = _SlotRngs()
        self.start = int(getattr(adapter.action_space, "start", 0))

    def reset(self, slot: int, seed: int) -> None:
        self.rngs.reset(slot, seed)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        batch = np.stack([self.adapter.flatten(o) for o in observations])
        return choose(self.logits_fn(batch), [self.rngs[s] for s in slots], self.sample,
                      self.start)


class BoxPolicy(Policy):
    """Wraps ``net_fn(obs_batch[B, D]) -> out[B, k]`` for a ``Box`` action space of ``A``
    numbers: ``k = A`` is the action itself (a regression net), ``k = 2A`` is a diagonal
    Gaussian's mean then log standard deviation (RLlib's continuous ``action_dist_inputs``).
    Greedy takes the mean; ``sample`` draws from the Gaussian with each slot's own random
    stream (a regression net has no spread to draw from: it acts greedily). Actions are
    clipped to the space."""

    def __init__(self, adapter: EnvAdapter, net_fn: Callable[[np.ndarray], np.ndarray],
                 sample: bool = False):
        space = adapter.action_space
        self.adapter, self.net_fn, self.sample = adapter, net_fn, sample
        self.shape, self.dim = space.shape, int(np.prod(space.shape))
        self.low = np.asarray(space.low, np.float32).reshape(-1)
        self.high = np.asarray(space.high, np.float32).reshape(-1)
        self.rngs = _SlotRngs()

    def reset(self, slot: int, seed: int) -> None:
        self.rngs.reset(slot, seed)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        batch = np.stack([self.adapter.flatten(o) for o in observations])
        out = np.asarray(self.net_fn(batch), dtype=np.float32)
        if out.shape[1] not in (self.dim, 2 * self.dim):
            raise ValueError(f"a network for {self.dim} action values gave {out.shape[1]}; "
                             f"expected {self.dim} (values) or {2 * self.dim} (Gaussian)")
        mean = out[:, :self.dim]
        if self.sample and out.shape[1] == 2 * self.dim:
            std = np.exp(out[:, self.dim:])
            mean = mean + std * np.stack([self.rngs[s].standard_normal(self.dim) for s in slots])
        acts = np.clip(mean, self.low, self.high).astype(self.adapter.action_space.dtype)
        return [a.reshape(self.shape) for a in acts]


def network_policy(adapter: EnvAdapter, net_fn: Callable[[np.ndarray], np.ndarray],
                   sample: bool = False) -> Policy:
    """The policy of a network's output: :class:`LogitsPolicy` in a ``Discrete`` action space,
    :class:`BoxPolicy` in a ``Box``."""
    if isinstance(adapter.action_space, gym.spaces.Box):
        return BoxPolicy(adapter, net_fn, sample)
    return LogitsPolicy(adapter, net_fn, sample)


def choose(logits: Any, rngs: Sequence[np.random.Generator], sample: bool,
           start: int = 0) -> list[int]:
    """Actions from ``logits [B, n]``: argmax, or sampled from the softmax with each row's own
    random stream; ``start`` is the action space's first value."""
    logits = np.asarray(logits, dtype=np.float64)
    if not sample:
        return [int(i) + start for i in logits.argmax(-1)]
    z = np.exp(logits - logits.max(-1, keepdims=True))
    p = z / z.sum(-1, keepdims=True)
    return [int(rng.choice(len(row), p=row)) + start for row, rng in zip(p, rngs, strict=True)]
