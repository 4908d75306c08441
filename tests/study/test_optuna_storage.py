"""The study driver's Optuna storage opens while other processes create the same fresh database."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from painvrl.errors import PainvrlInputError
from painvrl.study.driver import _optuna_storage


def _open(url: str) -> str:
    try:
        _optuna_storage(url)
    except Exception as error:  # reported to the parent, which names it in the assertion
        return f"{type(error).__name__}: {error}"
    return "ok"


def test_concurrent_openers_of_a_fresh_sqlite_storage_all_succeed(tmp_path: Path) -> None:
    # Plain optuna.storages.RDBStorage fails here in most rounds: the openers race to create the schema.
    context = multiprocessing.get_context("fork")
    for round_index in range(3):
        url = f"sqlite:///{tmp_path / f'round{round_index}' / 'optuna.db'}"
        with context.Pool(4) as pool:
            outcomes = pool.map(_open, [url] * 4)
        assert outcomes == ["ok"] * 4


def test_an_unopenable_storage_names_the_field(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PainvrlInputError, match=r"optuna_storage.*cannot create the folder"):
        _optuna_storage(f"sqlite:///{blocker}/optuna.db")
    (tmp_path / "optuna.db").mkdir()  # a folder where the database file should be
    with pytest.raises(PainvrlInputError, match=r"optuna_storage.*cannot open the Optuna storage"):
        _optuna_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
