"""Invariant mask generation (IMG, docs/algorithm.md) with Pareto weighting of ERM and IRM objectives.

Trainable: stochastic-gate logits mu [d] (init 0) and a fresh projection W [k_f, d]; the pretrained P and Q are
frozen. Each step draws one batch per environment (environment-balanced), computes the per-environment backbone
losses L_k with gated features g * f, the objectives (ERM = mean_k L_k, the IRM penalty, an optional third
objective), the gradient of every objective with respect to (mu, W), Pareto weights alpha from the normalised
losses and gradients, and sets ``param.grad = sum_j alpha_j grad_j + lambda_s grad R(mu)`` before an Adam step.

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

Initialisation of W (``MaskModel(init_from_pretrained=...)``, module default ``INIT_FROM_PRETRAINED = True``;
False = the spec's fresh projection): with True, W starts at ``2 W_pre`` (the pretrained ERM projection;
gates start at 0.5), so the first mask step sees the pretrained scores. Measured on the synthetic benchmark
(strengths (2, 1)) with the true environment labels: V-REx reached mask AUC 1.0 from the pretrained
W vs 0.81 from a fresh W. At W ~ 0 the per-env gradients only measure E[f | positive, env], which differs
across environments for invariant features too (top-k selection on inv + s_e * sp attenuates the invariant
term where s_e is large), so gradvar there is not an invariance signal; near an ERM fit the invariant
coefficients agree across environments and the spurious ones do not. The tiny-synthetic gradvar test (train
strengths (2, -1), sigma 0.01) keeps the fresh start (AUC 0.44 with the pretrained start there).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from painvrl.config import MaskConfig
from painvrl.distributed.collective import Collective, LocalCollective, shard_slice
from painvrl.distributed.sampling import environment_balanced_batches, make_generator, pool_active
from painvrl.invariance.environments import _replicated
from painvrl.invariance.pareto import normalise_losses, preference_from_pref_ood, solve_weights, validate_preference
from painvrl.invariance.penalties import gradient_variance, masked_variance_penalty, per_env_param_grads, vrex_penalty
from painvrl.model.backbone import Backbone
from painvrl.model.gates import StochasticGate

logger = logging.getLogger(__name__)

LOSS_FLOOR = 1e-8
INIT_FROM_PRETRAINED = True
"""learn_mask starts W at the pretrained ERM projection (see the module docstring); False: a fresh random W."""


@dataclass
class EnvBatch:
    """This rank's rows of one environment's global batch."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    global_count: int
    """Rows of the environment's GLOBAL batch (the divisor of its loss partial sum)."""
    pool: torch.Tensor | None = None
    """Optional negative pool [P] shared by all environments of the step (``neg_items == pool[positions]``)."""
    positions: torch.Tensor | None = None
    """[b, n_neg] positions into ``pool``."""


@dataclass
class StepSettings:
    """What one mask step optimises (resolved from MaskConfig and the method)."""

    penalty: str = "gradvar"
    extra_objective: str = "none"
    solver: str = "epo"
    preference: list[float] = field(default_factory=lambda: [0.5, 0.5])
    sparsity: str = "l0"
    sparsity_weight: float = 1e-3
    normalisation: str = "start"

    @property
    def n_objectives(self) -> int:
        return 2 + (self.extra_objective != "none")


@dataclass
class StepStats:
    """Logged quantities of one step."""

    losses: list[float]
    alpha: list[float]
    mode: str
    non_uniformity: float
    cosine: float


class MaskModel(nn.Module):
    """Gate logits mu and a fresh projection W on frozen P, Q: item vector [Q_i ; W (g * f_i)], or
    [0 ; W (g * f_i)] with ``use_item_ids=False`` (config ``mask.use_item_ids``)."""

    user_embedding: torch.Tensor
    item_embedding: torch.Tensor
    features: torch.Tensor
    b_user: torch.Tensor
    b_item: torch.Tensor

    def __init__(self, pretrained: Backbone, k_f: int, sigma: float, init_std: float,
                 generator: torch.Generator | None = None, init_from_pretrained: bool = True,
                 use_item_ids: bool = True) -> None:
        super().__init__()
        features = cast(torch.Tensor, pretrained.features)
        device = features.device
        d = int(features.shape[1])
        self.feature_dim, self.k_f, self.l2 = d, k_f, pretrained.l2
        self.gate = StochasticGate(d, sigma).to(device)
        weight = torch.randn(k_f, d, generator=generator) * init_std
        encoder_weight = getattr(pretrained.encoder, "weight", None)
        if init_from_pretrained and isinstance(encoder_weight, torch.Tensor) and encoder_weight.shape == (k_f, d):
            # Start at the pretrained ERM solution: gates start at 0.5, so W = 2 W_pre reproduces the pretrained
            # scores exactly. Invariance penalties are only informative near an ERM fit (at W ~ 0 the per-env
            # gradients just measure E[f | positive], which differs across environments for every feature).
            weight = 2.0 * encoder_weight.detach().cpu()
        self.weight = nn.Parameter(weight.to(device))
        self.register_buffer("user_embedding", pretrained.user_embedding.detach().clone(), persistent=False)
        self.register_buffer("item_embedding", pretrained.item_embedding.detach().clone(), persistent=False)
        if not use_item_ids:
            self.item_embedding.zero_()
        self.register_buffer("features", features, persistent=False)
        self._per_example_loss: Callable[..., torch.Tensor] = pretrained.per_example_loss
        self.loss_weights = pretrained.loss_weights
        self.register_buffer("b_user", cast(torch.Tensor, pretrained.b_user), persistent=False)
        self.register_buffer("b_item", cast(torch.Tensor, pretrained.b_item), persistent=False)

    def trainable(self) -> list[nn.Parameter]:
        return [self.gate.mu, self.weight]

    def gates(self, eps: torch.Tensor) -> torch.Tensor:
        """Training gates clamp(mu + 0.5 + sigma * eps, 0, 1) with externally drawn (rank-shared) noise."""
        return torch.clamp(self.gate.mu + 0.5 + self.gate.sigma * eps.to(self.gate.mu), 0.0, 1.0)

    def env_partial_losses(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[E] this rank's loss sums per environment divided by the global per-environment counts."""
        return self.env_forward(gates, batches, scales)[0]

    def env_forward(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Per-environment loss partial sums [E] and the cache :meth:`env_weight_grads` needs.

        Items of all environments' batches (and the shared negative pool) are encoded once (unique ids).
        ``scales`` multiply each environment's scores (IRMv1's dummy classifier scale).
        """
        device = self.weight.device
        pool = batches[0].pool if batches else None
        if pool is not None:
            items = [b.pos_items for b in batches]
        else:
            items = [torch.cat([b.pos_items, b.neg_items.reshape(-1)]) for b in batches]
        unique, inverse = torch.unique(torch.cat([*items, *([pool] if pool is not None else [])]),
                                       return_inverse=True)
        gated = self.features[unique] * gates
        vectors = torch.cat([self.item_embedding[unique], gated @ self.weight.T], dim=1)
        pool_index = inverse[-pool.shape[0]:] if pool is not None else None
        pool_vectors = vectors[pool_index] if pool_index is not None else None
        out = []
        records: list[tuple[Any, ...] | None] = []
        offset = 0
        for k, batch in enumerate(batches):
            b = batch.users.shape[0]
            n_rows = items[k].shape[0]
            idx = inverse[offset:offset + n_rows]
            offset += n_rows
            if b == 0 or batch.global_count == 0:
                out.append(vectors.sum() * 0.0)  # keeps every entry attached to the graph
                records.append(None)
                continue
            users = self.user_embedding[batch.users]
            pos_scores = (users * vectors[idx[:b]]).sum(-1)
            if pool_vectors is not None and pool_index is not None and batch.positions is not None:
                neg_scores = torch.gather(users @ pool_vectors.T, 1, batch.positions)
                neg_index = pool_index[batch.positions]
            else:
                neg_index = idx[b:].view(b, -1)
                neg_scores = torch.bmm(vectors[neg_index], users.unsqueeze(2)).squeeze(2)
            if scales is not None:
                pos_scores, neg_scores = pos_scores * scales[k], neg_scores * scales[k]
            per = self._per_example_loss(batch.users, batch.pos_items, pos_scores, batch.neg_items, neg_scores)
            out.append(per.sum() / batch.global_count)
            records.append((batch, users, idx[:b], neg_index, pos_scores, neg_scores))
        losses = torch.stack(out) if out else torch.zeros(0, device=device)
        return losses, {"gated": gated, "records": records, "n_unique": unique.shape[0], "pool_index": pool_index}

    def env_weight_grads(self, cache: dict[str, Any]) -> torch.Tensor:
        """[E, k_f, d] dL_k/dW of this rank's partial losses in closed form, differentiable in (mu, W).

        With d(BCE(s, 1))/ds = sigmoid(s) - 1 and d(BCE(s, 0))/ds = sigmoid(s), the loss weights of
        Backbone.per_example_loss and ds/dW = P_u^f (g * f_i)^T: G_k = C_k^T X where X = g * f of the unique items
        and C_k [U, k_f] accumulates delta * P_u^f over each item's occurrences. Equals autograd.grad(L_k, W,
        create_graph=True) (tests) but costs first-order graph only, which makes the gradvar penalty's own
        gradient a first-order backward too.
        """
        w1, w2, w3, w4 = self.loss_weights
        k_id = self.item_embedding.shape[1]
        gated: torch.Tensor = cache["gated"]
        grads = []
        for record in cache["records"]:
            if record is None:
                grads.append(self.weight.new_zeros(self.weight.shape) + 0.0 * self.weight)
                continue
            batch, users, pos_index, neg_index, pos_scores, neg_scores = record
            b_u = self.b_user[batch.users]
            pos_w = w1 + w2 * b_u * self.b_item[batch.pos_items]
            neg_w = w3 + w4 * b_u.unsqueeze(1) * self.b_item[batch.neg_items]
            n_neg = neg_scores.shape[1]
            delta_pos = pos_w * (torch.sigmoid(pos_scores) - 1.0) / batch.global_count  # [b]
            delta_neg = neg_w * torch.sigmoid(neg_scores) / (n_neg * batch.global_count)  # [b, n]
            user_f = users[:, k_id:]  # [b, k_f]
            coef = user_f.new_zeros(cache["n_unique"], user_f.shape[1])
            coef = coef.index_add(0, pos_index, delta_pos.unsqueeze(1) * user_f)
            pool_index = cache["pool_index"]
            if pool_index is not None and batch.positions is not None:
                # pooled negatives: delta summed per pool slot ([b, P], scalars), then one [P, b] x [b, k_f]
                per_slot = delta_neg.new_zeros(delta_neg.shape[0], pool_index.shape[0])
                per_slot = per_slot.scatter_add(1, batch.positions, delta_neg)
                coef = coef.index_add(0, pool_index, per_slot.T @ user_f)
            else:
                neg_coef = (delta_neg.unsqueeze(2) * user_f.unsqueeze(1)).reshape(-1, user_f.shape[1])
                coef = coef.index_add(0, neg_index.reshape(-1), neg_coef)
            grads.append(coef.T @ gated)
        return torch.stack(grads)


def _flat_grads(objective: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(objective, list(params), retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params,
                                                                                            strict=True)])


def _erm_objective(model: MaskModel, env_losses: torch.Tensor, world_size: int) -> torch.Tensor:
    """L_ERM = mean_k L_k + the L2 of W, from the global per-environment losses."""
    return env_losses.mean() + _replicated(model.l2 * model.weight.pow(2).sum(), world_size)


def compute_objectives(
    model: MaskModel, batches: Sequence[EnvBatch], eps: torch.Tensor, settings: StepSettings,
    collective: Collective, erm_only: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Global objective values (ERM, IRM[, extra]) as graphs on this rank, and the global env losses [E].

    Only environments with a non-empty global batch take part (the same set on every rank).
    """
    ws = collective.world_size
    active = [b for b in batches if b.global_count > 0]
    if not active:
        raise ValueError("mask step without any non-empty environment batch")
    need_irmv1 = not erm_only and "irmv1" in (settings.penalty, settings.extra_objective)
    scales = None
    if need_irmv1:
        scales = [torch.ones((), device=model.weight.device, dtype=model.weight.dtype, requires_grad=True)
                  for _ in active]
    gates = model.gates(eps)
    partials, cache = model.env_forward(gates, active, scales)
    env_losses = collective.all_reduce_sum(partials)
    erm = _erm_objective(model, env_losses, ws)
    if erm_only:
        return [erm], env_losses
    forms = [settings.penalty] + ([settings.extra_objective] if settings.extra_objective != "none" else [])
    objectives = [erm]
    for form in forms:
        if form == "gradvar":
            local = model.env_weight_grads(cache) if scales is None else per_env_param_grads(
                list(env_losses), model.weight)
            env_grads = collective.all_reduce_sum(local)
            scale = _replicated(model.gate.mask_scale(), ws)
            objectives.append(masked_variance_penalty(gradient_variance(env_grads), scale))
        elif form == "irmv1":
            assert scales is not None
            local = torch.stack([
                cast(torch.Tensor, torch.autograd.grad(env_losses[k], scales[k], create_graph=True)[0])
                for k in range(len(active))])
            objectives.append(collective.all_reduce_sum(local).pow(2).sum())
        elif form == "vrex":
            objectives.append(vrex_penalty(env_losses))
        else:
            raise ValueError(f"unknown objective {form!r}")
    return objectives, env_losses


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


def resolve_settings(cfg: MaskConfig, method: str, sparsity_weight: float, irm_weight: float) -> StepSettings:
    """Solver, preference and regulariser for a method: ``invrl`` = linear r = (1, irm_weight), ||mu||^2."""
    n_obj = 2 + (cfg.extra_objective != "none")
    if method == "invrl":
        raw = [1.0] + [irm_weight] * (n_obj - 1)
        return StepSettings(cfg.penalty, cfg.extra_objective, "linear",
                            validate_preference(raw, n_obj).tolist(), "l2", sparsity_weight)
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
    pretrained: Backbone,
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
    """Train gates and a fresh projection for ``cfg.epochs`` epochs of environment-balanced steps."""
    collective = collective or LocalCollective()
    rank, ws = collective.rank, collective.world_size
    model = MaskModel(pretrained, k_f or pretrained.k_f, cfg.sigma, init_std,
                      make_generator(seed, "img_model", round_index), INIT_FROM_PRETRAINED,
                      use_item_ids=cfg.use_item_ids)
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
        history.append(epoch_summary(records, model, round_index, epoch))
        logger.info("IMG round %d epoch %d: %s", round_index, epoch,
                    {k: v for k, v in history[-1].items() if k in ("alpha", "density", "fraction_open")})
    if bar is not None:
        bar.close()
    return MaskRound(mask=model.gate.mask().cpu().numpy().astype(np.float32), model=model, history=history)


def epoch_summary(records: Sequence[StepStats], model: MaskModel, round_index: int, epoch: int) -> dict[str, Any]:
    """Per-epoch aggregate of step stats: mean alpha / losses over Pareto steps, mode counts, mask density."""
    pareto = [r for r in records if r.mode != "warmup"]
    modes = Counter(r.mode for r in records)

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    n_obj = max(len(r.alpha) for r in records)
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
    }
