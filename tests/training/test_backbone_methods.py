"""PaInvRL and InvRL over every registered backbone, end to end on a tiny synthetic benchmark, and the ID-only
backbone (which a feature mask cannot change) trained as erm with a warning instead of burning the mask phases."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from painvrl.config import load_config
from painvrl.data.registry import load_dataset
from painvrl.distributed.collective import LocalCollective
from painvrl.model.registry import MODELS
from painvrl.training.pipeline import run_pipeline

TINY = ["dataset.ood=synthetic", "dataset.synthetic.n_users=80", "dataset.synthetic.n_items=100",
        "dataset.synthetic.modality_dims=[8,8]", "dataset.synthetic.interactions_per_user=10", "model.k_f=8",
        "model.k_id=8", "model.n_negatives=4", "model.negative_pool=0", "train.epochs=2", "train.batch_size=256",
        "train.progress=false", "painvrl.rounds=1", "painvrl.pretrain_epochs=1", "environments.max_iters=1",
        "environments.env_epochs=1", "mask.epochs=1", "model.settings.lattice.knn_k=3",
        "model.settings.freedom.knn_k=3"]
FEATURE_BACKBONES = sorted(name for name, cls in MODELS.items() if cls.consumes_features)


def run(model: str, method: str) -> tuple[dict[str, Any], list[str]]:
    config = load_config(None, [*TINY, f"model.name={model}", f"method={method}"])
    phases: list[str] = []

    def reporter(update: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        phases.append(str(update.get("phase", "")))

    result = run_pipeline(config, load_dataset(config.dataset), LocalCollective(), reporter)
    return result.metrics, phases


@pytest.mark.parametrize("model", FEATURE_BACKBONES)
@pytest.mark.parametrize("method", ["painvrl", "invrl"])
def test_the_invariance_methods_wrap_every_feature_backbone(model: str, method: str) -> None:
    metrics, phases = run(model, method)
    assert metrics["mask"]["learned"] is True
    assert {"pretrain", "feature_path", "hei", "round", "final"} <= set(phases)
    envs = metrics["environments"]
    assert [entry["env"] for entry in envs["profile"]] == [0, 1]
    assert sum(entry["size"] for entry in envs["profile"]) == sum(envs["sizes"])
    assert set(envs["violation"]) == {"violation", "random_mean", "random_std", "z", "ratio"}
    for split in ("iid", "ood"):
        assert np.isfinite(metrics["test"][split]["recall@20"])


def test_an_id_only_backbone_is_trained_as_erm_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert not MODELS["lightgcn"].consumes_features
    with caplog.at_level(logging.WARNING, logger="painvrl.training.pipeline"):
        painvrl, phases = run("lightgcn", "painvrl")
    assert "uses no item features" in caplog.text
    assert "hei" not in phases and painvrl["mask"]["learned"] is False
    erm, _ = run("lightgcn", "erm")
    assert painvrl["test"] == erm["test"]
    assert painvrl["method"] == "painvrl"


@pytest.mark.parametrize("model", ["ultragcn", "freedom"])
@pytest.mark.parametrize("method", ["ips", "pda", "dro", "vrex"])
def test_the_ood_baselines_train_over_two_backbones(model: str, method: str) -> None:
    metrics, phases = run(model, method)
    erm, _ = run(model, "erm")
    assert metrics["method"] == method and metrics["mask"]["learned"] is False
    for split in ("iid", "ood"):
        assert np.isfinite(metrics["test"][split]["recall@20"])
    assert metrics["test"] != erm["test"], "the objective changed nothing"
    if method in ("dro", "vrex"):
        envs = metrics["environments"]
        assert envs["source"] == "learned" and len(envs["sizes"]) == 2 and min(envs["sizes"]) > 0
        assert {"pretrain", "feature_path", "hei", "final"} <= set(phases) and "round" not in phases
        assert len(metrics["objective"]["environment_losses"]) == 2
        assert set(metrics["test"]["envs"]) == {"0", "1"}
    else:
        assert "hei" not in phases and "pretrain" not in phases


@pytest.mark.parametrize("model", ["ultragcn", "vbpr"])
def test_invpref_infers_environments_over_the_mf_backbones(model: str) -> None:
    config = load_config(None, [*TINY, f"model.name={model}", "method=invpref", "train.epochs=3",
                                "invpref.reassign_every=1"])
    data = load_dataset(config.dataset)
    metrics = run_pipeline(config, data, LocalCollective()).metrics
    for split in ("iid", "ood"):
        assert np.isfinite(metrics["test"][split]["recall@20"])
    objective = metrics["objective"]
    assert objective["name"] == "invpref" and len(objective["reassigned"]) == 2
    sizes = objective["environment_sizes"]
    assert len(sizes) == 2 and sum(sizes) == len(data.train) and min(sizes) > 0, sizes
    assert np.isfinite(objective["environment_aware_loss"]) and np.isfinite(objective["classifier_loss"])


@pytest.mark.parametrize("warm", [True, False])
def test_dro_continues_from_the_pretrained_model_within_one_epoch_budget(warm: bool) -> None:
    # With a learning rate too small to move any weight, a final model that starts from the pretrained one
    # scores exactly what the pretrained model scored; a fresh one (another initialisation) does not.
    config = load_config(None, [*TINY, "model.name=ultragcn", "method=dro", "train.epochs=4",
                                "painvrl.pretrain_epochs=1", "train.eval_every=1", "train.patience=10",
                                "train.lr=1e-12", f"environments.final_from_pretrained={str(warm).lower()}"])
    history = run_pipeline(config, load_dataset(config.dataset), LocalCollective()).metrics["history"]
    pretrain = [entry for entry in history if entry["phase"] == "pretrain"]
    final = [entry for entry in history if entry["phase"] == "final"]
    assert len(pretrain) == 1 and len(final) == (3 if warm else 4)
    scores = [{k: v for k, v in entry.items() if k.startswith("iid.")} for entry in (pretrain[-1], final[0])]
    assert len(scores[0]) >= 2 and (scores[0] == scores[1]) is warm, scores


def test_a_warm_final_model_needs_epochs_after_pretraining() -> None:
    from painvrl.errors import PainvrlInputError
    from painvrl.training.checks import resolve_run

    with pytest.raises(PainvrlInputError, match=r"environments\.final_from_pretrained"):
        resolve_run(load_config(None, ["method=vrex", "train.epochs=10", "painvrl.pretrain_epochs=10",
                                   "environments.final_from_pretrained=true"]))
    resolve_run(load_config(None, ["method=vrex", "train.epochs=10", "painvrl.pretrain_epochs=10",
                                   "environments.final_from_pretrained=false"]))
