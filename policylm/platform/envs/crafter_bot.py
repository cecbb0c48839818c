"""A scripted Crafter demonstrator as a policy:
``python:policylm.platform.envs.crafter_bot:CrafterBot?eps=0.2``.

The planner (:mod:`policylm.platform.envs.crafter_planner`) reads the simulator's world state,
which a policy does not see. So, as :class:`~policylm.platform.envs.babyai_bot.BabyAIBot` does,
each env slot keeps a replica of its env: reset with the episode's seed (a Crafter world is a
pure function of the seed) and stepped with every action the policy returns, checked against the
observation the real env gives at each step. With probability ``eps`` an action is drawn at
random instead of the planner's (a weaker demonstrator for mixed-skill data). Wrapping the bot in
``mix:`` would step the real env with actions the replica never saw; use ``eps`` instead (a
divergence raises, naming it).

The replica stays in step with the real env because Crafter envs are a function of their seed
and actions here (:func:`policylm.platform.envs.crafter.stable_object_hashes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from policylm.platform.envs.adapter import EnvAdapter
from policylm.platform.envs.crafter import ACTIONS
from policylm.platform.envs.replica import BotDiverged, Replicas, check_eps
from policylm.platform.policy import Policy

__all__ = ["BotDiverged", "CrafterBot"]
URI = "python:policylm.platform.envs.crafter_bot:CrafterBot"


class CrafterBot(Policy):
    """The Crafter planner over replica envs, one per slot; ``eps`` is the random-action
    probability."""

    def __init__(self, adapter: EnvAdapter, eps: str | float = 0.0):
        if not adapter.env_id.startswith("Crafter"):
            raise ValueError(f"CrafterBot plays Crafter, not {adapter.env_id}")
        self.adapter, self.eps = adapter, check_eps("CrafterBot", eps)
        self.replicas = Replicas(adapter, "CrafterBot", URI, _same, stream=0xC4AF)

    def reset(self, slot: int, seed: int) -> None:
        """A fresh replica and planner for ``slot``, reset with the episode's ``seed``."""
        from policylm.platform.envs.crafter_planner import Planner

        self.replicas.reset(slot, seed, planner=Planner())

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[int]:
        """One action per observation: the planner's, or with probability ``eps`` a random
        one; each slot's replica takes the same step."""
        out = []
        for obs, slot in zip(observations, slots, strict=True):
            s = self.replicas.checked(slot, obs)
            action = self.replicas.explore(s, self.eps, len(ACTIONS))
            if action is None:
                action = int(s["planner"].act(s["env"].unwrapped.env))
            out.append(self.replicas.step(s, action))
        return out


def _same(real: Any, mine: Any) -> bool:
    return all(np.array_equal(np.asarray(real[k]), np.asarray(mine[k])) for k in mine)
