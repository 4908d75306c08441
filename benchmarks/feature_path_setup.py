"""What every HEI benchmark starts from: the data, the backbone pretrained by the pipeline's own pretraining
phase, its feature path (the scorer HEI and IMG learn on) and the reference losses of the training positives.

Used by benchmarks/hei_start_candidates.py, hei_model_class.py and bench_hei_start.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from painvrl.config import Config, load_config
from painvrl.data.dataset import InteractionData
from painvrl.data.registry import load_dataset
from painvrl.distributed.collective import LocalCollective
from painvrl.invariance.diagnostics import positive_losses
from painvrl.invariance.feature_path import invariance_scorer
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender
from painvrl.training.checks import resolve_run
from painvrl.training.pipeline import _pretrain, _Run  # the pipeline's own pretraining phase


@dataclass
class PretrainedFeaturePath:
    config: Config
    data: InteractionData
    pretrained: Recommender
    scorer: LinearContentRecommender
    reference: np.ndarray
    """float64 [n_train]: each training positive's loss under ``scorer`` (the violation's and F's losses)."""


def pretrained_feature_path(overrides: list[str]) -> PretrainedFeaturePath:
    """Resolve the config of ``overrides`` (progress bars off), load its data, pretrain and build the feature path."""
    config = resolve_run(load_config(None, ["train.progress=false", *overrides])).config
    data = load_dataset(config.dataset)
    collective = LocalCollective()
    pretrained = _pretrain(_Run(config, data, collective, None, False, None), config, data)
    scorer, _ = invariance_scorer(config, data.train, pretrained, collective, False)
    reference = positive_losses(scorer, data.train, config.model.n_negatives, config.train.seed)
    return PretrainedFeaturePath(config, data, pretrained, scorer, reference)
