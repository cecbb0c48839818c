"""Crafter (the ``crafter`` package) as a Gymnasium env and as text.

The observation is what the text needs: the semantic map in the agent's local view (9 columns x
7 rows, the agent in the middle), the 16 inventory counts (health, food, drink and energy
first), the 22 achievements unlocked so far and the direction faced. Text is compact: vitals,
inventory, what the agent faces, then what is where in steps and directions, nearest first.
Trajectories get two typed columns: ``achievements_unlocked`` (names unlocked at that step) and
``achievement_count`` (unlocked so far in the episode).
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pyarrow as pa

from policylm.platform.envs.adapter import EnvAdapter, probed_adapter
from policylm.platform.envs.codecs import NamedDiscreteCodec

# crafter.constants, copied so text encoding needs no crafter import (the ids are stable)
ACTIONS = ["noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep",
           "place_stone", "place_table", "place_furnace", "place_plant", "make_wood_pickaxe",
           "make_stone_pickaxe", "make_iron_pickaxe", "make_wood_sword", "make_stone_sword",
           "make_iron_sword"]
ACHIEVEMENTS = ["collect_coal", "collect_diamond", "collect_drink", "collect_iron",
                "collect_sapling", "collect_stone", "collect_wood", "defeat_skeleton",
                "defeat_zombie", "eat_cow", "eat_plant", "make_iron_pickaxe", "make_iron_sword",
                "make_stone_pickaxe", "make_stone_sword", "make_wood_pickaxe", "make_wood_sword",
                "place_furnace", "place_plant", "place_stone", "place_table", "wake_up"]
INVENTORY = ["health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron",
             "diamond", "wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword",
             "stone_sword", "iron_sword"]
# semantic ids: materials 0-12, then the object types in SemanticView's order
KINDS = ["unknown", "water", "grass", "stone", "path", "sand", "tree", "lava", "coal", "iron",
         "diamond", "table", "furnace", "player", "cow", "zombie", "skeleton", "arrow", "plant"]
# ground everywhere; listing it would crowd out what matters
BACKGROUND = {"unknown", "grass", "sand", "path", "player"}
FACING = {(-1, 0): "left", (1, 0): "right", (0, -1): "up", (0, 1): "down"}
HEADINGS = list(FACING.values())
VIEW = (9, 7)  # columns, rows of the local view
RULES = (
    "Crafter: survive and unlock achievements. You see a 9x7 area around you. Move with "
    "move_left/right/up/down (moving into something faces it), 'do' acts on what you face "
    "(collect wood from trees, stone with a pickaxe, drink water, eat cows, attack zombies), "
    "place_* and make_* need materials (a table needs wood; pickaxes and swords need a nearby "
    "table); sleep when energy is low."
)
EXTRA_FIELDS = [pa.field("achievements_unlocked", pa.list_(pa.string())),
                pa.field("achievement_count", pa.int32())]


def _creation_hash(obj: Any) -> int:
    """The object's creation index in its world, counted at its first hash (crafter hashes an
    object first when it adds it to the world, in the same order in every copy of a world)."""
    h = obj.__dict__.get("_creation_hash")
    if h is None:
        counter = obj.world.__dict__.setdefault("_creation_counter", itertools.count())
        h = obj.__dict__["_creation_hash"] = next(counter)
    return h


def stable_object_hashes() -> None:
    """Hash crafter's objects by their creation order in their world, not by address. Crafter
    keeps each map chunk's creatures in a ``set`` and despawns one by its place in the set,
    which followed memory addresses: two envs given the same seed and actions drifted apart
    within a few hundred steps. The game's rules and odds are unchanged. Envs already
    mid-episode when this first runs must be reset before they step again."""
    from crafter import objects

    objects.Object.__hash__ = _creation_hash  # type: ignore[method-assign]


class CrafterEnv(gym.Env):
    """``crafter.Env`` behind the Gymnasium API: ``reset(seed=s)`` makes the same world for the
    same ``s``; ``terminated`` when health reaches 0, ``truncated`` at ``length`` steps;
    ``info["unlocked"]`` lists the achievements unlocked by the step."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 10000, area: tuple[int, int] = (64, 64)):
        self.length, self.area = int(length), tuple(area)
        self.env: Any = None
        self.observation_space = gym.spaces.Dict({
            "view": gym.spaces.Box(0, len(KINDS) - 1, VIEW, np.int64),
            "inventory": gym.spaces.Box(0, 9, (len(INVENTORY),), np.int64),
            "achievements": gym.spaces.MultiBinary(len(ACHIEVEMENTS)),
            "facing": gym.spaces.Discrete(4),
        })
        self.action_space = gym.spaces.Discrete(len(ACTIONS))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import crafter

        stable_object_hashes()  # the same seed and actions give the same episode
        super().reset(seed=seed)
        if self.env is None or seed is not None:
            world_seed = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
            self.env = crafter.Env(area=self.area, length=self.length, seed=world_seed)
        self.env.reset()
        return self._observation(), {"unlocked": []}

    def step(self, action: Any):
        _, reward, done, info = self.env.step(int(action))
        before = set(np.asarray(ACHIEVEMENTS)[np.asarray(self._last_achievements, bool)])
        obs = self._observation()
        now = {a for a, v in info["achievements"].items() if v > 0}
        terminated = info["inventory"]["health"] <= 0
        info = {"unlocked": sorted(now - before), "achievements": sorted(now),
                "inventory": dict(info["inventory"])}
        return obs, float(reward), bool(terminated), bool(done and not terminated), info

    def render(self) -> np.ndarray:
        """The game's own picture (local view and inventory), 256 x 256 RGB."""
        return np.asarray(self.env.render((256, 256)), np.uint8)

    def _observation(self) -> dict:
        player = self.env._player
        sem = self.env._sem_view()
        x, y = (int(v) for v in player.pos)
        w, h = VIEW
        view = np.zeros(VIEW, np.int64)
        for i in range(w):
            for j in range(h):
                px, py = x - w // 2 + i, y - h // 2 + j
                if 0 <= px < sem.shape[0] and 0 <= py < sem.shape[1]:
                    view[i, j] = sem[px, py]
        self._last_achievements = np.asarray(
            [player.achievements.get(a, 0) > 0 for a in ACHIEVEMENTS], np.int8)
        return {
            "view": view,
            "inventory": np.asarray([player.inventory.get(k, 0) for k in INVENTORY], np.int64),
            "achievements": self._last_achievements.copy(),
            "facing": HEADINGS.index(FACING[tuple(int(v) for v in player.facing)]),
        }


def _steps(dx: int, dy: int) -> str:
    parts = [f"{abs(dx)} {'left' if dx < 0 else 'right'}" if dx else "",
             f"{abs(dy)} {'up' if dy < 0 else 'down'}" if dy else ""]
    return " ".join(p for p in parts if p) or "here"


def crafter_json(obs: dict, max_entities: int = 8) -> dict:
    """Structured form: vitals, inventory, facing, nearby things (the nearest of each kind,
    nearest first, at most ``max_entities``) and achievements so far."""
    view = np.asarray(obs["view"])
    inv = dict(zip(INVENTORY, (int(v) for v in np.asarray(obs["inventory"])), strict=True))
    cx, cy = VIEW[0] // 2, VIEW[1] // 2
    heading = HEADINGS[int(obs["facing"])]
    fx, fy = next(k for k, v in FACING.items() if v == heading)
    nearest: dict[str, tuple[int, int, int]] = {}
    for i in range(VIEW[0]):
        for j in range(VIEW[1]):
            kind = KINDS[int(view[i, j])]
            if kind in BACKGROUND:
                continue
            dx, dy = i - cx, j - cy
            d = abs(dx) + abs(dy)
            if kind not in nearest or d < nearest[kind][0]:
                nearest[kind] = (d, dx, dy)
    near = sorted(nearest.items(), key=lambda kv: (kv[1][0], kv[0]))[:max_entities]
    return {
        "vitals": {k: inv[k] for k in INVENTORY[:4]},
        "inventory": {k: v for k, v in inv.items() if k not in INVENTORY[:4] and v > 0},
        "facing": {"direction": heading, "target": KINDS[int(view[cx + fx, cy + fy])]},
        "nearby": [{"kind": k, "dx": dx, "dy": dy, "distance": d} for k, (d, dx, dy) in near],
        "achievements": [a for a, v in zip(ACHIEVEMENTS, np.asarray(obs["achievements"]),
                                           strict=True) if v],
    }


ACHIEVEMENT_TEXT = ("names", "count")


def encode_crafter(obs: dict, max_entities: int = 8, achievements: str = "names") -> str:
    """Compact text of :func:`crafter_json`. ``achievements``: ``names`` lists those unlocked
    so far (up to ~100 tokens late in an episode), ``count`` gives their number (2 tokens; the
    inventory shows the tools made)."""
    j = crafter_json(obs, max_entities)
    vit = ", ".join(f"{k} {v}" for k, v in j["vitals"].items())
    inv = ", ".join(f"{k} {v}" for k, v in j["inventory"].items()) or "nothing"
    near = "; ".join(f"{n['kind']} {_steps(n['dx'], n['dy'])}" for n in j["nearby"]) or "nothing"
    if achievements == "count":
        ach = f"{len(j['achievements'])} of {len(ACHIEVEMENTS)}"
    else:
        ach = ", ".join(j["achievements"]) or "none"
    return (f"{vit.capitalize()}. Inventory: {inv}. Facing {j['facing']['target']} "
            f"({j['facing']['direction']}). Nearby: {near}. Achievements: {ach}.")


def crafter_extras(info: dict) -> dict:
    """The typed trajectory columns from a step's ``info``."""
    return {"achievements_unlocked": list(info.get("unlocked", [])),
            "achievement_count": len(info.get("achievements", []))}


def crafter_adapter(env_id: str = "Crafter", *, length: int = 10000, max_entities: int = 8,
                    area: tuple[int, int] = (64, 64), achievements: str = "names") -> EnvAdapter:
    """Adapter for ``Crafter`` (``crafter`` package); ``length`` caps an episode's steps,
    ``achievements`` (``names`` or ``count``) is how the text gives those unlocked."""
    try:
        import crafter  # noqa: F401
    except ImportError as err:
        raise ValueError("Crafter needs the crafter package: pip install 'policylm[envs]'") \
            from err
    if achievements not in ACHIEVEMENT_TEXT:
        raise ValueError(f"Crafter env option achievements={achievements!r}: give one of "
                         f"{', '.join(ACHIEVEMENT_TEXT)} (names lists the unlocked ones, count "
                         "gives their number)")

    def make() -> gym.Env:
        return CrafterEnv(length=length, area=area)

    return probed_adapter(
        env_id,
        make,
        encode=lambda obs: encode_crafter(obs, max_entities, achievements),
        to_json=lambda obs: crafter_json(obs, max_entities),
        codec=NamedDiscreteCodec(list(ACTIONS)),
        rules=RULES,
        extra_fields=list(EXTRA_FIELDS),
        info_extras=crafter_extras,
        text_options={"max_entities": max_entities, "achievements": achievements},
    )


def crafter_score(success_rates: dict[str, float]) -> float:
    """The Crafter score (Hafner, 2021): ``exp(mean_i ln(1 + s_i)) - 1`` over the 22
    achievements, ``s_i`` the percentage of episodes that unlocked achievement i (given here as
    fractions in [0, 1]; missing achievements count as 0). In percent."""
    unknown = set(success_rates) - set(ACHIEVEMENTS)
    if unknown:
        raise ValueError(f"unknown Crafter achievements {sorted(unknown)}")
    s = np.asarray([100.0 * float(success_rates.get(a, 0.0)) for a in ACHIEVEMENTS])
    if np.any((s < 0) | (s > 100)):
        raise ValueError("success rates must be fractions in [0, 1]")
    return float(np.exp(np.mean(np.log1p(s))) - 1.0)
