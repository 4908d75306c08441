"""Helpers shared by the invariance tests: thread-simulated ranks and a small ERM-pretrained backbone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from painvrl.data.dataset import InteractionData
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights


class ThreadCollective:
    """Ranks simulated by threads of ONE process: sums and gathers exchanged through shared slots and a barrier."""

    def __init__(self, rank: int, world_size: int, shared: dict[str, Any]) -> None:
        self.rank, self.world_size, self.shared = rank, world_size, shared

    def _exchange(self, obj: Any) -> list[Any]:
        self.shared["slots"][self.rank] = obj
        self.shared["barrier"].wait()
        values = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return values

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = self._exchange(tensor.detach().clone())
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return tensor + (total - tensor).detach() if tensor.requires_grad else total

    def sync_gradients(self, params: Any) -> None:
        params = [p for p in params if p.grad is not None]
        summed = self.all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]))
        offset = 0
        for p in params:
            p.grad.copy_(summed[offset: offset + p.numel()].view_as(p))
            offset += p.numel()

    def all_gather_objects(self, obj: Any) -> list[Any]:
        return self._exchange(obj)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return self._exchange(obj)[src]

    def barrier(self) -> None:
        self.shared["barrier"].wait()


def run_two_ranks(fn: Callable[[ThreadCollective], Any], timeout: float = 120) -> list[Any]:
    """``fn(collective)`` on two thread-simulated ranks; the results of rank 0 and rank 1."""
    shared: dict[str, Any] = {"barrier": threading.Barrier(2), "slots": [None, None]}
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(fn, ThreadCollective(r, 2, shared)) for r in range(2)]
        return [f.result(timeout=timeout) for f in futures]


def pretrained_backbone(data: InteractionData, k: int = 16, epochs: int = 10) -> UltraGCN:
    """ERM backbone on full features (a few Adam epochs: enough for frozen P, Q)."""
    torch.manual_seed(0)
    features = torch.as_tensor(data.feature_matrix())
    b_u, b_i = degree_weights(data.train, data.n_users, data.n_items)
    model = UltraGCN(data.n_users, data.n_items, features, FeatureProjection(features.shape[1], k), b_u, b_i,
                     k_id=k, k_f=k)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = torch.as_tensor(data.train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), 256):
            rows = train[perm[start:start + 256]]
            loss = model.loss(rows[:, 0], rows[:, 1], torch.randint(data.n_items, (len(rows), 10), generator=gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
