"""Steps per second through a 1-actor RolloutGroup against the same worker in this process.

Both play the same plan with the same envs, policy and chunk writes; the ratio is what the Ray
shell costs. Prints one JSON object with the medians, ``ratio`` (group / in-process) and the
target (>= 0.8); exits 1 below it.
Run: .venv/bin/python bench/collect_overhead.py [--episodes N --repeats R]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import (
    ENV_ID,
    finish,
    group_steps_per_second,
    inprocess_steps_per_second,
    median,
    parse_args,
    start_ray,
)


def main() -> None:
    args = parse_args(__doc__, episodes=32)
    start_ray()
    local, group = [], []
    for r in range(args.repeats):
        local.append(inprocess_steps_per_second(args.episodes, args.chunk_size, args.envs, r))
        group.append(group_steps_per_second(1, args.episodes, args.chunk_size, args.envs, r))
    import ray

    ray.shutdown()
    finish("collect_overhead", ("1-actor group, steps/s", median(group)),
           ("the same worker in-process, steps/s", median(local)), target=0.8,
           env=ENV_ID, episodes=args.episodes, repeats=args.repeats,
           all_in_process=[round(v, 1) for v in local], all_group=[round(v, 1) for v in group])


if __name__ == "__main__":
    main()
