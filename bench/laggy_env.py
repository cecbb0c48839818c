"""CartPole whose every step waits ``latency`` seconds first: an environment served over a
network (a simulator, a game server, a browser or tool call), where a rollout waits rather than
computes. Used by ``grpo_async.py`` as ``laggy_env:LaggyCartPole-v1``; Gymnasium imports this
module when it makes an env of that id (in Ray's actors too: Ray puts the benchmark script's
directory on their path). Not a benchmark itself (``run_all.py`` skips it)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class LaggyCartPole(CartPoleEnv):
    def __init__(self, latency: float = 0.05, **kwargs: Any):
        super().__init__(**kwargs)
        self.latency = latency

    def step(self, action: Any) -> Any:
        time.sleep(self.latency)
        return super().step(action)


if "LaggyCartPole-v1" not in gym.registry:
    gym.register("LaggyCartPole-v1", entry_point=LaggyCartPole, max_episode_steps=500)
