"""Few-shot prompts: ``k`` example (observation, action) pairs drawn from the best-return
episodes of a trajectory directory (a collect or evaluate run), seeded, and rendered by one
function (:func:`render_shots`) into the part of the prompt every step shares: the system turn
in the ``chat`` form, the text before the first step in ``compact``. That part is the engine's
cached prefix, so the examples cost their tokens once, not at every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shot:
    """One example: where it comes from (episode, step), its observation and action texts."""

    episode_id: str
    t: int
    observation: str
    action: str


def pick_shots(source: str, k: int, seed: int = 0, top: float = 0.25) -> list[Shot]:
    """``k`` steps drawn (seeded, without replacement) from the best ``top`` share of the
    episodes in ``source`` by return (at least one episode; ties broken by the seeded draw), in
    episode and step order."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.policies.base import PolicyError

    path = tr.trajectory_dir(source)
    if not path.is_dir():
        raise PolicyError(f"shots_from={source!r} is not a trajectory or run directory; give a "
                          "collect or evaluate run (its best episodes give the examples)")
    steps = tr.read_trajectories(path)
    if steps.num_rows == 0:
        raise PolicyError(f"shots_from={source!r} holds no steps to draw examples from")
    episodes = tr.episode_table(steps)
    rng = np.random.default_rng(seed)
    ids, returns = episodes.column(tr.EPISODE_ID).to_pylist(), episodes.column("return")
    order = np.lexsort((rng.random(len(ids)), -returns.to_numpy()))  # ties: a seeded draw
    best = {ids[i] for i in order[: max(1, math.ceil(top * len(ids)))]}
    rows = [r for r in steps.select([tr.EPISODE_ID, tr.T, tr.OBS_TEXT, tr.ACTION_TEXT])
            .to_pylist() if r[tr.EPISODE_ID] in best]
    rows.sort(key=lambda r: (r[tr.EPISODE_ID], r[tr.T]))
    pick = rng.choice(len(rows), size=min(k, len(rows)), replace=False)
    return [Shot(rows[i][tr.EPISODE_ID], rows[i][tr.T], rows[i][tr.OBS_TEXT],
                 rows[i][tr.ACTION_TEXT]) for i in sorted(pick)]


def render_shots(shots: Sequence[Shot]) -> str:
    """The examples block: a header, then one line per example (its observation's lines joined
    by `` | ``, then ``-> action``); empty without examples."""
    if not shots:
        return ""
    lines = [" | ".join(s.observation.splitlines()) + f" -> {s.action}" for s in shots]
    return "Examples from good episodes (observation -> action):\n" + "\n".join(lines)
