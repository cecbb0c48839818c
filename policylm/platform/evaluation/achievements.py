"""Episodes with their achievements, quality filters over them (DuckDB) and their statistics.

Works on any trajectory run; the achievement filters need the ``achievements_unlocked`` column
that achievement envs (Crafter) write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from policylm.platform.data import trajectories as tr
from policylm.platform.data.datasets import DatasetError

UNLOCKED = "achievements_unlocked"


@dataclass
class QualityFilter:
    """Which episodes to keep; ``None`` means no bound. ``achievement_types`` with
    ``min_achievement_types``: at least that many of the listed achievements unlocked."""

    min_achievements: int | None = None
    min_reward: float | None = None
    max_turns: int | None = None
    achievement_types: list[str] = field(default_factory=list)
    min_achievement_types: int | None = None

    @property
    def needs_achievements(self) -> bool:
        return self.min_achievements is not None or bool(self.achievement_types)


def episodes_with_achievements(steps: pa.Table) -> pa.Table:
    """The episode table plus ``achievements`` (sorted distinct names unlocked in the episode)
    and ``n_achievements``; empty lists where the run has no achievement column."""
    import duckdb

    episodes = tr.episode_table(steps)
    con = duckdb.connect()
    try:
        con.register("episodes", episodes)
        if UNLOCKED in steps.column_names:
            con.register("steps", steps.select([tr.EPISODE_ID, tr.AGENT_ID, UNLOCKED]))
            sub = (f"SELECT {tr.EPISODE_ID}, {tr.AGENT_ID}, "
                   f"list_sort(list_distinct(flatten(list({UNLOCKED})))) AS achievements "
                   f"FROM steps GROUP BY ALL")
        else:
            sub = (f"SELECT {tr.EPISODE_ID}, {tr.AGENT_ID}, []::VARCHAR[] AS achievements "
                   "FROM episodes")
        return con.sql(
            f"SELECT e.*, coalesce(a.achievements, []::VARCHAR[]) AS achievements, "
            f"len(coalesce(a.achievements, []::VARCHAR[]))::INTEGER AS n_achievements "
            f"FROM episodes e LEFT JOIN ({sub}) a USING ({tr.EPISODE_ID}, {tr.AGENT_ID}) "
            f"ORDER BY {tr.EPISODE_ID}, {tr.AGENT_ID}").to_arrow_table()
    finally:
        con.close()


def _sql_list(names: Sequence[str]) -> str:
    return "[" + ", ".join("'" + n.replace("'", "''") + "'" for n in names) + "]"


def select_quality(episodes: pa.Table, flt: QualityFilter, has_achievements: bool) -> pa.Table:
    """Rows of :func:`episodes_with_achievements` that pass ``flt`` (the reward and length
    bounds are :func:`policylm.platform.data.datasets.select_episodes`'s; the achievement ones are
    its SQL condition)."""
    from policylm.platform.data.datasets import EpisodeFilter, select_episodes

    if flt.needs_achievements and not has_achievements:
        raise DatasetError("these trajectories have no achievements_unlocked column; the "
                           "achievement filters work on Crafter runs (use --min-reward or "
                           "--max-turns here)")
    conds = []
    if flt.min_achievements is not None:
        conds.append(f"n_achievements >= {int(flt.min_achievements)}")
    if flt.achievement_types:
        need = len(flt.achievement_types) if flt.min_achievement_types is None \
            else int(flt.min_achievement_types)
        conds.append(f"len(list_intersect(achievements, {_sql_list(flt.achievement_types)})) "
                     f">= {need}")
    return select_episodes(episodes, EpisodeFilter(min_return=flt.min_reward,
                                                   max_length=flt.max_turns,
                                                   where=" AND ".join(conds)))


def quality_stats(episodes: pa.Table, kept: pa.Table, high_quality: int = 3) -> dict:
    """Total episodes, high-quality ones (>= ``high_quality`` achievements) and their share,
    mean achievements, mean reward, kept episodes and their share."""
    n = episodes.num_rows
    ach = np.asarray(episodes.column("n_achievements").to_pylist(), np.float64)
    ret = np.asarray(episodes.column("return").to_pylist(), np.float64)
    hq = int((ach >= high_quality).sum())
    return {"total_episodes": n, "high_quality": hq, "high_quality_share": hq / n if n else 0.0,
            "mean_achievements": float(ach.mean()) if n else 0.0,
            "mean_reward": float(ret.mean()) if n else 0.0,
            "kept": kept.num_rows, "kept_share": kept.num_rows / n if n else 0.0}


def achievement_summary(steps: pa.Table, high_quality: int = 3,
                        names: Sequence[str] = (), episodes: pa.Table | None = None) -> dict:
    """Per run: achievement rate (share of episodes with >= ``high_quality`` achievements),
    mean achievements, the success rate of each achievement (share of episodes that unlocked it;
    every name in ``names`` listed, seen or not) and, for Crafter, the Crafter score.
    ``episodes``: :func:`episodes_with_achievements` of ``steps`` where the caller has it."""
    from policylm.platform.envs.crafter import ACHIEVEMENTS, crafter_score

    episodes = episodes_with_achievements(steps) if episodes is None else episodes
    n = episodes.num_rows
    per_episode = episodes.column("achievements").to_pylist()
    counts = np.asarray([len(a) for a in per_episode], np.float64)
    seen = sorted({a for ach in per_episode for a in ach} | set(names))
    rates = {a: (sum(a in ach for ach in per_episode) / n if n else 0.0) for a in seen}
    out = {"achievement_rate": float((counts >= high_quality).mean()) if n else 0.0,
           "mean_achievements": float(counts.mean()) if n else 0.0, "success_rates": rates}
    envs = set(steps.column(tr.ENV_ID).to_pylist())
    if envs and all(e.startswith("Crafter") for e in envs):
        out["crafter_score"] = crafter_score({a: r for a, r in rates.items() if a in ACHIEVEMENTS})
    return out


def achievements_by_seed(episodes: pa.Table) -> dict[tuple[int, int], list[str]]:
    """``{(seed, agent id): achievements unlocked}`` per episode of an
    :func:`episodes_with_achievements` table (one episode per seed and agent, as compare and
    benchmark play)."""
    return {(s, a): list(ach) for s, a, ach in zip(
        episodes.column(tr.SEED).to_pylist(), episodes.column(tr.AGENT_ID).to_pylist(),
        episodes.column("achievements").to_pylist(), strict=True)}


def paired_achievement_difference(a: dict, b: dict, draws: int = 2000, seed: int = 0) -> dict:
    """``b - a`` over the env seeds both played (:func:`achievements_by_seed` of each): the
    achievements per episode (paired mean and standard error, as
    :func:`policylm.platform.evaluation.metrics.paired_difference`) and, for Crafter, the Crafter
    score of b's episodes minus a's on those seeds, with the standard error of a paired
    bootstrap over the seeds (``draws`` resamples, seeded: the same figures every time)."""
    from policylm.platform.envs.crafter import ACHIEVEMENTS, crafter_score
    from policylm.platform.evaluation.metrics import paired_difference, within_noise

    keys = sorted(set(a) & set(b))
    out = {"achievements": paired_difference({k: len(a[k]) for k in keys},
                                             {k: len(b[k]) for k in keys})}
    names = set(ACHIEVEMENTS)
    if not keys or any(set(x[k]) - names for x in (a, b) for k in keys):
        return out  # not Crafter's achievements: no Crafter score

    def unlocked(x: dict) -> np.ndarray:  # episode x achievement: 1 where it was unlocked
        return np.asarray([[n in x[k] for n in ACHIEVEMENTS] for k in keys], np.float64)

    def score(m: np.ndarray) -> float:
        return crafter_score(dict(zip(ACHIEVEMENTS, m.mean(0), strict=True)))

    ua, ub = unlocked(a), unlocked(b)

    def score_difference(pick: np.ndarray) -> float:
        return score(ub[pick]) - score(ua[pick])

    n = len(keys)
    diff = score_difference(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = [score_difference(rng.integers(0, n, n)) for _ in range(draws)]
    se = float(np.std(boots, ddof=1)) if n > 1 else None
    out["crafter_score"] = {"pairs": n, "mean": diff, "se": se,
                            "within_noise": within_noise(diff, se)}
    return out
