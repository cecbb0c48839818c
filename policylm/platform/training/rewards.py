"""GRPO reward functions over completions (no Ray, no torch): each a plain function from
completion texts (and dataset columns) to one float per completion, and the TRL-shaped
callables built from them.

- ``format``: 1 when the completion is exactly one valid action text (surrounding white space
  and an ``<action>...</action>`` wrapper allowed), or a think-then-act answer whose last
  ``Action:`` line is (``policylm.platform.prompts.split_answer``), else 0.
- ``bc`` (behaviour cloning): agreement with the dataset's action: 1 or 0 for listed (discrete)
  actions; for continuous actions the negative distance to the dataset action, scaled by the
  action space's width so it lies in [-1, 0]; an answer that does not parse gets ``invalid``.
- ``env`` (env-grounded): the env restored to the prompt's state (the ``env_state`` column,
  written at collection by adapters that can save it), the completion's action taken, then a
  rollout policy for up to ``horizon`` steps in all; the discounted return. Every completion of
  one state rolls out with the same seed, so within a GRPO group only the action differs.

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
where ``columns`` are the dataset's other columns (here ``expected``: the dataset action text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policylm.platform.envs.codecs import ActionCodec, ActionParseError
from policylm.platform.prompts import split_answer

REWARDS = ("format", "bc", "env")


def completion_text(completion: Any) -> str:
    """A completion as text: a string as it is, a conversation's last message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def action_part(text: str) -> str:
    """The action text of an answer: after the last ``Action:`` line of a think-then-act answer,
    else the whole text."""
    action = split_answer(text)[1]
    return text if action is None else action


def format_reward(completions: Sequence[Any], codec: ActionCodec) -> list[float]:
    """1.0 for a completion that is exactly one valid action (alone, or on the last
    ``Action:`` line after a thought), else 0.0."""
    out = []
    for c in completions:
        text = action_part(completion_text(c)).strip()
        try:
            action = codec.parse(text)
        except ActionParseError:
            out.append(0.0)
            continue
        listed = codec.valid_actions
        bare = text.removeprefix("<action>").removesuffix("</action>").strip()
        exact = listed is None or bare.lower() in {a.lower() for a in listed} \
            or bare == codec.to_text(action)
        out.append(1.0 if exact else 0.0)
    return out


def bc_reward(completions: Sequence[Any], expected: Sequence[str], codec: ActionCodec,
              space: Any = None, invalid: float = 0.0) -> list[float]:
    """Agreement with the dataset action (see module docstring); ``space`` (a gymnasium Box)
    scales continuous distances."""
    out = []
    for c, e in zip(completions, expected, strict=True):
        want = codec.parse(action_part(completion_text(e)))
        try:
            got = codec.parse(action_part(completion_text(c)))
        except ActionParseError:
            out.append(invalid)
            continue
        if codec.valid_actions is not None:
            out.append(1.0 if codec.index(got) == codec.index(want) else 0.0)
            continue
        diff = np.asarray(got, np.float64) - np.asarray(want, np.float64)
        width = 2.0 * np.ones_like(diff)
        if space is not None and hasattr(space, "high"):
            width = np.where(np.isfinite(space.high - space.low), space.high - space.low, 2.0)
        out.append(-float(np.sqrt(np.mean((diff / width) ** 2))))
    return out


def set_elapsed(env: Any, t: int) -> None:
    """Set the step count of every ``TimeLimit`` wrapper of ``env`` (a restored state is ``t``
    steps into its episode, so truncation comes when it would have)."""
    import gymnasium as gym

    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            e._elapsed_steps = int(t)
        e = e.env


class EnvReward:
    """The ``env`` reward (see module docstring) for one env adapter and rollout policy."""

    def __init__(self, adapter: Any, policy: str = "random:", horizon: int = 20,
                 gamma: float = 0.99, invalid: float = 0.0):
        from policylm.platform.policies import policy_from_uri

        if adapter.restore_state is None:
            raise ValueError(f"{adapter.env_id}: its adapter cannot restore a state, so the env "
                             "reward cannot be used; use the format and bc rewards")
        if horizon < 1:
            raise ValueError(f"env reward horizon must be >= 1, got {horizon}")
        self.adapter, self.horizon, self.gamma, self.invalid = adapter, horizon, gamma, invalid
        self.env = adapter.make_env()
        self.policy = policy_from_uri(policy, adapter)

    def __call__(self, completions: Sequence[Any], env_state: Sequence[Any],
                 t: Sequence[int], **_: Any) -> list[float]:
        out = []
        for c, state, step in zip(completions, env_state, t, strict=True):
            if state is None:
                raise ValueError("the env reward needs the env_state column: collect with an "
                                 "adapter that saves its state (CartPole) and rebuild the "
                                 "dataset")
            try:
                action = self.adapter.codec.parse(completion_text(c))
            except ActionParseError:
                out.append(self.invalid)
                continue
            out.append(self.rollout(list(state), int(step), action))
        return out

    def rollout(self, state: list[float], t: int, action: Any) -> float:
        """Discounted return of ``action`` from ``state`` (at step ``t``), then the policy."""
        import zlib

        seed = zlib.crc32(np.asarray(state, np.float64).tobytes()) & 0x7FFFFFFF
        env = self.env
        env.reset(seed=seed)
        self.adapter.restore_state(env, state)
        set_elapsed(env, t)
        self.policy.reset(0, seed)
        total, discount, k = 0.0, 1.0, 0
        while True:
            obs, reward, term, trunc, _ = env.step(action)
            total += discount * float(reward)
            k += 1
            if term or trunc or k >= self.horizon:
                return total
            self.policy.observe([0], [float(reward)])
            discount *= self.gamma
            action = self.policy.act([obs], [0])[0]


def reward_funcs(weights: dict[str, float], adapter: Any, env: dict | None = None
                 ) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """TRL reward callables (named, for TRL's per-function logs) and their weights, for the
    rewards named in ``weights`` (see :data:`REWARDS`); ``env`` holds :class:`EnvReward`'s
    settings (``policy``, ``horizon``, ``gamma``)."""
    unknown = set(weights) - set(REWARDS)
    if unknown:
        raise ValueError(f"unknown rewards {sorted(unknown)}; known: {', '.join(REWARDS)}")
    codec, space = adapter.codec, adapter.action_space

    def fmt(completions: Sequence[Any], **_: Any) -> list[float]:
        return format_reward(completions, codec)

    def bc(completions: Sequence[Any], expected: Sequence[str], **_: Any) -> list[float]:
        return bc_reward(completions, expected, codec, space,
                         invalid=0.0 if codec.valid_actions is not None else -1.0)

    table: dict[str, Any] = {"format": fmt, "bc": bc}
    if "env" in weights:
        grounded = EnvReward(adapter, **(env or {}))

        def env_reward(completions: Sequence[Any], env_state: Sequence[Any],
                       t: Sequence[int], **_: Any) -> list[float]:
            return grounded(completions, env_state, t)

        table["env"] = env_reward
    names = [n for n in REWARDS if n in weights]
    funcs = []
    for n in names:
        f = table[n]
        f.__name__ = f"{n}_reward"
        funcs.append(f)
    return funcs, [float(weights[n]) for n in names]
