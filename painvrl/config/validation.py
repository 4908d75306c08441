"""Cross-field checks of a :class:`Config` that types alone cannot express; every error names the field.

Names that index a registry (method, model.name, model.settings, mask.penalty, mask.solver) and the checks that
need the selected backbone or method are made where the registries live, by
painvrl.training.checks.check_run_config, since the config layer sits below them."""

from __future__ import annotations

import math

from painvrl.config.datasets import SyntheticConfig
from painvrl.config.ood_methods import validate_ood_methods
from painvrl.config.schema import Config
from painvrl.errors import PainvrlInputError


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise PainvrlInputError(f"config field '{where}': {message}")


def validate_config(config: Config) -> None:
    """Cross-field checks that types alone cannot express; every error names the field."""
    d, m, t = config.dataset, config.model, config.train
    if d.name in ("mmrec", "mmgcn"):
        _require(d.path is not None, "dataset.path", f"required for dataset.name={d.name}")
    _require(0.0 < d.ood_fraction < 1.0, "dataset.ood_fraction", "must be in (0, 1)")
    _require(0.0 <= d.ood_val_fraction < 1.0, "dataset.ood_val_fraction", "must be in [0, 1)")
    if d.name == "synthetic":
        validate_synthetic(d.synthetic)
    _require(m.k_id >= 0 and m.k_f >= 1, "model.k_f", "k_f must be >= 1 and k_id >= 0")
    _require(m.n_negatives >= 1, "model.n_negatives", "must be >= 1")
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
        if d.synthetic.scenario == "exposure":
            _require(e.n_envs == 2, "environments.n_envs",
                     f"is {e.n_envs}, but with environments.source=ground_truth it must equal the number of true "
                     "training environments, 2 in the exposure scenario (clicks on front-page items or not)")
        else:
            n_true = len(d.synthetic.train_env_strengths)
            _require(e.n_envs == n_true, "environments.n_envs",
                     f"is {e.n_envs}, but with environments.source=ground_truth it must equal the number of true "
                     f"training environments, len(dataset.synthetic.train_env_strengths) = {n_true}")
    if e.source == "eiil":
        _require(e.n_envs == 2, "environments.n_envs", f"is {e.n_envs}, but environments.source=eiil infers exactly 2")
        _require(e.eiil_steps >= 1, "environments.eiil_steps", "must be >= 1")
        _require(e.eiil_lr > 0, "environments.eiil_lr", "must be > 0")
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
    validate_ood_methods(config.ips, config.pda, config.dro, config.vrex, config.invpref)
    s = config.scaling
    _require(s.num_workers >= 0, "scaling.num_workers", "must be >= 0")
    _require(s.cpus_per_worker > 0, "scaling.cpus_per_worker", "must be > 0")
    _require(s.max_failures >= 0, "scaling.max_failures", "must be >= 0")


def validate_synthetic(s: SyntheticConfig) -> None:
    _require(s.n_users >= 2, "dataset.synthetic.n_users", "must be >= 2")
    _require(s.n_items >= 2, "dataset.synthetic.n_items", "must be >= 2")
    _require(len(s.train_env_strengths) >= 1, "dataset.synthetic.train_env_strengths",
             "needs at least one environment")
    _require(all(x > 0 for x in s.modality_dims) and len(s.modality_dims) >= 1, "dataset.synthetic.modality_dims",
             "needs positive dimensions")
    _require(s.interactions_per_user >= 3, "dataset.synthetic.interactions_per_user", "must be >= 3 (8:1:1 split)")
    _require(s.n_invariant_factors >= 1, "dataset.synthetic.n_invariant_factors", "must be >= 1")
    _require(s.n_spurious_factors >= 0, "dataset.synthetic.n_spurious_factors", "must be >= 0")
    if s.scenario == "exposure":
        _require(0.0 <= s.exposure_front_fraction <= 1.0, "dataset.synthetic.exposure_front_fraction",
                 f"must be in [0, 1], got {s.exposure_front_fraction}")
        _require(0.0 < s.exposure_offpage_max <= 1.0, "dataset.synthetic.exposure_offpage_max",
                 f"must be in (0, 1], got {s.exposure_offpage_max}")
        for name in ("exposure_tail", "exposure_strength", "exposure_popularity_noise"):
            value = getattr(s, name)
            _require(math.isfinite(value) and value >= 0, f"dataset.synthetic.{name}",
                     f"must be a finite value >= 0, got {value}")
