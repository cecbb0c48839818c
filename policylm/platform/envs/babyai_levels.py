"""BabyAI-Text's ``BabyAI-MixedTrainLocal-v0`` level on ``minigrid``'s BabyAI core, one task per
env (BALROG plays its five tasks with ``num_dists=0``), and its test level
``BabyAI-MixedTestLocal-v0`` (``split="test"``): missions that name only the colour-object pairs
the training level holds out.

Ported from ``babyai_text/levels/mixed_seq_levels.py`` of flowersteam/Grounding_LLMs_with_online_RL
(MIT): the same rooms, objects and missions, its excluded colour-object pairs, and rejection
sampling until every object is reachable. ``task="mixed"`` is the level BabyAI-Text trains on,
every task in one env: each seeded reset plays the task ``TASKS[seed % 5]`` in the room that
task's own env builds from the same seed. Imports ``minigrid``: load it only where BabyAI runs.
"""

from __future__ import annotations

from minigrid.core.roomgrid import RoomGrid
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel
from minigrid.envs.babyai.core.verifier import (
    AfterInstr,
    BeforeInstr,
    GoToInstr,
    ObjDesc,
    OpenInstr,
    PickupInstr,
    PutNextInstr,
)

from policylm.platform.envs.babyai import EXCLUDED, TASKS

LOCKED_DOOR_COLORS = ["yellow", "green", "blue", "purple"]  # red and grey are held out
TEST_DOOR_COLORS = ["red", "grey"]  # the test level's locked doors (its held-out door pairs)
SPLITS = ("train", "test")
MIXED = "mixed"  # every task in one env, the task chosen by the reset's seed


def mixed_task(seed: int) -> str:
    """The task a ``task="mixed"`` env plays after ``reset(seed=seed)``."""
    return TASKS[seed % len(TASKS)]


class MixedTrainLocal(RoomGridLevel):
    """One task of MixedTrainLocal: ``goto``, ``pickup``, ``putnext`` and ``pick_up_seq_go_to``
    in one ``room_size`` room with the objects the mission needs plus ``num_dists``
    distractors; ``open``: two rooms, a locked door (yellow, green, blue or purple) and its key
    on the agent's side. The episode ends with reward ``1 - 0.9 * steps / max_steps`` when the
    mission is done (``max_steps``: 64 in one 8x8 room, 128 in two).

    ``split="test"`` is MixedTestLocal's task: every colour-object pair the mission names is one
    of :data:`~policylm.platform.envs.babyai.EXCLUDED` (yellow box, red key, green ball; red or
    grey locked doors, always named by colour), the pairs no training mission holds.

    ``task="mixed"`` plays :func:`mixed_task` of each seeded reset (an unseeded reset draws the
    task from the env's random stream), its room and step limit as that task's own env has
    them after a reset with the same seed."""

    def __init__(self, task: str = "goto", room_size: int = 8, num_dists: int = 0,
                 split: str = "train", **kwargs):
        if task not in (*TASKS, MIXED):
            raise ValueError(f"unknown MixedTrainLocal task {task!r}; one of "
                             f"{', '.join(TASKS)} or {MIXED}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; train or test")
        self.mixed = task == MIXED
        self.task, self.num_dists, self.split = TASKS[0] if self.mixed else task, num_dists, split
        # the mixed level starts two rooms wide (the widest task) and is resized at each reset
        super().__init__(room_size=room_size, num_rows=1,
                         num_cols=2 if task in ("open", MIXED) else 1, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.mixed:
            self.task = (mixed_task(seed) if seed is not None
                         else TASKS[int(self.np_random.integers(len(TASKS)))])
            self.num_cols = 2 if self.task == "open" else 1
            self.width = (self.room_size - 1) * self.num_cols + 1
        return super().reset(seed=seed, options=options)

    def _gen_grid(self, width: int, height: int) -> None:
        # RoomGridLevel's loop, without its print on every rejected sample
        while True:
            try:
                RoomGrid._gen_grid(self, width, height)
                self.gen_mission()
                self.validate_instrs(self.instrs)
            except RejectSampling:
                continue
            self.surface = self.instrs.surface(self)
            self.mission = self.surface
            return

    def _objects(self, extra: int) -> list:
        self.place_agent()
        objs = self.add_distractors(num_distractors=self.num_dists + extra, all_unique=False)
        self.check_objs_reachable()
        return objs

    def _pick(self, objs: list, avoid=None):
        obj = self._rand_elem(objs)
        if avoid is not None and (obj.type, obj.color) == (avoid.type, avoid.color):
            matches, _ = ObjDesc(avoid.type, avoid.color).find_matching_objs(self)
            while len(matches) < 2 and (obj.type, obj.color) == (avoid.type, avoid.color):
                obj = self._rand_elem(objs)
        return obj

    def gen_mission(self) -> None:
        """Build this task's room and mission; rejected (and rebuilt) when an object is out of
        reach or the mission names a held-out pair."""
        test = self.split == "test"
        if self.task == "open":
            color = self._rand_elem(TEST_DOOR_COLORS if test else LOCKED_DOOR_COLORS)
            self.add_locked_room_of(color)
            self.connect_all()
            for i in range(self.num_cols):
                if self.get_room(i, 0) is not self.locked_room:
                    self.add_distractors(i, 0, num_distractors=self.num_dists, all_unique=False)
            while True:
                self.place_agent()
                if self.room_from_pos(*self.agent_pos) is not self.locked_room:
                    break
            self.check_objs_reachable()
            self.instrs = OpenInstr(ObjDesc("door", color if test else self._rand_elem([None,
                                                                                    color])))
            named = [("door", color)]
        elif self.task in ("goto", "pickup"):
            objs = self._objects(1)
            obj = self._rand_elem(objs)
            desc = ObjDesc(obj.type, obj.color)
            named = [(obj.type, obj.color)]
            self.instrs = GoToInstr(desc) if self.task == "goto" else PickupInstr(desc)
        elif self.task == "putnext":
            objs = self._objects(2)
            first = self._rand_elem(objs)
            second = self._pick(objs, avoid=first)
            self.instrs = PutNextInstr(ObjDesc(first.type, first.color),
                                       ObjDesc(second.type, second.color))
            named = [(first.type, first.color), (second.type, second.color)]
        else:  # pick_up_seq_go_to
            objs = self._objects(2)
            first = self._rand_elem(objs)
            second = self._pick(objs, avoid=first)
            pick = PickupInstr(ObjDesc(first.type, first.color))
            go = GoToInstr(ObjDesc(second.type, second.color))
            self.instrs = BeforeInstr(pick, go) if self._rand_bool() else AfterInstr(go, pick)
            named = [(first.type, first.color), (second.type, second.color)]
        held_out = [f"{color} {kind}" in EXCLUDED for kind, color in named]
        if test and not all(held_out):
            raise RejectSampling("the test level names held-out colour-object pairs only")
        if not test and any(held_out):
            raise RejectSampling("held-out colour-object pair in the mission")

    def add_locked_room_of(self, color: str) -> None:
        """A locked door of ``color`` into one room, its key in another."""
        while True:
            i, door_idx = self._rand_int(0, self.num_cols), self._rand_int(0, 4)
            room = self.get_room(i, 0)
            if room.neighbors[door_idx] is not None:
                break
        self.locked_room = room
        self.add_door(i, 0, door_idx, color=color, locked=True)
        while True:
            k = self._rand_int(0, self.num_cols)
            if self.get_room(k, 0) is not self.locked_room:
                self.add_object(k, 0, "key", color)
                return
