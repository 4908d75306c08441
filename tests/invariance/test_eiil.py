"""EIIL: the partition that maximises the IRMv1 violation of a reference model, on hand-made gradients and end to
end through the outer loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from painvrl.config import load_config
from painvrl.data.registry import load_dataset
from painvrl.errors import PainvrlInputError
from painvrl.invariance.eiil import EIILSettings, eiil_environments, infer_partition, irm_violation
from painvrl.training.pipeline import run_pipeline


def test_the_violation_is_the_sum_of_squared_weighted_mean_gradients() -> None:
    q = torch.tensor([1.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    g = torch.tensor([2.0, 4.0, -1.0, 1.0], dtype=torch.float64)
    env0 = (2.0 + 4.0 + 0.5) / 2.5
    env1 = (-1.0 + 0.5) / 1.5
    assert irm_violation(q, g).item() == pytest.approx(env0**2 + env1**2)


def test_two_planted_groups_of_opposite_gradient_are_separated() -> None:
    # half the examples pull the dummy scale up, half down: the mean gradient is 0 (ERM's optimum), and the
    # partition that violates IRM most is the sign split
    rng = np.random.default_rng(0)
    grads = np.concatenate([rng.normal(1.0, 0.1, 200), rng.normal(-1.0, 0.1, 200)])
    labels = infer_partition(grads, EIILSettings(steps=500, lr=0.05), seed=0)
    truth = np.repeat([0, 1], 200)
    agreement = max((labels == truth).mean(), (labels != truth).mean())
    assert agreement == 1.0


def test_eiil_needs_two_environments() -> None:
    with pytest.raises(PainvrlInputError, match=r"'environments.n_envs'.*eiil"):
        eiil_environments(None, np.zeros((1, 2), dtype=np.int64), 3, 4, 0)  # type: ignore[arg-type]
    with pytest.raises(PainvrlInputError, match=r"environments.n_envs.*eiil"):
        load_config(None, ["environments.source=eiil", "environments.n_envs=3"])


def test_painvrl_runs_with_eiil_environments() -> None:
    config = load_config(None, ["method=painvrl", "environments.source=eiil", "environments.eiil_steps=50",
                                "dataset.synthetic.n_users=80", "dataset.synthetic.n_items=100",
                                "dataset.synthetic.modality_dims=[8,8]", "model.k_f=8", "model.k_id=8",
                                "model.n_negatives=4", "model.negative_pool=0", "train.epochs=2",
                                "train.progress=false", "painvrl.rounds=2", "painvrl.pretrain_epochs=1",
                                "mask.epochs=1"])
    data = load_dataset(config.dataset)
    metrics = run_pipeline(config, data).metrics
    assert metrics["environments"]["source"] == "eiil"
    assert sum(metrics["environments"]["sizes"]) == len(data.train)
    hei = [r for r in metrics["mask_history"] if r.get("phase") == "hei"]
    assert [r["source"] for r in hei] == ["eiil", "eiil"]
    assert hei[0]["env_sizes"] == hei[1]["env_sizes"]  # inferred once, used by every round
    assert np.isfinite(metrics["test"]["ood"]["recall@20"])
