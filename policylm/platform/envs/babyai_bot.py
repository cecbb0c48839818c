"""BabyAI's planning bot as a scripted policy:
``python:policylm.platform.envs.babyai_bot:BabyAIBot?eps=0.2``.

``minigrid.utils.baby_ai_bot.BabyAIBot`` solves BabyAI levels from the simulator's state, which a
policy does not see. So each env slot keeps a replica of its env: reset with the episode's seed
(BabyAI levels are a pure function of the seed) and stepped with every action the policy returns,
checked against the observation the real env gives at each step. With probability ``eps`` an
action is drawn at random instead of the bot's (a weaker demonstrator for mixed-skill data), and
the bot replans from the action that was taken. Wrapping the bot in ``mix:`` would step the real
env with actions the replica never saw; use ``eps`` instead (a divergence raises, naming it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from policylm.platform.envs.adapter import EnvAdapter
from policylm.platform.envs.babyai import ACTION_NAMES
from policylm.platform.envs.replica import BotDiverged, Replicas, check_eps
from policylm.platform.policy import Policy

__all__ = ["BabyAIBot", "BotDiverged"]
URI = "python:policylm.platform.envs.babyai_bot:BabyAIBot"


class BabyAIBot(Policy):
    """BabyAI's bot over replica envs, one per slot; ``eps`` is the random-action probability."""

    def __init__(self, adapter: EnvAdapter, eps: str | float = 0.0):
        if not adapter.env_id.startswith("BabyAI-"):
            raise ValueError(f"BabyAIBot plays BabyAI levels, not {adapter.env_id}")
        self.adapter, self.eps = adapter, check_eps("BabyAIBot", eps)
        self.replicas = Replicas(adapter, "BabyAIBot", URI, _same, stream=0xBAB1)
        self.bot_failures = 0  # steps where the bot could not plan (a random action was taken)

    def reset(self, slot: int, seed: int) -> None:
        """A fresh replica for ``slot``, reset with the episode's ``seed``."""
        s = self.replicas.reset(slot, seed, taken=None)
        s["bot"] = _planner(s["env"])

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[int]:
        """One action per observation: the bot's plan, or with probability ``eps`` a random
        action; each slot's replica takes the same step."""
        out = []
        for obs, slot in zip(observations, slots, strict=True):
            s = self.replicas.checked(slot, obs)
            action = self._plan(s)
            random = self.replicas.explore(s, self.eps, len(ACTION_NAMES))
            out.append(self.replicas.step(s, action if random is None else random))
        return out

    def _plan(self, s: dict) -> int:
        try:
            action = int(s["bot"].replan(s["taken"]))
        except Exception:  # the bot's asserts after off-plan random actions
            action = len(ACTION_NAMES)
        if action >= len(ACTION_NAMES):  # "done", or no plan: replan from here, act at random
            self.bot_failures += 1
            s["bot"] = _planner(s["env"])
            action = int(s["rng"].integers(len(ACTION_NAMES)))
        return action


def _same(real: Any, mine: Any) -> bool:
    return (np.array_equal(np.asarray(real["image"]), np.asarray(mine["image"]))
            and int(real["direction"]) == int(mine["direction"])
            and str(real["mission"]) == str(mine["mission"]))


def _planner(env: Any) -> Any:
    """minigrid's BabyAI bot over ``env`` (imported here: minigrid loads only where BabyAI
    runs)."""
    from minigrid.utils.baby_ai_bot import BabyAIBot as Planner

    return Planner(env)
