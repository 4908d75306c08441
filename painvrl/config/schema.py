"""The run configuration's schema: one dataclass per section, with a docstring under every field (the
docstrings are the reference in docs/configuration.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from painvrl.config.datasets import DatasetConfig
from painvrl.config.ood_methods import DROConfig, InvPrefConfig, IPSConfig, PDAConfig, VREXConfig


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
    l2: float = 1e-4
    """L2 weight on the batch's embeddings and the projection."""
    negative_pool: int = 512
    """Per-step shared pool of uniformly drawn items from which every positive draws its n_negatives (each
    negative stays marginally uniform; negatives within one step are correlated). 0 = independent uniform
    negatives per positive. The pool is what makes a step cost O(batch) instead of O(batch x n_negatives)."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Backbone-specific hyperparameters, keyed by model name: ``--set model.settings.lattice.knn_k=5``. Each
    backbone declares its own fields and their defaults (docs/configuration.md lists them); only the entry of
    ``model.name`` is read, and an unknown field is an error naming it."""


@dataclass
class TrainConfig:
    epochs: int = 30
    """Maximum epochs of backbone / final training."""
    batch_size: int = 1024
    """Positives per step (global: split across workers)."""
    lr: float = 1e-3
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
    n_envs: int = 2
    """Number of environments E identified by HEI."""
    source: Literal["hei", "eiil", "ground_truth"] = "hei"
    """Where mask learning gets its environments: HEI (re-identified every round from the current mask); EIIL
    (2 environments inferred once from the pretrained ERM model as the partition that most violates its IRM
    condition, Creager et al. 2021); or (ablation, synthetic data only) the benchmark's true environments, i.e.
    IRM with known environments: an upper bound that separates environment identification's errors from IMG's."""
    eiil_steps: int = 2000
    """environments.source=eiil: Adam steps on the soft assignment of the training positives."""
    eiil_lr: float = 0.01
    """environments.source=eiil: Adam learning rate of the assignment logits."""
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
    init: Literal["random", "gradient"] = "gradient"
    """Where the first round's EM starts: ``gradient`` (the default), the cut of a principal
    component of the positives' feature gradients (at the 10-90% quantiles) across which the reference model's
    losses differ most (painvrl/invariance/gradient_init.py); EM from it returns the iterate ``keep_iterate``
    chooses (the start included). It lets EM separate environments whose spurious effects differ in strength
    rather than sign. Where the environments differ in sign only it finds a split of hard from easy positives,
    which would mislead IMG; such a start, or an EM path from it that reaches one, is detected
    (``init_max_alignment``) and EM starts from random labels instead (docs/algorithm.md). ``random``: uniformly
    random labels, which finds sign shifts only."""
    init_components: int = 6
    """``init=gradient``: principal components cut into candidate partitions."""
    init_max_alignment: float = 0.6
    """``init=gradient``: the start falls back to random labels when its partition's difficulty alignment (the
    rank correlation, over the feature gates, of its contrast with the reference model's reliance on each gate;
    painvrl/invariance/gradient_init.py) is at least this, and EM starts again from random labels when any of its
    iterates from the start is: such a partition separates hard from easy positives, and IRM across it closes
    the features the model relies on most. Above 1 never falls back."""
    keep_iterate: Literal["largest_f", "least_aligned", "last"] = "largest_f"
    """``init=gradient``: which iterate of the first round's EM HEI returns: the one of largest loss F (the start
    included; hard EM drifts from a strength split towards content splits, and F falls as it does), the one of
    smallest difficulty alignment (the partition whose per-gate contrast is least on the features the reference
    model relies on), or the last. Where any iterate's difficulty alignment reaches ``init_max_alignment``, EM
    starts again from random labels."""
    lr: float = 1e-2
    """Adam learning rate of the environment models."""
    feature_bias: bool = False
    """Give each environment model a global item term b_k . x_i + c_k on its input features (an environment
    in which everybody clicks items with some feature pattern more), with an intercept that gives relabelling
    by score a threshold."""
    min_size: float = 0.01
    """Smallest environment, as a fraction of the training positives: a smaller one after relabelling is
    re-seeded with the positives of the largest environment that its model fits best relative to their own
    (the environment models' disagreement)."""
    max_tied: float = 0.5
    """HEI stops with an error when the environment models' fits of more than this fraction of the positives
    are tied (top-two margin below 1e-6 of the fit): the models then see no difference between the
    environments and any labelling would be arbitrary."""
    final_from_pretrained: bool = False
    """Methods that train over identified environments (``dro``, ``vrex``): true continues the ERM-pretrained
    model that identification read, for ``train.epochs - painvrl.pretrain_epochs`` more epochs under the
    method's objective, so ERM and the objective share one epoch budget (the penalty-annealing schedule of V-REx
    and IRM: ERM first, then the objective) and the run costs about erm's epochs plus one HEI round; false trains
    a fresh model for ``train.epochs``. Validation then often selects an epoch right after pretraining, where
    the model is still mostly ERM's, and keeps less of the objective's out-of-distribution gain."""
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
    penalty: str = "vrex"
    """IRM objective, a key of painvrl.invariance.penalties.PENALTIES: gradvar (variance of the environments'
    gradients), irmv1 (IRMv1 gradient penalty) or vrex (variance of the environments' risks). vrex by default:
    it separates the invariant dims where gradvar's EPO weight goes almost all to IRM and the gates all open."""
    extra_objective: str = "none"
    """Optional third objective: ``none`` or a key of PENALTIES (irmv1, vrex, ...)."""
    solver: str = "epo"
    """Pareto weighting solver, a key of painvrl.invariance.pareto.SOLVERS: epo, mgda or linear."""
    pref_ood: float = 0.5
    """Two objectives: preference r = (1 - pref_ood, pref_ood) over (ERM, IRM); larger asks for lower IRM loss."""
    preference: list[float] = field(default_factory=list)
    """Explicit preference vector over all objectives (overrides pref_ood when set)."""
    irm_weight: float = 1.0
    """Linear solver (InvRL parity): r = (1, irm_weight)."""
    sparsity: Literal["l0", "l2"] = "l0"
    """Mask regulariser: expected L0 of the gates, or ||mu||^2 (InvRL)."""
    sparsity_weight: float = 3e-4
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
    mode: Literal["attention", "global", "invariant_only", "concat", "preference"] = "invariant_only"
    """How invariant and variant representations combine in the final recommender: a weighted sum
    with per-item attention weights, the same with two global learned weights, the invariant part alone, a
    projection of both concatenated, or ``preference``: the variant part added to an item's representation with
    probability equal to the preference's ERM share in training and scaled by that share at evaluation.
    invariant_only by default: an ERM-trained variant branch hands the spurious dims back to the final model,
    which then loses the OOD gain even with the true mask."""
    attention_dim: int = 32
    """Hidden size of the attention scorer."""


@dataclass
class PainvrlConfig:
    rounds: int = 5
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
    feature_path_epochs: int = 10
    """Epochs of fitting the feature path's user tastes t and projection W: HEI and IMG score through the
    backbone's frozen pair score plus <t_u, W x_i> (painvrl/invariance/feature_path.py); a backbone linear in its
    content vector (ultragcn, vbpr) is its own feature path and fits nothing."""
    feature_path_lr: float = 1e-2
    """Adam learning rate of that fit."""


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
    method: str = "erm"
    """Which method to train, a key of painvrl.training.methods.METHODS: erm, invrl, painvrl, oracle (synthetic
    ground-truth mask), or a method a plugin registers (docs/extending.md)."""
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
    ips: IPSConfig = field(default_factory=IPSConfig)
    """Inverse propensity weighting (method ``ips``)."""
    pda: PDAConfig = field(default_factory=PDAConfig)
    """Popularity-deconfounded training (method ``pda``)."""
    dro: DROConfig = field(default_factory=DROConfig)
    """GroupDRO over the identified environments (method ``dro``)."""
    vrex: VREXConfig = field(default_factory=VREXConfig)
    """V-REx over the identified environments (method ``vrex``)."""
    invpref: InvPrefConfig = field(default_factory=InvPrefConfig)
    """InvPref: invariant and variant preferences over environments it infers itself (method ``invpref``)."""
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
