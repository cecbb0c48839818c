"""MiniGrid as text: mission, heading, what is in front/left/right, carried object and the
egocentric 7x7 view as a character grid (agent ``^`` at the bottom middle, facing up).

The env is wrapped so the observation carries everything the text needs: ``mission`` becomes a
``Text`` space and ``carrying`` (object type and colour ids) is added.
"""

from __future__ import annotations

import string

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import EnvAdapter, gym_kwargs, probe_spaces
from policylm.platform.envs.codecs import NamedDiscreteCodec

ACTION_NAMES = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
DIRECTIONS = ["east", "south", "west", "north"]
# minigrid.core.constants, copied so encoding needs no minigrid import (ids are stable).
OBJECTS = ["unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava",
           "agent"]
COLORS = ["red", "green", "blue", "purple", "yellow", "grey"]
DOOR_STATES = ["open", "closed", "locked"]
_CHARS = {"unseen": "?", "empty": ".", "floor": ".", "wall": "#", "key": "K", "ball": "B",
          "box": "X", "goal": "G", "lava": "L", "agent": "A"}
_DOOR_CHARS = {"open": "/", "closed": "d", "locked": "D"}
_MISSION_CHARS = string.ascii_letters + string.digits + " ,.'-"
RULES = (
    "MiniGrid: a grid world seen from the agent. View rows run far to near, the agent ^ is at "
    "the bottom middle facing up. # wall, . floor, ? unseen, K key, B ball, X box, G goal, "
    "L lava, D locked door, d closed door, / open door. Actions: left/right turn, forward moves, "
    "pickup, drop, toggle opens doors, done."
)


class MiniGridTextObs(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Adds ``carrying`` to MiniGrid's observation and makes ``mission`` a ``Text`` space."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        inner = env.observation_space
        self.observation_space = gym.spaces.Dict(
            {
                "direction": inner["direction"],
                "image": inner["image"],
                "mission": gym.spaces.Text(max_length=256, charset=_MISSION_CHARS),
                "carrying": gym.spaces.MultiDiscrete([len(OBJECTS), len(COLORS)]),
            }
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # what save_minigrid needs to rebuild the state: the episode's seed and its actions
        self.episode_seed, self.actions = seed, []
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.actions.append(int(action))
        return super().step(action)

    def observation(self, observation: dict) -> dict:
        carrying = self.env.unwrapped.carrying
        held = [0, 0] if carrying is None else [OBJECTS.index(carrying.type),
                                                COLORS.index(carrying.color)]
        mission = "".join(c for c in str(observation["mission"]) if c in _MISSION_CHARS)
        return {
            "direction": int(observation["direction"]),
            "image": observation["image"],
            "mission": mission[:256],
            "carrying": np.asarray(held, dtype=np.int64),
        }


def _cell(cell: np.ndarray) -> str:
    kind = OBJECTS[int(cell[0])]
    if kind == "door":
        return _DOOR_CHARS[DOOR_STATES[int(cell[2])]]
    return _CHARS[kind]


def _describe(cell: np.ndarray) -> str:
    kind = OBJECTS[int(cell[0])]
    if kind in ("empty", "floor", "unseen", "wall"):
        return {"empty": "empty", "floor": "empty"}.get(kind, kind)
    color = COLORS[int(cell[1])]
    if kind == "door":
        return f"{DOOR_STATES[int(cell[2])]} {color} door"
    return f"{color} {kind}"


def view_rows(image: np.ndarray) -> list[str]:
    """The 7x7 egocentric view as text rows, far row first; ``image`` is (x, y, 3)."""
    w, h = image.shape[0], image.shape[1]
    rows = []
    for y in range(h):
        row = "".join(_cell(image[x, y]) for x in range(w))
        if y == h - 1:
            row = row[: w // 2] + "^" + row[w // 2 + 1:]
        rows.append(row)
    return rows


def minigrid_json(obs: dict) -> dict:
    """Structured form: mission, heading, neighbours, carried object, view rows."""
    image = np.asarray(obs["image"])
    ax, ay = image.shape[0] // 2, image.shape[1] - 1
    kind, color = (int(v) for v in np.asarray(obs["carrying"]).reshape(-1))
    return {
        "mission": str(obs["mission"]),
        "facing": DIRECTIONS[int(obs["direction"])],
        "front": _describe(image[ax, ay - 1]),
        "left": _describe(image[ax - 1, ay]),
        "right": _describe(image[ax + 1, ay]),
        "carrying": "nothing" if kind == 0 else f"{COLORS[color]} {OBJECTS[kind]}",
        "view": view_rows(image),
    }


def encode_minigrid(obs: dict) -> str:
    """Compact text of :func:`minigrid_json` (about 60-80 SmolLM2 tokens)."""
    j = minigrid_json(obs)
    head = (
        f"Mission: {j['mission']}. Facing {j['facing']}. Front: {j['front']}. "
        f"Left: {j['left']}. Right: {j['right']}. Carrying: {j['carrying']}."
    )
    return head + "\n" + "\n".join(j["view"])


def flatten_minigrid(obs: dict) -> np.ndarray:
    """MLP input: image ids (147) scaled to [0, 1], heading one-hot (4), carried ids (2)."""
    image = np.asarray(obs["image"], dtype=np.float32).reshape(-1) / 10.0
    heading = np.eye(4, dtype=np.float32)[int(obs["direction"])]
    carrying = np.asarray(obs["carrying"], dtype=np.float32).reshape(-1) / 10.0
    return np.concatenate([image, heading, carrying])


def _text_obs(env: gym.Env) -> MiniGridTextObs:
    e = env
    while not isinstance(e, MiniGridTextObs):
        if not isinstance(e, gym.Wrapper):
            raise ValueError("not a policylm MiniGrid env (no MiniGridTextObs wrapper)")
        e = e.env
    return e


def save_minigrid(env: gym.Env) -> list[float]:
    """The state as ``[seed, a0, a1, ...]``: MiniGrid has no settable state, but an episode is
    fixed by its seed and actions (replayed by :func:`restore_minigrid`). The list grows with
    the step, so a whole episode stores O(length^2) numbers: fine at MiniGrid's lengths."""
    w = _text_obs(env)
    if getattr(w, "episode_seed", None) is None:
        raise ValueError("a MiniGrid state is its seed and actions: reset the env with a seed")
    return [float(w.episode_seed), *(float(a) for a in w.actions)]


def restore_minigrid(env: gym.Env, state: list[float]) -> None:
    """Reset ``env`` with the state's seed and replay its actions."""
    if not state:
        raise ValueError("empty MiniGrid state: expected [seed, actions...]")
    env.reset(seed=int(state[0]))
    for a in state[1:]:
        env.step(int(a))


def minigrid_adapter(
    env_id: str, *, max_episode_steps: int | None = None, env_kwargs: dict | None = None
) -> EnvAdapter:
    """Adapter for MiniGrid envs (``MiniGrid-DoorKey-5x5-v0``, ``MiniGrid-Empty-8x8-v0``, ...)."""
    kwargs = gym_kwargs(max_episode_steps, env_kwargs)

    def make() -> gym.Env:
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids in this process)

        return MiniGridTextObs(gym.make(env_id, **kwargs))

    obs_space, act_space = probe_spaces(make)
    return EnvAdapter(
        env_id=env_id,
        make_env=make,
        observation_space=obs_space,
        action_space=act_space,
        encode=encode_minigrid,
        to_json=minigrid_json,
        codec=NamedDiscreteCodec(ACTION_NAMES[: int(act_space.n)]),
        rules=RULES,
        flatten_obs=flatten_minigrid,
        save_state=save_minigrid,
        restore_state=restore_minigrid,
    )

