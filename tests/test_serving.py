from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import painvrl
from painvrl.config import load_config
from painvrl.errors import PainvrlInputError
from painvrl.runner import train

CONFIG = """\
method: {method}
dataset: {{name: synthetic, synthetic: {{n_users: 50, n_items: 70, interactions_per_user: 10, modality_dims: [6, 6]}}}}
model: {{k_id: 8, k_f: 8, n_negatives: 5}}
train: {{epochs: 2, batch_size: 128, progress: false, device: cpu}}
"""


@pytest.fixture(scope="module", params=["erm", "oracle"])
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    (folder / "config.yaml").write_text(CONFIG.format(method=request.param))
    train(load_config(folder / "config.yaml"), folder / "run")
    return folder / "run"


def test_score_matches_the_model(run_dir: Path) -> None:
    run = painvrl.load_run(run_dir)
    users, items = np.array([0, 3, 3, 49]), np.array([1, 2, 69, 0])
    scores = run.score(users, items)
    with torch.no_grad():
        vectors = run.model.all_item_vectors()
        expected = (run.model.user_embedding[torch.from_numpy(users)] * vectors[torch.from_numpy(items)]).sum(1)
    assert scores.shape == (4,) and np.allclose(scores, expected.numpy(), atol=1e-6)


def test_recommend_is_the_top_k_of_unseen_items(run_dir: Path) -> None:
    run = painvrl.load_run(run_dir)
    users = np.arange(run.n_users)
    top = run.recommend(users, k=10)
    assert top.shape == (run.n_users, 10) and top.dtype == np.int64
    train = run.data.train
    for u in users:
        seen = set(train[train[:, 0] == u, 1].tolist())
        assert seen.isdisjoint(top[u].tolist())  # never a training item
        unseen = np.array(sorted(set(range(run.n_items)) - seen))
        all_scores = run.score(np.full(len(unseen), u), unseen)
        best = np.sort(all_scores)[::-1][:10]
        assert np.allclose(np.sort(run.score(np.full(10, u), top[u]))[::-1], best, atol=1e-6)


def test_ids_are_validated(run_dir: Path) -> None:
    run = painvrl.load_run(run_dir)
    with pytest.raises(PainvrlInputError, match="outside"):
        run.score([0, 50], [0, 1])
    with pytest.raises(PainvrlInputError, match="outside"):
        run.score([0], [70])
    with pytest.raises(PainvrlInputError, match="differ in length"):
        run.score([0, 1], [0])
    with pytest.raises(PainvrlInputError, match="outside"):
        run.recommend([-1], 5)
    with pytest.raises(PainvrlInputError, match="k must be"):
        run.recommend([0], 0)


def test_load_run_rejects_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match="not found"):
        painvrl.load_run(tmp_path)
