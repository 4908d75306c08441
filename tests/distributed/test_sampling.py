from __future__ import annotations

import numpy as np
import pytest
import torch

from painvrl.distributed.sampling import (
    EpochBatches,
    SamplerState,
    draw_negative_pool,
    draw_negatives,
    environment_balanced_batches,
    make_generator,
    stream_seed,
)


def _batches(world_size: int, rank: int, pool: int = 0, n: int = 103, batch: int = 20) -> list:
    return list(EpochBatches(n, batch, seed=3, epoch=1, rank=rank, world_size=world_size, n_items=50,
                             n_negatives=4, negative_pool=pool))


@pytest.mark.parametrize("pool", [0, 16])
def test_shards_are_disjoint_and_their_union_is_the_global_batch(pool: int) -> None:
    single = _batches(1, 0, pool)
    parts = [_batches(2, r, pool) for r in range(2)]
    assert len(single) == 6 and all(len(p) == 6 for p in parts)
    seen: list[int] = []
    for step, whole in enumerate(single):
        a, b = parts[0][step], parts[1][step]
        assert set(a.rows.tolist()).isdisjoint(b.rows.tolist())
        assert torch.equal(torch.cat([a.rows, b.rows]), whole.rows)
        assert a.global_size == b.global_size == whole.rows.shape[0]
        # negatives: drawn for the global batch, then sliced: 1 rank with B == 2 ranks with B/2 each
        assert whole.negatives is not None and a.negatives is not None and b.negatives is not None
        assert torch.equal(torch.cat([a.negatives, b.negatives]), whole.negatives)
        seen.extend(whole.rows.tolist())
    assert sorted(seen) == list(range(103))  # one epoch = a permutation of all positives


def test_pool_batches_carry_pool_and_positions_consistent_with_negatives() -> None:
    for rank in range(2):
        for batch in _batches(2, rank, pool=16):
            assert batch.pool is not None and batch.pool_positions is not None and batch.negatives is not None
            assert batch.pool.shape == (16,)
            assert torch.equal(batch.pool[batch.pool_positions], batch.negatives)
    assert all(b.pool is None for b in _batches(1, 0, pool=0))
    assert all(b.pool is None for b in _batches(1, 0, pool=50))  # a pool >= n_items is not a pool


def test_epochs_differ_and_same_seed_repeats() -> None:
    first = [b.rows for b in EpochBatches(50, 10, seed=0, epoch=0)]
    again = [b.rows for b in EpochBatches(50, 10, seed=0, epoch=0)]
    other = [b.rows for b in EpochBatches(50, 10, seed=0, epoch=1)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


def test_start_step_resumes_the_same_stream() -> None:
    full = _batches(1, 0)
    resumed = list(EpochBatches(103, 20, seed=3, epoch=1, n_items=50, n_negatives=4, start_step=4))
    assert [b.step for b in resumed] == [4, 5]
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a.rows, b.rows) and torch.equal(a.negatives, b.negatives)  # type: ignore[arg-type]


def test_negatives_are_marginally_uniform_with_and_without_pool() -> None:
    n_items = 20
    for pool, tolerance in ((0, 0.05), (8, 0.15)):  # a shared pool correlates draws: wider tolerance
        generator = make_generator(0, "t", pool)
        draws = torch.cat([draw_negatives(generator, 10, 5, n_items, pool).reshape(-1) for _ in range(2000)])
        counts = np.bincount(draws.numpy(), minlength=n_items)
        expected = draws.numel() / n_items
        assert np.abs(counts - expected).max() < tolerance * expected


def test_pool_draw_matches_pooled_negatives() -> None:
    a = draw_negatives(make_generator(1, "x"), 7, 3, 100, 10)
    pool, positions = draw_negative_pool(make_generator(1, "x"), 7, 3, 100, 10)
    assert torch.equal(pool[positions], a)


def test_stream_seed_is_stable_and_distinct() -> None:
    assert stream_seed(0, "train", 1) == stream_seed(0, "train", 1)
    assert len({stream_seed(0, "train", 1), stream_seed(0, "train", 2), stream_seed(0, "final", 1),
                stream_seed(1, "train", 1)}) == 4
    assert SamplerState.from_dict(SamplerState(3, 7).to_dict()) == SamplerState(3, 7)


def test_environment_balanced_batches_shard_per_environment() -> None:
    labels = np.array([0] * 30 + [1] * 7 + [2] * 0 + [0] * 3)
    single = list(environment_balanced_batches(labels, 3, 8, seed=0, epoch=0))
    parts = [list(environment_balanced_batches(labels, 3, 8, seed=0, epoch=0, rank=r, world_size=2))
             for r in range(2)]
    assert len(single) == 5  # ceil(33 / 8): the largest environment seen once
    for step, per_env in enumerate(single):
        assert len(per_env) == 3
        assert per_env[2].size == 0
        for env, rows in enumerate(per_env):
            assert np.all(labels[rows] == env)
            assert np.array_equal(np.concatenate([parts[0][step][env], parts[1][step][env]]), rows)
        assert len(per_env[1]) == 7  # an environment smaller than the batch: each member once
    covered = np.unique(np.concatenate([s[0] for s in single]))
    assert np.array_equal(covered, np.flatnonzero(labels == 0))
