"""What ``painvrl compare`` and ``painvrl suite`` share: running a grid of independent trainings in worker
processes, mean ± standard error over seeds, and logging each finished run to MLflow.

Every grid cell runs in a fresh spawned process (``max_tasks_per_child=1``): its peak RSS is its own and no
state (torch threads, caches, CUDA contexts) leaks from one run into the next.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

Task = TypeVar("Task", bound=tuple[Any, ...])
SQLITE = "sqlite:///"


def run_grid(function: Callable[..., dict[str, Any]], tasks: Sequence[Task], jobs: int,
             *extra: Any) -> Iterator[tuple[Task, dict[str, Any]]]:
    """``function(*task, *extra)`` for every task, ``jobs`` at a time, each in a fresh process; yields
    ``(task, result)`` as runs finish. ``function`` must be importable by name (a module-level function)."""
    if not tasks:
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(jobs, 1), mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(function, *task, *extra): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers and finite (missing metrics are None or NaN)."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def finite_mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values; NaN when there are none."""
    kept = finite(values)
    return sum(kept) / len(kept) if kept else math.nan


def standard_error(values: Iterable[float | None]) -> float:
    """Standard error of the mean of the finite values (sample standard deviation / sqrt(n)); 0 below two."""
    kept = finite(values)
    if len(kept) < 2:
        return 0.0
    mean = sum(kept) / len(kept)
    variance = sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)
    return math.sqrt(variance / len(kept))


def mean_se(values: Iterable[float | None], digits: int = 4, signed: bool = False) -> str:
    """``mean ± standard error`` of the finite values; the bare value for one, ``-`` for none; ``signed``
    writes the mean's sign (differences)."""
    kept = finite(values)
    if not kept:
        return "-"
    sign = "+" if signed else ""
    if len(kept) == 1:
        return f"{kept[0]:{sign}.{digits}f}"
    return f"{finite_mean(kept):{sign}.{digits}f} ± {standard_error(kept):.{digits}f}"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """The id of MLflow experiment ``name`` at ``tracking_uri``, created with ``artifact_root`` if new (the
    folder of a ``sqlite:///`` store is created too)."""
    from painvrl.study import tracking

    if tracking_uri.startswith(SQLITE):
        Path(tracking_uri.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
    return tracking.ensure_experiment(tracking_uri, name, artifact_root)


def log_run(tracking_uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any],
            metrics: dict[str, float]) -> str:
    """One finished MLflow run: tags, params and the finite metrics (names made MLflow-safe); its id."""
    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    run_id: str = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        if value is not None and math.isfinite(value):
            client.log_metric(run_id, tracking.metric_name(key), float(value))
    client.set_terminated(run_id)
    return run_id


def tagged_runs(tracking_uri: str, experiment: str, role: str) -> list[Any]:
    """The MLflow runs of ``experiment`` tagged ``painvrl.role = role``, oldest first (an error naming the
    experiment when it does not exist)."""
    from painvrl.errors import PainvrlInputError
    from painvrl.study import tracking

    client = tracking._client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise PainvrlInputError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    runs: list[Any] = client.search_runs([found.experiment_id], f"tags.`{tracking.ROLE_TAG}` = '{role}'",
                                         max_results=5000, order_by=["attributes.start_time ASC"])
    return runs
