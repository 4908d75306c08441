"""The ``MODELS`` registry: ``model.name`` -> Recommender class. Adding a backbone adds one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import BuildContext, Recommender
from painvrl.model.ultragcn import UltraGCN

MODELS: dict[str, type[Recommender]] = {
    "ultragcn": UltraGCN,
}


def model_class(name: str) -> type[Recommender]:
    """The registered class of ``model.name`` (an error naming the field and the known names otherwise)."""
    try:
        return MODELS[name]
    except KeyError:
        raise PainvrlInputError(f"config field 'model.name': unknown model {name!r} "
                                f"(known: {', '.join(sorted(MODELS))})") from None


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
