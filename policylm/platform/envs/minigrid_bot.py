"""A scripted MiniGrid player that reads only the agent's observation (the 7x7 egocentric view
and what it carries), as a text-reading LLM would: get to a visible goal; else pick up a visible
key; else, carrying a key, open a visible door; else go through an open door; else look around.

It plans by breadth-first search over (cell, heading) in the view, agent at the bottom middle
facing up. Use it as ``python:policylm.platform.envs.minigrid_bot:MiniGridBot`` (a demonstrator of
known quality for MiniGrid Empty and DoorKey rooms); ``mix:`` adds noise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from policylm.platform.envs.adapter import EnvAdapter
from policylm.platform.policy import Policy

LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
EMPTY, FLOOR, DOOR, KEY, GOAL = 1, 3, 4, 5, 8
DOOR_OPEN = 0
# headings in the view frame: up (the agent's own), right, down, left; MiniGrid's "left" turns
# counter-clockwise, so heading h becomes (h - 1) % 4
STEPS = [(0, -1), (1, 0), (0, 1), (-1, 0)]


def passable(image: np.ndarray, x: int, y: int) -> bool:
    """Whether the agent may step onto view cell (x, y) (``image`` is (7, 7, 3) ids)."""
    if not (0 <= x < image.shape[0] and 0 <= y < image.shape[1]):
        return False
    kind = int(image[x, y, 0])
    return kind in (EMPTY, FLOOR, GOAL) or (kind == DOOR and int(image[x, y, 2]) == DOOR_OPEN)


def first_action(image: np.ndarray, goal: Any) -> int | None:
    """First action of a shortest path from the agent's state to a state where ``goal(x, y, h)``
    holds, or None when no such state is reachable in the view. Turns and moves cost one step."""
    w, h = image.shape[0], image.shape[1]
    start = (w // 2, h - 1, 0)
    if goal(*start):
        return -1
    seen = {start: None}
    queue: deque = deque()
    for action, nxt in _moves(image, start):
        if nxt not in seen:
            seen[nxt] = action
            queue.append(nxt)
    while queue:
        state = queue.popleft()
        if goal(*state):
            return seen[state]
        for _, nxt in _moves(image, state):
            if nxt not in seen:
                seen[nxt] = seen[state]
                queue.append(nxt)
    return None


def _moves(image: np.ndarray, state: tuple[int, int, int]) -> list[tuple[int, tuple]]:
    x, y, h = state
    out = [(LEFT, (x, y, (h - 1) % 4)), (RIGHT, (x, y, (h + 1) % 4))]
    dx, dy = STEPS[h]
    if passable(image, x + dx, y + dy):
        out.append((FORWARD, (x + dx, y + dy, h)))
    return out


def _cells(image: np.ndarray, kind: int, doors: tuple[int, ...] = ()) -> set[tuple[int, int]]:
    xs, ys = np.nonzero(image[:, :, 0] == kind)
    return {(int(x), int(y)) for x, y in zip(xs, ys, strict=True)
            if not doors or int(image[x, y, 2]) in doors}


def _facing(cells: set[tuple[int, int]]) -> Any:
    return lambda x, y, h: (x + STEPS[h][0], y + STEPS[h][1]) in cells


def plan(image: np.ndarray, carrying_kind: int) -> int | None:
    """The scripted action for one observation, or None when nothing useful is in view."""
    image = np.array(image)
    image[image.shape[0] // 2, image.shape[1] - 1] = (EMPTY, 0, 0)  # what it carries shows here
    goals = _cells(image, GOAL)
    if goals:
        a = first_action(image, lambda x, y, h: (x, y) in goals)
        if a is not None:
            return FORWARD if a == -1 else a
    if carrying_kind != KEY:
        keys = _cells(image, KEY)
        a = first_action(image, _facing(keys)) if keys and carrying_kind == 0 else None
        if a is not None:
            return PICKUP if a == -1 else a
    else:
        shut = _cells(image, DOOR, doors=(1, 2))
        a = first_action(image, _facing(shut)) if shut else None
        if a is not None:
            return TOGGLE if a == -1 else a
    open_doors = _cells(image, DOOR, doors=(DOOR_OPEN,))
    a = first_action(image, lambda x, y, h: (x, y) in open_doors) if open_doors else None
    if a is not None and a != -1:
        return a
    return None


class MiniGridBot(Policy):
    """Scripted MiniGrid policy over raw observations (``image``, ``carrying``); where nothing
    useful is in view it turns, and steps forward at random (``explore`` probability) so that it
    does not spin in place."""

    def __init__(self, adapter: EnvAdapter, explore: str | float = 0.3):
        if not adapter.env_id.startswith("MiniGrid-"):
            raise ValueError(f"MiniGridBot plays MiniGrid envs, not {adapter.env_id}")
        self.explore = float(explore)
        self.rngs: dict[int, np.random.Generator] = {}

    def reset(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng(seed)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        out = []
        for obs, slot in zip(observations, slots, strict=True):
            rng = self.rngs.setdefault(slot, np.random.default_rng(slot))
            image = np.asarray(obs["image"])
            a = plan(image, int(np.asarray(obs["carrying"]).reshape(-1)[0]))
            if a is None:
                ahead = passable(image, image.shape[0] // 2, image.shape[1] - 2)
                if ahead and rng.random() < self.explore:
                    a = FORWARD
                else:
                    a = int(rng.choice([LEFT, RIGHT]))
            out.append(int(a))
        return out
