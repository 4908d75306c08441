"""PaInvRL: Pareto invariant representation learning for multimedia recommendation.

Public API (imports stay light: ray, mlflow and optuna load only when a study or Ray Train run needs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Config", "InteractionData", "PainvrlInputError", "__version__", "load_config", "load_run"]

from painvrl.config import Config, load_config
from painvrl.data.dataset import InteractionData
from painvrl.errors import PainvrlInputError

if TYPE_CHECKING:
    from painvrl.serving import LoadedRun


def load_run(path: Any) -> LoadedRun:
    """Load a finished run folder (written by ``painvrl train``) for scoring and recommending."""
    from painvrl.serving import load_run as _load_run

    return _load_run(path)
