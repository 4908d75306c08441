"""IPS and PDA: hand-computed propensities, weights and offsets, the weighted / offset batch loss against the
backbone's own loss, and the refusal of a backbone without training logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from painvrl.config import load_config
from painvrl.config.ood_methods import IPSConfig
from painvrl.distributed.collective import LocalCollective
from painvrl.errors import PainvrlInputError
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.checks import resolve_run
from painvrl.training.objectives.base import Batch, Objective
from painvrl.training.objectives.popularity import IPSObjective, PDAObjective, ips_weights, popularity_offset

TRAIN = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [0, 1], [1, 2]])
N_USERS, N_ITEMS = 4, 5


def test_popularity_propensity_weights_by_hand() -> None:
    # counts: item0 4, item1 1, item2 1 -> p = sqrt(count / 4) = 1, 0.5, 0.5 -> weights 1,1,1,1,2,2 (mean 8/6).
    weights = ips_weights(TRAIN, N_ITEMS, IPSConfig(power=0.5, clip=0.05, normalise=False))
    assert weights == pytest.approx([1, 1, 1, 1, 2, 2])
    normalised = ips_weights(TRAIN, N_ITEMS, IPSConfig(power=0.5, clip=0.05, normalise=True))
    assert normalised == pytest.approx(np.array([1, 1, 1, 1, 2, 2]) * 6 / 8)
    assert normalised.mean() == pytest.approx(1.0)
    # Clipping at 0.6 caps the rare items' weight at 1 / 0.6.
    clipped = ips_weights(TRAIN, N_ITEMS, IPSConfig(power=0.5, clip=0.6, normalise=False))
    assert clipped == pytest.approx([1, 1, 1, 1, 1 / 0.6, 1 / 0.6])


def test_true_propensities_are_used_and_required() -> None:
    truth = np.array([1.0, 0.25, 0.1, 0.5, 0.5])
    weights = ips_weights(TRAIN, N_ITEMS, IPSConfig(propensity="known", clip=0.05, normalise=False), truth)
    assert weights == pytest.approx([1, 1, 1, 1, 4, 10])
    with pytest.raises(PainvrlInputError, match=r"ips\.propensity"):
        ips_weights(TRAIN, N_ITEMS, IPSConfig(propensity="known"), None)


def test_pda_offset_by_hand() -> None:
    offset = popularity_offset(TRAIN, N_ITEMS, gamma=0.5)
    # counts 4, 1, 1, 0 -> 1, 0 -> 1 (floored at one count); total 8.
    expected = 0.5 * np.log(np.array([4, 1, 1, 1, 1]) / 8)
    assert offset == pytest.approx(expected, rel=1e-6)


def _model() -> UltraGCN:
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.standard_normal((N_ITEMS, 6)).astype(np.float32))
    b_user, b_item = degree_weights(TRAIN, N_USERS, N_ITEMS)
    torch.manual_seed(0)
    return UltraGCN(N_USERS, N_ITEMS, features, FeatureProjection(6, 3, 0.1), b_user, b_item, k_id=3, k_f=3,
                    init_std=0.1)


def _batch() -> Batch:
    rows = torch.tensor([0, 4, 5])
    users, items = torch.from_numpy(TRAIN[:, 0])[rows], torch.from_numpy(TRAIN[:, 1])[rows]
    negatives = torch.tensor([[3, 4], [2, 3], [0, 4]])
    return Batch(rows, users, items, negatives, global_size=3, world_size=1)


def test_ips_loss_is_the_weighted_backbone_loss() -> None:
    model, batch = _model(), _batch()
    weights = np.array([1.0, 1, 1, 1, 2, 3])
    loss = IPSObjective(weights, torch.device("cpu")).batch_loss(model, batch, LocalCollective())
    per_example, example_reg = model.loss_terms(batch.users, batch.pos_items, batch.neg_items)
    expected = (per_example * torch.tensor([1.0, 2, 3])).sum() / 3 + example_reg / 3 + model.shared_regularisation()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_pda_shifts_the_training_logits_and_never_the_ranking() -> None:
    model, batch = _model(), _batch()
    offset = popularity_offset(TRAIN, N_ITEMS, gamma=1.0)
    before = model.ranking_scorer()(torch.arange(N_USERS)).detach().clone()
    loss = PDAObjective(offset, torch.device("cpu")).batch_loss(model, batch, LocalCollective())
    assert model.item_logit_offset is None
    _, _, pos, neg = model.batch_scores(batch.users, batch.pos_items, batch.neg_items)
    shift = torch.from_numpy(offset)
    per_example = model.scores_loss(batch.users, batch.pos_items, pos + shift[batch.pos_items], batch.neg_items,
                                    neg + shift[batch.neg_items])
    _, example_reg = model.loss_terms(batch.users, batch.pos_items, batch.neg_items)
    expected = (per_example.sum() + example_reg) / 3 + model.shared_regularisation()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    erm = Objective().batch_loss(model, batch, LocalCollective())
    assert not math.isclose(float(loss.detach()), float(erm.detach()), rel_tol=1e-3)
    assert torch.equal(model.ranking_scorer()(torch.arange(N_USERS)), before)


def test_pda_refuses_a_backbone_without_training_logits() -> None:
    with pytest.raises(PainvrlInputError, match=r"'method': 'pda'.*'bm3'"):
        resolve_run(load_config(None, ["method=pda", "model.name=bm3"]))
    resolve_run(load_config(None, ["method=pda", "model.name=freedom"]))


@pytest.mark.parametrize(("field", "value"), [("ips.clip", "0"), ("ips.power", "-1"), ("pda.gamma", "-0.1"),
                                              ("dro.step_size", "0"), ("vrex.weight", "-1"),
                                              ("vrex.warmup_epochs", "-2")])
def test_out_of_range_settings_are_refused_by_name(field: str, value: str) -> None:
    with pytest.raises(PainvrlInputError, match=field.replace(".", r"\.")):
        load_config(None, [f"{field}={value}"])
