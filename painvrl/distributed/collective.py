"""Collectives the training code calls, so one code path runs in-process and as N Ray Train workers.

Design (why not DDP's wrapper): IRM-style penalties need autograd.grad with create_graph=True, which DDP's
gradient hooks neither reduce nor support (double backward). Instead every step is written as a function of
GLOBAL quantities:

- a global batch is drawn identically on every rank (shared seed) and each rank keeps a disjoint slice;
- per-rank partial sums (losses already divided by the GLOBAL count, per-environment sums, per-objective
  gradients) are combined with ``all_reduce_sum``. Its forward sums over ranks; its backward is the identity,
  so back-propagating a globally computed objective gives each rank only its own contribution;
- ``sync_gradients`` then sums parameter gradients over ranks, so every rank holds the exact gradient of the
  global objective and takes the identical optimiser step, equal to one process on the union of the batches.

In-process, ``LocalCollective`` makes every call the identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch


class Collective(Protocol):
    rank: int
    world_size: int

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks; forward only (backward passes the gradient through unchanged)."""
        ...

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum .grad of the given parameters over ranks, in place."""
        ...

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order."""
        ...

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        ...

    def barrier(self) -> None:
        ...


class LocalCollective:
    """Single process: every collective is the identity."""

    rank = 0
    world_size = 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None

    def all_gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        return None


def shard_slice(n: int, rank: int, world_size: int) -> slice:
    """Contiguous, disjoint slice of a global batch of n rows for this rank (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def replicated(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """Same value, gradient divided by world_size: a term every rank computes identically is counted once
    after gradients are summed over ranks."""
    if world_size == 1:
        return value
    return value / world_size + (value - value / world_size).detach()


def synced_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.nn.Parameter],
                collective: Collective) -> None:
    """One optimiser step on ``loss`` with the gradients summed over ranks (gradients kept allocated, so every
    rank syncs the same tensors)."""
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    collective.sync_gradients(params)
    optimizer.step()
