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
from policylm.platform.envs.babyai_bot import BotDiverged
from policylm.platform.envs.crafter import ACTIONS

__all__ = ["BotDiverged", "CrafterBot"]


class CrafterBot:
    """The Crafter planner over replica envs, one per slot; ``eps`` is the random-action
    probability."""

    def __init__(self, adapter: EnvAdapter, eps: str | float = 0.0):
        if not adapter.env_id.startswith("Crafter"):
            raise ValueError(f"CrafterBot plays Crafter, not {adapter.env_id}")
        self.adapter, self.eps = adapter, float(eps)
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"CrafterBot eps={eps} must be a probability in [0, 1]")
        self.slots: dict[int, dict[str, Any]] = {}

    def reset(self, slot: int, seed: int) -> None:
        """A fresh replica and planner for ``slot``, reset with the episode's ``seed``."""
        from policylm.platform.envs.crafter_planner import Planner

        old = self.slots.pop(slot, None)
        env = old["env"] if old else self.adapter.make_env()
        obs, _ = env.reset(seed=int(seed))
        self.slots[slot] = {"env": env, "obs": obs, "planner": Planner(),
                            "rng": np.random.default_rng([int(seed), 0xC4AF])}

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[int]:
        """One action per observation: the planner's, or with probability ``eps`` a random
        one; each slot's replica takes the same step."""
        out = []
        for obs, slot in zip(observations, slots, strict=True):
            s = self.slots.get(slot)
            if s is None:
                raise BotDiverged(f"CrafterBot slot {slot} was never reset with its episode seed")
            self._check(s, obs, slot)
            if s["rng"].random() < self.eps:
                action = int(s["rng"].integers(len(ACTIONS)))
            else:
                action = int(s["planner"].act(s["env"].unwrapped.env))
            s["obs"] = s["env"].step(action)[0]
            out.append(action)
        return out

    @staticmethod
    def _check(s: dict, obs: Any, slot: int) -> None:
        mine = s["obs"]
        if not all(np.array_equal(np.asarray(obs[k]), np.asarray(mine[k])) for k in mine):
            raise BotDiverged(
                f"CrafterBot's replica of slot {slot} no longer matches the env (was the env "
                "reset without its seed, or the bot wrapped in mix:?); use "
                "python:policylm.platform.envs.crafter_bot:CrafterBot?eps=<p> for random "
                "actions")
