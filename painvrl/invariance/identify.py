"""Environment identification on its own: the environments of one HEI round (or EIIL's, or the benchmark's true
ones) over the backbone's feature path, with what says what they are (ARI, violation, profile).

The outer loop (painvrl/invariance/outer_loop.py) calls :func:`environments_of_round` every round with its
current mask; methods that train over environments without learning a mask (``dro``, ``vrex``) call
:func:`identify_training_environments`, which runs the first round's identification (every gate half open, so
all features count equally).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from painvrl.config import Config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import Collective, LocalCollective
from painvrl.errors import PainvrlInputError
from painvrl.invariance.diagnostics import loss_f_statistic, partition_violation, positive_losses
from painvrl.invariance.eiil import EIILSettings, eiil_environments
from painvrl.invariance.environments import (
    HEIResult,
    adjusted_rand_index,
    environment_models,
    identify_environments,
    seeded_generator,
)
from painvrl.invariance.feature_path import invariance_scorer
from painvrl.invariance.gradient_init import difficulty_alignment, gradient_start
from painvrl.invariance.profile import environment_profile
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender

logger = logging.getLogger(__name__)

Labeller = Callable[[np.ndarray], np.ndarray]
KnownEnvironments = tuple[np.ndarray, Labeller]


@dataclass
class RoundEnvironments:
    """The environments of one round."""

    labels: np.ndarray
    """int64 [n_train]: environment of every training positive."""
    sizes: list[int]
    label_pairs: Labeller
    """Labels new (user, item) pairs (val/test positives) by the same rule."""
    ari: float | None
    violation: dict[str, Any]
    record: dict[str, Any]
    """The round's history record (phase ``hei``)."""


def known_environments(config: Config, data: InteractionData, scorer: LinearContentRecommender
                       ) -> KnownEnvironments | None:
    """Fixed environments when ``environments.source`` is eiil or ground_truth (None for hei)."""
    env_cfg = config.environments
    if env_cfg.source == "ground_truth":
        return true_environments(data, env_cfg.n_envs)
    if env_cfg.source == "eiil":
        return eiil_environments(scorer, data.train, env_cfg.n_envs, config.model.n_negatives, config.train.seed,
                                 EIILSettings(steps=env_cfg.eiil_steps, lr=env_cfg.eiil_lr))
    return None


def environments_of_round(config: Config, data: InteractionData, scorer: LinearContentRecommender,
                          mask: torch.Tensor, round_index: int, known: KnownEnvironments | None,
                          previous: np.ndarray | None, reference_losses: np.ndarray, l1_rho: float,
                          collective: Collective, progress: bool, backbone: str) -> RoundEnvironments:
    """HEI(mask) on the feature path ``scorer`` (warm-started from ``previous`` when configured), or the
    ``known`` environments; with ARI against the synthetic truth and the partition's invariance violation."""
    env_cfg, model_cfg, train_cfg = config.environments, config.model, config.train
    truth = data.ground_truth.train_env if data.ground_truth is not None else None
    extra: dict[str, Any]
    if known is not None:
        labels, label_pairs = known
        sizes = np.bincount(labels, minlength=env_cfg.n_envs).astype(int).tolist()
        extra = {"source": env_cfg.source, "env_sizes": sizes}
    else:
        init = previous if (env_cfg.warm_start and previous is not None) else None

        def run_hei(init_labels: np.ndarray | None, criterion: Callable[[np.ndarray], float] | None = None
                    ) -> HEIResult:
            generator = seeded_generator(train_cfg.seed, "hei_model", round_index)
            models = environment_models(env_cfg.n_envs, scorer, mask, model_cfg.k_f, env_cfg.input, l1_rho,
                                        model_cfg.init_std, generator, train_users=env_cfg.train_users,
                                        feature_bias=env_cfg.feature_bias)
            return identify_environments(models, data.train, env_cfg, batch_size=train_cfg.batch_size,
                                         n_negatives=model_cfg.n_negatives, seed=train_cfg.seed,
                                         round_index=round_index, init_labels=init_labels, collective=collective,
                                         progress=progress, negative_pool=model_cfg.negative_pool,
                                         backbone=backbone, criterion=criterion)

        start: dict[str, Any] = {}
        if previous is None and env_cfg.init == "gradient":
            hei, start = _hei_from_gradient_start(config, data, scorer, reference_losses, run_hei)
        else:
            hei = run_hei(init)
        assert hei.label_pairs is not None
        labels, sizes, label_pairs = hei.labels, hei.sizes, hei.label_pairs
        extra = {"source": "hei", "env_sizes": sizes, "churn": hei.churn, "iterations": hei.iterations,
                 "reseeded": hei.reseeded, **start}
    ari = adjusted_rand_index(truth, labels) if truth is not None and len(truth) == len(labels) else None
    violation = partition_violation(reference_losses, labels, env_cfg.n_envs, train_cfg.seed)
    record = {"phase": "hei", "round": round_index, **extra, "ari": ari, "violation": violation}
    if known is None:
        record["final_loss"] = hei.epoch_losses[-1] if hei.epoch_losses else None
    return RoundEnvironments(labels=labels, sizes=sizes, label_pairs=label_pairs, ari=ari, violation=violation,
                             record=record)


def _hei_from_gradient_start(config: Config, data: InteractionData, scorer: LinearContentRecommender,
                             reference_losses: np.ndarray,
                             run_hei: Callable[..., HEIResult]) -> tuple[HEIResult, dict[str, Any]]:
    """The first round's EM from the gradient start, and its record.

    EM returns the iterate chosen by ``environments.keep_iterate``. No partition on EM's path from the start may
    be a split of hard from easy positives (difficulty alignment at or above
    ``environments.init_max_alignment``): IRM across such a split closes the features the reference model relies
    on most, and a path that reaches one shows that the start lies in its basin. Where the start is one, EM runs
    from random labels instead; where a later iterate is, EM runs again from random labels with fresh models. In
    both cases the round equals the random start's exactly."""
    env_cfg = config.environments
    n_envs = env_cfg.n_envs
    init, choice = gradient_start(scorer, data.train, n_envs, env_cfg.init_components, reference_losses,
                                  config.train.seed)
    choice["difficulty_alignment"] = difficulty_alignment(scorer, data.train, init, n_envs)
    if choice["difficulty_alignment"] >= env_cfg.init_max_alignment:
        logger.info("HEI: the gradient start separates hard from easy positives (difficulty alignment %.2f >= "
                    "environments.init_max_alignment %.2f); EM starts from random labels",
                    choice["difficulty_alignment"], env_cfg.init_max_alignment)
        return run_hei(None), {"init": "random", "init_choice": choice}
    alignments: list[float] = []
    f_values: list[float] = []

    def criterion(labels: np.ndarray) -> float:
        """Measures every iterate (the start first) and scores it for ``keep_iterate``."""
        alignments.append(choice["difficulty_alignment"] if not alignments
                          else difficulty_alignment(scorer, data.train, labels, n_envs))
        if env_cfg.keep_iterate == "largest_f":
            f_values.append(loss_f_statistic(reference_losses, labels, n_envs))
            return f_values[-1]
        if env_cfg.keep_iterate == "least_aligned":
            return -alignments[-1]
        return float(len(alignments))  # last: every iterate beats the ones before it

    hei = run_hei(init, criterion)
    kept = hei.kept_iteration if hei.kept_iteration is not None else len(alignments) - 1
    record: dict[str, Any] = {"init": "gradient", "init_choice": choice, "alignment_per_iteration": alignments,
                              "kept_iteration": kept, "kept_alignment": alignments[kept]}
    if f_values:
        record["f_per_iteration"] = f_values
    if max(alignments) >= env_cfg.init_max_alignment:
        logger.info("HEI: EM from the gradient start reached a split of hard from easy positives (difficulty "
                    "alignment %.2f >= environments.init_max_alignment %.2f); EM starts again from random labels",
                    max(alignments), env_cfg.init_max_alignment)
        return run_hei(None), {**record, "init": "random"}
    return hei, record


@dataclass
class TrainingEnvironments:
    """What :func:`identify_training_environments` hands to an objective over environments."""

    labels: np.ndarray
    sizes: list[int]
    label_pairs: Labeller
    ari: float | None
    violation: dict[str, Any]
    profile: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def identify_training_environments(config: Config, data: InteractionData, pretrained: Recommender,
                                   collective: Collective | None = None,
                                   log: Callable[[dict[str, Any]], None] | None = None) -> TrainingEnvironments:
    """The environments of the first round, on the feature path of the frozen ``pretrained`` backbone."""
    collective = collective or LocalCollective()
    progress = config.train.progress and collective.rank == 0
    history: list[dict[str, Any]] = []
    scorer, record = invariance_scorer(config, data.train, pretrained, collective, progress)
    history.append(record)
    if log is not None:
        log(record)
    mask = torch.full((int(scorer.features.shape[1]),), 0.5, device=scorer.features.device)
    reference = positive_losses(scorer, data.train, config.model.n_negatives, config.train.seed)
    known = known_environments(config, data, scorer)
    found = environments_of_round(config, data, scorer, mask, 0, known, None, reference,
                                  config.environments.l1_rho, collective, progress, pretrained.name)
    history.append(found.record)
    if log is not None:
        log(found.record)
    return TrainingEnvironments(labels=found.labels, sizes=found.sizes, label_pairs=found.label_pairs,
                                ari=found.ari, violation=found.violation, history=history,
                                profile=environment_profile(data, found.labels, config.environments.n_envs))


def true_environments(data: InteractionData, n_envs: int) -> KnownEnvironments:
    """The benchmark's true training environments and a labeller of its val/test pairs (source=ground_truth)."""
    truth = data.ground_truth
    if truth is None or truth.train_env is None or truth.val_env is None or truth.test_env is None:
        raise PainvrlInputError(f"config field 'environments.source' is 'ground_truth', but dataset {data.name!r} "
                                "has no true environments (only the synthetic benchmark has them); use 'hei'")
    labels = np.asarray(truth.train_env, dtype=np.int64)
    n_true = int(labels.max()) + 1
    if n_true != n_envs:
        raise PainvrlInputError(f"config field 'environments.n_envs' is {n_envs}, but the dataset has {n_true} true "
                                "training environments; with environments.source=ground_truth they must match")
    splits = [(data.train, labels), (data.val, truth.val_env), (data.test, truth.test_env)]
    keys = np.concatenate([pairs[:, 0] * data.n_items + pairs[:, 1] for pairs, _ in splits])
    envs = np.concatenate([np.asarray(env, dtype=np.int64) for _, env in splits])
    order = np.argsort(keys, kind="stable")
    keys, envs = keys[order], envs[order]

    def label_pairs(pairs: np.ndarray) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        query = pairs[:, 0] * data.n_items + pairs[:, 1]
        pos = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
        if len(query) and not np.array_equal(keys[pos], query):
            raise ValueError("environments.source=ground_truth labels only the dataset's own train/val/test pairs")
        return envs[pos]

    return labels, label_pairs
