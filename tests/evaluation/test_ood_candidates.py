"""Cold-start splits: InteractionData.ood_candidates / iid_candidates are validated, and the evaluator ranks the
OOD (IID) splits among those items only, leaving the other ranking unchanged."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from painvrl.config import load_config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import LocalCollective
from painvrl.errors import PainvrlInputError
from painvrl.evaluation.evaluator import Evaluator

N_USERS, N_ITEMS = 4, 30
CANDIDATES = np.arange(20, 30)  # items 20..29 are released only in the OOD environment


def _data(candidates: np.ndarray | None = CANDIDATES, ood_item: int = 29) -> InteractionData:
    users = np.arange(N_USERS)
    pairs = lambda item: np.stack([users, np.full(N_USERS, item)], 1)  # noqa: E731
    return InteractionData(name="toy", n_users=N_USERS, n_items=N_ITEMS, train=pairs(0), val=pairs(1),
                           test=pairs(2), features={"f": np.ones((N_ITEMS, 2), dtype=np.float32)},
                           ood_val=pairs(ood_item), ood_test=pairs(28), ood_candidates=candidates)


class _FixedScores(nn.Module):
    """Every user scores item i by a fixed value: the 20 released items score 100 (above every new item),
    new item i scores i, so item 29 > 28 > ... among the new items."""

    def __init__(self) -> None:
        super().__init__()
        values = np.where(np.arange(N_ITEMS) < 20, 100.0, np.arange(N_ITEMS, dtype=np.float64))
        self.features = torch.zeros(N_ITEMS, 1)
        self.items = torch.tensor(values, dtype=torch.float32)[None, :]

    def ranking_scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda users: self.items.expand(len(users), -1).clone()


def _section(data: InteractionData) -> dict:
    config = load_config(None, ["train.progress=false"])
    return Evaluator(config, data, LocalCollective()).section(_FixedScores(), "test")  # type: ignore[arg-type]


def test_ood_splits_rank_only_among_the_candidates() -> None:
    section = _section(_data())
    # Item 28 is the best unseen candidate (29 was an ood_val positive, excluded at test time): rank 1.
    assert section["ood"]["recall@10"] == pytest.approx(1.0)
    assert section["ood"]["ndcg@10"] == pytest.approx(1.0)
    # Without the candidate set the 18 unseen released items (score 100) fill the top 10: no hit there.
    plain = _section(_data(candidates=None))
    assert plain["ood"]["recall@10"] == pytest.approx(0.0)
    # IID ranking is the same with or without candidates (item 2 is a released item).
    assert section["iid"] == plain["iid"]


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        (np.array([20, 21, 40]), "outside"),
        (np.array([20, 20, 28, 29]), "duplicate"),
        (np.array([], dtype=np.int64), "non-empty"),
        (np.array([[20, 28, 29]]), "1-D"),
        (np.array([20.0, 28.0, 29.0]), "item ids"),
        (np.array([20, 28]), "ood_val positives are on items outside ood_candidates"),
    ],
)
def test_bad_candidate_sets_are_refused_with_the_field_named(candidates: np.ndarray, message: str) -> None:
    with pytest.raises(PainvrlInputError, match=message) as err:
        _data(candidates=candidates)
    assert "ood_candidates" in str(err.value)


def test_candidates_without_ood_splits_are_refused() -> None:
    users = np.arange(N_USERS)
    pairs = np.stack([users, np.zeros(N_USERS, dtype=np.int64)], 1)
    with pytest.raises(PainvrlInputError, match="no OOD splits"):
        InteractionData(name="toy", n_users=N_USERS, n_items=N_ITEMS, train=pairs, val=pairs, test=pairs,
                        features={"f": np.ones((N_ITEMS, 2), dtype=np.float32)}, ood_candidates=CANDIDATES)


def _iid_data(candidates: np.ndarray | None, train_item: int = 0) -> InteractionData:
    users = np.arange(N_USERS)
    pairs = lambda item: np.stack([users, np.full(N_USERS, item)], 1)  # noqa: E731
    return InteractionData(name="toy", n_users=N_USERS, n_items=N_ITEMS, train=pairs(train_item), val=pairs(29),
                           test=pairs(28), features={"f": np.ones((N_ITEMS, 2), dtype=np.float32)},
                           ood_val=pairs(1), ood_test=pairs(2), iid_candidates=candidates)


def test_iid_splits_rank_only_among_the_held_out_candidates() -> None:
    section = _section(_iid_data(CANDIDATES))
    # Item 28 is the best unseen held-out item (29 was a val positive, excluded at test time): rank 1.
    assert section["iid"]["recall@10"] == pytest.approx(1.0)
    assert section["envs"]["all"]["recall@10"] == pytest.approx(1.0)
    plain = _section(_iid_data(None))
    assert plain["iid"]["recall@10"] == pytest.approx(0.0)  # the 19 unseen released items fill the top 10
    assert section["ood"] == plain["ood"]


@pytest.mark.parametrize(
    ("candidates", "train_item", "message"),
    [
        (np.array([20, 28]), 0, "val positives are on items outside iid_candidates"),
        (CANDIDATES, 25, "train positives are on items of iid_candidates"),
        (np.array([28, 29, 30]), 0, "iid_candidates holds item ids outside"),
    ],
)
def test_bad_iid_candidate_sets_are_refused(candidates: np.ndarray, train_item: int, message: str) -> None:
    with pytest.raises(PainvrlInputError, match=message):
        _iid_data(candidates, train_item)
