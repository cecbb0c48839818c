"""Rows over data-parallel workers: every row once per epoch, equal steps per worker."""

import itertools

import numpy as np
import pytest

from policylm.platform.training.sharding import EvenShardSampler, shard_batches, steps_per_epoch


def test_batches_by_hand():
    # 10 rows, 2 workers, 3 rows per step: ceil(10 / 6) = 2 steps; the identity order cut into
    # 4 batches of 3, 3, 2, 2; worker 0 takes batches 0 and 2, worker 1 batches 1 and 3
    assert steps_per_epoch(10, 2, 3) == 2
    assert shard_batches(10, 2, 0, 3, shuffle=False) == [[0, 1, 2], [6, 7]]
    assert shard_batches(10, 2, 1, 3, shuffle=False) == [[3, 4, 5], [8, 9]]
    # one worker: the same cut into near-equal batches (no one-row tail batch)
    assert shard_batches(7, 1, 0, 3, shuffle=False) == [[0, 1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize(("n", "world", "batch"), [(10, 2, 3), (141, 2, 8), (33, 3, 4),
                                                   (16, 2, 8), (5, 2, 32)])
def test_every_row_once_per_epoch_and_equal_steps(n, world, batch):
    for epoch in (0, 1):
        parts = [shard_batches(n, world, r, batch, seed=7, epoch=epoch) for r in range(world)]
        rows = list(itertools.chain.from_iterable(itertools.chain.from_iterable(parts)))
        assert sorted(rows) == list(range(n))  # all rows, none twice
        assert {len(p) for p in parts} == {steps_per_epoch(n, world, batch)}
        sizes = [len(b) for p in parts for b in p]
        assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1


def test_order_is_shared_by_workers_and_changes_per_epoch():
    """Each worker's batches are its share of one permutation seeded by (seed, epoch) alone:
    40 rows, 2 workers, 4 rows per step cut the permutation into 10 batches of 4, and worker r
    takes batches r, r + 2, ... A worker that shuffled on its own (seeded by its rank, its
    process, or unseeded) would hold other rows than its share."""
    for epoch in (0, 1):
        order = np.random.default_rng([3, epoch]).permutation(40).tolist()
        cut = [order[4 * b: 4 * b + 4] for b in range(10)]
        for rank in (0, 1):
            assert shard_batches(40, 2, rank, 4, seed=3, epoch=epoch) == cut[rank::2]
    assert shard_batches(40, 2, 0, 4, seed=3, epoch=0) != \
        shard_batches(40, 2, 0, 4, seed=3, epoch=1)  # a new permutation per epoch


def test_sampler_records_what_it_yields():
    seen = []
    sampler = EvenShardSampler(10, 2, 1, 3, seed=0, record=lambda e, b: seen.append((e, b)))
    sampler.set_epoch(2)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 2
    assert seen == [(2, b) for b in batches] == [(2, b) for b in
                                                shard_batches(10, 2, 1, 3, seed=0, epoch=2)]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="rank 2"):
        shard_batches(10, 2, 2, 3)
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(10, 2, 0)
    with pytest.raises(ValueError, match="fewer workers"):  # 3 rows, 2 workers x 2 steps of 1
        shard_batches(3, 2, 0, 1)
