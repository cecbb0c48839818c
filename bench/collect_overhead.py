"""Steps per second through a 1-actor RolloutGroup against the same worker in this process.

Both play the same plan with the same envs, policy and chunk writes; the ratio is what the Ray
shell costs. Prints one JSON object with the medians, ``ratio`` (group / in-process) and the
target (>= 0.8). Run: .venv/bin/python bench/collect_overhead.py [--episodes N --repeats R]
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import (
    ENV_ID,
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
    result = {
        "bench": "collect_overhead", "env": ENV_ID, "episodes": args.episodes,
        "repeats": args.repeats, "steps_per_s_in_process": round(median(local), 1),
        "steps_per_s_group_1_actor": round(median(group), 1),
        "ratio": round(median(group) / median(local), 3), "target": 0.8,
        "all_in_process": [round(v, 1) for v in local], "all_group": [round(v, 1) for v in group],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
