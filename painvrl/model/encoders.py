"""Encoders for the recommender's slot: a plain projection (ERM), a fixed-mask projection, the convert module.

The final model's encoder is described by a small spec dict ({"encoder": ..., "mode": ...}) that the run stores
with its checkpoint, so :func:`build_encoder` can rebuild it when the run is loaded for serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from painvrl.errors import PainvrlInputError


def consumed_features(encoder: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The features an encoder slot lets through: ``features`` times the slot's per-feature factor (its mask
    or gates, exposed as ``feature_gate()``), or ``features`` for a plain slot. A backbone that builds a graph
    "from the features it consumes" builds it from these."""
    gate_of = getattr(encoder, "feature_gate", None)
    gate = gate_of() if callable(gate_of) else None
    return features if gate is None else features * gate.to(features)


GraphKey = tuple[int, int]
"""(generation, part) of a slot's output: see :func:`graph_key`."""


def graph_key(encoder: nn.Module) -> GraphKey | None:
    """The slot's graph key, from its ``graph_key()`` (None for a slot without one).

    A slot whose output changes only by training within one key lets a backbone that builds a kNN graph from
    that output keep the graph's neighbour lists while the key stays, recomputing only the similarity values.
    ``part`` tells apart outputs the slot switches between (one per environment model); a new ``generation``
    retires every earlier key. None asks for a full rebuild at every forward.
    """
    key_of = getattr(encoder, "graph_key", None)
    key: GraphKey | None = key_of() if callable(key_of) else None
    return key


class FeatureProjection(nn.Module):
    """h = W f (no bias: an item with a missing modality block contributes nothing from it)."""

    def __init__(self, feature_dim: int, k_f: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k_f, feature_dim) * init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class MaskedProjection(nn.Module):
    """h = W (m * f) with a fixed mask m (the oracle's encoder when the convert module is unavailable)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor, feature_dim: int, k_f: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32).reshape(1, -1))
        self.weight = nn.Parameter(torch.randn(k_f, feature_dim) * init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features * self.mask) @ self.weight.T

    def feature_gate(self) -> torch.Tensor:
        return self.mask.reshape(-1)


def build_encoder(spec: dict[str, Any], model_config: Any, attention_dim: int, feature_dim: int,
                  mask: np.ndarray | None) -> nn.Module:
    """Encoder from a spec {"encoder": "projection" | "masked_projection" | "convert", "mode": convert mode,
    "variant_keep": the ERM share of the preference (convert mode ``preference``)}."""
    k_f, init_std = model_config.k_f, model_config.init_std
    if spec["encoder"] == "projection":
        return FeatureProjection(feature_dim, k_f, init_std)
    if mask is None:
        raise PainvrlInputError(f"encoder {spec}: needs a mask")
    mask_t = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if spec["encoder"] == "masked_projection":
        return MaskedProjection(mask_t, feature_dim, k_f, init_std)
    if spec["encoder"] != "convert":
        raise PainvrlInputError(f"unknown encoder {spec['encoder']!r} (known: projection, masked_projection, "
                                "convert)")
    from painvrl.model.convert import build_final_encoder

    return build_final_encoder(spec["mode"], mask_t, feature_dim, k_f, init_std, attention_dim,
                               float(spec.get("variant_keep", 1.0)))
