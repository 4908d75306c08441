"""Typed run configuration: dataclasses with a docstring under every field, YAML I/O, overrides, validation.

A field's search distribution (for studies) sits beside its default in ``field(metadata={"search": ...})``,
DomainBed-style, so studies read their ranges from here instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from painvrl.errors import PainvrlInputError

Method = Literal["erm", "invrl", "painvrl", "oracle"]


def _search(kind: str, low: float, high: float) -> dict[str, Any]:
    """Declared search range: kind is "int", "float", "log" (log-uniform) or "simplex" (preference)."""
    return {"search": {"kind": kind, "low": low, "high": high}}


@dataclass
class DatasetConfig:
    name: Literal["synthetic", "mmrec", "mmgcn", "movielens"] = "synthetic"
    """Which loader builds the InteractionData."""
    path: str | None = None
    """Folder of the dataset files (mmrec, mmgcn, movielens). Relative paths resolve against the config file."""
    seed: int = 0
    """Seed of data generation and of the splits."""
    split: Literal["random", "temporal", "explicit"] = "random"
    """IID split: per-user random 8:1:1, global temporal, or the split stored in the files (mmrec/mmgcn)."""
    ood: Literal["none", "temporal", "popularity", "explicit", "synthetic"] = "none"
    """OOD split builder: later period, popularity-flattened test, the files' own OOD rows, or the synthetic
    benchmark's shifted environment."""
    temporal_scope: Literal["global", "user"] = "global"
    """Temporal builders: one global time cut, or each user's latest interactions (MovieLens users are active
    in short windows, so a global cut leaves few OOD users with training data)."""
    ood_fraction: float = 0.2
    """Fraction of interactions moved into the OOD split by the temporal / popularity builders."""
    rating_threshold: float = 4.0
    """MovieLens: a rating at or above this counts as a positive."""
    modalities: list[str] = field(default_factory=list)
    """Modalities to keep (empty: all the dataset provides)."""
    feature_cache: str | None = None
    """Folder for cached text features (MovieLens); default: <path>/.painvrl-cache."""
    text_features: Literal["encode", "derived"] = "encode"
    """MovieLens: encode texts with MiniLM (cached by content hash) or read precomputed derived/ vectors."""
    # synthetic benchmark (the method description's synthetic shift benchmark)
    n_users: int = 600
    """Synthetic: number of users."""
    n_items: int = 800
    """Synthetic: number of items."""
    n_invariant_factors: int = 4
    """Synthetic: latent factors users truly prefer items by, in every environment."""
    n_spurious_factors: int = 4
    """Synthetic: latent factors whose correlation with clicks shifts by environment."""
    modality_dims: list[int] = field(default_factory=lambda: [32, 32])
    """Synthetic: feature dimensions of each modality block."""
    interactions_per_user: int = 30
    """Synthetic: positives drawn per user (over all environments)."""
    train_env_strengths: list[float] = field(default_factory=lambda: [1.1, -1.0])
    """Synthetic: strength of the spurious factor's effect on clicks in each training environment (one value
    per environment; negative flips the correlation). The default (1.1, -1.0), with shares (3, 1), gives a net
    positive spurious effect in training, so ERM gains some IID recall from the spurious dims and loses OOD
    recall: an IID/OOD trade-off exists for preference sweeps and studies' Pareto fronts."""
    train_env_shares: list[float] = field(default_factory=lambda: [3.0, 1.0])
    """Synthetic: share of each training environment in a user's training-side positives (same length as
    train_env_strengths, positive, normalised to sum 1). Empty: equal shares."""
    spurious_shared: float = 1.0
    """Synthetic: fraction (in [0, 1]) of the variance of users' spurious taste that ALL users share:
    v_u = sqrt(rho) v + sqrt(1 - rho) e_u. 0: purely personal taste; 1 (default): one global spurious direction
    (a spurious item property that everybody's clicks follow, like a click-bait thumbnail), so an environment
    is a property of the interaction that can in principle be read off the item."""
    ood_env_strength: float = -1.0
    """Synthetic: spurious strength in the OOD environment (flipped sign: correlation breaks)."""
    feature_noise: float = 0.1
    """Synthetic: std of noise added to item features."""
    ood_new_items: float = 0.25
    """Synthetic: fraction (in [0, 1)) of the items released only in the OOD environment (cold-start OOD).
    The training environments never click them, the OOD environment clicks only them, and the OOD splits are
    ranked among them (``InteractionData.ood_candidates``). The item ID embeddings then cannot carry the
    spurious item popularity into the OOD ranking, so the OOD gap measures the feature pathway, which the mask
    acts on. 0: the OOD environment clicks the same items as training, and the ID embeddings can learn the
    spurious popularity late in training."""
    iid_new_items: float = 0.15
    """Synthetic: fraction of the items released in the training environments but held out of training
    (cold-start IID). Each user's val and test positives are clicks on these items, drawn in the training
    environments with their strengths, and the IID splits are ranked among them (``InteractionData
    .iid_candidates``); the train split holds the clicks on the other released items. IID and OOD then measure
    the same thing, the ranking of new items through their features, with and without the shift. 0: the val
    and test positives are a random 1/10 each of every user's training-environment clicks (warm IID), whose
    items' ID embeddings already carry the spurious popularity, so invariance costs no IID recall there."""


@dataclass
class ModelConfig:
    name: str = "ultragcn"
    """Backbone recommender, a key of painvrl.model.registry.MODELS: ``ultragcn`` (UltraGCN-style multimodal
    scorer with degree-weighted BCE)."""
    k_id: int = 64
    """Dimension of the item ID embedding part of the user vector."""
    k_f: int = 64
    """Dimension of the projected feature representation."""
    init_std: float = 0.01
    """Std of the normal initialisation of P, Q and W."""
    n_negatives: int = 50
    """Uniform negatives per positive."""
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    """UltraGCN weights w1..w4 (positive, positive degree-weighted, negative, negative degree-weighted)."""
    l2: float = 1e-4
    """L2 weight on the batch's embeddings and the projection."""
    negative_pool: int = 512
    """Per-step shared pool of uniformly drawn items from which every positive draws its n_negatives (each
    negative stays marginally uniform; negatives within one step are correlated). 0 = independent uniform
    negatives per positive. The pool is what makes a step cost O(batch) instead of O(batch x n_negatives)."""


@dataclass
class TrainConfig:
    epochs: int = 30
    """Maximum epochs of backbone / final training."""
    batch_size: int = 1024
    """Positives per step (global: split across workers)."""
    lr: float = field(default=1e-3, metadata=_search("log", 1e-4, 1e-2))
    """Adam learning rate."""
    patience: int = 30
    """Early stopping: evaluations without improvement of the selection metric. The default equals ``epochs``
    (train to the end and keep the best validation epoch), because the cold-start validation curve can stay
    flat for several epochs before it rises and a small patience stops models in that plateau."""
    eval_every: int = 1
    """Evaluate on validation every this many epochs."""
    seed: int = 0
    """Seed of model init, sampling and shuffling."""
    device: str = "auto"
    """"auto" (cuda when available), "cpu" or "cuda"."""
    deterministic: bool = True
    """Ask torch for deterministic kernels (reproducible runs, possibly slower)."""
    progress: bool = True
    """tqdm progress bars (forced off inside Ray workers)."""
    sparse_embeddings: bool = True
    """Lazy Adam (SparseAdam) on the P/Q tables: a step updates only its batch's rows."""


@dataclass
class EnvironmentsConfig:
    n_envs: int = field(default=2, metadata=_search("int", 2, 8))
    """Number of environments E identified by HEI."""
    source: Literal["hei", "ground_truth"] = "hei"
    """Where mask learning gets its environments: HEI, or (ablation, synthetic data only) the benchmark's true
    environments, i.e. IRM with known environments: an upper bound that separates HEI's errors from IMG's."""
    max_iters: int = 5
    """Hard-EM iterations per round."""
    env_epochs: int = 5
    """Epochs of training the E environment models per EM iteration."""
    change_tol: float = 0.01
    """Stop EM when at most this fraction of labels changes."""
    relabel: Literal["score", "loss"] = "score"
    """Relabel a positive by argmax of environment scores, or by argmin of its own loss."""
    input: Literal["variant", "invrl"] = "variant"
    """Environment models see (1-m)*f (HRM) or full f with an L1 penalty on invariant dims (InvRL)."""
    l1_rho: float = 0.1
    """InvRL form: weight of the L1 penalty rho * mean|W_k * m|."""
    warm_start: bool = True
    """Later rounds start EM from the previous round's labels instead of a random draw."""
    lr: float = 1e-2
    """Adam learning rate of the environment models."""
    feature_bias: bool = False
    """Give each environment model a global item term b_k . x_i + c_k on its input features (an environment
    in which everybody clicks items with some feature pattern more), with an intercept that gives relabelling
    by score a threshold."""
    train_users: bool = False
    """Train one user table shared by the E models (from the pretrained P) instead of freezing P. Frozen P only
    holds what ERM learned from the mixture of environments, so heterogeneity that averages out over the
    environments is invisible to the environment models."""


@dataclass
class MaskConfig:
    epochs: int = 60
    """Epochs of invariant mask generation per round; enough for the gates to settle (with far fewer they
    are still drifting and the mask varies between rounds)."""
    steps_per_epoch: int = 0
    """Steps per epoch (0: enough environment-balanced batches to see the training set once)."""
    lr: float = 2e-2
    """Adam learning rate of mask logits and projection (much smaller rates are too slow for the gates to
    separate)."""
    sigma: float = 0.5
    """Stochastic gate noise std. 0.5 is STG's own default; with a tiny std a small gate times a large W costs
    nothing, so ERM opens every gate and the expected-L0 term has zero gradient."""
    penalty: Literal["gradvar", "irmv1", "vrex"] = "vrex"
    """IRM objective form: gradvar (variance of the environments' gradients), irmv1 (IRMv1 gradient penalty)
    or vrex (variance of the environments' risks). vrex by default: it separates the invariant dims where
    gradvar's EPO weight goes almost all to IRM and the gates all open."""
    extra_objective: Literal["none", "irmv1", "vrex"] = "none"
    """Optional third objective."""
    solver: Literal["epo", "mgda", "linear"] = "epo"
    """Pareto weighting solver."""
    pref_ood: float = field(default=0.5, metadata=_search("float", 0.05, 0.95))
    """Two objectives: preference r = (1 - pref_ood, pref_ood) over (ERM, IRM); larger asks for lower IRM loss."""
    preference: list[float] = field(default_factory=list)
    """Explicit preference vector over all objectives (overrides pref_ood when set)."""
    irm_weight: float = field(default=1.0, metadata=_search("log", 0.01, 100.0))
    """Linear solver (InvRL parity): r = (1, irm_weight)."""
    sparsity: Literal["l0", "l2"] = "l0"
    """Mask regulariser: expected L0 of the gates, or ||mu||^2 (InvRL)."""
    sparsity_weight: float = field(default=3e-4, metadata=_search("log", 1e-5, 1e-1))
    """lambda_s, weight of the mask regulariser. Only gates at exactly 0 remove a feature from the final model
    (its W, trained from scratch, rescales any open gate), so this weight sets the IID/OOD trade-off; the
    studies search it."""
    warmup_steps: int = 20
    """ERM-only steps before Pareto weighting starts in each round."""
    normalisation: Literal["start", "range"] = "start"
    """How the solvers see the objectives. ``start`` (the method's own): each divided by its value at the first
    Pareto step. ``range``: ERM measured from that value (its ideal, the ERM fit) to its value with every gate
    closed (its nadir), the IRM objectives as under ``start``; see masks.normalisation_constants."""
    init_from_pretrained: bool = True
    """IMG's projection W starts at twice the pretrained ERM projection, so gates at 0.5 reproduce the
    pretrained scores (invariance penalties are informative only near an ERM fit); false: a fresh random W."""
    use_item_ids: bool = True
    """Whether the mask's scores keep the item ID embeddings. True (the method's own): the pretrained Q_i
    stays in the item vector [Q_i ; W (g * f_i)], so the features only explain what the IDs of the training
    items do not. False: the item vector is [0 ; W (g * f_i)] during mask learning, so ERM values a feature by
    what it predicts about an item it has no ID for (how the final model scores cold-start items); P stays
    frozen."""


@dataclass
class ConvertConfig:
    mode: Literal["attention", "global", "invariant_only", "concat"] = "invariant_only"
    """How invariant and variant representations combine in the final recommender: a weighted sum
    with per-item attention weights, the same with two global learned weights, the invariant part alone, or a
    projection of both concatenated. invariant_only by default: any variant branch hands the spurious dims back
    to an ERM-trained final model, which then loses the OOD gain even with the true mask."""
    attention_dim: int = 32
    """Hidden size of the attention scorer."""


@dataclass
class PainvrlConfig:
    rounds: int = field(default=5, metadata=_search("int", 1, 5))
    """Outer rounds of HEI + IMG (5, the method's own default; more rounds give a better mask)."""
    schedule_factor: float = 1.05
    """Multiply sparsity and penalty weights by this after each round (InvRL/HRM schedule)."""
    pretrain_epochs: int = 10
    """Epochs of ERM backbone pretraining (P, Q are then frozen during mask learning)."""
    mask_average: Literal["last", "logits"] = "logits"
    """Which mask a round hands on (to the next round's HEI and, after the last round, to the final model).
    ``logits`` (default): clamp(mean_t mu_t + 0.5, 0, 1), the mean of the gate logits of every round so far.
    Each round relearns the mask from mu = 0 on new environments, so one round's mask is a noisy draw and the
    mean over rounds ranks the dims better. ``last`` (the method's m <- IMG(labels)): the round's own mask.
    Method ``invrl`` always uses ``last``, like InvRL."""


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20])
    """Cut-offs for Recall/Precision/NDCG/Hit."""
    selection_source: Literal["iid", "ood", "worst_env"] = "iid"
    """Validation data used for early stopping and checkpoint selection (never test)."""
    selection_metric: str = "recall@20"
    """Metric used for selection."""
    chunk_size: int = 1024
    """Users per scoring chunk (bounds memory)."""
    legacy_invrl: bool = False
    """InvRL's legacy metric variant (seen items scored 1e-5; ideal DCG over hits). Comparison only."""


@dataclass
class ScalingConfig:
    num_workers: int = 0
    """0 runs in-process without Ray; N >= 1 runs a Ray Train TorchTrainer with N workers."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); gloo on CPU."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker."""
    max_failures: int = 0
    """Ray Train retries from the last checkpoint."""


@dataclass
class Config:
    method: Method = "erm"
    """Which method to train: erm, invrl, painvrl, oracle (synthetic ground-truth mask)."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """Data source and splits."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone scorer."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of backbone and final model."""
    environments: EnvironmentsConfig = field(default_factory=EnvironmentsConfig)
    """Heterogeneous environment identification."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    """Invariant mask generation."""
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    """Convert module of the final recommender."""
    painvrl: PainvrlConfig = field(default_factory=PainvrlConfig)
    """Outer loop."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation and model selection."""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    """In-process or Ray Train."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Identity of the resolved config (sha256 of canonical JSON, first 16 hex digits)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def validate(self) -> Config:
        validate_config(self)
        return self


# ---------------------------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert one YAML value to the declared type; errors name the field."""
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise PainvrlInputError(f"config field '{where}': {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except PainvrlInputError as exc:
                errors.append(str(exc))
        raise PainvrlInputError(errors[0] if errors else f"config field '{where}': bad value {value!r}")
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise PainvrlInputError(f"config field '{where}': expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PainvrlInputError(f"config section '{where}': expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise PainvrlInputError(f"config field '{where}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise PainvrlInputError(f"config field '{where}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-5" (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PainvrlInputError(f"config field '{where}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PainvrlInputError(f"config field '{where}': expected a string, got {value!r}")
        return value
    raise PainvrlInputError(f"config field '{where}': unsupported type {_type_name(tp)}")


def _build(cls: Any, values: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise PainvrlInputError(f"unknown config field '{where}' (known: {sorted(names)})")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from nested plain values."""
    config: Config = _build(Config, values)
    return config.validate()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=VALUE``; VALUE is read as YAML (numbers, booleans, lists) so ``[1,2]`` works."""
    if "=" not in text:
        raise PainvrlInputError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise PainvrlInputError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise PainvrlInputError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def set_dotted(values: dict[str, Any], path: list[str], value: Any) -> None:
    """Set values[a][b]... = value in place, creating sections on the way."""
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PainvrlInputError(f"'{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=VALUE`` overrides onto nested plain values (a deep copy is returned)."""
    result = json.loads(json.dumps(values))
    for text in overrides:
        path, value = parse_override(text)
        set_dotted(result, path, value)
    return result


def load_config_values(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config file into plain values; relative dataset.path resolves against the file's folder."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise PainvrlInputError(f"config file {file}: not found")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PainvrlInputError(f"config file {file}: not valid YAML ({exc})") from exc
    if not isinstance(values, dict):
        raise PainvrlInputError(f"config file {file}: top level must be a mapping")
    resolve_dataset_paths(values.get("dataset"), file.parent)
    return values


def resolve_dataset_paths(dataset: Any, folder: Path) -> None:
    """Relative dataset.path / dataset.feature_cache resolve against the folder of the file naming them."""
    if not isinstance(dataset, dict):
        return
    for key in ("path", "feature_cache"):
        if isinstance(dataset.get(key), str):
            value = Path(dataset[key]).expanduser()
            if not value.is_absolute():
                dataset[key] = str((folder / value).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or defaults), apply ``--set`` overrides, build and validate."""
    values = apply_overrides(load_config_values(path), overrides or [])
    return config_from_dict(values)


def dump_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def search_ranges(config_cls: Any = Config, prefix: str = "") -> dict[str, dict[str, Any]]:
    """All declared search ranges, keyed by dotted field path."""
    ranges: dict[str, dict[str, Any]] = {}
    hints = get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        where = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            ranges.update(search_ranges(hints[f.name], where))
        elif "search" in f.metadata:
            ranges[where] = dict(f.metadata["search"])
    return ranges


# -------------------------------------------------------------------------------------------- validation


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise PainvrlInputError(f"config field '{where}': {message}")


def validate_config(config: Config) -> None:
    """Cross-field checks that types alone cannot express; every error names the field."""
    d, m, t = config.dataset, config.model, config.train
    if d.name in ("mmrec", "mmgcn"):
        _require(d.path is not None, "dataset.path", f"required for dataset.name={d.name}")
    _require(0.0 < d.ood_fraction < 1.0, "dataset.ood_fraction", "must be in (0, 1)")
    _require(d.n_users >= 2, "dataset.n_users", "must be >= 2")
    _require(d.n_items >= 2, "dataset.n_items", "must be >= 2")
    _require(len(d.train_env_strengths) >= 1, "dataset.train_env_strengths", "needs at least one environment")
    _require(all(x > 0 for x in d.modality_dims) and len(d.modality_dims) >= 1, "dataset.modality_dims",
             "needs positive dimensions")
    _require(d.interactions_per_user >= 3, "dataset.interactions_per_user", "must be >= 3 (8:1:1 split)")
    _require(d.n_invariant_factors >= 1, "dataset.n_invariant_factors", "must be >= 1")
    _require(d.n_spurious_factors >= 0, "dataset.n_spurious_factors", "must be >= 0")
    _require(m.k_id >= 0 and m.k_f >= 1, "model.k_f", "k_f must be >= 1 and k_id >= 0")
    _require(m.n_negatives >= 1, "model.n_negatives", "must be >= 1")
    _require(len(m.loss_weights) == 4, "model.loss_weights", "needs exactly 4 weights w1..w4")
    _require(m.l2 >= 0, "model.l2", "must be >= 0")
    _require(t.epochs >= 1, "train.epochs", "must be >= 1")
    _require(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _require(t.lr > 0, "train.lr", "must be > 0")
    _require(t.eval_every >= 1, "train.eval_every", "must be >= 1")
    _require(t.patience >= 1, "train.patience", "must be >= 1")
    _require(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "train.device",
             "must be auto, cpu or cuda[:N]")
    e = config.environments
    _require(e.n_envs >= 1, "environments.n_envs", "must be >= 1")
    _require(e.max_iters >= 1 and e.env_epochs >= 1, "environments.max_iters", "iterations and epochs >= 1")
    _require(0 <= e.change_tol < 1, "environments.change_tol", "must be in [0, 1)")
    if e.source == "ground_truth":
        _require(d.name == "synthetic", "environments.source",
                 f"'ground_truth' needs the synthetic benchmark (dataset.name={d.name!r} has no true environments)")
        _require(e.n_envs == len(d.train_env_strengths), "environments.n_envs",
                 f"is {e.n_envs}, but with environments.source=ground_truth it must equal the number of true "
                 f"training environments, len(dataset.train_env_strengths) = {len(d.train_env_strengths)}")
    mk = config.mask
    _require(mk.sigma > 0, "mask.sigma", "must be > 0")
    _require(0.0 < mk.pref_ood < 1.0, "mask.pref_ood", "must be in (0, 1)")
    n_objectives = 2 + (mk.extra_objective != "none")
    if mk.preference:
        _require(len(mk.preference) == n_objectives, "mask.preference",
                 f"has {len(mk.preference)} components but there are {n_objectives} objectives")
        _require(all(x >= 0 for x in mk.preference) and sum(mk.preference) > 0, "mask.preference",
                 "must be non-negative with a positive sum (it is normalised onto the simplex)")
    _require(mk.sparsity_weight >= 0, "mask.sparsity_weight", "must be >= 0")
    _require(mk.epochs >= 1, "mask.epochs", "must be >= 1")
    _require(config.painvrl.rounds >= 1, "painvrl.rounds", "must be >= 1")
    _require(config.painvrl.schedule_factor > 0, "painvrl.schedule_factor", "must be > 0")
    ev = config.eval
    _require(len(ev.ks) >= 1 and all(k >= 1 for k in ev.ks), "eval.ks", "needs positive cut-offs")
    metric, _, k = ev.selection_metric.partition("@")
    _require(metric in ("recall", "precision", "ndcg", "hit") and k.isdigit() and int(k) in ev.ks,
             "eval.selection_metric", f"{ev.selection_metric!r} must be recall|precision|ndcg|hit@K with K in "
             f"eval.ks={ev.ks}")
    _require(ev.chunk_size >= 1, "eval.chunk_size", "must be >= 1")
    if config.method == "oracle":
        _require(d.name == "synthetic", "method", "oracle needs ground truth: only dataset.name=synthetic has it")
    if ev.selection_source == "ood":
        _require(d.ood != "none", "eval.selection_source", "'ood' needs an OOD split (dataset.ood)")
    s = config.scaling
    _require(s.num_workers >= 0, "scaling.num_workers", "must be >= 0")
    _require(s.cpus_per_worker > 0, "scaling.cpus_per_worker", "must be > 0")
    _require(s.max_failures >= 0, "scaling.max_failures", "must be >= 0")
