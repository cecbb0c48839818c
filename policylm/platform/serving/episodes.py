"""Episode state for the server-side adaptive target and history: per episode, its target, the
reward earned so far, the step and, for a policy with history, the earlier steps in its window.
One store serves every replica (the Serve application runs it as a deployment of its own), so a
call lands right whichever replica serves it.

An act call reads the state first (:meth:`EpisodeStore.begin`, which changes nothing) and
records the step only once its answer exists (:meth:`EpisodeStore.commit`): a call that fails
(500) or runs out of time (504) leaves the episode as it was, so the client sends the same step
again. The client says which step it is at (``steps``, 0 for an episode's first call):

- the episode's next step: played, then committed (reward added, step counted, history kept);
- the step committed last, with the same reward (the answer was lost on its way back): answered
  again from the state that step was played in (same prompt, same seed), committing nothing;
- any other step: 409 naming the step the episode is at;
- a step > 0 of an episode the store does not know (ended, idle past ``ttl_s``, or lost with a
  restarted store): 404; its target, reward and history are gone, so it is never restarted at
  step 0 in silence: the client starts a new episode id at step 0.

Without ``steps`` a call is the episode's next step (and an unknown id starts an episode): the
old protocol, with neither retries nor lost episodes told apart.

Everything a replica needs for a row comes back as plain numbers, including the random seed of
the step (from the episode id and the step), so an episode's actions do not depend on which
replica served which call either.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from policylm.platform.prompts import history_window
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
    earned: float = 0.0  # every committed step's reward and every reported one
    t: int = 0           # the next step: how many steps are committed
    last_seen: float = 0.0
    past: list = field(default_factory=list)  # [target, t, observation text, action text]
    # the step committed last: (its reward, the earned reward its prompt was written with)
    last: tuple[float, float] | None = None


def episode_seed(episode_id: str, t: int) -> list[int]:
    """The seed of step ``t`` of an episode: the same on every replica."""
    return [int(uuid.uuid5(uuid.NAMESPACE_OID, episode_id).int % 2**32), t]


def lost(episode_id: str, step: int) -> list:
    return [404, f"episode {episode_id!r} is unknown or expired (ended, idle longer than "
                 f"episode_ttl_s, or lost when the server restarted its episode store), yet "
                 f"this call is its step {step}: its target, reward earned and history are "
                 "gone. Start a new episode id at step 0 (with its target_return)"]


class EpisodeStore:
    """Per-episode state, dropped after ``ttl_s`` seconds without a call (see module
    docstring for the protocol)."""

    def __init__(self, ttl_s: float = 600.0, clock: Any = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self.episodes: dict[str, EpisodeState] = {}
        self.lock = threading.RLock()  # callers may share the store across threads

    @_locked
    def expire(self) -> list[str]:
        """Drop idle episodes; returns their ids."""
        now = self.clock()
        old = [k for k, e in self.episodes.items() if now - e.last_seen > self.ttl_s]
        for k in old:
            del self.episodes[k]
        return old

    @_locked
    def begin(self, rows: list[tuple[str, float | None, float, int | None]],
              default_target: float, history: int = 0) -> dict:
        """The state of one act call's rows, in order: ``(episode id, target or None, reward
        earned since the previous call, step the client is at or None)``. Returns ``{"rows":
        [...], "expired": [ids dropped as idle]}``, a row being the state its prompt needs
        (``target``: the episode's, ``earned``, step ``t``, ``seed``, ``past``: the earlier
        steps its prompt holds with ``history``, ``repeat``: a retry of the step committed
        last) or ``{"error": [status, message]}``. Changes nothing but the episodes' idle
        clocks: :meth:`commit` records the steps once their answers exist."""
        expired = self.expire()
        now, out = self.clock(), []
        ahead: dict[str, tuple[int, float, float]] = {}  # met earlier in this call
        for episode_id, target, reward, step in rows:
            e = self.episodes.get(episode_id)
            if e is not None:
                e.last_seen = now
            t, earned, known = ahead.get(episode_id, (e.t, e.earned, e.target) if e else
                                         (0, 0.0, default_target))
            target = known if target is None else target
            step = t if step is None else step
            repeat = False
            if e is None and episode_id not in ahead and step > 0:
                out.append({"error": lost(episode_id, step)})
                continue
            if step == t:
                earned += reward
                ahead[episode_id] = (t + 1, earned, target)
            elif e is not None and episode_id not in ahead and step == t - 1 and e.last \
                    and e.last[0] == reward:
                earned, repeat = e.last[1], True
            else:
                again = f"; step {t - 1} repeats the last answer (with the reward sent with " \
                        "it)" if e is not None and e.last else ""
                why = " with another reward than it was played with" if step == t - 1 else ""
                out.append({"error": [409, f"episode {episode_id!r} is at step {t}: this call "
                                           f"says step {step}{why}. Send step {t} for its next "
                                           f"action{again}"]})
                continue
            past = history_window(e.past if e else [], step, history)
            out.append({"target": target, "earned": earned, "t": step,
                        "seed": episode_seed(episode_id, step), "past": past, "repeat": repeat})
        return {"rows": out, "expired": expired}

    @_locked
    def commit(self, rows: list[tuple[str, int, float, float, float, list | None]],
               history: int = 0) -> None:
        """Record answered steps, in order: ``(episode id, step, reward, the episode's target,
        the earned reward its prompt was written with, [target in the prompt, step,
        observation text, action text] or None)``. A step the episode is not at (a retry of a
        committed step, a call that lost a race with an equal one) changes nothing; an episode
        gone since (ended, expired) is not recreated, except at step 0."""
        now = self.clock()
        for episode_id, step, reward, target, earned, entry in rows:
            e = self.episodes.get(episode_id)
            if e is None and step == 0:
                e = self.episodes[episode_id] = EpisodeState(target)
            if e is None or e.t != step:
                continue
            e.target, e.earned, e.t, e.last_seen = target, e.earned + reward, step + 1, now
            e.last = (reward, earned)
            if entry is not None:  # what this step's retry and the next steps' windows need
                e.past = [*history_window(e.past, step, history), list(entry)]

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
