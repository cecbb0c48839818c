"""MettaGrid (the ``mettagrid`` package): the multi-agent arena as text.

The env is ``mettagrid.builder.envs.make_arena(num_agents)`` with heart pickups added: in
mettagrid 0.26 the arena holds only walls, so no agent could earn its reward (hearts in the
inventory). A heart is an object holding one heart; walking into it moves the heart into the
agent's inventory (reward 1) and removes it. The map is drawn from the episode seed, so the same
seed gives the same arena.

Each agent's observation is MettaGrid's token array ``[num_tokens, 3]`` (packed location,
feature id, value; location 0xFE marks global tokens, 0xFF unused slots) plus the agent's
position on the map. :class:`TokenDecoder` turns tokens into facts with the env's own feature
names (``PolicyEnvInterface.obs_features`` and ``tags``): the agent's state (inventory, last
action and reward, episode progress, position) and the visible entities, nearest first, capped
at ``max_entities``. Text is compact (``hearts 1 | last move_north r0 | blocked N W | heart 2N 1E
...``); JSON keeps the same facts. Actions are ``PolicyEnvInterface.action_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from policylm.platform.envs.adapter import EnvAdapter
from policylm.platform.envs.codecs import NamedDiscreteCodec
from policylm.platform.policy import Policy

GLOBAL, EMPTY = 0xFE, 0xFF
STEPS = {"N": (-1, 0), "S": (1, 0), "W": (0, -1), "E": (0, 1)}
MOVES = {"N": "move_north", "S": "move_south", "W": "move_west", "E": "move_east"}
RULES = (
    "MettaGrid arena: many agents share a walled map. Walk into a heart to collect it (reward 1 "
    "per heart). You see a 13x13 area around you. Offsets read 2N 1E = 2 steps north, 1 east; "
    "'blocked' lists the directions you cannot move. Actions: noop and move_north/south/west/east."
)


def unpack(location: int) -> tuple[int, int] | None:
    """``(row, col)`` of a packed token location (row in the high nibble), ``None`` for global
    or unused tokens."""
    if location >= GLOBAL:
        return None
    return location >> 4, location & 0x0F


def offset_text(dr: int, dc: int) -> str:
    """``2N 1E`` for 2 rows up and 1 column right; ``here`` for no offset."""
    parts = ([f"{abs(dr)}{'N' if dr < 0 else 'S'}"] if dr else []) + \
            ([f"{abs(dc)}{'W' if dc < 0 else 'E'}"] if dc else [])
    return " ".join(parts) or "here"


@dataclass
class TokenDecoder:
    """Decodes one agent's token observation with the env's feature and tag names.

    ``features``: feature id -> name (``inv:heart``, ``tag``, ``agent_id`` ...); ``tags``: tag
    index -> name (``type:wall`` ...); ``view``: (rows, cols) of the egocentric window, the agent
    at its centre; ``actions``: action names (for the ``last_action`` token)."""

    features: dict[int, str]
    tags: list[str]
    view: tuple[int, int] = (13, 13)
    actions: list[str] = field(default_factory=list)
    max_entities: int = 8
    # the last observation's cells: a step's text, JSON and vector all decode the same tokens
    _memo: tuple[bytes, tuple] | None = field(default=None, init=False, repr=False,
                                              compare=False)

    @classmethod
    def from_interface(cls, interface: Any, max_entities: int = 8) -> TokenDecoder:
        """From a ``PolicyEnvInterface`` (the adapter's ``env_info``)."""
        return cls({f.id: f.name for f in interface.obs_features}, list(interface.tags),
                   tuple(interface.egocentric_shape), list(interface.action_names), max_entities)

    @property
    def center(self) -> tuple[int, int]:
        return self.view[0] // 2, self.view[1] // 2

    def cells(self, tokens: np.ndarray) -> tuple[dict[str, int], dict[tuple[int, int], dict]]:
        """``(globals, cells)``: global feature values by name, and per visible (row, col) the
        feature values there by name. Read-only: the last result is reused for the same
        tokens."""
        arr = np.asarray(tokens).reshape(-1, 3)
        key = arr.tobytes()
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        globals_: dict[str, int] = {}
        cells: dict[tuple[int, int], dict] = {}
        for loc, fid, value in arr[arr[:, 0] != EMPTY].tolist():
            if fid not in self.features:
                continue
            name = self.features[fid]
            where = unpack(loc)
            if where is None:
                globals_[name] = int(value)
            elif where[0] < self.view[0] and where[1] < self.view[1]:
                cells.setdefault(where, {})[name] = int(value)
        self._memo = (key, (globals_, cells))
        return globals_, cells

    def kind(self, cell: dict) -> str:
        tag = cell.get("tag")
        if tag is None or not 0 <= tag < len(self.tags):
            return "unknown"
        return self.tags[tag].removeprefix("type:")

    def decode(self, obs: dict) -> dict:
        """The JSON form: ``agent`` (id, group, position, inventory, last action and reward,
        episode progress in percent) and ``entities`` (type, row/col offset, distance; agents
        with their id), nearest first, at most ``max_entities``, plus ``blocked`` directions."""
        globals_, cells = self.cells(obs["tokens"])
        me = cells.get(self.center, {})
        inventory = {k.removeprefix("inv:"): v for k, v in me.items()
                     if k.startswith("inv:") and ":p" not in k and v}
        last = globals_.get("last_action")
        agent = {
            "id": me.get("agent_id"), "group": me.get("agent:group"),
            "position": [int(x) for x in obs.get("position", (-1, -1))],
            "inventory": inventory,
            "last_action": self.actions[last] if last is not None and last < len(self.actions)
            else last,
            "last_reward": globals_.get("last_reward", 0),
            "episode_pct": round(globals_.get("episode_completion_pct", 0) * 100 / 255, 1),
        }
        cr, cc = self.center
        entities = []
        for (r, c), cell in cells.items():
            if (r, c) == self.center:
                continue
            e: dict[str, Any] = {"type": self.kind(cell), "dr": r - cr, "dc": c - cc,
                                 "distance": abs(r - cr) + abs(c - cc)}
            if "agent_id" in cell:
                e["agent_id"] = cell["agent_id"]
            entities.append(e)
        entities.sort(key=lambda e: (e["distance"], e["dr"], e["dc"]))
        blocked = [d for d, (dr, dc) in STEPS.items()
                   if self.kind(cells.get((cr + dr, cc + dc), {"tag": -1})) in ("wall", "agent")]
        shown = [e for e in entities if e["type"] != "wall"][: self.max_entities]
        return {"agent": agent, "blocked": blocked, "entities": shown}

    def text(self, obs: dict) -> str:
        """Compact text: ``hearts 1 | last move_north r0 | blocked N W | heart 2N 1E, agent#3
        1S``."""
        j = self.decode(obs)
        a = j["agent"]
        inv = " ".join(f"{k} {v}" for k, v in sorted(a["inventory"].items())) or "hearts 0"
        if "heart" in a["inventory"]:
            inv = inv.replace("heart ", "hearts ", 1)
        seen = ", ".join(
            (f"agent#{e['agent_id']}" if e["type"] == "agent" and "agent_id" in e else e["type"])
            + " " + offset_text(e["dr"], e["dc"]) for e in j["entities"]) or "nothing"
        return (f"{inv} | last {a['last_action']} r{a['last_reward']} | blocked "
                f"{' '.join(j['blocked']) or '-'} | {seen}")

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """The view as type codes ``[rows, cols]`` (0 nothing, 1 + tag index)."""
        out = np.zeros(self.view, dtype=np.float32)
        for (r, c), cell in self.cells(tokens)[1].items():
            if "tag" in cell:
                out[r, c] = 1 + cell["tag"]
        return out

    def flatten(self, obs: dict) -> np.ndarray:
        """Float vector: the view's type codes, then hearts held, last reward, episode progress
        (0-1) and the map position (row, col)."""
        globals_, cells = self.cells(obs["tokens"])
        me = cells.get(self.center, {})
        pos = [float(x) for x in obs.get("position", (-1, -1))]
        tail = [me.get("inv:heart", 0), globals_.get("last_reward", 0),
                globals_.get("episode_completion_pct", 0) / 255, *pos]
        return np.concatenate([self.grid(obs["tokens"]).reshape(-1),
                               np.asarray(tail, dtype=np.float32)])


def arena_config(num_agents: int = 24, hearts: int = 100, max_steps: int = 40,
                 width: int = 31, height: int = 31, walls: int = 10, combat: bool = False) -> Any:
    """``make_arena(num_agents, combat)`` with ``hearts`` heart pickups, ``max_steps`` per
    episode and a ``width`` x ``height`` inner map."""
    from mettagrid.builder.envs import make_arena
    from mettagrid.config.handler_config import Handler, withdraw
    from mettagrid.config.mettagrid_config import GridObjectConfig, InventoryConfig

    cfg = make_arena(num_agents=num_agents, combat=combat)
    cfg.game.max_steps = max_steps
    cfg.game.objects["heart"] = GridObjectConfig(
        name="heart", inventory=InventoryConfig(initial={"heart": 1}),
        on_use_handler=Handler(mutations=[withdraw({"heart": 1}, remove_when_empty=True)]))
    builder = cfg.game.map_builder
    builder.width, builder.height = width, height
    builder.instance.objects = {"wall": walls, "heart": hearts}
    return cfg


class ArenaEnv:
    """A MettaGrid game for all its agents at once (not a single-agent Gymnasium env):
    ``reset(seed) -> (observations, info)``, ``step(actions) -> (observations, rewards,
    terminated, truncated, info)`` with one entry per agent; an observation is ``{"tokens":
    uint8[num_tokens, 3], "position": (row, col)}``. Episodes end for every agent together, at
    ``max_steps`` (``truncated``; mettagrid itself reports it as terminal)."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, config: Any):
        from mettagrid.policy.policy_env_interface import PolicyEnvInterface

        self.config = config
        self.interface = PolicyEnvInterface.from_mg_cfg(config)
        self.num_agents = int(config.game.num_agents)
        self.max_steps = int(config.game.max_steps)
        self.action_space = gym.spaces.Discrete(len(self.interface.action_names))
        self.sim: Any = None

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[list[dict], dict]:
        from mettagrid.simulator import Simulator

        if self.sim is not None:
            self.sim.close()
        seed = 0 if seed is None else int(seed)
        cfg = self.config.model_copy(deep=True)
        cfg.game.map_builder.seed = seed  # a fresh simulator: the map seed is exactly this
        self.sim = Simulator().new_simulation(cfg, seed=seed)
        self._action_ids = [self.sim.action_ids[n] for n in self.interface.action_names]
        return self._observations(), {}

    def _observations(self) -> list[dict]:
        tokens = np.array(self.sim._c_sim.observations(), copy=True)
        where = self.sim._agent_locations()
        return [{"tokens": tokens[i], "position": tuple(where[i]) if i in where else (-1, -1)}
                for i in range(self.num_agents)]

    def step(self, actions: Any) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray, dict]:
        acts = np.asarray(actions, dtype=np.int64).reshape(-1)
        if acts.shape[0] != self.num_agents:
            raise ValueError(f"step needs {self.num_agents} actions, got {acts.shape[0]}")
        if acts.min() < 0 or acts.max() >= len(self._action_ids):
            raise ValueError(f"actions must be in 0..{len(self._action_ids) - 1}, got {acts}")
        buffer = self.sim._c_sim.actions()
        buffer[:] = np.asarray(self._action_ids)[acts]
        self.sim.step()
        c = self.sim._c_sim
        term = np.asarray(c.terminals(), dtype=bool).copy()
        trunc = np.asarray(c.truncations(), dtype=bool).copy()
        if self.sim.current_step >= self.max_steps:  # mettagrid ends the time limit as a
            trunc, term = trunc | term, np.zeros_like(term)  # terminal; it is a truncation
        return (self._observations(), np.asarray(c.rewards(), dtype=np.float64).copy(),
                term, trunc, {})

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def mettagrid_adapter(env_id: str = "MettaGrid-Arena", *, num_agents: int = 24,
                      hearts: int = 100, max_steps: int = 40, width: int = 31, height: int = 31,
                      walls: int = 10, max_entities: int = 8) -> EnvAdapter:
    """The arena adapter (see module docstring); ``num_agents`` agents act each step."""
    try:
        config = arena_config(num_agents, hearts, max_steps, width, height, walls)
    except ImportError as err:
        raise ImportError(f"{env_id} needs the mettagrid package: pip install "
                          "'policylm[envs]' (or pip install mettagrid)") from err
    probe = ArenaEnv(config)
    pei = probe.interface
    decoder = TokenDecoder.from_interface(pei, max_entities)
    obs_space = gym.spaces.Dict({
        "tokens": gym.spaces.Box(0, 255, tuple(pei.observation_shape), np.uint8),
        "position": gym.spaces.Box(0, 255, (2,), np.int64)})
    return EnvAdapter(
        env_id=env_id, make_env=lambda: ArenaEnv(config), observation_space=obs_space,
        action_space=probe.action_space, encode=decoder.text, to_json=decoder.decode,
        codec=NamedDiscreteCodec(list(pei.action_names)), rules=RULES,
        flatten_obs=decoder.flatten, num_agents=num_agents, env_info=pei,
        policy_obs=lambda o: o["tokens"], text_options={"max_entities": max_entities})


class HeartSeeker(Policy):
    """Scripted arena agent: walks the shortest free path (walls and agents block) to the
    nearest visible heart; with none in view it keeps a heading and turns when blocked. With
    ``eps`` it takes a random action instead (skill diversity: eps 0 expert, 0.5 medium).
    ``python:policylm.platform.envs.mettagrid:HeartSeeker?eps=0.5``."""

    def __init__(self, adapter: EnvAdapter, eps: float | str = 0.0):
        self.eps = float(eps)
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1], got {eps}")
        if adapter.env_info is None or not hasattr(adapter.env_info, "obs_features"):
            raise ValueError(f"HeartSeeker plays the MettaGrid arena, not {adapter.env_id}")
        self.decoder = TokenDecoder.from_interface(adapter.env_info)
        self.names = list(adapter.codec.valid_actions or [])
        self.rngs: dict[int, np.random.Generator] = {}
        self.heading: dict[int, str] = {}

    def reset(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng(seed)
        self.heading[slot] = "NSWE"[int(self.rngs[slot].integers(4))]

    def act(self, observations: list[dict], slots: list[int]) -> list[int]:
        out = []
        for obs, slot in zip(observations, slots, strict=True):
            if slot not in self.rngs:
                self.reset(slot, slot)
            rng = self.rngs[slot]
            if rng.random() < self.eps:
                out.append(int(rng.integers(len(self.names))))
                continue
            out.append(self.names.index(MOVES[self.plan(obs, slot)]))
        return out

    def plan(self, obs: dict, slot: int) -> str:
        """The first step (N/S/W/E) toward the nearest reachable heart, else the heading."""
        _, cells = self.decoder.cells(obs["tokens"])
        start = self.decoder.center
        kinds = {rc: self.decoder.kind(cell) for rc, cell in cells.items() if rc != start}
        rows, cols = self.decoder.view
        first: dict[tuple[int, int], str] = {start: ""}
        frontier = [start]
        while frontier:
            nxt = []
            for r, c in frontier:
                for d, (dr, dc) in STEPS.items():
                    rc = (r + dr, c + dc)
                    if rc in first or not (0 <= rc[0] < rows and 0 <= rc[1] < cols):
                        continue
                    kind = kinds.get(rc)
                    if kind == "heart":
                        return first[(r, c)] or d
                    if kind in ("wall", "agent", "unknown"):
                        continue
                    first[rc] = first[(r, c)] or d
                    nxt.append(rc)
            frontier = nxt
        heading = self.heading[slot]
        dr, dc = STEPS[heading]
        if kinds.get((start[0] + dr, start[1] + dc)) in ("wall", "agent", "unknown"):
            free = [d for d, (a, b) in STEPS.items()
                    if kinds.get((start[0] + a, start[1] + b)) is None] or list(STEPS)
            heading = free[int(self.rngs[slot].integers(len(free)))]
            self.heading[slot] = heading
        return heading
