"""Shared by the benchmarks: the one JSON line each prints (and its exit code: non-zero below
target), and timing a collection plan through a RolloutGroup or in-process."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any, NoReturn

ENV_ID = "MiniGrid-DoorKey-5x5-v0"  # CPU-bound in Python: grid step plus text encoding


def plan(episodes: int, chunk_size: int, seed: int = 0, label: str = "random"):
    """``label`` names the chunk files: warm-up and timed plans must not share them, or the
    timed run would resume from the warm-up's files instead of playing."""
    from policylm.platform.rollout.runner import plan_chunks

    return plan_chunks([(label, "random:")], episodes, seed, chunk_size)


def group_steps_per_second(num_workers: int, episodes: int, chunk_size: int, envs: int,
                           seed: int) -> float:
    """Env steps/s through a RolloutGroup (actors started and warmed up before timing)."""
    from policylm.actors.rollout import RolloutGroup, RolloutSpec

    with tempfile.TemporaryDirectory() as out:
        group = RolloutGroup(RolloutSpec(ENV_ID, num_envs=envs, out_dir=out, run_id="bench"),
                             num_workers=num_workers)
        group.run(plan(num_workers, 1, seed=10_000 + seed, label="warmup"))  # one per actor
        before = group.steps_taken()
        t0 = time.perf_counter()
        group.run(plan(episodes, chunk_size, seed))
        elapsed = time.perf_counter() - t0
        steps = group.steps_taken() - before
        group.shutdown()
    return steps / elapsed


def inprocess_steps_per_second(episodes: int, chunk_size: int, envs: int, seed: int) -> float:
    """The same plan played by the same worker class in this process (no Ray)."""
    from policylm.actors.rollout import RolloutSpec, RolloutWorker

    with tempfile.TemporaryDirectory() as out:
        worker = RolloutWorker(RolloutSpec(ENV_ID, num_envs=envs, out_dir=out, run_id="bench"))
        for chunk in plan(1, 1, seed=10_000 + seed, label="warmup"):
            worker.collect(chunk)
        before = worker.steps_taken()
        t0 = time.perf_counter()
        for chunk in plan(episodes, chunk_size, seed):
            worker.collect(chunk)
        elapsed = time.perf_counter() - t0
        steps = worker.steps_taken() - before
    return steps / elapsed


MAX_PEAK_RSS_GB = 4.0  # a 135M model with LoRA trains and acts in a few GB


def finish(bench: str, fast: tuple[str, float], baseline: tuple[str, float], target: float,
           checks: dict[str, tuple[float | None, float]] | None = None,
           limits: dict[str, tuple[float | None, float]] | None = None,
           **figures: Any) -> NoReturn:
    """Print the benchmark's one JSON line and exit: 0 when ``fast / baseline`` reaches
    ``target``, every check (``name: (value, target)``) has value >= target and every limit
    (``name: (value, limit)``) has value <= limit; else 1. ``fast`` and ``baseline`` are ``(what
    was measured, value)`` in the same unit. The line also gives the peak resident memory
    (``peak_rss_gb``: this process's and the largest of it and its live processes, Ray's
    workers included while Ray runs), limited to :data:`MAX_PEAK_RSS_GB` where it can be read."""
    from policylm.platform.memory import peak_rss_gb

    memory = peak_rss_gb()
    if memory["largest"] is not None:
        limits = {**(limits or {}), "peak_rss_gb": (memory["largest"], MAX_PEAK_RSS_GB)}
    figures = {**figures, "peak_rss_gb": memory}
    ratio = fast[1] / baseline[1] if baseline[1] else None
    others = {}
    for name, (v, bound) in (checks or {}).items():
        others[name] = {"value": _round(v), "target": f">= {bound}",
                        "held": v is not None and v >= bound}
    for name, (v, bound) in (limits or {}).items():
        others[name] = {"value": _round(v), "target": f"<= {bound}",
                        "held": v is not None and v <= bound}
    held = ratio is not None and ratio >= target and all(c["held"] for c in others.values())
    print(json.dumps({"bench": bench, "fast": fast[0], "fast_value": round(fast[1], 3),
                      "baseline": baseline[0], "baseline_value": round(baseline[1], 3),
                      "ratio": None if ratio is None else round(ratio, 3), "target": target,
                      "checks": others, "held": held, **figures}))
    sys.exit(0 if held else 1)


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.4g}")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def parse_args(doc: str, episodes: int) -> argparse.Namespace:
    """The knobs both collection benchmarks share."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--episodes", type=int, default=episodes)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--envs", type=int, default=4)
    return parser.parse_args()


def start_ray() -> None:
    """Local Ray with this machine's 2 CPUs, quiet."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
