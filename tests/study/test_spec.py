"""Study config validation: bad configs fail before any trial starts, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from painvrl.errors import PainvrlInputError
from painvrl.study.shipped import CONFIG_DIR, shipped_names
from painvrl.study.space import DefineByRunSpace, simplex_from_uniforms, trial_config
from painvrl.study.spec import BaselineSpec, dump_study, load_study, validate_study

CONFIGS = CONFIG_DIR


@pytest.mark.parametrize("name", ["default", "smoke", "movielens", "tiktok", "gpu-cluster"])
def test_shipped_study_configs_load(name: str) -> None:
    spec = load_study(CONFIGS / f"{name}.yaml")
    assert spec.name == name
    assert Path(spec.storage_dir).is_absolute()
    assert spec.metric_keys()[0] == "val.iid.recall@20"
    validate_study(spec)


@pytest.mark.parametrize("name", ["movielens", "tiktok"])
def test_real_data_studies_search_the_backbone_against_erm_baselines(name: str) -> None:
    from painvrl.model.registry import MODELS

    spec = load_study(CONFIGS / f"{name}.yaml")
    backbones = spec.search["model.name"]
    assert backbones.kind == "categorical" and set(backbones.choices) <= set(MODELS)
    assert {"environments.n_envs", "mask.sparsity_weight", "preference"} <= set(spec.search)
    erm_backbones = {b.model for b in spec.baselines if b.method == "erm"}
    assert set(backbones.choices) <= erm_backbones and "lightgcn" in erm_backbones
    assert spec.metric_keys() == ["val.iid.recall@20", "val.ood.recall@20"]
    two_workers = load_study(CONFIGS / f"{name}.yaml", ["trial_num_workers=2", "max_concurrent_trials=1"])
    validate_study(two_workers, cluster_cpus=3)


@pytest.mark.parametrize(("override", "field"), [
    ("objectives=[{metric: val.iid.recal@20}]", "objectives[0].metric"),
    ("objectives=[{metric: test.iid.recall@20}]", "objectives[0].metric"),
    ("objectives=[{metric: val.iid.recall@50}]", "objectives[0].metric"),
    ("search.mask.sparsity_weight={kind: log, low: 0.1, high: 0.01}", "search.mask.sparsity_weight"),
    ("search.mask.sparsity_weight={kind: log, low: 0.0, high: 0.01}", "search.mask.sparsity_weight"),
    ("search.environments.n_envs={kind: int, low: 0, high: 1}", "search"),
    ("search.preference={kind: simplex, choices: [0.2, 0.3, 0.5]}", "search.preference"),
    ("search.train.nonexistent={kind: float, low: 0, high: 1}", "search.train.nonexistent"),
    ("num_samples=0", "num_samples"),
    ("reference_point=[0.1]", "reference_point"),
    ("sampler={name: cmaes}", "sampler.name"),
    ("bogus=1", "bogus"),
    ("baselines=[nope]", "baselines[0].model"),
    ("baselines=[vbpr,vbpr]", "baselines[1]"),
    ("base.train.epochs=0", "train.epochs"),
])
def test_bad_study_configs_name_the_field(override: str, field: str) -> None:
    with pytest.raises(PainvrlInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_study(CONFIGS / "smoke.yaml", [override])


def test_too_many_concurrent_trials_for_the_cluster() -> None:
    spec = load_study(CONFIGS / "smoke.yaml", ["max_concurrent_trials=4", "trial_num_workers=2"])
    with pytest.raises(PainvrlInputError, match="max_concurrent_trials"):
        validate_study(spec, cluster_cpus=6)
    validate_study(spec, cluster_cpus=12)


def test_ood_objective_falls_back_to_worst_env_without_ood_split() -> None:
    spec = load_study(CONFIGS / "smoke.yaml", ["base.dataset.ood=none"])
    assert spec.metric_keys() == ["val.iid.recall@20", "val.worst_env.recall@20"]


class _FakeTrial:
    """Records suggestions like optuna's trial (only used to exercise the define-by-run mapping)."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.params[name] = (low + high) / 2
        return (low + high) / 2

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.params[name] = low
        return low

    def suggest_categorical(self, name: str, choices: list[object]) -> object:
        self.params[name] = choices[0]
        return choices[0]


def test_space_two_objectives_samples_pref_ood_and_builds_a_valid_trial_config() -> None:
    spec = load_study(CONFIGS / "smoke.yaml")
    trial = _FakeTrial()
    constants = DefineByRunSpace(spec, n_mask_objectives=2)(trial)
    assert constants == {}
    assert set(trial.params) == {"environments.n_envs", "mask.sparsity_weight", "mask.pref_ood"}
    config = trial_config(spec, {**trial.params, "spec": {}})
    assert config.mask.pref_ood == pytest.approx(0.5)
    assert config.environments.n_envs == 2
    assert config.train.progress is False


def test_space_three_objectives_gives_a_simplex_preference() -> None:
    spec = load_study(CONFIGS / "smoke.yaml", ["base.mask.extra_objective=vrex"])
    trial = _FakeTrial()
    constants = DefineByRunSpace(spec, n_mask_objectives=3)(trial)
    preference = constants["mask.preference"]
    assert len(preference) == 3 and sum(preference) == pytest.approx(1.0)
    config = trial_config(spec, {**trial.params, **constants})
    assert config.mask.preference == pytest.approx(preference)


def test_simplex_from_uniforms_is_on_the_simplex() -> None:
    point = simplex_from_uniforms([0.1, 0.7, 0.99])
    assert all(p > 0 for p in point) and sum(point) == pytest.approx(1.0)


def test_unknown_range_key_is_named() -> None:
    with pytest.raises(PainvrlInputError, match=r"search.mask.sparsity_weight.*unknown range keys \['lo'\]"):
        load_study(CONFIGS / "smoke.yaml", ["search.mask.sparsity_weight={kind: log, lo: 0.1, high: 1.0}"])


def test_objectives_on_ood_validation_need_an_ood_validation_split(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from format_builders import write_mmrec

    from painvrl.config import DatasetConfig
    from painvrl.data.mmrec import load_mmrec
    from painvrl.study.driver import check_objectives_have_data

    folder = write_mmrec(tmp_path)
    inter = folder / "toy.inter"
    inter.write_text(inter.read_text().replace("\t3\n", "\t4\n"))  # OOD test rows only
    spec = load_study(CONFIGS / "smoke.yaml")
    assert any(key.startswith("val.ood.") for key in spec.metric_keys())
    with pytest.raises(PainvrlInputError, match=r"'objectives\[\d\]'.*ood_val_fraction"):
        check_objectives_have_data(spec, load_mmrec(folder, DatasetConfig(name="mmrec")))
    check_objectives_have_data(spec, load_mmrec(folder, DatasetConfig(name="mmrec", ood_val_fraction=0.5)))


def test_baselines_take_backbone_names_and_method_model_pairs(tmp_path: Path) -> None:
    spec = load_study(CONFIGS / "smoke.yaml", [
        "baselines=[ultragcn, {method: invrl, model: vbpr}, {method: oracle, model: vbpr}, {model: lightgcn}]"])
    assert spec.baselines == [BaselineSpec("ultragcn", "erm"), BaselineSpec("vbpr", "invrl"),
                              BaselineSpec("vbpr", "oracle"), BaselineSpec("lightgcn", "erm")]
    assert [b.label for b in spec.baselines] == ["erm/ultragcn", "invrl/vbpr", "oracle/vbpr", "erm/lightgcn"]
    # study.yaml (what a resumed study and the report read) keeps the pairs
    dump_study(spec, tmp_path / "study.yaml")
    assert load_study(tmp_path / "study.yaml").baselines == spec.baselines


@pytest.mark.parametrize(("entries", "field", "message"), [
    ("[vbpr, {method: nope, model: vbpr}]", r"baselines\[1\]\.method", r"'nope' is not a registered method "
                                                                      r"\(known: .*erm.*invrl"),
    ("[{method: invrl, model: nope}]", r"baselines\[0\]\.model", r"'nope' is not a registered backbone "
                                                                r"\(known: .*ultragcn.*vbpr"),
    ("[vbpr, {method: oracle, model: vbpr}, {method: erm, model: vbpr}]", r"baselines\[2\]",
     r"erm/vbpr is already baselines\[0\]"),
    ("[{method: invrl, model: vbpr}, {method: invrl, model: vbpr}]", r"baselines\[1\]",
     r"invrl/vbpr is already baselines\[0\]"),
    ("[{method: invrl}]", r"baselines\[0\]", r"\{'method': 'invrl'\} has no 'model'"),
    ("[{method: invrl, model: vbpr, seed: 3}]", r"baselines\[0\]", r"unknown keys \['seed'\]"),
    ("[{method: invrl, model: [vbpr]}]", r"baselines\[0\]\.model", "expected a name"),
    ("[3]", r"baselines\[0\]", "expected a backbone name or a mapping"),
    ("vbpr", "baselines", "expected a list"),
])
def test_bad_baselines_name_the_entry(entries: str, field: str, message: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"'{field}': {message}"):
        load_study(CONFIGS / "smoke.yaml", [f"baselines={entries}"])


def test_a_baseline_the_data_cannot_train_fails_before_anything_trains() -> None:
    """oracle needs the synthetic benchmark's ground truth: refused on real data, naming the entry."""
    from painvrl.study.baselines import check_baselines

    spec = load_study(CONFIGS / "movielens.yaml", ["baselines=[vbpr, {method: oracle, model: vbpr}]"])
    with pytest.raises(PainvrlInputError, match=r"'baselines\[1\]' \(oracle/vbpr\).*needs ground truth"):
        check_baselines(spec)
    check_baselines(load_study(CONFIGS / "smoke.yaml", ["baselines=[vbpr, {method: oracle, model: vbpr}]"]))


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_studys_baselines_pass_the_run_checks(name: str) -> None:
    from painvrl.study.baselines import check_baselines

    check_baselines(load_study(name))  # e.g. invpref over an MF backbone, pda over one with pair logits


def test_a_searched_parameter_that_never_varied_is_named() -> None:
    import pandas as pd

    from painvrl.study.space import unexplored_parameters

    spec = load_study(CONFIGS / "movielens.yaml")  # searches model.name (categorical) and n_envs (int)
    same = pd.DataFrame({"model.name": ["vbpr"] * 3, "environments.n_envs": [3, 3, 3],
                         "mask.sparsity_weight": [1e-4, 1e-4, 1e-4]})  # a float range is never reported
    assert unexplored_parameters(spec, same) == [("model.name", "vbpr"), ("environments.n_envs", 3)]
    varied = same.assign(**{"environments.n_envs": [2, 3, 3]})
    assert unexplored_parameters(spec, varied) == [("model.name", "vbpr")]
    assert unexplored_parameters(spec, same.head(2)) == []  # too few trials to say


def test_the_environment_start_can_be_searched_from_the_command_line() -> None:
    """A study searches ``environments.init`` like any categorical: each trial's config carries its draw, and a
    choice the run config does not accept is refused before any trial starts."""
    spec = load_study(CONFIGS / "tiktok-ood.yaml",
                      ["search.environments.init={kind: categorical, choices: [random, gradient]}"])
    validate_study(spec)
    start = spec.search["environments.init"]
    assert start.kind == "categorical" and start.choices == ["random", "gradient"]
    assert trial_config(spec, {"environments.init": "gradient"}).environments.init == "gradient"
    with pytest.raises(PainvrlInputError, match=r"search.environments.init' \(choice 'zero'\).*not one of"):
        load_study(CONFIGS / "tiktok-ood.yaml", ["search.environments.init={kind: categorical, choices: [zero]}"])
