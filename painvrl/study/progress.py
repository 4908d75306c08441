"""One progress bar over a study's trials (imports ray: load only in the study driver).

The bar shows trials done / total, how many run now, how many failed, the size of the current Pareto front and
its hypervolume, with tqdm's ETA. A failed trial prints its error and the path of its log above the bar.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback


class StudyProgress(Callback):
    """Driver-side tqdm bar over the study's trials (a module-level class so Tune can pickle it on resume)."""

    def __init__(self, total: int, metric_keys: Sequence[str], directions: Sequence[str],
                 reference: Sequence[float], done: int = 0) -> None:
        self.total, self.done = int(total), int(done)
        self.metric_keys, self.directions = list(metric_keys), list(directions)
        self.reference = [float(r) for r in reference]
        self.points: list[list[float]] = []
        self.running: set[str] = set()
        self.failed = 0
        self._bar: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the bar is a terminal handle, not state
        state = dict(self.__dict__)
        state["_bar"] = None
        return state

    # ------------------------------------------------------------------------------------------ the bar
    def _ensure_bar(self) -> Any:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=min(self.done, self.total), desc="trials", unit="trial",
                             file=sys.stderr, dynamic_ncols=True)
        return self._bar

    def _front_summary(self) -> tuple[int, float]:
        if not self.points:
            return 0, 0.0
        import numpy as np

        from painvrl.study.front import hypervolume, non_dominated_mask

        points = np.asarray(self.points, dtype=float)
        size = int(non_dominated_mask(points, self.directions).sum())
        hv = float(hypervolume(points, self.reference, self.directions)) if len(self.metric_keys) in (2, 3) \
            else math.nan
        return size, hv

    def _refresh(self, redraw: bool | None = None) -> None:
        """Update the postfix; redraw at once on a terminal only (a pipe or log file gets one line per trial)."""
        bar = self._ensure_bar()
        size, hv = self._front_summary()
        bar.set_postfix_str(f"running {len(self.running)}, failed {self.failed}, front {size}, hv {hv:.3g}",
                            refresh=sys.stderr.isatty() if redraw is None else redraw)

    # ---------------------------------------------------------------------------------------- callbacks
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        result = trial.last_result or {}
        values = [result.get(key) for key in self.metric_keys]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            self.points.append([float(v) for v in values])  # type: ignore[arg-type]
        self._refresh(redraw=False)
        self._ensure_bar().update(1)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed += 1
        bar = self._ensure_bar()
        bar.write(f"trial {trial.trial_id} failed: {_first_error_line(trial)}\n  log: {_error_path(trial)}",
                  file=sys.stderr)
        self._refresh(redraw=False)
        bar.update(1)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._bar is not None:
            self._refresh(redraw=True)
            self._bar.close()
            self._bar = None


def _error_path(trial: Any) -> str:
    for attr in ("error_file", "pickled_error_file"):
        path = getattr(trial, attr, None)
        if path:
            return str(path)
    return str(getattr(trial, "local_path", None) or getattr(trial, "path", ""))


def _first_error_line(trial: Any) -> str:
    """The last line of the trial's traceback (the exception itself), or 'see the log'."""
    path = getattr(trial, "error_file", None)
    try:
        with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
            lines = [line.strip() for line in handle if line.strip()]
        return lines[-1][:300] if lines else "see the log"
    except (OSError, TypeError):
        return "see the log"
