"""The resolved config of a run and every check that can refuse it, made before any training.

:func:`resolve_run` applies the method's overrides to the user's config once; the result drives everything a
run builds (the mask, the encoders, the training loops, the models). It also makes every check that needs the
registries (the config layer sits below them): registered names, the backbone's settings, and the settings the
selected backbone cannot honour. :func:`check_pretrained_encoder` is the one check that needs a built model; the
pipeline makes it on the pretraining model before pretraining starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from painvrl.config import Config
from painvrl.errors import PainvrlInputError
from painvrl.invariance.checks import check_invariance_config
from painvrl.invariance.masks import resolve_settings
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender
from painvrl.model.registry import MODELS, check_model_config
from painvrl.training.methods import METHODS, Method, method_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedRun:
    """What a run trains: the method (ERM's phases for an ID-only backbone), the user's config with the
    method's overrides applied, and the backbone's class."""

    method: Method
    config: Config
    """The resolved config: the user's config with ``method.overrides`` applied (the user's config is what the
    run records as its identity)."""
    model_class: type[Recommender]


def resolve_run(config: Config) -> ResolvedRun:
    """The resolved run of ``config``, after every check that needs no data; errors name the config field."""
    method = method_of(config)
    if any(dotted == "method" or dotted.startswith("method.") for dotted in method.overrides):
        raise PainvrlInputError(f"config field 'method': method {config.method!r} overrides 'method' itself")
    resolved = method.effective_config(config)
    model_class = check_model_config(resolved.model)
    if method.mask_source == "ground_truth" and resolved.dataset.name != "synthetic":
        raise PainvrlInputError(f"config field 'method': {config.method!r} needs ground truth: only "
                                "dataset.name=synthetic has it")
    if method.mask_source == "learned":
        resolve_settings(resolved.mask, resolved.mask.sparsity_weight, resolved.mask.irm_weight)
        if not model_class.consumes_features:
            logger.warning("model %r uses no item features, so method %r has no mask to learn: it trains the "
                           "backbone as erm does", resolved.model.name, config.method)
            method = METHODS["erm"]
        else:
            check_invariance_config(resolved, model_class)
    if method.environments:
        check_invariance_config(resolved, model_class)
        if resolved.environments.final_from_pretrained and resolved.train.epochs <= resolved.painvrl.pretrain_epochs:
            raise PainvrlInputError(
                f"config field 'environments.final_from_pretrained': method {config.method!r} continues the "
                f"pretrained model for train.epochs - painvrl.pretrain_epochs epochs, but train.epochs "
                f"({resolved.train.epochs}) is not above painvrl.pretrain_epochs ({resolved.painvrl.pretrain_epochs}); "
                "raise train.epochs or set environments.final_from_pretrained=false")
    if method.needs_logit_offset and not model_class.reads_logit_offset:
        raise PainvrlInputError(f"config field 'method': {config.method!r} adds a popularity term to the training "
                                f"logits, but backbone {resolved.model.name!r} trains without pair logits "
                                "(Recommender.reads_logit_offset); choose another model.name")
    if method.needs_mf_backbone and not issubclass(model_class, LinearContentRecommender):
        mf = sorted(name for name, cls in MODELS.items() if issubclass(cls, LinearContentRecommender))
        raise PainvrlInputError(f"config field 'model.name': method {config.method!r} wraps a matrix-factorisation "
                                f"backbone (a score <p_u, q_i> of user and item vectors, as the paper's model), but "
                                f"{resolved.model.name!r} is not one; choose one of {mf}")
    return ResolvedRun(method=method, config=resolved, model_class=model_class)


def check_pretrained_encoder(model: Recommender, config: Config, feature_dim: int) -> None:
    """``mask.init_from_pretrained=true`` starts IMG's projection at the feature path's projection. A backbone
    linear in its content vector is its own feature path, so its encoder slot must hold that weight ``[k_f, d]``
    (set the field to false for a fresh random start); any other backbone's feature path fits its own. Checked
    on the pretraining model, before it trains."""
    if not config.mask.init_from_pretrained or not isinstance(model, LinearContentRecommender):
        return
    weight = getattr(model.encoder, "weight", None)
    expected = (config.model.k_f, feature_dim)
    if not (isinstance(weight, torch.Tensor) and tuple(weight.shape) == expected):
        found = f"shape {list(weight.shape)}" if isinstance(weight, torch.Tensor) else "none"
        raise PainvrlInputError(
            f"config field 'mask.init_from_pretrained': true starts the mask's projection at the pretrained "
            f"encoder weight [k_f, d] = {list(expected)}, but model {model.name!r} holds no such weight in its "
            f"encoder slot ({found}); set mask.init_from_pretrained=false for a random start")
