"""Replica envs for scripted demonstrators that plan on the simulator's state (the BabyAI bot,
the Crafter bot), which a policy does not see.

Each env slot keeps a replica of its env: reset with the episode's seed and stepped with every
action the bot returns, checked against the observation the real env gives at each step. With
probability ``eps`` the bot's action is replaced by a random one (a weaker demonstrator). A bot
wrapped in ``mix:`` would step the real env with actions the replica never saw; the check then
raises :class:`BotDiverged`, naming ``?eps=`` as the way to weaken a bot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from policylm.platform.envs.adapter import EnvAdapter


class BotDiverged(RuntimeError):
    """The replica env no longer matches the real one."""


def check_eps(bot: str, eps: str | float) -> float:
    """``eps`` as a probability; ValueError naming the bot and the value otherwise."""
    value = float(eps)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{bot} eps={eps} must be a probability in [0, 1]")
    return value


class Replicas:
    """One replica env per slot for the bot named ``bot`` (its ``python:`` URI is ``uri``);
    ``same(real_obs, replica_obs)`` says whether two observations match."""

    def __init__(self, adapter: EnvAdapter, bot: str, uri: str,
                 same: Callable[[Any, Any], bool], stream: int):
        self.adapter, self.bot, self.uri, self.same, self.stream = adapter, bot, uri, same, stream
        self.slots: dict[int, dict[str, Any]] = {}

    def reset(self, slot: int, seed: int, **state: Any) -> dict[str, Any]:
        """A fresh replica for ``slot`` (its env reused), reset with the episode's ``seed``;
        ``state`` (the bot's planner...) is kept with it. Returns the slot's record."""
        old = self.slots.pop(slot, None)
        env = old["env"] if old else self.adapter.make_env()
        obs, _ = env.reset(seed=int(seed))
        self.slots[slot] = {"env": env, "obs": obs, **state,
                            "rng": np.random.default_rng([int(seed), self.stream])}
        return self.slots[slot]

    def checked(self, slot: int, obs: Any) -> dict[str, Any]:
        """``slot``'s record after checking its replica against the real env's ``obs``."""
        s = self.slots.get(slot)
        if s is None:
            raise BotDiverged(f"{self.bot} slot {slot} was never reset with its episode seed")
        if not self.same(obs, s["obs"]):
            raise BotDiverged(
                f"{self.bot}'s replica of slot {slot} no longer matches the env (was the env "
                f"reset without its seed, or the bot wrapped in mix:?); use {self.uri}?eps=<p> "
                "for random actions")
        return s

    @staticmethod
    def explore(s: dict[str, Any], eps: float, actions: int) -> int | None:
        """With probability ``eps`` a random action of ``actions`` (from the slot's stream),
        else None: the bot's own action stands."""
        return int(s["rng"].integers(actions)) if s["rng"].random() < eps else None

    @staticmethod
    def step(s: dict[str, Any], action: int) -> int:
        """The replica takes ``action`` (kept as ``taken``); returns it."""
        s["obs"] = s["env"].step(action)[0]
        s["taken"] = action
        return action
