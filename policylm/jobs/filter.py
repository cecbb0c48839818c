"""Keep the best episodes of a trajectory run (DuckDB over its episode table).

Usage: ``policylm filter trajectories=runs/crafter-play --min-achievements 3 out=runs/best``;
``--stats-only`` prints the statistics and writes nothing. The output is laid out like a collect
run (``trajectories/``, ``episodes.parquet``, ``metadata.json``), so ``policylm build-dataset
trajectories=runs/best`` reads it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from policylm.jobkit.runs import open_run, run_job, write_json
from policylm.platform import console
from policylm.platform.config import field, overwrite_field, require


@dataclass
class FilterConfig:
    """Keep episodes by achievements, reward and length; print how many pass."""

    trajectories: str = field("", doc="trajectory directory, or a run directory holding one")
    min_achievements: int | None = field(None, doc="keep episodes with at least N achievements")
    min_reward: float | None = field(None, doc="keep episodes whose return is at least R")
    max_turns: int | None = field(None, doc="keep episodes of at most T steps")
    achievement_types: str = field("", doc="comma-separated achievement names (with "
                                   "min_achievement_types: at least that many of them)")
    min_achievement_types: int | None = field(None, doc="how many of achievement_types "
                                              "(default: all of them)")
    high_quality: int = field(3, doc="achievements that make an episode high quality (stats)")
    stats_only: bool = field(False, doc="print the statistics only; write nothing")
    out: str = field("", doc="run directory (default runs/filter-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(bool(self.trajectories), "trajectories",
                "give the run to filter: trajectories=runs/collect-...")
        if self.min_achievement_types is not None:
            require(bool(self.achievement_types), "min_achievement_types",
                    "give achievement_types too, e.g. --achievement-types collect_wood,eat_cow")
            require(1 <= self.min_achievement_types <= len(self.types()),
                    "min_achievement_types", f"must be in [1, {len(self.types())}]")

    def types(self) -> list[str]:
        return [t.strip() for t in str(self.achievement_types).split(",") if t.strip()]


def main(cfg: FilterConfig) -> dict:
    from policylm.platform.data import trajectories as tr
    from policylm.platform.data.datasets import keep_rows
    from policylm.platform.evaluation.achievements import (
        UNLOCKED,
        QualityFilter,
        episodes_with_achievements,
        quality_stats,
        select_quality,
    )

    steps = tr.read_trajectories(tr.trajectory_dir(cfg.trajectories))
    episodes = episodes_with_achievements(steps)
    flt = QualityFilter(cfg.min_achievements, cfg.min_reward, cfg.max_turns, cfg.types(),
                        cfg.min_achievement_types)
    kept = select_quality(episodes, flt, UNLOCKED in steps.column_names)
    stats = quality_stats(episodes, kept, cfg.high_quality)
    console.say(json.dumps(stats, indent=2), "stdout")
    if cfg.stats_only:
        return stats
    run_dir = open_run("filter", cfg)
    tr.write_atomic(keep_rows(steps, kept.column(tr.EPISODE_ID).to_pylist()),
                    run_dir / "trajectories" / "kept.parquet")
    tr.write_atomic(kept, run_dir / "episodes.parquet")
    write_json(run_dir / "metadata.json", {"source": str(Path(cfg.trajectories)), **stats})
    return {"run_dir": str(run_dir), **stats}


CONFIG = FilterConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("filter", FilterConfig, main, sys.argv[1:])
