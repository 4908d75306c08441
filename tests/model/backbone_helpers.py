"""Tiny BuildContext builders for the backbone tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from painvrl.config import ModelConfig
from painvrl.model.recommender import BuildContext, Recommender


def tiny_context(n_users: int = 12, n_items: int = 10, d_per_modality: int = 6, seed: int = 0,
                 density: float = 0.3, k: int = 8) -> BuildContext:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    train = np.argwhere(mask).astype(np.int64)
    torch.manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(n_items, 2 * d_per_modality), dim=1)
    encoder = nn.Linear(2 * d_per_modality, k, bias=False)
    return BuildContext(n_users=n_users, n_items=n_items, train=train, features=feats,
                        modality_slices={"image": slice(0, d_per_modality),
                                         "audio": slice(d_per_modality, 2 * d_per_modality)},
                        encoder=encoder, model_config=ModelConfig(k_id=k, k_f=k, init_std=0.1, l2=1e-4))


def train_steps(model: Recommender, context: BuildContext, steps: int = 30, lr: float = 0.05) -> list[float]:
    """Full-batch Adam steps on the training positives with fixed negatives; the loss after each step."""
    gen = torch.Generator().manual_seed(1)
    pairs = torch.as_tensor(context.train)
    negs = torch.randint(0, context.n_items, (len(pairs), 4), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model.loss(pairs[:, 0], pairs[:, 1], negs)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def count_knn_searches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch LATTICE's top-k neighbour search to record the row count of every search; the record."""
    import painvrl.model.lattice as lattice_module

    searches: list[int] = []
    search = lattice_module.knn_neighbours

    def counted(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        searches.append(x.shape[0])
        return search(x, k)

    monkeypatch.setattr(lattice_module, "knn_neighbours", counted)
    return searches
