"""Episode state for the server-side adaptive target and history: per episode, its target, the
reward earned so far, the step and, for a policy with history, the earlier steps in its window.
One store serves every replica (the Serve application runs it as a deployment of its own), so a
call lands right whichever replica serves it.

Everything a replica needs for a row comes back from :meth:`EpisodeStore.advance` as plain
numbers, including the random seed of the step (from the episode id and the step), so an
episode's actions do not depend on which replica served which call either.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from policylm.platform.prompts import history_start
from policylm.platform.serving.schemas import RequestError


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: EpisodeStore, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class EpisodeState:
    target: float
    earned: float = 0.0
    t: int = 0
    last_seen: float = 0.0
    past: list = field(default_factory=list)  # [target, t, observation text, action text]


def episode_seed(episode_id: str, t: int) -> list[int]:
    """The seed of step ``t`` of an episode: the same on every replica."""
    return [int(uuid.uuid5(uuid.NAMESPACE_OID, episode_id).int % 2**32), t]


class EpisodeStore:
    """Per-episode state, dropped after ``ttl_s`` seconds without a call."""

    def __init__(self, ttl_s: float = 600.0, clock: Any = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self.episodes: dict[str, EpisodeState] = {}
        self.lock = threading.RLock()  # callers may share the store across threads

    @_locked
    def expire(self) -> int:
        """Drop idle episodes; returns how many were dropped."""
        now = self.clock()
        old = [k for k, e in self.episodes.items() if now - e.last_seen > self.ttl_s]
        for k in old:
            del self.episodes[k]
        return len(old)

    @_locked
    def get(self, episode_id: str, target: float | None, default_target: float) -> EpisodeState:
        """The episode's state, created on first sight; a given ``target`` replaces its
        target."""
        e = self.episodes.get(episode_id)
        if e is None:
            e = EpisodeState(default_target if target is None else target)
            self.episodes[episode_id] = e
        elif target is not None:
            e.target = target
        e.last_seen = self.clock()
        return e

    @_locked
    def advance(self, updates: list[tuple[str, float | None, float]],
                default_target: float, history: int = 0) -> list[dict]:
        """One act call's rows of episodes, in order: ``(episode id, target or None, reward
        earned since the previous call)``. Each row gets the episode's state for its prompt
        (``target``, ``earned``, step ``t``, ``seed``, and ``past``: the earlier steps its
        prompt holds with ``history``) and moves the episode one step on."""
        self.expire()
        out = []
        for episode_id, target, reward in updates:
            e = self.get(episode_id, target, default_target)
            e.earned += reward
            start = history_start(e.t, history)
            e.past = [p for p in e.past if p[1] >= start]
            out.append({"target": e.target, "earned": e.earned, "t": e.t,
                        "seed": episode_seed(episode_id, e.t), "past": list(e.past)})
            e.t += 1
        return out

    @_locked
    def remember(self, steps: list[tuple[str, list]]) -> None:
        """Keep each ``(episode id, [target, t, observation text, action text])`` in its
        episode's history, in step order (an episode ended or expired since is skipped)."""
        for episode_id, step in steps:
            e = self.episodes.get(episode_id)
            if e is not None:  # in step order, one entry per step (a retried call replaces)
                e.past = sorted([p for p in e.past if p[1] != step[1]] + [list(step)],
                                key=lambda p: p[1])

    @_locked
    def reward(self, episode_id: str, reward: float) -> dict:
        """Add reward earned since the episode's previous call; the episode's state."""
        e = self.episodes.get(episode_id)
        if e is None:
            raise RequestError("episode_id", f"episode {episode_id!r} is unknown or expired; "
                               "start it with POST /v1/act", status=404)
        e.earned += reward
        e.last_seen = self.clock()
        return self.describe(episode_id, e)

    @_locked
    def end(self, episode_id: str) -> dict:
        """Drop the episode; its last state."""
        e = self.episodes.pop(episode_id, None)
        if e is None:
            raise RequestError("episode_id", f"episode {episode_id!r} is unknown or expired",
                               status=404)
        return self.describe(episode_id, e)

    def count(self) -> int:
        """Open episodes."""
        return len(self.episodes)

    @staticmethod
    def describe(episode_id: str, e: EpisodeState) -> dict:
        return {"episode_id": episode_id, "step": e.t, "target_return": e.target,
                "earned": e.earned, "remaining_target": e.target - e.earned}
