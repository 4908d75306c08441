"""Invariant mask generation (IMG, docs/algorithm.md) with Pareto weighting of ERM and IRM objectives.

Trainable: stochastic-gate logits mu [d] (init 0) and the projection W [k_f, d] of a frozen copy of the
backbone's feature path (painvrl/invariance/mask_models.py, feature_path.py). Each step draws one batch per environment
(environment-balanced), computes the per-environment backbone losses L_k with gated features g * f, the
objectives (ERM = mean_k L_k, the IRM penalties of ``PENALTIES``), the gradient of every objective with
respect to (mu, W), Pareto weights alpha from the normalised losses and gradients, and sets
``param.grad = sum_j alpha_j grad_j + lambda_s grad R(mu)`` before an Adam step.

Distributed design (painvrl/distributed/collective.py), exact for any number of ranks:

- every rank draws the same global per-environment batches, negatives and gate noise (seeded generators) and
  keeps ``shard_slice`` of each environment's batch;
- per-environment loss partial sums are divided by the GLOBAL per-environment counts and summed over ranks with
  ``collective.all_reduce_sum`` (identity backward), so every objective VALUE is global and identical on all
  ranks; per-environment gradients G_k (gradvar) and dummy-scale gradients (irmv1) are all-reduced the same way
  before the penalty is formed;
- terms every rank computes identically from parameters alone (L2 of W, the ``mu + 0.5`` factor of gradvar)
  carry gradient 1/world_size, so ``autograd.grad`` of an objective gives each rank exactly its contribution;
  the flattened per-objective gradients are then all-reduced into the exact global gradients, the Gram matrix
  and alpha are identical on every rank, and the regulariser's gradient (replicated) is added locally.

Loss normalisation: objective j is used as L_j / L_j(0) with L_j(0) its value at the first PARETO step of the
round, i.e. after the ERM warm-up (floored at 1e-8), both for the losses the solver sees and for the gradients
it weights (gradients of the normalised losses), so the ERM and IRM scales (which differ by orders of
magnitude) do not decide alpha. Not the very first step: there the projection is freshly initialised, every
environment's loss is about log 2 and the IRM value is init noise (V-REx ~1e-6), so dividing by it made the
IRM gradient dominate whatever the preference, and the mask owed nothing to the environments (true
environments: AUC 0.90 with the step-0 constant vs 0.96 after warm-up, pref_ood 0.9, 3 seeds). After warm-up
the constants are those of an ERM fit, and a preference r says how much each objective must improve relative
to that fit (EPO balances r_j L_j / L_j(0)). ``mask.normalisation=range`` measures ERM instead from that fit
to its value with every gate closed (:func:`normalisation_constants`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from painvrl.config import MaskConfig
from painvrl.distributed.collective import Collective, LocalCollective, replicated, shard_slice
from painvrl.distributed.sampling import environment_balanced_batches, make_generator, pool_active
from painvrl.errors import PainvrlInputError
from painvrl.invariance.mask_models import EnvBatch, MaskModel
from painvrl.invariance.pareto import (
    SOLVERS,
    normalise_losses,
    preference_from_pref_ood,
    solve_weights,
    validate_preference,
)
from painvrl.invariance.penalties import PENALTIES, PenaltyInputs, per_env_param_grads
from painvrl.model.linear_content import LinearContentRecommender

logger = logging.getLogger(__name__)

LOSS_FLOOR = 1e-8


@dataclass
class StepSettings:
    """What one mask step optimises (resolved from MaskConfig by :func:`resolve_settings`)."""

    penalty: str = MaskConfig.penalty
    extra_objective: str = MaskConfig.extra_objective
    solver: str = MaskConfig.solver
    preference: list[float] = field(default_factory=lambda: preference_from_pref_ood(MaskConfig.pref_ood).tolist())
    sparsity: str = MaskConfig.sparsity
    sparsity_weight: float = MaskConfig.sparsity_weight
    normalisation: str = MaskConfig.normalisation

    @property
    def n_objectives(self) -> int:
        return 2 + (self.extra_objective != "none")

    @property
    def objectives(self) -> list[str]:
        """The IRM objectives after ERM: the penalty, then the optional extra objective."""
        return [self.penalty] + ([self.extra_objective] if self.extra_objective != "none" else [])


@dataclass
class StepStats:
    """Logged quantities of one step."""

    losses: list[float]
    alpha: list[float]
    mode: str
    non_uniformity: float
    cosine: float


def mask_model(scorer: LinearContentRecommender, k_f: int, sigma: float, init_std: float,
               generator: torch.Generator | None = None, init_from_pretrained: bool = True,
               use_item_ids: bool = True) -> MaskModel:
    """The mask model over a feature path ``scorer`` (painvrl/invariance/feature_path.py)."""
    from painvrl.invariance.linear_models import LinearMaskModel

    return LinearMaskModel(scorer, k_f, sigma, init_std, generator, init_from_pretrained, use_item_ids)


def _flat_grads(objective: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(objective, list(params), retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params,
                                                                                            strict=True)])


def _erm_objective(model: MaskModel, env_losses: torch.Tensor, world_size: int) -> torch.Tensor:
    """L_ERM = mean_k L_k + the L2 of W, from the global per-environment losses."""
    return env_losses.mean() + replicated(model.encoder_l2(), world_size)


def compute_objectives(
    model: MaskModel, batches: Sequence[EnvBatch], eps: torch.Tensor, settings: StepSettings,
    collective: Collective, erm_only: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Global objective values (ERM, IRM[, extra]) as graphs on this rank, and the global env losses [E].

    Only environments with a non-empty global batch take part (the same set on every rank). The IRM objectives
    are the ``PENALTIES`` entries named by ``settings``.
    """
    ws = collective.world_size
    active = [b for b in batches if b.global_count > 0]
    if not active:
        raise ValueError("mask step without any non-empty environment batch")
    penalties = [penalty_entry(name) for name in settings.objectives] if not erm_only else []
    scales = None
    if any(p.dummy_scale for p in penalties):
        scales = [torch.ones((), device=model.weight.device, dtype=model.weight.dtype, requires_grad=True)
                  for _ in active]
    gates = model.gates(eps)
    partials, cache = model.env_forward(gates, active, scales)
    env_losses = collective.all_reduce_sum(partials)
    erm = _erm_objective(model, env_losses, ws)
    if erm_only:
        return [erm], env_losses

    def env_grads() -> torch.Tensor:
        local = model.env_weight_grads(cache) if scales is None else per_env_param_grads(
            list(env_losses), model.weight)
        return collective.all_reduce_sum(local)

    def scale_grads() -> torch.Tensor:
        assert scales is not None
        local = torch.stack([torch.autograd.grad(env_losses[k], scales[k], create_graph=True)[0]
                             for k in range(len(active))])
        return collective.all_reduce_sum(local)

    inputs = PenaltyInputs(env_losses=env_losses, env_grads=env_grads,
                           mask_scale=replicated(model.gate.mask_scale(), ws),
                           scale_grads=scale_grads if scales is not None else None)
    return [erm] + [penalty.objective(inputs) for penalty in penalties], env_losses


def penalty_entry(name: str) -> Any:
    """``PENALTIES[name]``, or an error naming the config field and the registered penalties."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise PainvrlInputError(f"config field 'mask.penalty': unknown penalty {name!r} "
                                f"(known: {', '.join(sorted(PENALTIES))})") from None


def normalisation_constants(model: MaskModel, batches: Sequence[EnvBatch], losses: torch.Tensor,
                            settings: StepSettings, collective: Collective) -> torch.Tensor:
    """[2, m] float64: the offset (row 0) and scale (row 1) each objective is normalised by.

    ``start``: offset 0, scale = the objective's current value, so r_j says how much objective j
    must improve RELATIVE to the ERM fit the round starts from.

    ``range``: the same for the IRM objectives (their ideal is 0), but ERM is measured on its attainable range:
    offset = its current value (the ERM fit, its ideal) and scale = the ERM loss with every gate closed (its
    nadir: what removing all features costs) minus that. Under ``start`` the ERM fit cannot improve, so EPO's
    balance r_ERM L_ERM = r_IRM L_IRM is met with the IRM penalty at its starting value and a preference barely
    asks for invariance; under ``range`` r says which share of the feature pathway's ERM value may be given up
    for which share of the penalty.
    """
    offset = torch.zeros_like(losses)
    scale = losses.clone()
    if settings.normalisation == "range":
        active = [b for b in batches if b.global_count > 0]
        with torch.no_grad():
            closed = model.env_partial_losses(torch.zeros_like(model.gate.mu), active)
            nadir = _erm_objective(model, collective.all_reduce_sum(closed), collective.world_size)
            nadir = nadir.to(torch.float64)
        if nadir > losses[0]:
            offset[0] = losses[0]
            scale[0] = nadir - losses[0]
        else:  # the features do not help ERM at all (an unfitted projection): no range to measure
            logger.warning("range normalisation: ERM loss with every gate closed (%.4g) is not above the ERM fit "
                           "(%.4g); ERM is normalised by its start value", float(nadir), float(losses[0]))
    elif settings.normalisation != "start":
        raise ValueError(f"unknown loss normalisation {settings.normalisation!r}")
    return torch.stack([offset, scale])


def mask_step(
    model: MaskModel,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[EnvBatch],
    eps: torch.Tensor,
    settings: StepSettings,
    collective: Collective,
    initial: torch.Tensor | None,
    warmup: bool = False,
) -> tuple[StepStats, torch.Tensor]:
    """One IMG step; returns its stats and the normalisation constants (recorded here when ``initial`` is None).

    Warm-up steps (after the first) optimise ERM alone; the first step of a round always computes every
    objective so that constants exist (learn_mask records them again at the first Pareto step).
    """
    params = model.trainable()
    erm_only = warmup and initial is not None
    objectives, _ = compute_objectives(model, batches, eps, settings, collective, erm_only)
    grads = collective.all_reduce_sum(torch.stack([_flat_grads(obj, params) for obj in objectives]).detach())
    losses = torch.stack([obj.detach() for obj in objectives]).to(torch.float64)
    if initial is None:
        initial = normalisation_constants(model, batches, losses, settings, collective)
    ideal, scale = initial[0, : len(objectives)], initial[1, : len(objectives)]
    norm_losses = normalise_losses(losses, scale, LOSS_FLOOR, ideal)
    norm_grads = grads.to(torch.float64) / scale.clamp_min(LOSS_FLOOR)[:, None]
    if warmup:
        alpha = torch.zeros(len(objectives), dtype=torch.float64)
        alpha[0] = 1.0
        stats = StepStats(losses.tolist(), alpha.tolist(), "warmup", float("nan"), float("nan"))
    else:
        step = solve_weights(settings.solver, norm_losses, norm_grads, settings.preference)
        alpha = step.alpha.to(torch.float64)
        stats = StepStats(losses.tolist(), alpha.tolist(), step.mode, step.non_uniformity, step.cosine)
    direction = (alpha.to(norm_grads.device) @ norm_grads).to(params[0].dtype)
    regulariser = model.gate.expected_l0() if settings.sparsity == "l0" else model.gate.l2()
    (reg_grad,) = torch.autograd.grad(settings.sparsity_weight * regulariser, model.gate.mu)
    offset = 0
    for param in params:
        n = param.numel()
        param.grad = direction[offset:offset + n].view_as(param).clone()
        offset += n
    model.gate.mu.grad = cast(torch.Tensor, model.gate.mu.grad) + reg_grad
    optimizer.step()
    return stats, initial


def resolve_settings(cfg: MaskConfig, sparsity_weight: float, irm_weight: float) -> StepSettings:
    """Solver, preference and regulariser of one round. The linear solver weighs (ERM, IRM...) by
    r = (1, irm_weight, ...); the others take ``mask.preference``, or (1 - pref_ood, pref_ood)."""
    for field_name, name in (("penalty", cfg.penalty), ("extra_objective", cfg.extra_objective)):
        if name != "none" or field_name == "penalty":
            if name not in PENALTIES:
                raise PainvrlInputError(f"config field 'mask.{field_name}': unknown penalty {name!r} "
                                        f"(known: {', '.join(sorted(PENALTIES))})")
    if cfg.solver not in SOLVERS:
        raise PainvrlInputError(f"config field 'mask.solver': unknown solver {cfg.solver!r} "
                                f"(known: {', '.join(sorted(SOLVERS))})")
    n_obj = 2 + (cfg.extra_objective != "none")
    if cfg.solver == "linear":
        preference = validate_preference([1.0] + [irm_weight] * (n_obj - 1), n_obj).tolist()
    elif cfg.preference:
        preference = validate_preference(cfg.preference, n_obj).tolist()
    else:
        two = preference_from_pref_ood(cfg.pref_ood).tolist()
        # Three objectives without an explicit preference: the OOD share is split over the two OOD objectives.
        preference = two if n_obj == 2 else [two[0], two[1] / 2, two[1] / 2]
    return StepSettings(cfg.penalty, cfg.extra_objective, cfg.solver, preference, cfg.sparsity, sparsity_weight,
                        cfg.normalisation)


@dataclass
class MaskRound:
    """Output of :func:`learn_mask` for one round."""

    mask: np.ndarray
    model: MaskModel
    history: list[dict[str, Any]]


def learn_mask(
    pretrained: LinearContentRecommender,
    train: np.ndarray,
    labels: np.ndarray,
    n_envs: int,
    cfg: MaskConfig,
    settings: StepSettings,
    *,
    batch_size: int,
    n_negatives: int,
    seed: int,
    round_index: int = 0,
    k_f: int | None = None,
    init_std: float = 0.01,
    collective: Collective | None = None,
    progress: bool = False,
    negative_pool: int = 0,
) -> MaskRound:
    """Train gates and a projection over the feature path ``pretrained`` for ``cfg.epochs`` epochs of
    environment-balanced steps."""
    collective = collective or LocalCollective()
    rank, ws = collective.rank, collective.world_size
    if k_f is None:  # the width of the pretrained encoder's content vectors
        with torch.no_grad():
            k_f = int(pretrained.encoder(pretrained.features[:1]).shape[1])
    model = mask_model(pretrained, k_f, cfg.sigma, init_std, make_generator(seed, "img_model", round_index),
                       cfg.init_from_pretrained, use_item_ids=cfg.use_item_ids)
    device = model.weight.device
    optimizer = torch.optim.Adam(model.trainable(), lr=cfg.lr)
    sizes = np.bincount(labels, minlength=n_envs)
    per_env = max(1, batch_size // n_envs)
    active = int((sizes > 0).sum())
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train) / (max(active, 1) * per_env)))
    global_counts = [0 if s == 0 else min(int(s), per_env) for s in sizes]
    train_t = torch.as_tensor(train)
    pooled = pool_active(negative_pool, pretrained.n_items)
    initial: torch.Tensor | None = None
    history: list[dict[str, Any]] = []
    step_index = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * steps, desc=f"IMG round {round_index}", leave=False)
    previous = model.gate.mask()
    for epoch in range(cfg.epochs):
        records: list[StepStats] = []
        batches_iter = environment_balanced_batches(labels, n_envs, per_env, seed, epoch, rank, ws, steps=steps,
                                                    phase=f"img:{round_index}")
        for step, env_rows in enumerate(batches_iter):
            gen = make_generator(seed, f"img_step:{round_index}", epoch, step)
            eps = torch.randn(model.feature_dim, generator=gen)
            batches = []
            pool = torch.randint(pretrained.n_items, (negative_pool,), generator=gen) if pooled else None
            for k, rows in enumerate(env_rows):
                pairs = train_t[torch.as_tensor(rows, dtype=torch.long)]
                part = shard_slice(global_counts[k], rank, ws)
                if pool is not None:
                    positions = torch.randint(negative_pool, (global_counts[k], n_negatives), generator=gen)[part]
                    batches.append(EnvBatch(pairs[:, 0].to(device), pairs[:, 1].to(device),
                                            pool[positions].to(device), global_counts[k], pool.to(device),
                                            positions.to(device)))
                else:
                    negs = torch.randint(pretrained.n_items, (global_counts[k], n_negatives), generator=gen)[part]
                    batches.append(EnvBatch(pairs[:, 0].to(device), pairs[:, 1].to(device), negs.to(device),
                                            global_counts[k]))
            if step_index == cfg.warmup_steps and cfg.warmup_steps > 0:
                initial = None  # re-record the normalisation constants at the first Pareto step
            stats, initial = mask_step(model, optimizer, batches, eps, settings, collective, initial,
                                       warmup=step_index < cfg.warmup_steps)
            records.append(stats)
            step_index += 1
            if bar is not None:
                bar.update(1)
        history.append(epoch_summary(records, model, previous, round_index, epoch))
        previous = model.gate.mask()
        logger.info("IMG round %d epoch %d: %s", round_index, epoch,
                    {k: v for k, v in history[-1].items() if k in ("alpha", "density", "fraction_open")})
    if bar is not None:
        bar.close()
    return MaskRound(mask=model.gate.mask().cpu().numpy().astype(np.float32), model=model, history=history)


def epoch_summary(records: Sequence[StepStats], model: MaskModel, previous: torch.Tensor, round_index: int,
                  epoch: int) -> dict[str, Any]:
    """Per-epoch aggregate of step stats: mean alpha / losses over Pareto steps, mode counts, mask density, the
    share of gates at exactly 0 and, against the mask ``previous`` of the epoch before, how far the gates
    moved (largest and mean change) and how many crossed 0 (closed or reopened)."""
    pareto = [r for r in records if r.mode != "warmup"]
    modes = Counter(r.mode for r in records)

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    n_obj = max(len(r.alpha) for r in records)
    mask = model.gate.mask()
    change = (mask - previous).abs()
    return {
        "phase": "img",
        "round": round_index,
        "epoch": epoch,
        "steps": len(records),
        "alpha": [mean([r.alpha[j] for r in pareto]) for j in range(n_obj)] if pareto else None,
        "non_uniformity": mean([r.non_uniformity for r in pareto]),
        "cosine_erm_irm": mean([r.cosine for r in pareto]),
        "modes": dict(modes),
        "losses": [mean([r.losses[j] for r in records if len(r.losses) > j]) for j in range(n_obj)],
        "density": model.gate.density(),
        "fraction_open": model.gate.fraction_open(),
        "fraction_closed": float((mask == 0).to(torch.float32).mean()),
        "gate_change_max": float(change.max()),
        "gate_change_mean": float(change.mean()),
        "gates_crossed": int(((mask == 0) != (previous == 0)).sum()),
    }
