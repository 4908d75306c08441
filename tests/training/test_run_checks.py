"""One resolved config per run, and every check that can refuse a config made before any training.

A method is one registry entry: the test registers one and trains it, and its overrides of ``train.*`` and
``model.*`` fields drive the run. Settings the backbone cannot honour fail before pretraining: the training loop
is replaced by one that fails the test if it is ever entered.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest
from torch import nn

from painvrl.config import Config, load_config
from painvrl.data.registry import load_dataset
from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import BuildContext
from painvrl.model.registry import MODELS
from painvrl.model.ultragcn import UltraGCN
from painvrl.training import pipeline
from painvrl.training.checks import resolve_run
from painvrl.training.methods import METHODS, Method
from painvrl.training.pipeline import run_pipeline

FAST = ["dataset.synthetic.n_users=60", "dataset.synthetic.n_items=80", "dataset.synthetic.interactions_per_user=8",
        "dataset.synthetic.modality_dims=[4,4]", "model.k_id=4", "model.k_f=4", "model.n_negatives=3",
        "model.negative_pool=16", "train.epochs=3", "train.batch_size=64", "train.progress=false",
        "train.device=cpu", "painvrl.pretrain_epochs=1", "painvrl.rounds=1", "environments.max_iters=1",
        "environments.env_epochs=1", "mask.epochs=1", "mask.steps_per_epoch=2", "mask.warmup_steps=0"]

QUICK = Method(overrides={"train.epochs": 1, "model.k_f": 3})
"""A new method: ERM's phases with one epoch and a 3-wide content vector, whatever the config says."""


def test_a_registered_method_trains_with_its_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "quick", QUICK)
    config = load_config(None, [*FAST, "method=quick"])
    assert (config.train.epochs, config.model.k_f) == (3, 4)
    result = run_pipeline(config, load_dataset(config.dataset))
    assert [(h["phase"], h["epoch"]) for h in result.metrics["history"]] == [("train", 0)]
    assert tuple(result.model_state["encoder.weight"].shape) == (3, 8)
    assert result.metrics["method"] == "quick"
    assert result.metrics["provenance"]["config_hash"] == config.config_hash()  # the user's config


def test_the_resolved_config_carries_the_overrides_once() -> None:
    config = load_config(None, [*FAST, "method=invrl"])
    resolved = resolve_run(config)
    assert resolved.config == METHODS["invrl"].effective_config(config)
    assert (resolved.config.mask.solver, resolved.config.convert.mode) == ("linear", "invariant_only")
    assert resolved.method.encoder_spec(resolved.config) == {"encoder": "convert", "mode": "invariant_only"}
    assert config.mask.solver == "epo"  # the user's config is left as it was


def test_an_override_of_an_unknown_field_names_the_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "typo", Method(overrides={"train.epoch": 1}))
    with pytest.raises(PainvrlInputError, match=r"'method': method 'typo' overrides 'train\.epoch'"):
        resolve_run(load_config(None, [*FAST, "method=typo"]))


class WrappedSlot(UltraGCN):
    """UltraGCN whose encoder slot wraps the encoder it is given (it holds no [k_f, d] weight itself)."""

    name: ClassVar[str] = "wrapped_slot"

    @classmethod
    def build(cls, context: BuildContext) -> UltraGCN:
        wrapped = dataclasses.replace(context, encoder=nn.Sequential(context.encoder, nn.Tanh()))
        return super().build(wrapped)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces the training loop by one that records the phase and fails: a refused config never gets there."""
    entered: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        entered.append(str(args[5]))
        raise AssertionError(f"training started ({args[5]})")

    monkeypatch.setattr(pipeline, "train_recommender", refuse)
    monkeypatch.setitem(MODELS, WrappedSlot.name, WrappedSlot)
    return entered


@pytest.mark.parametrize(("overrides", "field"), [
    (["model.name=mmgcn", "environments.n_envs=1"], "environments.n_envs"),
    (["model.name=lattice", "environments.min_size=0.6"], "environments.min_size"),
    (["model.name=freedom", "painvrl.feature_path_epochs=0"], "painvrl.feature_path_epochs"),
    (["model.name=wrapped_slot"], "mask.init_from_pretrained"),
    (["model.name=ultragcn", "model.settings.ultragcn.loss_weights=[1,1]"], "model.settings.ultragcn.loss_weights"),
])
def test_a_config_the_backbone_cannot_honour_fails_before_training(
        no_training: list[str], overrides: list[str], field: str) -> None:
    config = load_config(None, [*FAST, "method=painvrl", *overrides])
    data = load_dataset(config.dataset)
    with pytest.raises(PainvrlInputError, match=f"config field '{field}'"):
        run_pipeline(config, data)
    assert no_training == []


def test_a_random_start_is_the_explicit_alternative(no_training: list[str]) -> None:
    config = load_config(None, [*FAST, "method=painvrl", "model.name=wrapped_slot",
                                "mask.init_from_pretrained=false"])
    with pytest.raises(AssertionError, match="training started"):
        run_pipeline(config, load_dataset(config.dataset))
    assert no_training == ["pretrain"]


def test_checks_need_no_data() -> None:
    """The data-free checks refuse a config from the config alone (the runner makes them before Ray starts)."""
    config: Config = load_config(None, [*FAST, "method=painvrl", "model.name=mmgcn", "environments.n_envs=1"])
    with pytest.raises(PainvrlInputError, match=r"'environments\.n_envs'"):
        resolve_run(config)


def test_the_runner_refuses_before_reading_data_or_starting_ray(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from painvrl.data import registry as data_registry
    from painvrl.runner import train

    def no_data(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("data was read")

    monkeypatch.setattr(data_registry, "load_dataset", no_data)
    config = load_config(None, [*FAST, "method=painvrl", "model.name=mmgcn", "environments.n_envs=1",
                                "scaling.num_workers=2"])
    with pytest.raises(PainvrlInputError, match=r"'environments\.n_envs'"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
