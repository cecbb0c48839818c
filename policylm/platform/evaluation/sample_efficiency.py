"""Sample efficiency: frames to reach a return threshold, curves of several seeds on one frame
grid, and an evaluation loop that records where the agent went (for visitation heatmaps).

A curve is a list of ``(frames, return)`` points in frame order: frame 0 is the evaluation
before training, later points are training iterations (frames sampled so far, mean return).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from policylm.platform.envs import EnvAdapter

Curve = Sequence[tuple[float, float]]


def frames_to_threshold(curve: Curve, threshold: float) -> float | None:
    """Frames at the first point whose return is >= ``threshold``; None if never reached."""
    for frames, ret in curve:
        if ret is not None and ret >= threshold:
            return float(frames)
    return None


def on_grid(curve: Curve, grid: Sequence[float]) -> np.ndarray:
    """The curve's value at each grid frame count: the last point at or before it (a step
    function, since a return is known only once an iteration ends); NaN before the first."""
    xs = np.asarray([p[0] for p in curve], dtype=np.float64)
    ys = np.asarray([np.nan if p[1] is None else p[1] for p in curve], dtype=np.float64)
    idx = np.searchsorted(xs, np.asarray(grid, dtype=np.float64), side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)


def mean_std(curves: Sequence[Curve], points: int = 100) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """``(grid, mean, std)`` across seeds on a common grid from 0 to the shortest curve's end
    (so every seed contributes to every point)."""
    if not curves or any(len(c) == 0 for c in curves):
        raise ValueError("need at least one non-empty curve per seed")
    end = min(c[-1][0] for c in curves)
    grid = np.linspace(0.0, end, points)
    values = np.stack([on_grid(c, grid) for c in curves])
    return grid, np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median over seeds, counting a seed that never reached the threshold as infinitely slow
    (so the median is None when half or more never reached it)."""
    vals = sorted(np.inf if v is None else float(v) for v in values)
    if not vals:
        return None
    mid = len(vals) // 2
    med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return None if np.isinf(med) else float(med)


@dataclass
class Evaluation:
    """Returns of evaluation episodes and the grid cells (or 2-D points) the agent visited."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    positions: list[tuple[float, float]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def success_rate(self) -> float:
        """Share of episodes with a positive return (MiniGrid pays only on success)."""
        return float(np.mean([r > 0 for r in self.returns])) if self.returns else float("nan")


def agent_position(env: object) -> tuple[float, float] | None:
    """Where the agent is: MiniGrid's ``agent_pos`` cell, CartPole's (cart x, pole angle)."""
    inner = getattr(env, "unwrapped", env)
    pos = getattr(inner, "agent_pos", None)
    if pos is not None:
        return float(pos[0]), float(pos[1])
    state = getattr(inner, "state", None)
    if state is not None and np.asarray(state).size == 4:
        return float(state[0]), float(state[2])
    return None


def evaluate_logits(adapter: EnvAdapter, logits_fn: Callable[[np.ndarray], np.ndarray],
                    episodes: int, seed: int, sample: bool = True) -> Evaluation:
    """Play ``episodes`` episodes (seeds ``seed``, ``seed+1``, ...) choosing actions from
    ``logits_fn(obs[1, D]) -> logits[1, A]`` (sampled, or argmax when ``sample`` is False) and
    record returns and visited positions."""
    from policylm.platform.policies import LogitsPolicy

    env = adapter.make_env()
    policy = LogitsPolicy(adapter, logits_fn, sample=sample)
    out = Evaluation()
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            policy.reset(0, seed + ep)
            total, steps, done = 0.0, 0, False
            while not done:
                pos = agent_position(env)
                if pos is not None:
                    out.positions.append(pos)
                (action,) = policy.act([obs], [0])
                obs, reward, terminated, truncated, _ = env.step(action)
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
            out.returns.append(total)
            out.lengths.append(steps)
    finally:
        env.close()
    return out


def grid_shape(adapter: EnvAdapter) -> tuple[int, int] | None:
    """(width, height) of a MiniGrid env's grid; None for envs without a grid."""
    env = adapter.make_env()
    try:
        inner = env.unwrapped
        w, h = getattr(inner, "width", None), getattr(inner, "height", None)
        return (int(w), int(h)) if w and h else None
    finally:
        env.close()
