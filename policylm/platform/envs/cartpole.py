"""CartPole as text: four labelled numbers, two named actions.

``x=0.02 v=-0.15 a=0.03 w=0.21`` (cart position, cart velocity, pole angle in radians, pole
angular velocity) encodes to 24 SmolLM2 tokens; the contract is at most 40.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import EnvAdapter, format_number, gym_kwargs, probe_spaces
from policylm.platform.envs.codecs import NamedDiscreteCodec
from policylm.platform.policy import Policy

# short on purpose: every training row and prompt carries it (36 tokens with the action list)
CARTPOLE_RULES = (
    "CartPole: x cart position, v cart velocity, a pole angle, w pole angular velocity."
)
_LABELS = ("x", "v", "a", "w")


def encode_cartpole(obs: Any, decimals: int = 2) -> str:
    """``[0.0213, -0.1534, 0.0321, 0.2101]`` -> ``"x=0.02 v=-0.15 a=0.03 w=0.21"``."""
    vals = np.asarray(obs, dtype=np.float64).reshape(-1)
    return " ".join(f"{k}={format_number(v, decimals)}" for k, v in zip(_LABELS, vals, strict=True))


def cartpole_adapter(
    env_id: str = "CartPole-v1",
    *,
    decimals: int = 2,
    max_episode_steps: int | None = None,
    env_kwargs: dict | None = None,
) -> EnvAdapter:
    """Adapter for ``CartPole-v0``/``CartPole-v1``; actions ``left`` (0) and ``right`` (1)."""
    kwargs = gym_kwargs(max_episode_steps, env_kwargs)
    obs_space, act_space = probe_spaces(lambda: gym.make(env_id, **kwargs))
    return EnvAdapter(
        env_id=env_id,
        make_env=lambda: gym.make(env_id, **kwargs),
        observation_space=obs_space,
        action_space=act_space,
        encode=lambda obs: encode_cartpole(obs, decimals),
        to_json=lambda obs: dict(
            zip(
                ("cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"),
                np.round(np.asarray(obs, dtype=np.float64), decimals + 2).tolist(),
                strict=True,
            )
        ),
        codec=NamedDiscreteCodec(["left", "right"]),
        rules=CARTPOLE_RULES,
        save_state=lambda env: [float(v) for v in env.unwrapped.state],
        restore_state=restore_cartpole,
        text_options={"decimals": decimals},
    )


def restore_cartpole(env: gym.Env, state: list[float]) -> None:
    """Put ``[x, v, a, w]`` back into a reset CartPole env (the observation is the state)."""
    inner = env.unwrapped
    inner.state = np.asarray(state, dtype=np.float64)
    inner.steps_beyond_terminated = None


class CartPoleHeuristic(Policy):
    """Scripted CartPole player: push towards the side the pole falls to (angle plus half the
    angular velocity); returns 500 on CartPole-v1. ``python:policylm.platform.envs.cartpole:
    CartPoleHeuristic`` (a demonstrator of known quality)."""

    def __init__(self, adapter: EnvAdapter):
        if not adapter.env_id.startswith("CartPole-"):
            raise ValueError(f"CartPoleHeuristic plays CartPole, not {adapter.env_id}")

    def reset(self, slot: int, seed: int) -> None:
        pass

    def act(self, observations: Any, slots: Any) -> list[int]:
        return [int(o[2] + 0.5 * o[3] > 0) for o in np.asarray(observations, dtype=np.float64)]
