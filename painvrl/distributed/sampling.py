"""Global-batch iteration and negative sampling, identical on every rank (see collective.py).

Every rank builds the same ``torch.Generator`` from (seed, phase, epoch), draws the same permutation of the
training positives and the same negatives for each GLOBAL batch, and keeps only ``shard_slice`` of each global
batch. One worker with batch B therefore sees exactly the rows and negatives that two workers with B/2 each see
together.

Negatives are uniform over all items, as in UltraGCN; a negative that happens to be a positive of the user is
not rejected (with tens of thousands of items the chance is small, and rejection would make the draw depend on
per-user state). Two draws are available:

- ``negative_pool = 0``: every positive draws ``n_neg`` item ids independently and uniformly;
- ``negative_pool = P > 0``: each step first draws a pool of ``P`` item ids uniformly (with replacement), then
  every positive draws its ``n_neg`` negatives uniformly from that pool. Each negative is still marginally
  uniform over all items; negatives of different positives of one step are correlated through the shared pool.
  The pool bounds the number of unique items a step must encode to about ``B + P`` (instead of up to
  ``B * (1 + n_neg)``), which is what makes a step cheap with wide (2048-d) features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from painvrl.distributed.collective import shard_slice


def stream_seed(seed: int, phase: str, *counters: int) -> int:
    """A 63-bit seed derived from (seed, phase, counters...): stable across processes and Python versions."""
    text = ":".join([str(int(seed)), phase, *(str(int(c)) for c in counters)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, phase: str, *counters: int) -> torch.Generator:
    """CPU generator seeded from (seed, phase, counters...), created identically on every rank."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(stream_seed(seed, phase, *counters))
    return generator


def draw_negatives(generator: torch.Generator, n_rows: int, n_negatives: int, n_items: int,
                   negative_pool: int = 0) -> torch.Tensor:
    """int64 [n_rows, n_negatives] item ids, marginally uniform over ``n_items`` (see module docstring).

    A pool at least as large as ``n_items`` gives no saving and is replaced by independent draws.
    """
    if not pool_active(negative_pool, n_items):
        return torch.randint(n_items, (n_rows, n_negatives), generator=generator)
    pool, positions = draw_negative_pool(generator, n_rows, n_negatives, n_items, negative_pool)
    return pool[positions]


def draw_negative_pool(generator: torch.Generator, n_rows: int, n_negatives: int, n_items: int,
                       negative_pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool [P], positions [n_rows, n_negatives]): the negatives are ``pool[positions]``.

    Consumes the generator exactly like :func:`draw_negatives` with the same pool size, so both give the same
    negatives; this form lets a step score every user against the P pool items with one matrix product.
    """
    pool = torch.randint(n_items, (negative_pool,), generator=generator)
    return pool, torch.randint(negative_pool, (n_rows, n_negatives), generator=generator)


def pool_active(negative_pool: int, n_items: int) -> bool:
    """A pool smaller than the item count is used; otherwise negatives are drawn independently."""
    return 0 < negative_pool < n_items


@dataclass
class SamplerState:
    """Position of the sampler, stored in checkpoints: the next batch is ``step`` of ``epoch``."""

    epoch: int = 0
    step: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "step": int(self.step)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplerState:
        return cls(epoch=int(values.get("epoch", 0)), step=int(values.get("step", 0)))


@dataclass
class Batch:
    """This rank's part of one global batch."""

    step: int
    """Index of the global batch within the epoch."""
    rows: torch.Tensor
    """int64 [b]: indices into the training positives (this rank's slice of the global batch)."""
    negatives: torch.Tensor | None
    """int64 [b, n_neg] item ids (this rank's slice of the global batch's negatives), or None."""
    global_size: int
    """Number of positives in the GLOBAL batch (the divisor of every per-step loss sum)."""
    pool: torch.Tensor | None = None
    """int64 [P] the step's shared negative pool (the same on every rank), when a pool is used."""
    pool_positions: torch.Tensor | None = None
    """int64 [b, n_neg] positions into ``pool`` (``negatives == pool[pool_positions]``), when a pool is used."""


class EpochBatches:
    """One epoch of global batches over ``n_positives`` training positives, sharded by rank.

    The permutation and all negatives come from one generator seeded from (seed, phase, epoch), consumed in
    the same order on every rank: first the permutation, then each step's negatives for the whole global batch.
    ``start_step`` skips already-trained steps (resuming mid-epoch) while keeping the generator in step.
    """

    def __init__(self, n_positives: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, *, phase: str = "train", n_items: int = 0, n_negatives: int = 0,
                 negative_pool: int = 0, start_step: int = 0) -> None:
        if n_positives < 1 or batch_size < 1:
            raise ValueError(f"EpochBatches needs n_positives >= 1 and batch_size >= 1, got {n_positives}, "
                             f"{batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if n_negatives > 0 and n_items < 1:
            raise ValueError("negatives need n_items >= 1")
        self.n_positives, self.batch_size = n_positives, batch_size
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.phase, self.n_items, self.n_negatives = phase, n_items, n_negatives
        self.negative_pool, self.start_step = negative_pool, start_step

    def __len__(self) -> int:
        return -(-self.n_positives // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        generator = make_generator(self.seed, self.phase, self.epoch)
        order = torch.randperm(self.n_positives, generator=generator)
        for step in range(len(self)):
            rows = order[step * self.batch_size:(step + 1) * self.batch_size]
            global_size = int(rows.shape[0])
            negatives = pool = positions = None
            if self.n_negatives > 0 and pool_active(self.negative_pool, self.n_items):
                pool, positions = draw_negative_pool(generator, global_size, self.n_negatives, self.n_items,
                                                     self.negative_pool)
                negatives = pool[positions]
            elif self.n_negatives > 0:
                negatives = draw_negatives(generator, global_size, self.n_negatives, self.n_items)
            if step < self.start_step:
                continue
            part = shard_slice(global_size, self.rank, self.world_size)
            yield Batch(step=step, rows=rows[part],
                        negatives=None if negatives is None else negatives[part], global_size=global_size,
                        pool=pool, pool_positions=None if positions is None else positions[part])


def environment_balanced_batches(labels: np.ndarray, n_envs: int, per_env_batch: int, seed: int, epoch: int,
                                 rank: int = 0, world_size: int = 1, *, steps: int = 0,
                                 phase: str = "envs") -> Iterator[list[np.ndarray]]:
    """Per step, one int64 index array per environment: this rank's slice of that environment's global batch.

    Each environment's positives (``labels == e``) are permuted with the shared generator and cycled, so small
    environments are revisited within an epoch; ``steps = 0`` runs until the largest environment has been seen
    once. Empty environments yield empty arrays. Identical across ranks up to the slicing.
    """
    labels = np.asarray(labels)
    if per_env_batch < 1:
        raise ValueError(f"per_env_batch must be >= 1, got {per_env_batch}")
    generator = make_generator(seed, phase, epoch)
    members = [np.flatnonzero(labels == e) for e in range(n_envs)]
    orders = [m[torch.randperm(len(m), generator=generator).numpy()] if len(m) else m for m in members]
    largest = max((len(m) for m in members), default=0)
    n_steps = steps if steps > 0 else max(1, -(-largest // per_env_batch))
    for step in range(n_steps):
        batch: list[np.ndarray] = []
        for order in orders:
            if len(order) == 0:
                batch.append(np.zeros(0, dtype=np.int64))
                continue
            positions = (np.arange(step * per_env_batch, (step + 1) * per_env_batch)) % len(order)
            if len(order) < per_env_batch:
                positions = np.unique(positions)  # a tiny environment: each member once per step
            global_rows = order[positions].astype(np.int64)
            batch.append(global_rows[shard_slice(len(global_rows), rank, world_size)])
        yield batch
