"""Rows over data-parallel workers: every row exactly once per epoch, the same number of steps on
every worker.

Each worker holds the whole split in the same order and takes its own batches of one shared
permutation, so nothing is sharded twice (once by Ray Data and again by the trainer's sampler,
which left each worker half of its half) and no row is repeated to even out the tail (what
``accelerate``'s ``even_batches`` does). An epoch of ``n`` rows over ``W`` workers at ``B`` rows per
worker and step is ``k = ceil(n / (W * B))`` steps; the permutation is cut into ``k * W`` batches
whose sizes differ by at most one row, and worker ``r`` takes batches ``r, r + W, r + 2W, ...``.
The loss of a step is normalised by the label tokens of all workers together, so batches of
slightly different sizes weigh their rows the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import numpy as np


def sort_rows(rows: list[dict]) -> list[dict]:
    """Rows in one order whatever order they were read in (Ray Data may deliver blocks in any
    order; every worker, and a baseline run in-process, must see the same sequence)."""
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def pick_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """At most ``n`` of ``rows`` (0: all), a seeded choice kept in their order."""
    if n <= 0 or len(rows) <= n:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[int(i)] for i in keep]


def steps_per_epoch(n: int, world: int, batch_size: int) -> int:
    """Steps each worker takes in an epoch of ``n`` rows (``ceil(n / (world * batch_size))``)."""
    if n < 0 or world < 1 or batch_size < 1:
        raise ValueError(f"need n >= 0, world >= 1, batch_size >= 1; got {n}, {world}, "
                         f"{batch_size}")
    return math.ceil(n / (world * batch_size))


def shard_batches(n: int, world: int, rank: int, batch_size: int, seed: int = 0,
                  epoch: int = 0, shuffle: bool = True) -> list[list[int]]:
    """Worker ``rank``'s batches of row indices for one epoch (see module docstring): a
    permutation of ``range(n)`` seeded by ``(seed, epoch)`` (the identity when ``shuffle`` is off),
    cut into ``steps * world`` near-equal batches, every ``world``-th one from ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}")
    steps = steps_per_epoch(n, world, batch_size)
    if n < steps * world:  # some worker would have an empty step (it cannot skip one alone)
        raise ValueError(f"{n} rows cannot give {world} workers {steps} steps of at least one "
                         "row each; use fewer workers or a larger batch size")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    parts = np.array_split(order, steps * world) if steps else []
    return [[int(i) for i in parts[b]] for b in range(rank, len(parts), world)]


class EvenShardSampler:
    """A batch sampler over :func:`shard_batches`, reshuffled per epoch (``set_epoch``).
    ``record(epoch, batch)`` is called for every batch yielded (for checking which rows a
    worker trained on)."""

    def __init__(self, n: int, world: int, rank: int, batch_size: int, seed: int = 0,
                 shuffle: bool = True,
                 record: Callable[[int, list[int]], None] | None = None):
        self.n, self.world, self.rank, self.batch_size = n, world, rank, batch_size
        self.seed, self.shuffle, self.record = seed, shuffle, record
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return steps_per_epoch(self.n, self.world, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in shard_batches(self.n, self.world, self.rank, self.batch_size, self.seed,
                                   self.epoch, self.shuffle):
            if self.record is not None:
                self.record(self.epoch, batch)
            yield batch
