"""IRM-style OOD objectives from per-environment quantities (docs/algorithm.md).

- ``gradvar`` (InvRL/HRM form): G_k = dL_k/dW per environment, V = sum_k (G_k - mean_k G_k)^2
  elementwise, L = sum_{r,c} (V_rc * s_c)^2 with the per-feature mask scale s = mu + 0.5.
- ``irmv1``: sum_k (d L_k(w * scores) / dw at w = 1)^2 (Arjovsky et al. 2019).
- ``vrex``: population variance of the environment losses (Krueger et al. 2021).

The maths is split into small pure functions of per-environment tensors. Under DDP, each rank all-reduces its
per-environment sums (losses, gradients) first; the functions here then give the global penalty.

``PENALTIES`` maps the names of config field ``mask.penalty`` (and ``mask.extra_objective``) to
:class:`Penalty` entries; adding one is a function of :class:`PenaltyInputs` plus one registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from painvrl.registry import Registry

# -------------------------------------------------------------------------------------------------- gradvar


def per_env_param_grads(env_losses: Sequence[Tensor], param: Tensor) -> Tensor:
    """Stack ``dL_k/dparam`` for every environment loss into ``[E, *param.shape]``, keeping the graph.

    Uses ``torch.autograd.grad(create_graph=True)`` so a penalty built from these gradients can be
    backpropagated into ``param`` (second order) and into anything the losses depend on (e.g. the gates).
    An environment loss that does not depend on ``param`` contributes a zero gradient.
    """
    if len(env_losses) == 0:
        raise ValueError("per_env_param_grads needs at least one environment loss")
    grads = []
    for loss in env_losses:
        if loss.ndim != 0:
            raise ValueError(f"environment losses must be scalars, got shape {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss, param, create_graph=True, allow_unused=True)
        grads.append(torch.zeros_like(param) if grad is None else grad)
    return torch.stack(grads)


def gradient_variance(env_grads: Tensor) -> Tensor:
    """V = sum_k (G_k - mean_k G_k)^2 elementwise over the leading environment axis: ``[E, ...] -> [...]``."""
    if env_grads.ndim < 1 or env_grads.shape[0] < 1:
        raise ValueError(f"env_grads must be [E, ...] with E >= 1, got shape {tuple(env_grads.shape)}")
    centred = env_grads - env_grads.mean(dim=0, keepdim=True)
    return (centred**2).sum(dim=0)


def masked_variance_penalty(variance: Tensor, mask_scale: Tensor) -> Tensor:
    """L = sum_{r,c} (V_rc * s_c)^2 with the feature scale ``s`` broadcast along V's last axis."""
    if variance.shape[-1] != mask_scale.shape[-1] or mask_scale.ndim != 1:
        raise ValueError(
            f"mask_scale {tuple(mask_scale.shape)} must be 1-D and match the last axis of {tuple(variance.shape)}"
        )
    return ((variance * mask_scale) ** 2).sum()


def gradvar_penalty(env_grads: Tensor, mask_scale: Tensor) -> Tensor:
    """InvRL/HRM gradient-variance penalty: ``sum_{r,c} (V_rc * mask_scale_c)^2``, V from ``env_grads [E, r, c]``.

    ``mask_scale`` is ``mu + 0.5`` (differentiable in mu); with ``env_grads`` from :func:`per_env_param_grads`
    the penalty is also differentiable in the projection W and, through the gated features, in mu again.
    """
    return masked_variance_penalty(gradient_variance(env_grads), mask_scale)


# ---------------------------------------------------------------------------------------------------- IRMv1


def irmv1_from_scale_grads(scale_grads: Tensor) -> Tensor:
    """IRMv1: ``sum_k (d L_k(w * scores) / dw at w = 1)^2`` from the per-environment derivatives ``[E]``."""
    return scale_grads.pow(2).sum()


# ----------------------------------------------------------------------------------------------------- V-REx


def vrex_penalty(env_losses: Tensor) -> Tensor:
    """V-REx: population variance ``mean_k (L_k - mean L)^2`` of the environment losses ``[E]``."""
    if env_losses.ndim != 1 or env_losses.numel() < 1:
        raise ValueError(f"env_losses must be [E] with E >= 1, got shape {tuple(env_losses.shape)}")
    return ((env_losses - env_losses.mean()) ** 2).mean()


# ------------------------------------------------------------------------------------------------- registry


@dataclass
class PenaltyInputs:
    """What an IRM objective may read at one mask step; every quantity is GLOBAL (identical on every rank)."""

    env_losses: Tensor
    """[E] the environments' losses (graphs in the gates and the projection)."""
    env_grads: Callable[[], Tensor]
    """Computes [E, k_f, d]: each environment loss's gradient with respect to the projection W (with graph)."""
    mask_scale: Tensor
    """[d] ``mu + 0.5``, the per-feature gate factor (gradient counted once over ranks)."""
    scale_grads: Callable[[], Tensor] | None = None
    """Computes [E]: d L_k / d w of the dummy score scale w at 1 (only for penalties with ``dummy_scale``)."""


@dataclass(frozen=True)
class Penalty:
    """An IRM objective; ``dummy_scale`` asks the mask step to multiply each environment's scores by a dummy
    scalar w = 1 so that :attr:`PenaltyInputs.scale_grads` exists."""

    objective: Callable[[PenaltyInputs], Tensor]
    dummy_scale: bool = False


def _gradvar(inputs: PenaltyInputs) -> Tensor:
    return gradvar_penalty(inputs.env_grads(), inputs.mask_scale)


def _irmv1(inputs: PenaltyInputs) -> Tensor:
    if inputs.scale_grads is None:
        raise ValueError("the irmv1 penalty needs the dummy score scale's gradients")
    return irmv1_from_scale_grads(inputs.scale_grads())


def _vrex(inputs: PenaltyInputs) -> Tensor:
    return vrex_penalty(inputs.env_losses)


PENALTIES: Registry[Penalty] = Registry("penalty", "mask.penalty", "painvrl.penalties", {
    "gradvar": Penalty(_gradvar),
    "irmv1": Penalty(_irmv1, dummy_scale=True),
    "vrex": Penalty(_vrex),
}, accepts=lambda value: isinstance(value, Penalty))
