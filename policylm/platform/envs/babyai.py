"""BabyAI as text, in the form the BALROG benchmark uses.

BALROG's BabyAI suite plays five tasks of BabyAI-Text's ``BabyAI-MixedTrainLocal-v0`` level
(``goto``, ``pickup``, ``open``, ``putnext``, ``pick_up_seq_go_to``) with ``num_dists=0``: one
8x8 room holding only the objects the mission names (``open``: two rooms joined by a locked door,
its key in the agent's room). That level lives in BabyAI-Text's fork of BabyAI, not in the
``minigrid`` package, so :class:`MixedTrainLocal` re-implements it on ``minigrid``'s BabyAI core,
one env id per task (``BabyAI-MixedTrainLocal-goto-v0``, ...). The observation text is BabyAI-Text's
description of the egocentric view, with ``You see`` dropped as BALROG does::

    a wall 2 steps forward
    a red ball 1 step left and 2 steps forward

Standard BabyAI levels (``BabyAI-GoToLocal-v0``, ...) get the same text form.

``env_options={"memory": true}`` adds what the agent saw earlier in the episode and no longer
sees (:class:`ObjectMemory`), after the view::

    Out of view, seen before:
    a blue key 2 steps right and 3 steps backward
"""

from __future__ import annotations

import string

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import EnvAdapter, gym_kwargs, probed_adapter
from policylm.platform.envs.codecs import NamedDiscreteCodec
from policylm.platform.envs.minigrid import (
    COLORS,
    DOOR_STATES,
    OBJECTS,
    MiniGridTextObs,
    flatten_minigrid,
    restore_minigrid,
    save_minigrid,
)

# BALROG's language action space (MiniGrid's "done" is not offered)
ACTION_NAMES = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]
ACTION_HELP = {
    "turn left": "turn to the left",
    "turn right": "turn to the right",
    "go forward": "take one step forward",
    "pick up": "pick up the object below you",
    "drop": "drop the object that you are holding",
    "toggle": "manipulate the object in front of you",
}
# BALROG's instruction prompt, with the mission moved into each observation
RULES = (
    "You are an agent playing a simple navigation game. Your goal is the mission given with each "
    "observation. The following are the possible actions you can take in the game, followed by "
    "a short description of each action:\n"
    + ",\n".join(f"{a}: {d}" for a, d in ACTION_HELP.items())
    + ".\nTips:\n- Once the desired object you want to interact or pickup in front of you, you "
    "can use the 'toggle' action to interact with it.\n- It doesn't make sense to repeat the "
    "same action over and over if the observation doesn't change."
)
TASKS = ("goto", "pickup", "open", "putnext", "pick_up_seq_go_to")
TASK_IDS = {task: f"BabyAI-MixedTrainLocal-{task}-v0" for task in TASKS}
# the same tasks on MixedTestLocal: missions that name only the held-out pairs below
TEST_TASK_IDS = {task: f"BabyAI-MixedTestLocal-{task}-v0" for task in TASKS}
# every task in one env (the task chosen by the reset's seed): what online RL trains on
MIXED_IDS = {"train": "BabyAI-MixedTrainLocal-v0", "test": "BabyAI-MixedTestLocal-v0"}
# BabyAI-Text keeps these combinations out of MixedTrainLocal's missions (its test split)
EXCLUDED = ("yellow box", "red key", "red door", "green ball", "grey door")
UNSEEN, EMPTY, WALL, DOOR = 0, 1, 2, 4
MEMORY_CHARS = string.ascii_letters + string.digits + " \n"


def _steps(n: int, where: str) -> str:
    return f"{n} step{'s' if n > 1 else ''} {where}"


def place(forward: int, right: int) -> str:
    """Where a cell lies from the agent in BabyAI-Text's words, with ``backward`` for cells
    behind it: ``2 steps left and 1 step backward``; ``here`` for its own cell."""
    parts = []
    if right:
        parts.append(_steps(abs(right), "right" if right > 0 else "left"))
    if forward:
        parts.append(_steps(abs(forward), "forward" if forward > 0 else "backward"))
    return " and ".join(parts) or "here"


def object_name(kind: int, color: int, state: int) -> str:
    """``red ball``, ``locked yellow door``: as :func:`describe_view` names them."""
    name = f"{COLORS[color]} {OBJECTS[kind]}"
    return f"{DOOR_STATES[state]} {name}" if kind == DOOR else name


def describe_view(image: np.ndarray, carrying: np.ndarray | None = None) -> list[str]:
    """BabyAI-Text's descriptions of an egocentric view (``image`` is MiniGrid's (x, y, 3)
    encoding, the agent at the bottom middle facing up), ``You see`` dropped as in BALROG: what
    is carried, the nearest wall straight ahead, left and right (when nothing stands between),
    then each object, column by column from the left and far to near within a column: ``a red
    ball 1 step left and 2 steps forward``. Doors read ``a <state> <colour> door`` whatever the
    state, as in BabyAI-Text."""
    image = np.asarray(image)
    w, h = image.shape[0], image.shape[1]
    ax, ay = w // 2, h - 1
    out = []
    if carrying is not None and int(carrying[0]) != 0:
        out.append(f"You carry a {COLORS[int(carrying[1])]} {OBJECTS[int(carrying[0])]}")

    def wall_along(cells: list[tuple[int, int]], where: str) -> None:
        for n, (x, y) in enumerate(cells, 1):
            kind = int(image[x, y, 0])
            if kind not in (UNSEEN, EMPTY):
                if kind == WALL:
                    out.append(f"a wall {_steps(n, where)}")
                return

    wall_along([(ax, y) for y in range(ay - 1, -1, -1)], "forward")
    wall_along([(x, ay) for x in range(ax - 1, -1, -1)], "left")
    wall_along([(x, ay) for x in range(ax + 1, w)], "right")
    for x in range(w):
        for y in range(h):
            kind, color, state = (int(v) for v in image[x, y])
            if kind in (UNSEEN, EMPTY, WALL) or (x, y) == (ax, ay):
                continue
            out.append(f"a {object_name(kind, color, state)} {place(ay - y, x - ax)}")
    return out


def babyai_json(obs: dict) -> dict:
    """Structured form: the mission and the view's descriptions (and, with the memory, the
    objects out of view that were seen before)."""
    j = {"mission": str(obs["mission"]),
         "view": describe_view(obs["image"], np.asarray(obs["carrying"]).reshape(-1))}
    if "memory" in obs:
        j["memory"] = str(obs["memory"]).splitlines()
    return j


def encode_babyai(obs: dict) -> str:
    """``Mission: <mission>`` then one description per line; with the memory, the remembered
    objects after an ``Out of view, seen before:`` line (none: no such line)."""
    j = babyai_json(obs)
    lines = [f"Mission: {j['mission']}", *(j["view"] or ["nothing in view"])]
    if j.get("memory"):
        lines += ["Out of view, seen before:", *j["memory"]]
    return "\n".join(lines)


class ObjectMemory(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Adds ``memory`` (text, one line per remembered object out of view, nearest first) to a
    ``MiniGridTextObs`` observation.

    After ``pick up`` the second object of ``put the ball next to the key`` is often out of the
    7x7 view, and a policy that reads only the current view cannot tell where to turn. The memory
    holds nothing a history of observations does not: MiniGrid is deterministic and nothing
    moves unless the agent moves it, so the places follow from the views and the actions (read
    here from the simulator's pose, which is the same thing). An object is forgotten when its
    cell is in view again without it (picked up or moved); a door keeps the state it was last
    seen in. An episode's state is still its seed and actions (``save_minigrid``): replaying them
    rebuilds the memory."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self.observation_space = gym.spaces.Dict({
            **env.observation_space.spaces,
            "memory": gym.spaces.Text(max_length=4096, charset=MEMORY_CHARS)})
        self.seen: dict[tuple[int, int], tuple[int, int, int]] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.seen = {}
        return super().reset(seed=seed, options=options)

    def observation(self, observation: dict) -> dict:
        env = self.env.unwrapped
        image = np.asarray(observation["image"])
        size = image.shape[0]
        pos = np.asarray(env.agent_pos)
        ahead, right = np.asarray(env.dir_vec), np.asarray(env.right_vec)
        in_view = set()
        for vx in range(size):
            for vy in range(size):
                kind, color, state = (int(v) for v in image[vx, vy])
                if kind == UNSEEN or (vx, vy) == (size // 2, size - 1):
                    continue  # hidden, or the agent's own cell (it shows what is carried)
                # the agent sits at (size // 2, size - 1) of its view, facing up the view
                cell = pos + ahead * (size - 1 - vy) + right * (vx - size // 2)
                key = (int(cell[0]), int(cell[1]))
                in_view.add(key)
                if kind in (EMPTY, WALL):
                    self.seen.pop(key, None)
                else:
                    self.seen[key] = (kind, color, state)
        lines = []
        for key, obj in self.seen.items():
            if key in in_view:
                continue
            d = np.asarray(key) - pos
            forward, side = int(d @ ahead), int(d @ right)
            text = f"a {object_name(*obj)} {place(forward, side)}"
            lines.append((abs(forward) + abs(side), text))
        return {**observation, "memory": "\n".join(text for _, text in sorted(lines))}


class SixActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """MiniGrid without its ``done`` action (BALROG's six actions)."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))

    def action(self, action):
        return int(action)


def register_babyai() -> None:
    """Register the BALROG task ids, their MixedTestLocal twins (and ``minigrid``'s own BabyAI
    levels) in this process."""
    import minigrid  # noqa: F401  (registers BabyAI-* levels)

    for split, ids in (("train", TASK_IDS), ("test", TEST_TASK_IDS)):
        for task, env_id in (*ids.items(), ("mixed", MIXED_IDS[split])):
            if env_id not in gym.registry:
                gym.register(env_id,
                             entry_point="policylm.platform.envs.babyai_levels:MixedTrainLocal",
                             kwargs={"task": task, "split": split})


def babyai_adapter(
    env_id: str, *, max_episode_steps: int | None = None, env_kwargs: dict | None = None,
    memory: bool = False,
) -> EnvAdapter:
    """Adapter for BabyAI levels: the BALROG tasks (``BabyAI-MixedTrainLocal-<task>-v0``, and
    ``BabyAI-MixedTestLocal-<task>-v0`` with missions of the held-out pairs only; task
    in ``goto``, ``pickup``, ``open``, ``putnext``, ``pick_up_seq_go_to``) and ``minigrid``'s
    BabyAI levels. ``env_kwargs`` reach the level (``num_dists`` for the BALROG tasks, 0 by
    default as in BALROG); ``memory`` adds the objects seen before and out of view
    (:class:`ObjectMemory`) to the observation."""
    kwargs = gym_kwargs(max_episode_steps, env_kwargs)

    def make() -> gym.Env:
        register_babyai()
        env = MiniGridTextObs(gym.make(env_id, **kwargs))
        return SixActions(ObjectMemory(env) if memory else env)

    return probed_adapter(
        env_id,
        make,
        encode=encode_babyai,
        to_json=babyai_json,
        codec=NamedDiscreteCodec(list(ACTION_NAMES)),
        rules=RULES,
        flatten_obs=flatten_minigrid,
        save_state=save_minigrid,
        restore_state=restore_minigrid,
        text_options={"memory": bool(memory)},
    )
