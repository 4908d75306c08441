"""The run configuration: schema defaults, typed coercion, YAML and --set overrides, moved keys, validation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from painvrl.config import (
    MOVIELENS_FIELDS,
    SYNTHETIC_FIELDS,
    Config,
    DatasetConfig,
    MovieLensConfig,
    SyntheticConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    validate_config,
)
from painvrl.errors import PainvrlInputError


def test_defaults_are_valid_and_hash_is_stable() -> None:
    config = load_config()
    validate_config(Config())
    assert config == Config()
    assert config.config_hash() == Config().config_hash()
    assert len(config.config_hash()) == 16


@pytest.mark.parametrize("override", ["train.lr=0.002", "mask.init_from_pretrained=false", "model.name=other",
                                      "dataset.synthetic.n_users=700"])
def test_every_field_is_part_of_the_hash(override: str) -> None:
    changed = Config() if override.startswith("model.name") else load_config(None, [override])
    if override.startswith("model.name"):
        changed.model.name = "other"  # an unregistered name is refused later, by the registries
    assert changed.config_hash() != Config().config_hash()


@pytest.mark.parametrize(("values", "field", "what"), [
    ({"train": {"epochs": "ten"}}, "train.epochs", "expected an integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "expected an integer"),
    ({"train": {"deterministic": "yes"}}, "train.deterministic", "expected true/false"),
    ({"train": {"lr": True}}, "train.lr", "expected a number"),
    ({"environments": {"relabel": "sgd"}}, "environments.relabel", "is not one of"),
    ({"method": 3}, "method", "expected a string"),
    ({"eval": {"ks": 20}}, "eval.ks", "expected a list"),
    ({"eval": {"ks": [10, "x"]}}, "eval.ks[1]", "expected an integer"),
    ({"mask": 3}, "mask", "expected a mapping"),
    ({"mask": {"penalty": 3}}, "mask.penalty", "expected a string"),
    ({"mask": {"no_such_field": 1}}, "mask.no_such_field", "unknown config field"),
])
def test_coercion_errors_name_the_field(values: dict[str, Any], field: str, what: str) -> None:
    with pytest.raises(PainvrlInputError, match=f"'{re.escape(field)}'") as info:
        config_from_dict(values)
    assert what in str(info.value)


def test_values_are_converted_to_the_declared_types() -> None:
    config = config_from_dict({"train": {"lr": "1e-5", "epochs": 4.0}, "dataset": {"path": None}})
    assert config.train.lr == 1e-5 and isinstance(config.train.epochs, int) and config.train.epochs == 4


@pytest.mark.parametrize(("name", "section"), [*((n, "synthetic") for n in SYNTHETIC_FIELDS),
                                               *((n, "movielens") for n in MOVIELENS_FIELDS)])
def test_a_loader_key_under_dataset_names_its_new_place(name: str, section: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"'dataset\.{name}' is now 'dataset\.{section}\.{name}'"):
        load_config(None, [f"dataset.{name}=1"])


def test_synthetic_section_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset:\n  name: synthetic\n  synthetic: {n_users: 50, modality_dims: [4, 4]}\n")
    config = load_config(path, ["dataset.synthetic.n_items=70"])
    assert config.dataset.synthetic == SyntheticConfig(n_users=50, n_items=70, modality_dims=[4, 4])


def test_synthetic_checks_apply_only_to_the_synthetic_benchmark() -> None:
    with pytest.raises(PainvrlInputError, match=r"'dataset\.synthetic\.n_users'"):
        load_config(None, ["dataset.synthetic.n_users=1"])
    config = load_config(None, ["dataset.name=movielens", "dataset.synthetic.n_users=1"])
    assert config.dataset.name == "movielens"


def test_dataset_sections_keep_loader_specific_fields_apart() -> None:
    shared = set(DatasetConfig.__dataclass_fields__) - {"synthetic", "movielens"}
    assert not shared & (set(SYNTHETIC_FIELDS) | set(MOVIELENS_FIELDS))
    assert set(SyntheticConfig.__dataclass_fields__) == set(SYNTHETIC_FIELDS)
    assert set(MovieLensConfig.__dataclass_fields__) == set(MOVIELENS_FIELDS)


def test_relative_feature_cache_resolves_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset: {name: movielens, movielens: {feature_cache: cache}}\n")
    assert load_config(path).dataset.movielens.feature_cache == str((tmp_path / "cache").resolve())


@pytest.mark.parametrize(("overrides", "field"), [
    (["environments.source=ground_truth", "environments.n_envs=3"], "environments.n_envs"),
    (["environments.source=ground_truth", "dataset.name=movielens"], "environments.source"),
    (["mask.preference=[0.5,0.2,0.3]"], "mask.preference"),
    (["mask.pref_ood=1.0"], "mask.pref_ood"),
    (["eval.selection_metric=recall@50"], "eval.selection_metric"),
    (["eval.selection_source=ood"], "eval.selection_source"),
    (["method=oracle", "dataset.name=movielens"], "method"),
    (["dataset.name=mmrec"], "dataset.path"),
    (["train.device=tpu"], "train.device"),
])
def test_cross_field_rules_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(PainvrlInputError, match=f"'{re.escape(field)}'"):
        load_config(None, overrides)


@pytest.mark.parametrize(("text", "message"), [("train.lr", "expected KEY=VALUE"), ("=3", "empty key"),
                                               ("eval.ks=[10,", "not valid YAML")])
def test_bad_overrides(text: str, message: str) -> None:
    with pytest.raises(PainvrlInputError, match=message):
        parse_override(text)


def test_overrides_read_yaml_values_and_do_not_touch_the_input() -> None:
    base = {"eval": {"ks": [5]}}
    result = apply_overrides(base, ["eval.ks=[10,20]", "train.deterministic=false"])
    assert result == {"eval": {"ks": [10, 20]}, "train": {"deterministic": False}} and base == {"eval": {"ks": [5]}}


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(PainvrlInputError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("train: {lr: [1,\n")
    with pytest.raises(PainvrlInputError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_relative_dataset_path_resolves_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "run.yaml"
    path.write_text("dataset: {name: movielens, path: ../data}\n")
    assert load_config(path).dataset.path == str((tmp_path / "data").resolve())


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    config = load_config(None, ["method=painvrl", "mask.penalty=gradvar", "dataset.synthetic.n_users=90"])
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config and again.config_hash() == config.config_hash()


def test_method_is_checked_against_the_methods_registry() -> None:
    from painvrl.training.methods import METHODS
    from painvrl.training.pipeline import check_registered_names

    assert load_config(None, ["method=nope"]).method == "nope"  # a string: the registry decides
    with pytest.raises(PainvrlInputError, match=r"config field 'method': unknown method 'nope' \(known: "
                                                + re.escape(", ".join(sorted(METHODS)))):
        check_registered_names(load_config(None, ["method=nope"]))


def test_ultragcn_loss_weights_live_under_its_settings() -> None:
    from painvrl.model.registry import check_model_config

    with pytest.raises(PainvrlInputError, match=r"'model\.loss_weights' is now 'model\.settings\.ultragcn\."
                                                r"loss_weights'"):
        load_config(None, ["model.loss_weights=[1,1,1,1]"])
    config = load_config(None, ["model.settings.ultragcn.loss_weights=[1,0,1,0]"])
    check_model_config(config.model)
    with pytest.raises(PainvrlInputError, match=r"'model\.settings\.ultragcn\.loss_weights'"):
        check_model_config(load_config(None, ["model.settings.ultragcn.loss_weights=[1,1]"]).model)


@pytest.mark.parametrize(("override", "field"), [("model.name=nope", "model.name"),
                                                 ("mask.penalty=nope", "mask.penalty"),
                                                 ("mask.extra_objective=nope", "mask.extra_objective"),
                                                 ("mask.solver=nope", "mask.solver")])
def test_registry_names_are_checked_before_training(override: str, field: str) -> None:
    from painvrl.training.pipeline import check_registered_names

    config = load_config(None, ["method=painvrl", override])
    with pytest.raises(PainvrlInputError, match=f"'{re.escape(field)}'"):
        check_registered_names(config)
