"""Picking the adapter for an env id, and the flat-observation env RLlib trains on.

:func:`make_adapter` maps an env id to its family's adapter (CartPole, MiniGrid, BabyAI,
MettaGrid, Crafter, MuJoCo) and falls back to the generic one. Family modules are imported only
when their env is asked for, so their packages (minigrid, crafter, mettagrid, mujoco) stay optional.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import EnvAdapter, EnvError, generic_adapter


def make_adapter(env_id: str, **options: Any) -> EnvAdapter:
    """The best adapter for ``env_id``: a named one (CartPole, MiniGrid, BabyAI, MuJoCo,
    ``Crafter``, ``MettaGrid-Arena``) or the generic one.

    Unknown env ids fail with gymnasium's own message plus a hint on registration.
    """
    if env_id.startswith("CartPole-"):
        from policylm.platform.envs.cartpole import cartpole_adapter

        return cartpole_adapter(env_id, **options)
    if env_id.startswith("MiniGrid-"):
        from policylm.platform.envs.minigrid import minigrid_adapter

        return minigrid_adapter(env_id, **options)
    if env_id.startswith("BabyAI-"):
        from policylm.platform.envs.babyai import babyai_adapter

        return babyai_adapter(env_id, **options)
    if env_id.startswith("MettaGrid"):
        from policylm.platform.envs.mettagrid import mettagrid_adapter

        return mettagrid_adapter(env_id, **options)
    if env_id.startswith("Crafter"):
        from policylm.platform.envs.crafter import crafter_adapter

        return crafter_adapter(env_id, **options)
    from policylm.platform.envs.mujoco import is_mujoco, mujoco_adapter

    if is_mujoco(env_id):
        return mujoco_adapter(env_id, **options)
    try:
        return generic_adapter(env_id, **options)
    except gym.error.Error as err:
        raise EnvError(
            f"env {env_id!r} could not be made ({str(err).splitlines()[0]}); check the id, or "
            "install the package that registers it (e.g. pip install 'policylm[envs]', or "
            "gymnasium[box2d] for LunarLander)"
        ) from err



class FlatObsEnv(gym.Env):
    """An adapter's env with ``adapter.flatten`` observations in a flat ``Box`` (what RLlib's
    default MLP modules and ``rllib://`` policies see).

    ``env_config``: ``{"env_id": ..., "env_options": {...}}``. Built inside the worker that uses
    it, so env packages register there.
    """

    def __init__(self, env_config: dict | None = None):
        cfg = dict(env_config or {})
        self.adapter = make_adapter(cfg["env_id"], **cfg.get("env_options", {}))
        self.env = self.adapter.make_env()
        dim = self.adapter.obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = self.env.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return self.adapter.flatten(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.adapter.flatten(obs), reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
