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


def target_metrics(episodes: pa.Table, targets: Sequence[float],
                   success_return: float | None = None) -> dict:
    """Per target: count, mean, its standard error, std, median, min, max of the actual return
    (and, given ``success_return``, the share of episodes reaching it with its standard error);
    Spearman correlation of target and actual over the per-target means and over all
    episodes. Multi-agent episodes (several agents on one env seed: an arena) are not
    independent samples: there ``se`` is the standard error over the arenas' mean returns
    (``arenas`` of them; None under two), and ``agent_se`` the one that treats agents as
    independent."""
    rows = episodes.to_pylist()
    per: dict[str, dict] = {}
    xs, ys, mean_x, mean_y = [], [], [], []
    for t in targets:
        mine = [r for r in rows if r[tr.SKILL] == target_label(t)]
        got = [r["return"] for r in mine]
        stats = tr.return_stats(got)
        arenas: dict[int, list[float]] = {}
        for r in mine:
            arenas.setdefault(r[tr.SEED], []).append(r["return"])
        if any(len(v) > 1 for v in arenas.values()):
            means = [float(np.mean(v)) for v in arenas.values()]
            stats = {**stats, "arenas": len(means), "agent_se": stats["se"],
                     "se": tr.return_stats(means)["se"]}
        per[target_label(t)] = {"target": float(t), **stats}
        if success_return is not None and got:
            hits = np.asarray(got) >= success_return
            per[target_label(t)]["success_rate"] = float(hits.mean())
            per[target_label(t)]["success_rate_se"] = \
                float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else None
        xs += [float(t)] * len(got)
        ys += got
        if got:
            mean_x.append(float(t))
            mean_y.append(stats["mean"])
    return {
        "targets": per,
        "spearman_means": spearman(mean_x, mean_y),
        "spearman_episodes": spearman(xs, ys),
        "success_return": success_return,
    }


def arena_note(per_target: dict) -> str:
    """`` over the N arenas' mean returns per target (...)`` when :func:`target_metrics` took
    its s.e. over arenas (several agents per env seed), else ``""``: the words after "s.e."."""
    arenas = [m["arenas"] for m in per_target.values() if m.get("arenas")]
    return (f" over the {min(arenas)} arenas' mean returns per target (an arena's agents share "
            "its map: they are not independent samples)" if arenas else "")


def mean_se(stats: dict, digits: int = 1) -> str:
    """``"171.0 ± 14.2"`` (mean ± standard error) from :func:`return_stats` figures, ``n/a``
    when unknown."""
    if stats.get("mean") is None:
        return "n/a"
    se = stats.get("se")
    return f"{stats['mean']:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def paired_difference(a: dict, b: dict) -> dict:
    """``b - a`` over the keys both have (episodes on the same env seeds, ``{(seed, agent):
    return}``): mean, its standard error (sample std of the differences / sqrt(n); None under
    two pairs), the number of pairs, and whether the difference is within noise (|mean| < 2
    s.e., or no difference at all when every pair agrees; None when unknown)."""
    keys = sorted(set(a) & set(b))
    d = np.asarray([b[k] - a[k] for k in keys], dtype=np.float64)
    if not len(d):
        return {"pairs": 0, "mean": None, "se": None, "within_noise": None}
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
    mean = float(d.mean())
    return {"pairs": len(d), "mean": mean, "se": se, "within_noise": within_noise(mean, se)}


def within_noise(mean: float, se: float | None) -> bool | None:
    """A difference is within noise when |mean| < 2 standard errors, or it is exactly 0 (every
    pair agrees); None when the standard error is unknown."""
    return None if se is None else bool(abs(mean) < 2 * se or mean == 0.0)


def returns_by_seed(episodes: pa.Table) -> dict:
    """``{(seed, agent id): return}`` of an episode table (one episode per seed and agent)."""
    return {(s, a): r for s, a, r in zip(episodes.column(tr.SEED).to_pylist(),
                                          episodes.column(tr.AGENT_ID).to_pylist(),
                                          episodes.column("return").to_pylist(), strict=True)}


def success_threshold(env_id: str) -> float | None:
    """The return that counts as success in ``env_id``: CartPole-v1 475 and CartPole-v0 195
    (gymnasium's reward thresholds), MiniGrid and BabyAI any positive reward (reaching the
    goal), else unknown (None: give ``success_return``)."""
    if env_id.startswith(("MiniGrid-", "BabyAI-")):
        return 1e-9  # "> 0": the reward is positive only for reaching the goal
    return {"CartPole-v1": 475.0, "CartPole-v0": 195.0}.get(env_id)


def summarize_steps(steps: pa.Table, success_return: float | None = None) -> dict:
    """One trajectory set: episodes, mean/std return, mean length, reward per step, the action
    distribution (shares) and, given ``success_return``, the share of episodes reaching it (with
    its standard error)."""
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
    if success_return is not None and len(returns):
        hits = returns >= success_return
        out["success_rate"] = float(hits.mean())
        out["success_rate_se"] = float(hits.std(ddof=1) / np.sqrt(len(hits))) \
            if len(hits) > 1 else None
    return out
