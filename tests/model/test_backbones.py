"""Every registered backbone honours the Recommender contract, and each one's forward equals a hand-written
dense reference on a tiny graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import count_knn_searches, tiny_context, train_steps
from torch import nn

from painvrl.config import ModelConfig
from painvrl.errors import PainvrlInputError
from painvrl.model.bm3 import BM3
from painvrl.model.encoders import MaskedProjection
from painvrl.model.freedom import FREEDOM
from painvrl.model.graphs import bipartite_adjacency
from painvrl.model.lattice import LATTICE
from painvrl.model.mmgcn import MMGCN
from painvrl.model.propagated import PropagatedRecommender
from painvrl.model.recommender import BuildContext, Recommender
from painvrl.model.registry import MODELS, check_model_config
from painvrl.model.vbpr import VBPR

FEATURE_MODELS = sorted(set(MODELS) - {"lightgcn"})


def _build(name: str, seed: int = 0, **context_changes: object) -> tuple[Recommender, BuildContext]:
    context = tiny_context(seed=seed)
    if context_changes:
        context = BuildContext(**{**context.__dict__, **context_changes})
    torch.manual_seed(seed)
    return MODELS[name].build(context), context


@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract_loss_vector_scores_and_training(name: str) -> None:
    model, context = _build(name)
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    negs = torch.randint(0, context.n_items, (3, 5), generator=torch.Generator().manual_seed(0))
    model.eval()
    losses = model.per_interaction_loss(users, pos, negs)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    scaled = model.per_interaction_loss(users, pos, negs, score_scale=torch.ones(3))
    torch.testing.assert_close(scaled, losses)
    with torch.no_grad():
        full = model.ranking_scorer()(torch.arange(context.n_users))
        pairs = model.score_pairs(torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9]))
    assert full.shape == (context.n_users, context.n_items)
    torch.testing.assert_close(pairs, full[torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9])], rtol=1e-5, atol=1e-6)
    model.train()
    model.start_epoch(0, 0)
    curve = train_steps(model, context, steps=40, lr=0.02)
    assert curve[-1] < curve[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_shared_negative_pool_gives_the_same_loss_and_gradients(name: str) -> None:
    model, context = _build(name)
    model.double()  # the pooled product sums in another order: compare in float64
    generator = torch.Generator().manual_seed(1)
    pool_items = torch.randperm(context.n_items, generator=generator)[:7]
    positions = torch.randint(0, 7, (6, 4), generator=generator)
    users, pos = torch.arange(6), torch.arange(6) % context.n_items
    model.train()
    losses = []
    for pool in (None, (pool_items, positions)):
        model.start_epoch(0, 0)  # the same pruned graph (freedom), a fresh learned graph (lattice)
        torch.manual_seed(2)  # the same dropout (bm3)
        model.zero_grad()
        loss = model.per_interaction_loss(users, pos, pool_items[positions], pool=pool)
        loss.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        losses.append((loss.detach(), grads))
    (plain, plain_grads), (pooled, pooled_grads) = losses
    torch.testing.assert_close(pooled, plain, rtol=1e-10, atol=1e-12)
    assert plain_grads.keys() == pooled_grads.keys() and plain_grads
    for name_ in plain_grads:
        torch.testing.assert_close(pooled_grads[name_], plain_grads[name_], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_a_frozen_copy_trains_only_its_new_encoder_slot(name: str) -> None:
    model, context = _build(name)
    slot = nn.Linear(context.features.shape[1], 8, bias=False)
    view = model.frozen_with_encoder(slot)
    model.start_epoch(0, 0)
    view.train()
    loss = view.per_interaction_loss(torch.arange(6), torch.arange(6) % context.n_items,
                                     torch.randint(0, context.n_items, (6, 3))).sum()
    loss.backward()
    assert slot.weight.grad is not None and slot.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for n, p in view.named_parameters() if not n.startswith("encoder."))


def test_unknown_settings_name_the_field() -> None:
    with pytest.raises(PainvrlInputError, match=r"'model\.settings\.lattice\.knn'"):
        check_model_config(ModelConfig(name="lattice", settings={"lattice": {"knn": 3}}))
    with pytest.raises(PainvrlInputError, match=r"'model\.settings\.nope'"):
        check_model_config(ModelConfig(name="lattice", settings={"nope": {}}))
    check_model_config(ModelConfig(name="lattice", settings={"lattice": {"knn_k": 3}, "bm3": {"dropout": 0.3}}))


def test_vbpr_score_is_id_part_plus_projected_features() -> None:
    model, context = _build("vbpr")
    assert isinstance(model, VBPR)
    users, items = torch.tensor([0, 4]), torch.tensor([3, 7])
    p, q = model.user_embedding[users], model.item_embedding[items]
    expected = (p[:, :8] * q).sum(-1) + (p[:, 8:] * context.encoder(context.features[items])).sum(-1)
    torch.testing.assert_close(model.score_pairs(users, items), expected)


def _dense_row_adjacency(context: BuildContext) -> torch.Tensor:
    n = context.n_users + context.n_items
    a = torch.zeros(n, n)
    for u, i in context.train:
        a[u, context.n_users + i] = a[context.n_users + i, u] = 1.0
    return a / a.sum(1, keepdim=True).clamp_min(1)


def test_mmgcn_equals_a_dense_reference() -> None:
    model, context = _build("mmgcn")
    assert isinstance(model, MMGCN)
    a = _dense_row_adjacency(context)
    total = torch.zeros_like(model.embedding)
    for name, columns in context.modality_slices.items():
        block = torch.zeros_like(context.features)
        block[:, columns] = context.features[:, columns]
        x = F.normalize(torch.cat([model.preferences[name], context.encoder(block)]), dim=1)
        for agg, comb in zip(model.aggregate[name], model.combine[name], strict=True):  # type: ignore[call-overload]
            x = F.leaky_relu((a @ x) @ agg.weight.T) + F.leaky_relu(x @ comb.weight.T + comb.bias) + model.embedding
        total = total + x
    total = total / 2
    users, items = model.representations()
    torch.testing.assert_close(users, total[: context.n_users], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(items, total[context.n_users:], rtol=1e-4, atol=1e-5)


def _dense_knn(x: torch.Tensor, k: int, binary: bool) -> torch.Tensor:
    unit = F.normalize(x, dim=1)
    sim = unit @ unit.T
    top = torch.topk(sim, k, dim=1)
    a = torch.zeros_like(sim).scatter(1, top.indices, 1.0 if binary else top.values.clamp_min(0))
    d = a.sum(1)
    inv = torch.where(d > 0, d.clamp_min(1e-12).rsqrt(), torch.zeros_like(d))
    return a * inv.unsqueeze(1) * inv.unsqueeze(0)


def _lightgcn_dense(context: BuildContext, ego: torch.Tensor, layers: int) -> torch.Tensor:
    a = bipartite_adjacency(context.train, context.n_users, context.n_items).to_dense()
    out, cur = ego, ego
    for _ in range(layers):
        cur = a @ cur
        out = out + cur
    return out / (layers + 1)


def test_lattice_equals_a_dense_reference() -> None:
    model, context = _build("lattice")
    assert isinstance(model, LATTICE)
    k, lam = model.settings.knn_k, model.settings.lambda_coeff
    weights = torch.softmax(model.modality_weight, dim=0)
    items = model.embedding[context.n_users:]
    graph = torch.zeros_like(items)
    for weight, columns in zip(weights, context.modality_slices.values(), strict=True):
        block = torch.zeros_like(context.features)
        block[:, columns] = context.features[:, columns]
        mixed = (1 - lam) * _dense_knn(context.encoder(block), k, binary=False) \
            + lam * _dense_knn(context.features[:, columns], k, binary=False)
        graph = graph + weight * (mixed @ items)
    ui = _lightgcn_dense(context, model.embedding, model.settings.n_ui_layers)
    users, item_table = model.representations()
    torch.testing.assert_close(users, ui[: context.n_users], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(item_table, ui[context.n_users:] + F.normalize(graph, dim=1), rtol=1e-4, atol=1e-5)


class _KeyedSlot(nn.Linear):
    """A projection slot with a graph key, as the mask and environment models' slots have."""

    generation = 0

    def graph_key(self) -> tuple[int, int]:
        return self.generation, 0


def test_lattice_frozen_copy_keeps_neighbour_lists_per_graph_key(monkeypatch: pytest.MonkeyPatch) -> None:
    model, context = _build("lattice")
    searches = count_knn_searches(monkeypatch)
    slot = _KeyedSlot(context.features.shape[1], 8, bias=False)
    view = model.frozen_with_encoder(slot)
    assert isinstance(view, LATTICE)
    users, pos = torch.arange(6), torch.arange(6) % context.n_items
    negs = torch.randint(0, context.n_items, (6, 3), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(slot.parameters(), lr=0.5)
    n_modalities = len(context.modality_slices)
    for step in range(3):
        searches.clear()
        loss = view.per_interaction_loss(users, pos, negs)
        assert len(searches) == (n_modalities if step == 0 else 0), "lists are searched once per key"
        if step == 0:  # the same lists a full rebuild finds
            rebuilt = model.frozen_with_encoder(slot)
            assert isinstance(rebuilt, LATTICE)
            rebuilt.reuse_learned_graph = True  # the backbone's own path: no key, a fresh search
            torch.testing.assert_close(loss, rebuilt.per_interaction_loss(users, pos, negs))
        optimizer.zero_grad()
        loss.sum().backward()
        assert slot.weight.grad is not None and slot.weight.grad.abs().sum() > 0, "the slot learns at every step"
        optimizer.step()
    searches.clear()
    slot.generation = 1  # a new generation: the lists are searched again, the old ones dropped
    view.per_interaction_loss(users, pos, negs)
    assert len(searches) == n_modalities and list(view._neighbours) == [(1, 0)]


def test_lattice_feature_graph_follows_the_mask() -> None:
    model, context = _build("lattice")
    assert isinstance(model, LATTICE)
    mask = torch.ones(context.features.shape[1])
    mask[2:] = 0.0  # image keeps two columns, audio none
    masked = model.frozen_with_encoder(MaskedProjection(mask, context.features.shape[1], 8))
    assert isinstance(masked, LATTICE)
    expected = _dense_knn(context.features[:, :2], model.settings.knn_k, binary=False)
    lists, w = masked.feature_graphs["image"]
    idx = lists.indices
    dense = torch.zeros(context.n_items, context.n_items).scatter_add(1, idx, w)
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-5)


def test_freedom_equals_a_dense_reference_and_prunes_per_epoch() -> None:
    model, context = _build("freedom")
    assert isinstance(model, FREEDOM)
    mm = torch.stack([_dense_knn(context.features[:, c], model.settings.knn_k, binary=True)
                      for c in context.modality_slices.values()]).sum(0) / 2
    ui = _lightgcn_dense(context, model.embedding, model.settings.n_ui_layers)
    model.eval()
    users, items = model.representations()
    torch.testing.assert_close(users, ui[: context.n_users], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(items, ui[context.n_users:] + mm @ model.embedding[context.n_users:], rtol=1e-4,
                               atol=1e-5)
    n_edges = len(np.unique(context.train, axis=0))
    model.start_epoch(3, 7)
    first = model.pruned.matrix().to_sparse_coo().coalesce().indices().clone()
    assert first.shape[1] == 2 * round(0.2 * n_edges)
    model.start_epoch(3, 7)
    assert torch.equal(model.pruned.matrix().to_sparse_coo().coalesce().indices(), first)  # a function of (seed, epoch)
    model.start_epoch(4, 7)
    assert not torch.equal(model.pruned.matrix().to_sparse_coo().coalesce().indices(), first)


def test_bm3_loss_is_the_bootstrapped_cosine_objective() -> None:
    model, context = _build("bm3")
    assert isinstance(model, BM3)
    model.eval()  # no dropout: targets are the vectors themselves
    users, pos = torch.tensor([0, 2]), torch.tensor([1, 4])
    u_all, i_all = _lightgcn_dense(context, model.embedding, 1).split([context.n_users, context.n_items])
    u, i = u_all[users], i_all[pos]
    p = model.predictor
    expected = (1 - F.cosine_similarity(p(u), i)) + (1 - F.cosine_similarity(p(i), u))
    for columns in context.modality_slices.values():
        block = torch.zeros(2, context.features.shape[1])
        block[:, columns] = context.features[pos][:, columns]
        c = context.encoder(block)
        expected = expected + 2.0 * ((1 - F.cosine_similarity(p(c), i)) + (1 - F.cosine_similarity(p(c), c)))
    got = model.per_interaction_loss(users, pos, torch.zeros(2, 3, dtype=torch.long))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["bm3", "freedom", "lattice", "lightgcn"])
def test_a_frozen_copy_propagates_its_id_embeddings_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module = importlib.import_module(f"painvrl.model.{name}")
    calls: list[int] = []
    original = module.propagate

    def counted(adjacency: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> torch.Tensor:
        calls.append(n_layers)
        return original(adjacency, embeddings, n_layers)

    monkeypatch.setattr(module, "propagate", counted)
    model, context = _build(name)
    model.start_epoch(0, 0)
    users, pos = torch.arange(6), torch.arange(6) % context.n_items
    negs = torch.randint(0, context.n_items, (6, 3), generator=torch.Generator().manual_seed(0))

    def two_steps(recommender: Recommender) -> list[torch.Tensor]:
        calls.clear()
        out = []
        for _ in range(2):
            torch.manual_seed(3)  # the same dropout (bm3)
            out.append(recommender.per_interaction_loss(users, pos, negs).detach())
        return out

    model.train()
    trained = two_steps(model)
    assert len(calls) == 2, "a model whose ID embeddings train propagates at every forward"
    view = model.frozen_with_encoder(model.encoder)
    view.train()
    frozen = two_steps(view)
    assert len(calls) == 1, "a frozen copy propagates its ID embeddings once"
    for ours, theirs in zip(frozen, trained, strict=True):
        torch.testing.assert_close(ours, theirs)
    view.eval()
    two_steps(view)
    assert len(calls) == 1, "eval mode has its own cached part (no dropout, the full graph)"
    view.train()
    view.start_epoch(1, 0)  # freedom prunes another graph: its cached part is dropped
    calls.clear()
    torch.manual_seed(3)
    view.per_interaction_loss(users, pos, negs)
    assert len(calls) == (1 if name in ("freedom", "lattice") else 0), "cached parts are kept across epochs"
    model.start_epoch(1, 0)
    model.train()
    (ours,), (theirs,) = two_steps(view)[:1], two_steps(model)[:1]
    torch.testing.assert_close(ours, theirs)
    assert isinstance(view, PropagatedRecommender)
    with torch.no_grad():
        view.embedding.add_(0.1)  # an in-place change of the frozen table is seen at the next forward
    changed = two_steps(view)
    assert len(calls) == 1 and not torch.allclose(changed[0], theirs)


def test_lattice_frozen_copy_propagates_over_its_feature_graphs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import painvrl.model.lattice as lattice_module

    model, context = _build("lattice")
    sums: list[int] = []
    original = lattice_module.neighbour_sum

    def counted(indices: torch.Tensor, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sums.append(int(weights.requires_grad))
        return original(indices, weights, x)

    monkeypatch.setattr(lattice_module, "neighbour_sum", counted)
    users, pos = torch.arange(6), torch.arange(6) % context.n_items
    negs = torch.randint(0, context.n_items, (6, 3), generator=torch.Generator().manual_seed(0))
    slot = nn.Linear(context.features.shape[1], 8, bias=False)
    view = model.frozen_with_encoder(slot)
    n_modalities = len(context.modality_slices)
    losses = []
    for _ in range(2):
        sums.clear()
        losses.append(view.per_interaction_loss(users, pos, negs))
        assert sums.count(1) == n_modalities, "the learned graphs carry the slot's gradient at every forward"
    assert len(sums) == n_modalities, "the fixed feature graphs propagate the frozen item IDs once"
    losses[-1].sum().backward()
    assert slot.weight.grad is not None and slot.weight.grad.abs().sum() > 0
    assert isinstance(view, LATTICE)
    view.embedding.requires_grad_(True)  # nothing cached: every part recomputed, the same loss
    sums.clear()
    torch.testing.assert_close(view.per_interaction_loss(users, pos, negs), losses[0])
    assert len(sums) == 2 * n_modalities
