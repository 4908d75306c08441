"""The study's Optuna storage: opened from its URL (RDB or journal file), and read for trial numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from painvrl.errors import PainvrlInputError


def optuna_storage(url: str) -> Any:
    """The Optuna storage at ``url``: an RDB storage for a database URL, else a journal file."""
    import optuna

    if url.startswith("sqlite:"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PainvrlInputError(f"config field 'optuna_storage': cannot create the folder {str(folder)!r} "
                                    f"of {url!r}: {error.strerror}") from error
    if "://" in url:
        return open_rdb_storage(url)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url))


STORAGE_OPEN_ATTEMPTS = 8


def open_rdb_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url``, tolerating another process creating the same fresh database at once.

    Two openers of a new sqlite file (a second driver, optuna-dashboard, a script polling the study) can both
    find no schema and both create it; the loser fails on a duplicate version row or a locked database. The
    schema is then there, so opening again succeeds.
    """
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(STORAGE_OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, OperationalError) as error:
            racing = isinstance(error, IntegrityError) or any(
                sign in str(error.orig) for sign in ("already exists", "database is locked"))
            if not racing or attempt == STORAGE_OPEN_ATTEMPTS - 1:
                raise PainvrlInputError(f"config field 'optuna_storage': cannot open the Optuna storage {url!r}: "
                                        f"{error.orig}") from error
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


class TrialNumbers:
    """Tune trial id -> Optuna trial number, read from the study's Optuna storage (picklable: the storage is
    opened on first use and not pickled)."""

    def __init__(self, optuna_url: str, study_name: str) -> None:
        self.optuna_url, self.study_name = optuna_url, study_name
        self._storage: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None}

    def __call__(self, trial_id: str) -> int | None:
        import optuna

        from painvrl.study.searcher import TUNE_TRIAL_ATTR

        if self._storage is None:
            self._storage = optuna_storage(self.optuna_url)
        study = optuna.load_study(study_name=self.study_name, storage=self._storage)
        numbers = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TUNE_TRIAL_ATTR) == trial_id]
        return numbers[0] if numbers else None
