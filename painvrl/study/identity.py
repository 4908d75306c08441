"""What a study optimises, pinned in its Optuna storage so a rerun cannot mix trials of different problems.

Optuna studies are looked up by name, and a finished study has spent its trial budget: rerunning
``painvrl study`` after the package defaults, the data or the search space changed would otherwise print
the OLD trials' front as if it were the new one (and resume would mix the two problems in one sampler).
"""

from __future__ import annotations

import json
from typing import Any

from painvrl.errors import PainvrlInputError

IDENTITY_ATTR = "painvrl.identity"
"""Optuna study user attribute holding the identity (a JSON object of strings)."""


def study_identity(base_config_hash: str, dataset_fingerprint: str, search: dict[str, Any],
                   objectives: list[str], directions: list[str]) -> dict[str, str]:
    """The problem a study solves: resolved base config, data, search space and objectives (not the budget or
    the sampler, which a user may change to extend a study)."""
    return {"base_config_hash": base_config_hash, "dataset_fingerprint": dataset_fingerprint,
            "search": json.dumps(search, sort_keys=True, default=str),
            "objectives": json.dumps(list(zip(objectives, directions, strict=True)))}


def pin_study_identity(storage: Any, study_name: str, directions: list[str], identity: dict[str, str],
                       where: str) -> None:
    """Create the Optuna study with ``identity`` recorded, or check an existing one against it.

    Raises PainvrlInputError naming what differs when the stored study was made for another problem (or by a
    version that recorded no identity). ``where`` names the study folder for the message.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=study_name, storage=storage,
                                    directions=[optuna.study.StudyDirection[d.upper()] for d in directions])
        study.set_user_attr(IDENTITY_ATTR, identity)
        return
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored == identity:
        return
    if not isinstance(stored, dict):
        why = "it records no problem identity (an older painvrl made it), so it may be another problem"
    else:
        keys = [k for k in identity if stored.get(k) != identity[k]]
        why = ("its " + ", ".join(keys) + (" differs" if len(keys) == 1 else " differ")
               + ": the package defaults, base config, data or search space changed since")
    raise PainvrlInputError(
        f"study config field 'name': a study {study_name!r} already exists in {where}, but {why}. Its trials "
        "cannot be reused: give the study a new 'name', or delete that folder to start it again.")
