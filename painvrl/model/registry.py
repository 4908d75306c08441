"""The ``MODELS`` registry: ``model.name`` -> Recommender class. Adding a backbone adds one line here, or one
entry point of group ``painvrl.models`` in the backbone's own package (docs/extending.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from painvrl.model.bm3 import BM3
from painvrl.model.common import settings_from
from painvrl.model.freedom import FREEDOM
from painvrl.model.lattice import LATTICE
from painvrl.model.lightgcn import LightGCN
from painvrl.model.mmgcn import MMGCN
from painvrl.model.recommender import BuildContext, Recommender
from painvrl.model.ultragcn import UltraGCN
from painvrl.model.vbpr import VBPR
from painvrl.registry import Registry


def _is_backbone(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Recommender)


MODELS: Registry[type[Recommender]] = Registry("model", "model.name", "painvrl.models", {
    "ultragcn": UltraGCN,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "mmgcn": MMGCN,
    "lattice": LATTICE,
    "freedom": FREEDOM,
    "bm3": BM3,
}, accepts=_is_backbone)


def model_class(name: str) -> type[Recommender]:
    """The registered class of ``model.name`` (an error naming the field and the known names otherwise)."""
    return MODELS.lookup(name)


def check_model_config(model_config: Any) -> type[Recommender]:
    """The class of ``model.name``, after checking every ``model.settings`` entry names a registered backbone
    and the entry of ``model.name`` builds (errors name the field)."""
    for name in getattr(model_config, "settings", {}) or {}:
        MODELS.lookup(name, f"model.settings.{name}")
    cls = model_class(model_config.name)
    if cls.settings_type is not None:
        settings_from(model_config, cls.name, cls.settings_type)
    return cls


def build_model(model_config: Any, n_users: int, n_items: int, train: np.ndarray, features: torch.Tensor,
                modality_slices: dict[str, slice], make_encoder: Callable[[], nn.Module],
                init_seed: int) -> Recommender:
    """``MODELS[model_config.name]`` built from the training graph with a fresh encoder; the random init
    (encoder, then the model's own parameters) depends only on ``init_seed``, so it is identical on every rank
    and in every re-run."""
    cls = model_class(model_config.name)
    torch.manual_seed(init_seed)
    encoder = make_encoder()
    context = BuildContext(n_users=n_users, n_items=n_items, train=np.asarray(train), features=features,
                           modality_slices=modality_slices, encoder=encoder, model_config=model_config)
    return cls.build(context)
