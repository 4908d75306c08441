"""A study name pins its problem in the (real, sqlite) Optuna storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from painvrl.errors import PainvrlInputError
from painvrl.study.identity import IDENTITY_ATTR, pin_study_identity, study_identity

DIRECTIONS = ["maximize", "maximize"]


def _identity(**changes: str) -> dict[str, str]:
    identity = study_identity("cfg0", "data0", {"mask.pref_ood": {"kind": "float", "low": 0.1, "high": 0.9}},
                              ["val.iid.recall@20", "val.ood.recall@20"], DIRECTIONS)
    return {**identity, **changes}


def test_first_run_records_the_identity_and_the_same_problem_passes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    pin_study_identity(storage, "s", DIRECTIONS, _identity(), str(tmp_path))
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs[IDENTITY_ATTR] == _identity()
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    pin_study_identity(storage, "s", DIRECTIONS, _identity(), str(tmp_path))  # resume / extend: allowed


@pytest.mark.parametrize("field", ["base_config_hash", "dataset_fingerprint", "search", "objectives"])
def test_another_problem_under_the_same_name_is_refused_naming_what_differs(tmp_path: Path, field: str) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    pin_study_identity(storage, "s", DIRECTIONS, _identity(), str(tmp_path))
    with pytest.raises(PainvrlInputError, match=rf"'name'.*{field} differs.*new 'name'"):
        pin_study_identity(storage, "s", DIRECTIONS, _identity(**{field: "other"}), str(tmp_path))


def test_a_study_without_identity_is_not_silently_reused(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="old", storage=storage, directions=DIRECTIONS)
    with pytest.raises(PainvrlInputError, match="records no problem identity"):
        pin_study_identity(storage, "old", DIRECTIONS, _identity(), str(tmp_path))
