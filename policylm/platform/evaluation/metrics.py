"""Evaluation maths (no Ray): per-target return statistics, rank correlation, comparisons."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from policylm.platform.data import trajectories as tr


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties given their average rank: ``[10, 20, 20, 5]`` -> ``[2, 3.5, 3.5, 1]``."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        r[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson correlation of the ranks); ``None`` when undefined
    (fewer than two points, or one side constant). Rounded to 12 decimals: of ranks it is a
    ratio of small integers, and a bar such as 0.8 must not fail on 0.7999999999999999."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of one length")
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return round(float(np.corrcoef(rx, ry)[0, 1]), 12)


def target_label(target: float) -> str:
    """Skill label of the episodes played at ``target``: ``target_500``, ``target_12.5``."""
    t = float(target)
    return f"target_{int(t)}" if t.is_integer() else f"target_{t:g}"


def target_metrics(episodes: pa.Table, targets: Sequence[float]) -> dict:
    """Per target: mean, std, median, min, max of the actual return; Spearman correlation of
    target and actual over the per-target means and over all episodes."""
    rows = episodes.to_pylist()
    per: dict[str, dict] = {}
    xs, ys, mean_x, mean_y = [], [], [], []
    for t in targets:
        got = [r["return"] for r in rows if r[tr.SKILL] == target_label(t)]
        stats = tr.return_stats(got)
        per[target_label(t)] = {"target": float(t), **stats}
        xs += [float(t)] * len(got)
        ys += got
        if got:
            mean_x.append(float(t))
            mean_y.append(stats["mean"])
    return {
        "targets": per,
        "spearman_means": spearman(mean_x, mean_y),
        "spearman_episodes": spearman(xs, ys),
    }


def summarize_steps(steps: pa.Table, success_return: float | None = None) -> dict:
    """One trajectory set: episodes, mean/std return, mean length, reward per step, the action
    distribution (shares) and, given ``success_return``, the share of episodes above it."""
    episodes = tr.episode_table(steps)
    returns = np.asarray(episodes.column("return").to_pylist(), dtype=np.float64)
    lengths = np.asarray(episodes.column("length").to_pylist(), dtype=np.float64)
    counts = Counter(steps.column(tr.ACTION_TEXT).to_pylist())
    total = sum(counts.values())
    out = {
        "episodes": len(returns),
        "return": tr.return_stats(returns),
        "length_mean": float(lengths.mean()) if len(lengths) else 0.0,
        "reward_per_step": float(returns.sum() / lengths.sum()) if lengths.sum() else 0.0,
        "actions": {a: c / total for a, c in sorted(counts.items())} if total else {},
    }
    if success_return is not None:
        out["success_rate"] = float(np.mean(returns > success_return)) if len(returns) else 0.0
    return out
