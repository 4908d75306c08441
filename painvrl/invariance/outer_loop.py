"""Outer loop of PaInvRL (docs/algorithm.md): alternate HEI and IMG for a number of rounds.

m <- 0.5 everywhere; each round: environments from HEI(m), then the mask from IMG(environments), handed on as
the round's own mask (``painvrl.mask_average=last``, as in docs/algorithm.md) or, by default, as clamp(mean of the gate
logits of all rounds so far + 0.5, 0, 1) (``logits``: every round relearns the gates from mu = 0, so one round's
mask is a noisy draw and the mean keeps what the rounds agree on); the sparsity and penalty weights
(mask.sparsity_weight, mask.irm_weight, environments.l1_rho) are multiplied by painvrl.schedule_factor after
every round. Method ``invrl`` runs this loop with InvRL's settings (the linear solver with r = (1, irm_weight),
the ||mu||^2 regulariser, the last round's mask; see painvrl/training/methods.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from painvrl.config import Config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import Collective, LocalCollective
from painvrl.invariance.diagnostics import positive_losses
from painvrl.invariance.feature_path import FeaturePathScorer, invariance_scorer
from painvrl.invariance.identify import RoundEnvironments, environments_of_round, known_environments
from painvrl.invariance.masks import learn_mask, resolve_settings
from painvrl.invariance.profile import environment_profile
from painvrl.model.recommender import Recommender

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class MaskResult:
    """What mask learning hands to the final recommender and the evaluation."""

    mask: np.ndarray
    """float32 [d] in [0, 1]."""
    env_labels: np.ndarray
    """int64 [n_train] final environment of every training positive."""
    env_sizes: list[int]
    label_pairs: Callable[[np.ndarray], np.ndarray]
    """Labels (user, item) pairs (val/test positives) with the final environment models."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per-round HEI stats and per-epoch IMG stats."""
    ari: float | None = None
    """Adjusted Rand index of the final labels against the synthetic ground truth (None without one)."""
    profile: list[dict[str, Any]] = field(default_factory=list)
    """What each final environment is (painvrl/invariance/profile.py)."""
    violation: dict[str, Any] | None = None
    """The final partition's invariance violation against random partitions of the same sizes
    (painvrl/invariance/diagnostics.py)."""
    logits: np.ndarray | None = None
    """float32 [d] gate logits behind ``mask`` (m = clamp(mu + 0.5, 0, 1)): the mean over the rounds
    (``painvrl.mask_average=logits``) or the last round's. They still rank the dims the clamp sets to exactly 0,
    which the mask alone scores as ties."""


def mask_auc(mask: np.ndarray, invariant_dims: np.ndarray) -> float:
    """ROC-AUC of mask values as a score for "dimension is invariant" (ties count one half)."""
    pos, neg = mask[invariant_dims], mask[~invariant_dims]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def learn_invariant_mask(
    config: Config,
    data: InteractionData,
    pretrained: Recommender,
    collective: Collective | None = None,
    log: LogFn | None = None,
) -> MaskResult:
    """Rounds of HEI(m) -> labels and IMG(labels) -> m from m = 0.5 on the feature path of ``pretrained``
    (``pretrained`` itself stays frozen); with
    ``environments.source`` eiil or ground_truth the labels are fixed once and every round relearns only m."""
    collective = collective or LocalCollective()
    env_cfg, mask_cfg, model_cfg, train_cfg = config.environments, config.mask, config.model, config.train
    progress = train_cfg.progress and collective.rank == 0
    history: list[dict[str, Any]] = []
    backbone_name = pretrained.name
    scorer, record = invariance_scorer(config, data.train, pretrained, collective, progress)
    history.append(record)
    if log is not None:
        log(record)
    features = scorer.features
    # IMG over a fitted feature path scores the content term alone: the backbone's frozen score carries the
    # features unmasked wherever the backbone reads them outside its slot (kNN and modality graphs), and with it
    # as a fixed offset the invariance penalty is met by opening spurious gates to cancel what the offset holds
    # (docs/algorithm.md, "The feature path").
    img_cfg = dataclasses.replace(mask_cfg, use_item_ids=False) if isinstance(scorer, FeaturePathScorer) \
        else mask_cfg
    d = int(features.shape[1])
    device = features.device
    mask = torch.full((d,), 0.5, device=device)
    sparsity_weight, irm_weight, l1_rho = mask_cfg.sparsity_weight, mask_cfg.irm_weight, env_cfg.l1_rho
    invariant_dims = data.ground_truth.invariant_dims if data.ground_truth is not None else None
    labels: np.ndarray | None = None
    ari: float | None = None

    def emit(record: dict[str, Any]) -> None:
        history.append(record)
        if log is not None:
            log(record)

    known = known_environments(config, data, scorer)
    sizes: list[int] = []
    reference_losses = positive_losses(scorer, data.train, model_cfg.n_negatives, train_cfg.seed)
    diagnostic: dict[str, Any] | None = None
    label_pairs: Callable[[np.ndarray], np.ndarray] | None = None
    logit_sum = np.zeros(d, dtype=np.float64)
    average = config.painvrl.mask_average

    def auc_of(scores: np.ndarray) -> float | None:
        return mask_auc(scores, invariant_dims) if invariant_dims is not None else None

    found: RoundEnvironments | None = None
    for round_index in range(config.painvrl.rounds):
        if found is not None and known is None and _variant_part_is_empty(mask, env_cfg.input):
            found = _previous_environments(found, round_index)
        else:
            found = environments_of_round(config, data, scorer, mask, round_index, known, labels,
                                          reference_losses, l1_rho, collective, progress, backbone_name)
        labels, sizes, label_pairs, ari, diagnostic = (found.labels, found.sizes, found.label_pairs, found.ari,
                                                       found.violation)
        emit(found.record)
        settings = resolve_settings(mask_cfg, sparsity_weight, irm_weight)
        img = learn_mask(scorer, data.train, labels, env_cfg.n_envs, img_cfg, settings,
                         batch_size=train_cfg.batch_size, n_negatives=model_cfg.n_negatives, seed=train_cfg.seed,
                         round_index=round_index, k_f=model_cfg.k_f, init_std=model_cfg.init_std,
                         collective=collective, progress=progress, negative_pool=model_cfg.negative_pool)
        for record in img.history:
            emit(record)
        round_logits = img.model.gate.mu.detach().cpu().numpy().astype(np.float64)
        logit_sum += round_logits
        if average == "logits":
            logits = (logit_sum / (round_index + 1)).astype(np.float32)
            handed = np.clip(logits + 0.5, 0.0, 1.0).astype(np.float32)
        else:
            logits, handed = round_logits.astype(np.float32), img.mask
        mask = torch.as_tensor(handed, device=device)
        auc = auc_of(handed)
        emit({"phase": "round", "round": round_index, "density": float(handed.mean()),
              "fraction_open": float((handed > 0.5).mean()), "mask_auc": auc, "logit_auc": auc_of(logits),
              "round_mask_auc": auc_of(img.mask), "round_density": float(img.mask.mean()), "ari": ari,
              "sparsity_weight": sparsity_weight, "irm_weight": irm_weight, "l1_rho": l1_rho,
              "solver": settings.solver, "preference": settings.preference})
        logger.info("round %d: env sizes %s, ARI %s, mask density %.3f, mask AUC %s", round_index, sizes,
                    ari, float(handed.mean()), auc)
        factor = config.painvrl.schedule_factor
        sparsity_weight, irm_weight, l1_rho = sparsity_weight * factor, irm_weight * factor, l1_rho * factor
    assert labels is not None and label_pairs is not None
    return MaskResult(mask=mask.detach().cpu().numpy().astype(np.float32), env_labels=labels,
                      env_sizes=sizes, label_pairs=label_pairs, history=history, ari=ari, logits=logits,
                      violation=diagnostic, profile=environment_profile(data, labels, env_cfg.n_envs))


def _variant_part_is_empty(mask: torch.Tensor, hei_input: str) -> bool:
    """Whether HEI's environment models see nothing: they read (1 - m) * f, and every gate is open."""
    return hei_input == "variant" and bool((mask >= 1.0).all())


def _previous_environments(previous: RoundEnvironments, round_index: int) -> RoundEnvironments:
    """The previous round's environments for a round whose mask has every gate open. HEI's environment models
    see the variant part (1 - m) * f, which is then zero: they would fit every positive alike, and there is
    nothing to relabel by, so the partition IMG last used stands. The round's ``hei`` record says so."""
    logger.info("round %d: every gate of the mask is open, so the variant part HEI sees is empty; the previous "
                "round's environments are kept", round_index)
    record = {"phase": "hei", "round": round_index, "source": "previous_round", "env_sizes": previous.sizes,
              "ari": previous.ari, "violation": previous.violation}
    return dataclasses.replace(previous, record=record)
