"""Env steps per second with 2 rollout actors against 1, same work, one run.

Prints one JSON object: the median steps/s of each (over repeats), their ratio and the target
(>= 1.6 on 2 cores); exits 1 below it.
Run: .venv/bin/python bench/collect_scaling.py [--episodes N --repeats R]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import ENV_ID, finish, group_steps_per_second, median, parse_args, start_ray


def main() -> None:
    args = parse_args(__doc__, episodes=64)
    start_ray()
    one, two = [], []
    for r in range(args.repeats):  # interleaved, so drift hits both sides alike
        one.append(group_steps_per_second(1, args.episodes, args.chunk_size, args.envs, r))
        two.append(group_steps_per_second(2, args.episodes, args.chunk_size, args.envs, r))
    import ray

    ray.shutdown()
    finish("collect_scaling", ("2 actors, steps/s", median(two)),
           ("1 actor, steps/s", median(one)), target=1.6, env=ENV_ID,
           episodes=args.episodes, repeats=args.repeats,
           all_1_actor=[round(v, 1) for v in one], all_2_actors=[round(v, 1) for v in two])


if __name__ == "__main__":
    main()
