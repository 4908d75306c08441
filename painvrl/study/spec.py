"""Study configuration: what to search, against which objectives, with which sampler, where results go.

A study YAML has a ``base`` section (a run config, painvrl/config/) and the study fields below. Everything is
validated before any trial starts; errors name the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from painvrl.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config_values,
    parse_override,
    resolve_dataset_paths,
    set_dotted,
)
from painvrl.errors import PainvrlInputError
from painvrl.study.shipped import is_shipped, resolve_study_config

METRIC_SECTIONS = ("val", "test")
METRIC_SPLITS = ("iid", "ood", "worst_env")
METRIC_NAMES = ("recall", "precision", "ndcg", "hit")


@dataclass
class Objective:
    metric: str
    """Path in metrics.json, e.g. val.iid.recall@20 or val.ood.ndcg@10 (validation only: never test)."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Optimisation direction."""


@dataclass
class ParamRange:
    kind: Literal["int", "float", "log", "categorical", "simplex"]
    """int / float (uniform), log (log-uniform), categorical (choices) or simplex (preference vector)."""
    low: float | None = None
    """Lower bound (int/float/log)."""
    high: float | None = None
    """Upper bound (int/float/log)."""
    choices: list[Any] = field(default_factory=list)
    """Categorical choices."""


@dataclass
class SamplerSpec:
    name: Literal["tpe", "nsga2", "gp", "random"] = "gp"
    """Optuna sampler. gp is the default: on the default study's space (benchmarks/bench_search_efficiency.py,
    N=20, 12 sampler seeds) it reached 12% more hypervolume than random search (11/12 seeds, paired t = 3.1),
    where tpe reached 5% more (8/12 seeds, t = 1.4)."""
    seed: int = 0
    """Sampler seed."""
    population_size: int | None = None
    """NSGA-II population (default: about a third of num_samples, at least 4)."""
    n_startup_trials: int | None = None
    """TPE / GP random start-up trials (default: about a third of num_samples, at least 3)."""


@dataclass(frozen=True)
class BaselineSpec:
    model: str
    """Backbone (a ``model.name`` value, painvrl.model.registry.MODELS)."""
    method: str = "erm"
    """Method trained over it (a ``method`` value, painvrl.training.methods.METHODS)."""

    @property
    def label(self) -> str:
        """``method/model``, e.g. ``erm/ultragcn``: how tables, plots and MLflow name the baseline."""
        return f"{self.method}/{self.model}"


@dataclass
class StudySpec:
    name: str = "painvrl-study"
    """Study name: MLflow experiment, Optuna study and folder name."""
    base: dict[str, Any] = field(default_factory=dict)
    """Run config shared by all trials (painvrl/config/ fields)."""
    search: dict[str, ParamRange] = field(default_factory=dict)
    """Dotted run-config field -> range. Key 'preference' samples the mask preference on the simplex."""
    objectives: list[Objective] = field(default_factory=lambda: [
        Objective("val.iid.recall@20"), Objective("val.ood.recall@20")])
    """Objectives; an OOD objective falls back to val.worst_env when the dataset has no OOD split."""
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    """Optuna sampler."""
    num_samples: int = 12
    """Number of trials."""
    max_concurrent_trials: int = 2
    """Trials running at once (must fit the cluster)."""
    trial_num_workers: int = 0
    """0: each trial trains in-process; N >= 1: each trial is a Ray Train run with N workers."""
    trial_use_gpu: bool = False
    """One GPU per Ray Train worker."""
    trial_cpus: float = 1.0
    """CPUs per trial driver (and per worker)."""
    storage_dir: str = "painvrl-runs"
    """Root folder of study folders (Optuna storage, Tune experiment). Relative to the CWD at launch,
    resolved to an absolute path immediately (job submission runs from a temporary copy). Accepts s3://, gs://
    for the Tune part on clusters."""
    optuna_storage: str | None = None
    """Optuna storage URL; default sqlite:///<study folder>/optuna.db."""
    tracking_uri: str | None = None
    """MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite under the study folder."""
    reference_point: list[float] | None = None
    """Hypervolume reference point (objective space). Default: the best of ``baselines`` when set, else the erm
    baseline's point when erm_baseline is true, else the origin."""
    erm_baseline: bool = False
    """Run one erm trial first (same data) and use its objectives as the hypervolume reference point (ignored
    when ``baselines`` is set: the best of those is the reference)."""
    baselines: list[BaselineSpec] = field(default_factory=list)
    """(method, backbone) pairs trained before the search, once per seed of ``baseline_seeds``, on the study's
    data and base config with ``method`` and ``model.name`` set. An entry is a backbone name (``ultragcn``: erm
    over it) or a mapping ``{method: invrl, model: vbpr}``; each is labelled ``method/model``. Logged as tagged
    runs of the study's experiment, drawn on the front plot (one marker shape per method) and compared with the
    front; the best one is the default hypervolume reference point. Cached by method, config hash and data
    fingerprint: a rerun or a resume trains none again."""
    baseline_seeds: list[int] = field(default_factory=list)
    """Training seeds of the baselines (default: the base config's train.seed)."""
    ray_address: str | None = None
    """Ray cluster address; default RAY_ADDRESS or a new local Ray."""
    ray_num_cpus: int | None = None
    """CPUs of a new local Ray (default: what the trials need)."""

    # --------------------------------------------------------------------------------------- derived
    def study_dir(self) -> Path:
        return Path(self.storage_dir).expanduser().resolve() / self.name

    def optuna_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.study_dir() / 'optuna.db'}"

    def mlflow_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{self.study_dir() / 'mlflow.db'}"

    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def metric_keys(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def base_config(self) -> Config:
        return config_from_dict(self.base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fail(where: str, message: str) -> NoReturn:
    raise PainvrlInputError(f"study config field '{where}': {message}")


def _get_path(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _check_metric_path(path: str, where: str, ks: list[int]) -> None:
    parts = path.split(".")
    if len(parts) != 3 or parts[0] not in METRIC_SECTIONS or parts[1] not in METRIC_SPLITS:
        _fail(where, f"{path!r} is not a metric path like val.iid.recall@20 (section in {METRIC_SECTIONS}, "
                     f"split in {METRIC_SPLITS})")
    name, _, k = parts[2].partition("@")
    if name not in METRIC_NAMES or not k.isdigit() or int(k) not in ks:
        _fail(where, f"{path!r}: metric must be one of {METRIC_NAMES}@K with K in eval.ks={ks}")
    if parts[0] == "test":
        _fail(where, f"{path!r}: objectives may not read test metrics (model selection never uses test)")


def validate_study(spec: StudySpec, cluster_cpus: float | None = None) -> None:
    """Every check that can fail before a trial starts."""
    if not spec.name or any(c in spec.name for c in "/\\ "):
        _fail("name", f"{spec.name!r} must be non-empty without slashes or spaces")
    try:
        base = spec.base_config()
    except PainvrlInputError as exc:
        raise PainvrlInputError(f"study config section 'base': {exc}") from exc
    if spec.num_samples < 1:
        _fail("num_samples", "must be >= 1")
    if spec.max_concurrent_trials < 1:
        _fail("max_concurrent_trials", "must be >= 1")
    if spec.trial_num_workers < 0:
        _fail("trial_num_workers", "must be >= 0")
    if not spec.objectives:
        _fail("objectives", "needs at least one objective")
    for i, objective in enumerate(spec.objectives):
        _check_metric_path(objective.metric, f"objectives[{i}].metric", base.eval.ks)
    if len(set(spec.metric_keys())) != len(spec.objectives):
        _fail("objectives", "duplicate metric paths")
    n_mask_objectives = 2 + (base.mask.extra_objective != "none")
    base_values = base.to_dict()
    for key, rng in spec.search.items():
        where = f"search.{key}"
        if key == "preference":
            if rng.kind != "simplex":
                _fail(where, "the preference is sampled with kind: simplex")
            if rng.choices and len(rng.choices) != n_mask_objectives:
                _fail(where, f"preference dimension {len(rng.choices)} does not match the "
                             f"{n_mask_objectives} mask objectives (ERM, IRM"
                             f"{', ' + base.mask.extra_objective if n_mask_objectives == 3 else ''})")
            continue
        try:
            current = _get_path(base_values, key)
        except KeyError:
            _fail(where, f"'{key}' is not a run-config field")
        if isinstance(current, dict):
            _fail(where, f"'{key}' is a section, not a field")
        if rng.kind == "simplex":
            _fail(where, "kind simplex is only for the key 'preference'")
        if rng.kind == "categorical":
            if not rng.choices:
                _fail(where, "categorical needs non-empty choices")
            for choice in rng.choices:  # each choice must give a valid run config on its own
                try:
                    _base_with(spec, {key: choice})
                except PainvrlInputError as exc:
                    raise PainvrlInputError(f"study config field '{where}' (choice {choice!r}): {exc}") from exc
            continue
        if rng.low is None or rng.high is None:
            _fail(where, f"kind {rng.kind} needs low and high")
        assert rng.low is not None and rng.high is not None
        if not rng.low < rng.high:
            _fail(where, f"empty range: low={rng.low} must be < high={rng.high}")
        if rng.kind == "log" and rng.low <= 0:
            _fail(where, "log range needs low > 0")
        if rng.kind == "int" and not (float(rng.low).is_integer() and float(rng.high).is_integer()):
            _fail(where, "int range needs integer bounds")
    # each sampled config must itself be valid: check the corners of the box
    for corner in ("low", "high"):
        bounds = {key: int(getattr(rng, corner)) if rng.kind == "int" else getattr(rng, corner)
                  for key, rng in spec.search.items()
                  if key != "preference" and rng.kind not in ("categorical", "simplex")}
        try:
            _base_with(spec, bounds)
        except PainvrlInputError as exc:
            raise PainvrlInputError(f"study config field 'search' ({corner} corner): {exc}") from exc
    _check_baselines(spec.baselines)
    if spec.reference_point is not None and len(spec.reference_point) != len(spec.objectives):
        _fail("reference_point", f"has {len(spec.reference_point)} values for {len(spec.objectives)} objectives")
    if spec.sampler.population_size is not None and spec.sampler.population_size < 2:
        _fail("sampler.population_size", "must be >= 2")
    if cluster_cpus is not None:
        per_trial = spec.trial_cpus * (1 + spec.trial_num_workers)
        placeable = int(cluster_cpus // per_trial)
        if placeable < 1:
            _fail("trial_num_workers", f"one trial needs {per_trial:g} CPUs but the cluster has {cluster_cpus:g}")
        if spec.max_concurrent_trials > placeable:
            _fail("max_concurrent_trials", f"{spec.max_concurrent_trials} trials x {per_trial:g} CPUs do not "
                                           f"fit the cluster's {cluster_cpus:g} CPUs (at most {placeable})")


def _base_with(spec: StudySpec, settings: dict[str, Any]) -> None:
    """Build (and so validate) the run config of the study's base with ``settings`` (dotted keys) set."""
    values = json.loads(json.dumps(spec.base))
    for key, value in settings.items():
        set_dotted(values, key.split("."), value)
    config_from_dict(values)


def _check_baselines(baselines: list[BaselineSpec]) -> None:
    """Every baseline names a registered method and backbone, and no (method, backbone) pair comes twice."""
    from painvrl.model.registry import MODELS
    from painvrl.training.methods import METHODS

    seen: dict[BaselineSpec, int] = {}
    for i, baseline in enumerate(baselines):
        if baseline.method not in METHODS:
            _fail(f"baselines[{i}].method", f"{baseline.method!r} is not a registered method "
                                            f"(known: {', '.join(METHODS.names())})")
        if baseline.model not in MODELS:
            _fail(f"baselines[{i}].model", f"{baseline.model!r} is not a registered backbone "
                                           f"(known: {', '.join(MODELS.names())})")
        if baseline in seen:
            _fail(f"baselines[{i}]", f"{baseline.label} is already baselines[{seen[baseline]}]")
        seen[baseline] = i


def parse_baselines(entries: Any) -> list[BaselineSpec]:
    """The study field ``baselines`` as read from YAML: a list of backbone names (erm over each) and mappings
    ``{method: ..., model: ...}`` (method defaults to erm). Names are checked by :func:`validate_study`."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        _fail("baselines", f"expected a list of backbone names or {{method: ..., model: ...}} mappings, "
                           f"got {entries!r}")
    known = {f.name for f in dataclasses.fields(BaselineSpec)}
    out = []
    for i, entry in enumerate(entries):
        where = f"baselines[{i}]"
        if isinstance(entry, BaselineSpec):
            out.append(entry)
            continue
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict):
            _fail(where, f"expected a backbone name or a mapping like {{method: erm, model: vbpr}}, got {entry!r}")
        unknown = sorted(set(entry) - known)
        if unknown:
            _fail(where, f"unknown keys {unknown} (known: method, model)")
        if "model" not in entry:
            _fail(where, f"{entry!r} has no 'model' (the backbone the method trains, e.g. {{method: "
                         f"{entry.get('method', 'erm')}, model: vbpr}})")
        for key, value in entry.items():
            if not isinstance(value, str) or not value:
                _fail(f"{where}.{key}", f"expected a name, got {value!r}")
        out.append(BaselineSpec(**entry))
    return out


def _build_spec(values: dict[str, Any]) -> StudySpec:
    known = {f.name for f in dataclasses.fields(StudySpec)}
    for key in values:
        if key not in known:
            _fail(key, f"unknown field (known: {sorted(known)})")
    kwargs: dict[str, Any] = dict(values)
    try:
        if "objectives" in kwargs:
            kwargs["objectives"] = [Objective(**o) if isinstance(o, dict) else Objective(str(o))
                                    for o in kwargs["objectives"]]
        if "search" in kwargs:
            search = {}
            for key, rng in (kwargs["search"] or {}).items():
                if not isinstance(rng, dict):
                    _fail(f"search.{key}", f"expected a mapping like {{kind: log, low: ..., high: ...}}, got {rng!r}")
                unknown = set(rng) - {f.name for f in dataclasses.fields(ParamRange)}
                if unknown:
                    _fail(f"search.{key}", f"unknown range keys {sorted(unknown)} (known: kind, low, high, choices)")
                search[key] = ParamRange(**rng)
            kwargs["search"] = search
        if "sampler" in kwargs:
            kwargs["sampler"] = SamplerSpec(**kwargs["sampler"])
        if "baselines" in kwargs:
            kwargs["baselines"] = parse_baselines(kwargs["baselines"])
    except TypeError as exc:
        raise PainvrlInputError(f"study config: {exc}") from exc
    for objective in kwargs.get("objectives", []):
        if objective.direction not in ("maximize", "minimize"):
            _fail("objectives.direction", f"{objective.direction!r} is not maximize|minimize")
    for key, rng in kwargs.get("search", {}).items():
        if rng.kind not in ("int", "float", "log", "categorical", "simplex"):
            _fail(f"search.{key}.kind", f"{rng.kind!r} is not int|float|log|categorical|simplex")
    if kwargs.get("sampler") and kwargs["sampler"].name not in ("tpe", "nsga2", "gp", "random"):
        _fail("sampler.name", f"{kwargs['sampler'].name!r} is not tpe|nsga2|gp|random")
    return StudySpec(**kwargs)


def load_study(path: str | Path | None, overrides: list[str] | None = None) -> StudySpec:
    """Read a study YAML (a file or a shipped config's name, :mod:`painvrl.study.shipped`; None: the defaults),
    apply ``--set`` overrides (e.g. num_samples=4, base.train.epochs=3), build, resolve the OOD fallback and
    validate."""
    file = resolve_study_config(path) if path else None
    values = load_config_values(file) if file else {}
    base = values.get("base")
    if isinstance(base, dict) and file:
        resolve_dataset_paths(base.get("dataset"), Path.cwd() if is_shipped(file) else file.parent)
    for text in overrides or []:
        keys, value = parse_override(text)
        if keys[0] == "search" and len(keys) > 1:
            # search keys are dotted run-config fields: search.mask.sparsity_weight={kind: log, ...}
            values.setdefault("search", {})[".".join(keys[1:])] = value
        else:
            values = apply_overrides(values, [text])
    if "storage_dir" not in values and os.environ.get("PAINVRL_STORAGE_PATH"):
        # clusters set this to their shared mount (clusters/README.md)
        values["storage_dir"] = os.environ["PAINVRL_STORAGE_PATH"]
    spec = _build_spec(values)
    resolve_ood_fallback(spec)
    validate_study(spec)
    spec.storage_dir = str(Path(spec.storage_dir).expanduser().resolve())
    return spec


def resolve_ood_fallback(spec: StudySpec) -> None:
    """Objectives on val.ood.* read val.worst_env.* when the dataset has no OOD split."""
    try:
        base = spec.base_config()
    except PainvrlInputError:
        return  # reported by validate_study
    if base.dataset.ood != "none":
        return
    for objective in spec.objectives:
        section, split, metric = [*objective.metric.split("."), "", "", ""][:3]
        if split == "ood":
            objective.metric = f"{section}.worst_env.{metric}"


def dump_study(spec: StudySpec, path: Path) -> None:
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
