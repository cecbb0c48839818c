"""The planner behind the scripted Crafter demonstrator (:mod:`policylm.platform.envs.crafter_bot`).

It reads a ``crafter.Env``'s world state (materials, objects, the player's inventory and
achievements) and returns one action per step. Paths come from a Dijkstra search over the whole
map from the player: grass, sand and path cost one step; a tree, or stone, coal, iron or diamond
the current pickaxes can mine, costs two (``do``, then step in); water, lava, tables, furnaces
and creatures block. Goals are tried in priority order: hit an adjacent zombie or skeleton;
sleep when energy is low (sealed in a two-cell pocket dug into stone when it can); drink and eat
when low; then the tech tree (wood, table, wood tools, sapling and plant, stone, stone tools,
coal, furnace, iron, iron tools, diamond), hunting a zombie and a skeleton, and a guarded plant
to eat when it ripens. Rules (recipes, what mines what) come from ``crafter.constants``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from crafter import constants, objects

from policylm.platform.envs.crafter import ACTIONS

A = {name: i for i, name in enumerate(ACTIONS)}
DIRS = [(-1, 0), (1, 0), (0, -1), (0, 1)]  # the directions of move_left/right/up/down
MOVES = [A["move_left"], A["move_right"], A["move_up"], A["move_down"]]
WALK = tuple(constants.walkable)  # where the player, cows and zombies may stand
# what each mineable material needs (water and grass are collected without being removed)
MINE = {m: tuple(info["require"]) for m, info in constants.collect.items()
        if m not in ("water", "grass")}
TOOLS = {"wood": ["wood_pickaxe", "wood_sword", "stone_pickaxe", "stone_sword", "iron_pickaxe",
                  "iron_sword"],
         "stone": ["stone_pickaxe", "stone_sword"]}
INF = 1 << 30
GIVE_UP = 150  # steps one goal may be pursued before it rests
REST = 250  # steps a goal that gave up is skipped

Pos = tuple[int, int]


def _add(p: Pos, d: Pos, k: int = 1) -> Pos:
    return p[0] + k * d[0], p[1] + k * d[1]


class Snapshot:
    """One step's view of the world: material names per cell, objects by cell, the player."""

    def __init__(self, env: Any):
        world, player = env._world, env._player
        self.world, self.player = world, player
        names = np.asarray([world._mat_names[i] or "none" for i in range(len(world._mat_names))])
        self.mat = names[world._mat_map]  # [x, y] -> material name
        self.size = self.mat.shape
        self.pos: Pos = (int(player.pos[0]), int(player.pos[1]))
        self.facing: Pos = (int(player.facing[0]), int(player.facing[1]))
        self.inv, self.ach = player.inventory, player.achievements
        self.objs = {(int(o.pos[0]), int(o.pos[1])): o for o in world.objects}
        # zombies spawn on grass as the light falls: evening to morning, steps 120-285 of each 300
        self.dark = 0.4 <= (env._step / 300) % 1 < 0.95
        self.walk = np.isin(self.mat, WALK)
        self.free = self.walk.copy()
        for p in self.objs:
            self.free[p] = False
        self.free[self.pos] = True
        self.dist, self.parent = self._dijkstra()

    def inside(self, p: Pos) -> bool:
        return 0 <= p[0] < self.size[0] and 0 <= p[1] < self.size[1]

    def mineable(self, material: str) -> bool:
        return material in MINE and all(self.inv[t] > 0 for t in MINE[material])

    def mask(self, *materials: str) -> np.ndarray:
        return np.isin(self.mat, materials)

    def kind(self, cls: type) -> list[Pos]:
        return [p for p, o in self.objs.items() if isinstance(o, cls)]

    def near(self, cls: type, radius: int) -> list[Pos]:
        """Objects of ``cls`` within ``radius`` steps (Manhattan) of the player."""
        x, y = self.pos
        return [p for p in self.kind(cls) if abs(p[0] - x) + abs(p[1] - y) <= radius]

    def _dijkstra(self) -> tuple[np.ndarray, np.ndarray]:
        cost = np.where(self.free, 1, 0)
        for m in MINE:
            if self.mineable(m):
                cost[self.mat == m] = 2
        for p in self.objs:
            if p != self.pos:
                cost[p] = 0
        w, h = self.size
        flat, start = cost.ravel().tolist(), self.pos[0] * h + self.pos[1]
        dist, parent = [INF] * (w * h), [-1] * (w * h)
        dist[start] = 0
        heap = [(0, start)]
        while heap:
            d, i = heapq.heappop(heap)
            if d > dist[i]:
                continue
            x, y = divmod(i, h)
            for j, ok in ((i - h, x > 0), (i + h, x < w - 1), (i - 1, y > 0), (i + 1, y < h - 1)):
                if ok and flat[j] and d + flat[j] < dist[j]:
                    dist[j], parent[j] = d + flat[j], i
                    heapq.heappush(heap, (d + flat[j], j))
        return np.asarray(dist).reshape(w, h), np.asarray(parent)

    def step_toward(self, goal: Pos) -> int:
        """The first action on the searched path to ``goal``: a move, or ``do`` to mine a cell
        the path goes through (after turning to it)."""
        h = self.size[1]
        i, start = goal[0] * h + goal[1], self.pos[0] * h + self.pos[1]
        while self.parent[i] != start:
            i = int(self.parent[i])
        nxt = divmod(i, h)
        d = (nxt[0] - self.pos[0], nxt[1] - self.pos[1])
        if not self.free[nxt] and self.facing == d:
            return A["do"]
        return MOVES[DIRS.index(d)]


def shift(mask: np.ndarray, d: Pos) -> np.ndarray:
    """``out[p] = mask[p + d]`` (False beyond the edge)."""
    out = np.zeros_like(mask)
    w, h = mask.shape
    dx, dy = d
    out[max(0, -dx):w - max(0, dx), max(0, -dy):h - max(0, dy)] = \
        mask[max(0, dx):w - max(0, -dx), max(0, dy):h - max(0, -dy)]
    return out


def around(mask: np.ndarray) -> np.ndarray:
    """Cells whose 3x3 neighbourhood holds a cell of ``mask`` (crafter's ``nearby`` radius 1)."""
    out = mask.copy()
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            out |= shift(mask, (dx, dy))
    return out


class Planner:
    """Chooses each step's action for one episode from a :class:`Snapshot`."""

    def __init__(self) -> None:
        self.shelter: tuple[Pos, Pos] | None = None  # (entrance, direction) of the pocket
        self.topping: str | None = None  # "drink" or "food" while refilling it to full
        self.plant: Pos | None = None  # the guarded sapling
        self.goal, self.goal_steps, self.progress = "", 0, (0, 0)
        self.resting: dict[str, int] = {}  # goal -> step it may be tried again
        self.t = 0

    def act(self, env: Any) -> int:
        """The action for ``env``'s current state."""
        self.t += 1
        s = Snapshot(env)
        if s.player.sleeping:
            return A["sleep"]  # what the env plays while the player sleeps, whatever it is given
        progress = (sum(s.ach.values()), sum(v for k, v in s.inv.items() if k != "health"))
        for name, goal in self._goals(s):
            if self.resting.get(name, 0) > self.t:
                continue
            action = goal()
            if action is None:
                continue
            if name != self.goal or progress != self.progress:
                self.goal, self.progress, self.goal_steps = name, progress, 0
            self.goal_steps += 1
            if self.goal_steps > GIVE_UP and name not in ("fight", "sleep", "garden"):
                self.resting[name] = self.t + REST  # stuck: try the other goals a while
            return action
        return A["noop"]

    def _goals(self, s: Snapshot) -> list[tuple[str, Callable[[], int | None]]]:
        """(name, plan) in priority order; a plan returns None when it has nothing to do."""
        inv, ach = s.inv, s.ach
        tables = around(s.mask("table"))

        def when(cond: bool, plan: Callable[[], int | None]) -> Callable[[], int | None]:
            return plan if cond else lambda: None

        def grass(p: Pos, t: Pos) -> bool:
            return s.mat[t] == "grass" and t not in s.objs

        return [
            ("fight", lambda: self._fight(s)),
            ("sleep", lambda: self._sleep(s)),
            ("drink", lambda: self._refill(s, "drink", s.mask("water"), 4)),
            ("food", lambda: self._refill(s, "food", self._cows(s), 4)),
            ("first_drink", when(not ach["collect_drink"],
                                 lambda: self._interact(s, s.mask("water"), limit=12))),
            ("first_cow", when(not ach["eat_cow"],
                               lambda: self._interact(s, self._cows(s), limit=12))),
            ("wood", when(inv["wood"] < self._wood_need(s),
                          lambda: self._interact(s, s.mask("tree")))),
            ("table", when(not ach["place_table"], lambda: self._place(s, "table"))),
            ("wood_pickaxe", when(not inv["wood_pickaxe"],
                                  lambda: self._make(s, "wood_pickaxe"))),
            ("wood_sword", when(not inv["wood_sword"], lambda: self._make(s, "wood_sword"))),
            ("sapling", when(not ach["collect_sapling"] and not inv["sapling"],
                             lambda: self._face(s, grass, A["do"]))),
            ("plant", when(inv["sapling"] > 0 and not ach["place_plant"],
                           lambda: self._place(s, "plant"))),
            ("more_wood", when(inv["wood"] < min(9, self._wood_need(s) + 2),
                               lambda: self._interact(s, s.mask("tree"), limit=10))),
            ("stone", when(inv["wood_pickaxe"] > 0 and inv["stone"] < self._stone_need(s),
                           lambda: self._interact(s, s.mask("stone")))),
            ("place_stone", when(inv["stone"] > 0 and not ach["place_stone"],
                                 lambda: self._place(s, "stone"))),
            ("stone_pickaxe", when(not inv["stone_pickaxe"],
                                   lambda: self._make(s, "stone_pickaxe"))),
            ("stone_sword", when(not inv["stone_sword"], lambda: self._make(s, "stone_sword"))),
            ("furnace", when(not ach["place_furnace"], lambda: self._place(
                s, "furnace", near="table" if s.dist[tables].min(initial=INF) <= 12 else None))),
            ("coal", when(inv["wood_pickaxe"] > 0 and inv["coal"] < self._iron_tools_left(s),
                          lambda: self._interact(s, s.mask("coal")))),
            ("iron", when(inv["stone_pickaxe"] > 0 and inv["iron"] < self._iron_tools_left(s),
                          lambda: self._interact(s, s.mask("iron")))),
            ("iron_pickaxe", when(not inv["iron_pickaxe"],
                                  lambda: self._make(s, "iron_pickaxe"))),
            ("iron_sword", when(not inv["iron_sword"], lambda: self._make(s, "iron_sword"))),
            ("plant_guarded", when(bool(inv["stone_sword"]), lambda: self._garden(s, wait=False))),
            ("diamond", when(inv["iron_pickaxe"] > 0 and not ach["collect_diamond"],
                             lambda: self._interact(s, s.mask("diamond")))),
            ("hunt", lambda: self._hunt(s)),
            ("last_wood", when(inv["wood"] < self._wood_need(s),
                               lambda: self._interact(s, s.mask("tree")))),
            ("garden", lambda: self._garden(s, wait=True)),
        ]

    # --- primitives -----------------------------------------------------------------------

    def _interact(self, s: Snapshot, targets: np.ndarray, action: int = A["do"],
                  limit: int = INF) -> int | None:
        """Walk next to the nearest cell of ``targets``, face it and take ``action``."""
        for d in [s.facing, *DIRS]:
            t = _add(s.pos, d)
            if s.inside(t) and targets[t] and s.mat[t] != "lava":
                return action if d == s.facing else MOVES[DIRS.index(d)]
        stand = np.zeros_like(targets)
        for d in DIRS:
            stand |= shift(targets, d)
        dist = np.where(stand, s.dist, INF)
        best = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if dist[best] >= min(limit, INF):
            return None
        return s.step_toward((int(best[0]), int(best[1])))

    def _face(self, s: Snapshot, ok: Callable[[Pos, Pos], bool], action: int,
              depth: int = 14) -> int | None:
        """Search (position, facing) states near the player for one where ``ok(pos, facing
        cell)`` holds; take ``action`` there, else the first move toward it."""
        start = (s.pos, s.facing)
        seen = {start: -1}
        queue = deque([(start, 0)])
        while queue:
            (p, f), n = queue.popleft()
            t = _add(p, f)
            if s.inside(t) and ok(p, t):
                return action if n == 0 else seen[(p, f)]
            if n >= depth:
                continue
            for k, d in enumerate(DIRS):
                q = _add(p, d)
                if not s.inside(q) or s.mat[q] == "lava":
                    continue
                nxt = (q, d) if s.free[q] else (p, d)
                if nxt not in seen:
                    seen[nxt] = MOVES[k] if n == 0 else seen[(p, f)]
                    queue.append((nxt, n + 1))
        return None

    def _place(self, s: Snapshot, name: str, near: str | None = None) -> int | None:
        """Place ``name`` on a cell it may go (next to a ``near`` station if given)."""
        info = constants.place[name]
        if any(s.inv[k] < v for k, v in info["uses"].items()):
            return None
        close = around(s.mask(near)) if near else None

        def ok(p: Pos, t: Pos) -> bool:
            return (s.mat[t] in info["where"] and t not in s.objs and t != s.pos
                    and (close is None or bool(close[p])))
        return self._face(s, ok, A[f"place_{name}"])

    def _make(self, s: Snapshot, name: str, limit: int = 25) -> int | None:
        """Make ``name`` next to its stations: walk to them if near, else place them."""
        info = constants.make[name]
        if any(s.inv[k] < v for k, v in info["uses"].items()):
            return None
        stand = s.free.copy()
        for station in info["nearby"]:
            stand &= around(s.mask(station))
        if stand[s.pos]:
            return A[f"make_{name}"]
        dist = np.where(stand, s.dist, INF)
        best = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if dist[best] <= limit:
            return s.step_toward((int(best[0]), int(best[1])))
        tables = around(s.mask("table"))
        if "table" in info["nearby"] and not tables[s.pos]:
            spare = constants.place["table"]["uses"]["wood"] + info["uses"].get("wood", 0)
            if s.inv["wood"] < spare:
                return None
            return self._place(s, "table")
        if "furnace" in info["nearby"]:
            return self._place(s, "furnace", near="table")
        return None

    # --- goals, in priority order ----------------------------------------------------------

    def _fight(self, s: Snapshot) -> int | None:
        for d in DIRS:
            if isinstance(s.objs.get(_add(s.pos, d)), (objects.Zombie, objects.Skeleton)):
                return A["do"] if d == s.facing else MOVES[DIRS.index(d)]
        return None

    def _sealed(self, s: Snapshot) -> bool:
        """The player's walkable pocket is at most 4 cells and holds no zombie or skeleton."""
        seen, queue = {s.pos}, deque([s.pos])
        while queue:
            p = queue.popleft()
            if isinstance(s.objs.get(p), (objects.Zombie, objects.Skeleton)):
                return False
            for d in DIRS:
                q = _add(p, d)
                if s.inside(q) and s.walk[q] and q not in seen:
                    seen.add(q)
                    queue.append(q)
                    if len(seen) > 4:
                        return False
        return True

    def _sleep(self, s: Snapshot) -> int | None:
        """Sleep when tired, and spend the night sealed in a pocket (asleep while energy is
        below full); the first sleep (for ``wake_up``) may be in the open by day."""
        inv = s.inv
        first = not s.ach["wake_up"] and inv["energy"] < 9 and not s.near(objects.Zombie, 12)
        sealed = self._sealed(s)
        crowd = bool(s.near(objects.Zombie, 5))  # wait in the pocket until they wander off
        want = inv["energy"] <= 3 or s.dark or inv["health"] <= 3 or first or (sealed and crowd)
        if min(inv["drink"], inv["food"]) <= (1 if sealed and crowd else 2) or not want:
            self.shelter = None
            return None
        for what, targets in (("drink", s.mask("water")), ("food", self._cows(s))):
            if not sealed and (inv[what] <= 6 or self.topping == what) and inv[what] < 9:
                action = self._interact(s, targets, limit=25)  # fill up before the night
                self.topping = what if action is not None else None
                if action is not None:
                    return action
        if sealed:
            return A["sleep"] if inv["energy"] < 9 else A["noop"]
        if first and not s.dark:
            return A["sleep"]
        if inv["stone"] and inv["wood_pickaxe"]:
            if self.shelter is None:
                self.shelter = self._find_shelter(s)
            if self.shelter is not None:
                action = self._dig_in(s, *self.shelter)
                if action is not None:
                    return action
                self.shelter = None
        if inv["energy"] <= 1 and not s.near(objects.Zombie, 6):
            return A["sleep"]
        return None

    def _find_shelter(self, s: Snapshot) -> tuple[Pos, Pos] | None:
        """The nearest (entrance o, direction d): o+d and o+2d can be walked or mined, every
        other cell around them is solid to zombies, so standing in o+d with a stone placed on o
        seals a two-cell pocket."""
        order = np.argsort(s.dist, axis=None)[:600]
        for i in order:
            o = (int(i // s.size[1]), int(i % s.size[1]))
            if s.dist[o] >= 40:
                break
            if not s.walk[o] or (o in s.objs and o != s.pos):
                continue
            for d in DIRS:
                if self._pocket(s, o, d):
                    return o, d
        return None

    @staticmethod
    def _pocket(s: Snapshot, o: Pos, d: Pos) -> bool:
        perp = (d[1], d[0])
        cells = [_add(o, d), _add(o, d, 2)]
        walls = [_add(c, perp, k) for c in cells for k in (1, -1)] + [_add(o, d, 3)]
        if not all(s.inside(c) for c in cells + walls):
            return False
        digs = all((s.free[c] or (s.mineable(s.mat[c]) and s.mat[c] != "tree")) for c in cells)
        return digs and not any(s.walk[c] for c in walls)

    def _dig_in(self, s: Snapshot, o: Pos, d: Pos) -> int | None:
        """Next step of sealing oneself into the pocket at (o, d)."""
        s1, s2 = _add(o, d), _add(o, d, 2)
        back = (-d[0], -d[1])
        if s.pos == s2:
            return MOVES[DIRS.index(back)]
        if s.pos == s1 and s.facing == back:
            return A["place_stone"] if s.walk[o] and o not in s.objs else None
        if s.pos in (o, s1):
            ahead = _add(s.pos, d)
            if s.facing == d and not s.free[ahead]:
                return A["do"] if s.mat[ahead] != "lava" else None
            return MOVES[DIRS.index(d)]
        if s.dist[o] >= INF:
            return None
        return s.step_toward(o)

    def _refill(self, s: Snapshot, what: str, targets: np.ndarray, low: int) -> int | None:
        if s.inv[what] <= low or (self.topping == what and s.inv[what] < 9):
            action = self._interact(s, targets)
            self.topping = what if action is not None else None
            return action
        if self.topping == what:
            self.topping = None
        return None

    @staticmethod
    def _cows(s: Snapshot) -> np.ndarray:
        out = np.zeros(s.size, bool)
        for p in s.kind(objects.Cow):
            out[p] = True
        return out

    @staticmethod
    def _wood_need(s: Snapshot) -> int:
        """Wood for the tools not yet made, plus a table if none was placed."""
        need = sum(constants.make[t]["uses"]["wood"] for t in TOOLS["wood"] if not s.inv[t])
        if not s.ach["place_table"]:
            need += constants.place["table"]["uses"]["wood"]
        return min(9, need)

    @staticmethod
    def _stone_need(s: Snapshot) -> int:
        """Stone for the stone tools, a furnace and placing, plus two for shelters."""
        need = sum(constants.make[t]["uses"]["stone"] for t in TOOLS["stone"] if not s.inv[t])
        if not s.ach["place_furnace"]:
            need += constants.place["furnace"]["uses"]["stone"]
        return min(9, need + 2)

    @staticmethod
    def _iron_tools_left(s: Snapshot) -> int:
        """Iron tools not yet made (each takes one coal and one iron)."""
        return sum(1 for t in ("iron_pickaxe", "iron_sword") if not s.inv[t])

    def _hunt(self, s: Snapshot) -> int | None:
        """Chase a zombie, then a skeleton, for their achievements, when healthy."""
        for name, cls, radius in (("defeat_zombie", objects.Zombie, 16),
                                  ("defeat_skeleton", objects.Skeleton, 40)):
            if s.ach[name] or s.inv["health"] < 6:
                continue
            prey = np.zeros(s.size, bool)
            for p in s.near(cls, radius):
                prey[p] = True
            action = self._interact(s, prey, limit=radius)
            if action is not None:
                return action
        return None

    def _garden(self, s: Snapshot, wait: bool) -> int | None:
        """Plant a sapling where it is walled in and wall its last side with stone; eat it
        when ripe; with ``wait``, stay near it (a plant grows only while the player is near)."""
        plant = s.objs.get(self.plant) if self.plant else None
        if not isinstance(plant, objects.Plant):
            self.plant = None
            if not s.inv["sapling"]:
                return self._face(s, lambda p, t: s.mat[t] == "grass" and t not in s.objs,
                                  A["do"])
            if s.inv["stone"] < 1:
                return None

            def guarded(p: Pos, t: Pos) -> bool:
                return (s.mat[t] == "grass" and t not in s.objs and t != s.pos
                        and sum(s.walk[q] for q in (_add(t, d) for d in DIRS)
                                if s.inside(q)) <= 1)
            action = self._face(s, guarded, A["place_plant"])
            if action == A["place_plant"]:
                self.plant = _add(s.pos, s.facing)
            return action
        target = np.zeros(s.size, bool)
        target[self.plant] = True
        if plant.ripe:
            return self._interact(s, target, limit=40)
        open_side = [q for q in (_add(self.plant, d) for d in DIRS) if s.inside(q) and s.walk[q]]
        if open_side and s.inv["stone"]:
            return self._face(s, lambda p, t: t in open_side and (t not in s.objs or t == s.pos),
                              A["place_stone"])
        if not wait:
            return None
        far = abs(s.pos[0] - self.plant[0]) + abs(s.pos[1] - self.plant[1])
        return self._interact(s, target, A["noop"]) if far > 6 else A["noop"]
