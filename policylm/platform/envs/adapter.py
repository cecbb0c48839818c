"""Environments as text: the env adapter contract and the generic adapter.

An :class:`EnvAdapter` bundles an env factory, an observation encoder (obs -> short text, and a
JSON form), an action codec and the prompt template the LLM policy and the dataset builder
share. The generic adapter handles any Box / Discrete / MultiDiscrete / MultiBinary / Dict /
Tuple observation space.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa

from policylm.platform.envs.codecs import ActionCodec, default_codec
from policylm.platform.numbers import format_number
from policylm.platform.prompts import format_user


class EnvError(ValueError):
    """An env that cannot be made here (unknown id, a package not installed); the message
    names the env and what to install."""


@dataclass
class EnvAdapter:
    """An env plus its text form. ``make_env()`` builds a fresh env each call.

    ``encode(obs)`` gives compact text; ``to_json(obs)`` a JSON-able dict; ``flatten(obs)`` the
    float32 vector stored in the trajectory's ``obs`` column; ``rules`` the env description
    that opens the system prompt.
    """

    env_id: str
    make_env: Callable[[], gym.Env]
    observation_space: gym.Space
    action_space: gym.Space
    encode: Callable[[Any], str]
    to_json: Callable[[Any], dict]
    codec: ActionCodec
    rules: str = ""
    flatten_obs: Callable[[Any], np.ndarray] | None = None
    # env extras with their own typed trajectory columns (e.g. achievements): the Arrow fields,
    # and a function from a step's ``info`` to ``{field name: value}``
    extra_fields: list[pa.Field] = field(default_factory=list)
    info_extras: Callable[[dict], dict] | None = None
    # the simulator state as numbers, and putting it back into an env that was reset (for
    # env-grounded rewards); None where the env cannot restore its state
    save_state: Callable[[gym.Env], list[float]] | None = None
    restore_state: Callable[[gym.Env, list[float]], None] | None = None
    # multi-agent envs (MettaGrid): agents acting each step, their env taking and giving one
    # entry per agent (see policylm.platform.rollout.multi_agent)
    num_agents: int = 1
    # what external policies are built from (pytorch:// constructors that take the env): the
    # env's own description (MettaGrid's PolicyEnvInterface); None: spaces and action names
    env_info: Any = None
    # what external policies see of an observation (MettaGrid: the token array); None: flatten
    policy_obs: Callable[[Any], np.ndarray] | None = None
    # the options that shape this env's text (number decimals, the action codec, BabyAI's
    # memory, ...): recorded with the rows played here and with the adapters trained on them,
    # so that a policy is not played on text made otherwise (see check_text_options)
    text_options: dict[str, Any] = field(default_factory=dict)

    def flatten(self, obs: Any) -> np.ndarray:
        """Observation as a flat float32 vector: ``flatten_obs`` when the adapter sets one,
        else gymnasium's ``flatten`` of the observation space."""
        if self.flatten_obs is not None:
            return np.asarray(self.flatten_obs(obs), dtype=np.float32)
        return np.asarray(gym.spaces.flatten(self.observation_space, obs), dtype=np.float32)

    @property
    def obs_dim(self) -> int:
        """Length of :meth:`flatten`'s vector."""
        return int(self.flatten(self.observation_space.sample()).shape[0])

    def system_text(self) -> str:
        """System prompt: env rules and the valid actions (when they can be listed)."""
        acts = self.codec.valid_actions
        listed = f"Valid actions: {', '.join(acts)}." if acts else "Answer with the action."
        rules = self.rules or f"You control the agent of the environment {self.env_id}."
        return f"{rules} {listed} Reply with the action only."  # prompts.ACTION_ONLY

    def user_text(self, target_return: float, t: int, obs_text: str) -> str:
        """The user turn (see :func:`format_user`)."""
        return format_user(target_return, t, obs_text)


def _encode_value(space: gym.Space, value: Any, decimals: int) -> str:
    if isinstance(space, gym.spaces.Dict):
        return "; ".join(f"{k}: {_encode_value(s, value[k], decimals)}" for k, s in space.items())
    if isinstance(space, gym.spaces.Tuple):
        return "; ".join(_encode_value(s, v, decimals) for s, v in zip(space, value, strict=True))
    if isinstance(space, gym.spaces.Text):
        return str(value)
    arr = np.asarray(value).reshape(-1)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return " ".join(format_number(v, decimals) for v in arr)
    return " ".join(str(int(v)) for v in arr)


def _json_value(space: gym.Space, value: Any, decimals: int) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _json_value(s, value[k], decimals) for k, s in space.items()}
    if isinstance(space, gym.spaces.Tuple):
        return [_json_value(s, v, decimals) for s, v in zip(space, value, strict=True)]
    if isinstance(space, gym.spaces.Text):
        return str(value)
    if isinstance(space, gym.spaces.Discrete):
        return int(value)
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.floating):
        return np.round(arr.astype(np.float64), decimals).tolist()
    return arr.astype(np.int64).tolist()


def gym_kwargs(max_episode_steps: int | None, env_kwargs: dict | None) -> dict:
    """Keyword arguments for ``gym.make``: the env's own plus an optional step limit."""
    kwargs = dict(env_kwargs or {})
    if max_episode_steps:
        kwargs["max_episode_steps"] = max_episode_steps
    return kwargs


def probe_spaces(make_env: Callable[[], gym.Env]) -> tuple[gym.Space, gym.Space]:
    """``(observation_space, action_space)`` of a throwaway env."""
    env = make_env()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def probed_adapter(env_id: str, make_env: Callable[[], gym.Env], **fields: Any) -> EnvAdapter:
    """An :class:`EnvAdapter` whose observation and action spaces are read from a throwaway
    env of ``make_env``; ``fields`` are the adapter's other fields (encode, codec, ...)."""
    obs_space, act_space = probe_spaces(make_env)
    return EnvAdapter(env_id=env_id, make_env=make_env, observation_space=obs_space,
                      action_space=act_space, **fields)


def generic_encoders(
    space: gym.Space, decimals: int = 2
) -> tuple[Callable[[Any], str], Callable[[Any], dict]]:
    """``(encode, to_json)`` for any supported observation space: numbers rounded to
    ``decimals``, Dict/Tuple parts labelled and joined with ``;``."""
    if not isinstance(
        space,
        gym.spaces.Box | gym.spaces.Discrete | gym.spaces.MultiDiscrete | gym.spaces.MultiBinary
        | gym.spaces.Dict | gym.spaces.Tuple | gym.spaces.Text,
    ):
        raise TypeError(f"observation space {space} is not supported")
    return (lambda obs: _encode_value(space, obs, decimals),
            lambda obs: {"obs": _json_value(space, obs, decimals)})


def generic_adapter(
    env_id: str,
    *,
    make_env: Callable[[], gym.Env] | None = None,
    decimals: int = 2,
    box_codec: str = "bins",
    bins: int = 5,
    max_episode_steps: int | None = None,
    env_kwargs: dict | None = None,
) -> EnvAdapter:
    """Adapter for any Gymnasium env: numbers rounded to ``decimals``, codec per action space.

    ``make_env`` overrides ``gym.make(env_id, **env_kwargs)`` (pass a factory for envs that are
    not registered). ``box_codec`` is ``"bins"`` (``bins`` values per dimension), ``"digits"``
    (the same, written without spaces) or ``"numeric"``.
    """
    kwargs = gym_kwargs(max_episode_steps, env_kwargs)
    factory = make_env or (lambda: gym.make(env_id, **kwargs))
    obs_space, act_space = probe_spaces(factory)
    try:
        encode, to_json = generic_encoders(obs_space, decimals)
    except TypeError as err:
        raise TypeError(f"{env_id}: {err}") from err
    return EnvAdapter(
        env_id=env_id,
        make_env=factory,
        observation_space=obs_space,
        action_space=act_space,
        encode=encode,
        to_json=to_json,
        codec=default_codec(act_space, box=box_codec, bins=bins, decimals=decimals),
        text_options={"decimals": decimals, **box_text_options(act_space, box_codec, bins)},
    )


def box_text_options(space: gym.Space, box_codec: str, bins: int) -> dict[str, Any]:
    """The codec options that shape a Box action space's text (none for other spaces)."""
    if not isinstance(space, gym.spaces.Box):
        return {}
    return {"box_codec": box_codec, **({"bins": bins} if box_codec != "numeric" else {})}


def dumps_json(obj: Any) -> str:
    """Compact JSON (no spaces) for the ``obs_json`` column."""
    return json.dumps(obj, separators=(",", ":"))
