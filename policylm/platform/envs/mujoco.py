"""MuJoCo envs (Gymnasium's ``HalfCheetah-v5``, ``Hopper-v5``, ...) as text, with continuous
actions and a restorable state.

The system text follows the RLFT4RL style of prompting an LLM controller: what the robot is,
the order and meaning of the observation numbers, what each action number drives and its range,
the task and the reward, then the answer format (``<action>a1 a2 ...</action>``). The
observation is ``<observation>v1 v2 ...</observation>`` with fixed decimals. The state saved in
trajectories is ``qpos`` then ``qvel`` (restored with the env's ``set_state``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import (
    EnvAdapter,
    box_text_options,
    format_number,
    gym_kwargs,
    probe_spaces,
)
from policylm.platform.envs.codecs import BoxBinsCodec, box_action_codec

# what the numbers mean, per robot (observation order as Gymnasium's v5 envs give it)
ROBOTS: dict[str, dict[str, Any]] = {
    "HalfCheetah": {
        "body": "a 2-D cheetah robot: a torso with a back and a front leg (thigh, shin, foot)",
        "obs": ["torso height", "torso angle", "back thigh angle", "back shin angle",
                "back foot angle", "front thigh angle", "front shin angle", "front foot angle",
                "forward velocity", "vertical velocity", "torso angular velocity",
                "back thigh angular velocity", "back shin angular velocity",
                "back foot angular velocity", "front thigh angular velocity",
                "front shin angular velocity", "front foot angular velocity"],
        "act": ["back thigh torque", "back shin torque", "back foot torque",
                "front thigh torque", "front shin torque", "front foot torque"],
        "task": "run forward (+x) as fast as possible",
        "reward": "forward velocity minus 0.1 times the squared torques, every step",
    },
    "Hopper": {
        "body": "a 2-D one-legged hopper: torso, thigh, leg, foot",
        "obs": ["torso height", "torso angle", "thigh angle", "leg angle", "foot angle",
                "forward velocity", "vertical velocity", "torso angular velocity",
                "thigh angular velocity", "leg angular velocity", "foot angular velocity"],
        "act": ["thigh torque", "leg torque", "foot torque"],
        "task": "hop forward (+x) without falling",
        "reward": "1 per step alive plus forward velocity minus a small torque cost",
    },
}


def robot_of(env_id: str) -> dict[str, Any] | None:
    """The description for ``HalfCheetah-v5`` etc. (by the name before the version)."""
    return ROBOTS.get(env_id.split("-")[0])


def answer_format(codec: Any) -> str:
    """The system text's sentence on how an action is written, for a Box codec."""
    if isinstance(codec, BoxBinsCodec):
        how = (f"written together as {len(codec.low)} digits" if codec.packed
               else "separated by spaces")
        return (f"Action format: one bin per action number, 0 for the lowest value to "
                f"{codec.bins - 1} for the highest, {how}.")
    return "Action format: <action>a1 a2 ...</action>, numbers separated by spaces."


def mujoco_rules(env_id: str, obs_dim: int, low: np.ndarray, high: np.ndarray,
                 answer: str) -> str:
    """RLFT4RL-style system text: robot, observation order, action order and range, task,
    reward and ``answer`` format. Envs without a description get the generic layout."""
    robot = robot_of(env_id)
    lo, hi = format_number(float(np.min(low))), format_number(float(np.max(high)))
    if robot is None or len(robot["obs"]) != obs_dim or len(robot["act"]) != len(low):
        body = (f"You control the MuJoCo robot of {env_id}. The observation is {obs_dim} "
                f"numbers; the action is {len(low)} numbers in [{lo}, {hi}].")
    else:
        obs = "; ".join(f"{i}: {n}" for i, n in enumerate(robot["obs"]))
        act = "; ".join(f"{i}: {n}" for i, n in enumerate(robot["act"]))
        body = (f"You control {robot['body']} in the MuJoCo simulator ({env_id}). Observation "
                f"(in order) {obs}. Action (in order, each in [{lo}, {hi}]) {act}. Task: "
                f"{robot['task']}. Reward: {robot['reward']}.")
    return f"{body} {answer}"


def encode_mujoco(obs: Any, decimals: int = 2) -> str:
    """``[0.01, -0.1, ...]`` -> ``<observation>0.01 -0.10 ...</observation>``."""
    vals = np.asarray(obs, dtype=np.float64).reshape(-1)
    return "<observation>" + " ".join(format_number(v, decimals) for v in vals) + "</observation>"


def save_mujoco(env: gym.Env) -> list[float]:
    """``qpos`` then ``qvel`` of the simulator."""
    data = env.unwrapped.data
    return [float(v) for v in np.concatenate([data.qpos, data.qvel])]


def restore_mujoco(env: gym.Env, state: list[float]) -> None:
    """Put ``qpos``/``qvel`` back into a reset env (``set_state`` also runs ``mj_forward``)."""
    inner = env.unwrapped
    nq, nv = int(inner.model.nq), int(inner.model.nv)
    if len(state) != nq + nv:
        raise ValueError(f"{inner.spec.id if inner.spec else 'mujoco'} state needs {nq} qpos + "
                         f"{nv} qvel numbers, got {len(state)}")
    arr = np.asarray(state, dtype=np.float64)
    inner.set_state(arr[:nq], arr[nq:])


def is_mujoco(env_id: str) -> bool:
    """Whether ``env_id`` is registered as one of Gymnasium's MuJoCo envs."""
    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return False
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def mujoco_adapter(env_id: str, *, decimals: int = 2, box_codec: str = "numeric", bins: int = 5,
                   max_episode_steps: int | None = None, env_kwargs: dict | None = None
                   ) -> EnvAdapter:
    """Adapter for Gymnasium MuJoCo envs: numeric actions by default (``box_codec="bins"`` for
    the discretised codec), restorable state, RLFT4RL-style system text."""
    kwargs = gym_kwargs(max_episode_steps, env_kwargs)

    def make() -> gym.Env:
        return gym.make(env_id, **kwargs)

    try:
        obs_space, act_space = probe_spaces(make)
    except (ImportError, gym.error.DependencyNotInstalled) as err:
        raise ValueError(f"{env_id} needs MuJoCo: pip install 'policylm[envs]' ({err})") from err
    codec = box_action_codec(act_space, box_codec, bins, decimals)
    robot = robot_of(env_id)
    names = robot["obs"] if robot and len(robot["obs"]) == obs_space.shape[0] else None
    return EnvAdapter(
        env_id=env_id,
        make_env=make,
        observation_space=obs_space,
        action_space=act_space,
        encode=lambda obs: encode_mujoco(obs, decimals),
        to_json=lambda obs: dict(zip(names or [f"obs_{i}" for i in range(len(obs))],
                                     np.round(np.asarray(obs, np.float64), decimals + 2).tolist(),
                                     strict=True)),
        codec=codec,
        rules=mujoco_rules(env_id, int(obs_space.shape[0]), act_space.low, act_space.high,
                           answer_format(codec)),
        save_state=save_mujoco,
        restore_state=restore_mujoco,
        text_options={"decimals": decimals, **box_text_options(act_space, box_codec, bins)},
    )
