"""A new backbone is one class plus one registry line: a matrix-factorisation recommender written here, with a
BPR loss, runs erm and painvrl end to end on the synthetic benchmark without any other edit."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from painvrl.config import load_config
from painvrl.data.registry import load_dataset
from painvrl.distributed.collective import LocalCollective
from painvrl.model.recommender import BuildContext, NegativePool, Recommender, UserScorer
from painvrl.model.registry import MODELS
from painvrl.training.pipeline import run_pipeline


class FeatureMF(Recommender):
    """score(u, i) = <P_u, Q_i + encoder(f_i)>, trained with BPR against each negative."""

    name: ClassVar[str] = "feature_mf"

    def __init__(self, context: BuildContext) -> None:
        super().__init__()
        m = context.model_config
        self.n_users, self.n_items, self.encoder, self.l2 = context.n_users, context.n_items, context.encoder, m.l2
        self.users = nn.Parameter(torch.randn(context.n_users, m.k_f) * m.init_std)
        self.items = nn.Parameter(torch.randn(context.n_items, m.k_f) * m.init_std)
        self.register_buffer("features", context.features, persistent=False)

    @classmethod
    def build(cls, context: BuildContext) -> FeatureMF:
        return cls(context)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.items[items] + self.encoder(self.features[items])

    def per_interaction_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, *,
                             pool: NegativePool | None = None,
                             score_scale: torch.Tensor | None = None) -> torch.Tensor:
        user_vecs = self.users[users]
        pos = (user_vecs * self.item_vectors(pos_items)).sum(-1)
        neg = torch.einsum("bk,bnk->bn", user_vecs, self.item_vectors(neg_items))
        scale = torch.ones_like(pos) if score_scale is None else score_scale
        return F.softplus(-(pos * scale).unsqueeze(1) + neg * scale.unsqueeze(1)).mean(1)

    def example_regularisation(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        return self.l2 * (self.users[users].pow(2).sum() + self.items[pos_items].pow(2).sum())

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users[users] * self.item_vectors(items)).sum(-1)

    def ranking_scorer(self) -> UserScorer:
        all_items = self.item_vectors(torch.arange(self.n_items, device=self.features.device))
        return lambda users: self.users[users] @ all_items.T

    @torch.no_grad()
    def score_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.clone(), self.item_vectors(torch.arange(self.n_items, device=self.features.device))


class OpaqueMF(FeatureMF):
    """The same model without score_factors: the invariance methods cannot use its score as a fixed offset."""

    name: ClassVar[str] = "opaque_mf"
    score_factors = Recommender.score_factors


FAST = ["dataset.ood=synthetic", "dataset.synthetic.n_users=120", "dataset.synthetic.n_items=160",
        "dataset.synthetic.modality_dims=[8,8]", "dataset.synthetic.interactions_per_user=12", "model.k_f=8",
        "model.n_negatives=4", "model.negative_pool=0", "train.epochs=3", "train.batch_size=256",
        "train.progress=false", "painvrl.rounds=1", "painvrl.pretrain_epochs=2", "environments.max_iters=1",
        "environments.env_epochs=1", "mask.epochs=2"]


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, FeatureMF.name, FeatureMF)


@pytest.mark.parametrize("method", ["erm", "painvrl"])
def test_a_registered_backbone_runs_every_phase(registered: None, method: str) -> None:
    config = load_config(None, [*FAST, f"method={method}", "model.name=feature_mf"])
    data = load_dataset(config.dataset)
    phases: list[str] = []

    def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        phases.append(str(update.get("phase", "")))

    result = run_pipeline(config, data, LocalCollective(), reporter)
    metrics = result.metrics
    # the FeatureMF's own tables, with the method's encoder in the slot (the convert module for painvrl)
    expected_encoder = {"encoder.weight"} if method == "erm" else {"encoder.mask", "encoder.w_inv"}
    assert set(result.model_state) == {"users", "items"} | expected_encoder
    for split in ("iid", "ood"):
        recall = metrics["test"][split]["recall@20"]
        assert np.isfinite(recall) and 0.0 < recall <= 1.0
    if method == "painvrl":
        assert result.mask is not None and result.mask.shape == (16,)
        assert 0.0 <= result.mask.min() and result.mask.max() <= 1.0
        assert "auc" in metrics["mask"] and "ari" in metrics["environments"]
        assert {"pretrain", "hei", "round", "final"} <= set(phases)


def test_painvrl_over_a_backbone_without_score_factors_is_refused_before_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from painvrl.errors import PainvrlInputError

    monkeypatch.setitem(MODELS, OpaqueMF.name, OpaqueMF)
    config = load_config(None, [*FAST, "method=painvrl", "model.name=opaque_mf"])
    phases: list[str] = []
    with pytest.raises(PainvrlInputError, match=r"'model\.name'.*score_factors"):
        run_pipeline(config, load_dataset(config.dataset), LocalCollective(),
                     lambda update, state=None: phases.append(str(update.get("phase"))))
    assert phases == []


def test_the_backbone_is_refused_once_unregistered() -> None:
    from painvrl.errors import PainvrlInputError

    config = load_config(None, [*FAST, "method=erm", "model.name=feature_mf"])
    with pytest.raises(PainvrlInputError, match=r"'model\.name': unknown model 'feature_mf'"):
        run_pipeline(config, load_dataset(config.dataset), LocalCollective(), None)
