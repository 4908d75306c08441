"""IRM-style OOD objectives from per-environment quantities (docs/algorithm.md).

- ``gradvar`` (default, InvRL/HRM form): G_k = dL_k/dW per environment, V = sum_k (G_k - mean_k G_k)^2
  elementwise, L = sum_{r,c} (V_rc * s_c)^2 with the per-feature mask scale s = mu + 0.5.
- ``irmv1``: sum_k (d L_k(w * scores) / dw at w = 1)^2 (Arjovsky et al. 2019).
- ``vrex``: population variance of the environment losses (Krueger et al. 2021).

The maths is split into small pure functions of per-environment tensors. Under DDP, each rank all-reduces its
per-environment sums (losses, gradients, or the first two moments of the gradients) first; the functions here
then give the global penalty (:func:`gradient_variance_from_sums` for the moment form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


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


def gradient_variance_from_sums(grad_sum: Tensor, grad_sq_sum: Tensor, n_envs: int) -> Tensor:
    """The same V from sum_k G_k and sum_k G_k^2 (all-reducible): V = sum_k G_k^2 - (sum_k G_k)^2 / E.

    Clamped at 0 against round-off. Prefer :func:`gradient_variance` when the per-environment gradients are
    available in one place (it is numerically safer).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    return (grad_sq_sum - grad_sum**2 / n_envs).clamp_min(0.0)


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


def weighted_bce_with_logits(scores: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of ``weights * BCE(sigmoid(scores), targets)`` (plain mean when ``weights`` is None)."""
    losses = F.binary_cross_entropy_with_logits(scores, targets.to(scores.dtype), reduction="none")
    if weights is not None:
        losses = losses * weights
    return losses.mean()


def irmv1_penalty(
    env_scores: Sequence[Tensor],
    env_targets: Sequence[Tensor],
    env_weights: Sequence[Tensor] | None = None,
    loss_fn: LossFn = weighted_bce_with_logits,
) -> Tensor:
    """IRMv1: ``sum_k (d/dw loss_fn(w * scores_k, targets_k, weights_k) at w = 1)^2`` (differentiable).

    ``loss_fn(scores, targets, weights)`` must return a scalar; the default is the (weighted) mean BCE with
    logits, matching the backbone loss. The gradient with respect to the dummy scale w is taken with
    ``create_graph=True`` so the penalty backpropagates into whatever produced the scores.
    """
    if len(env_scores) == 0 or len(env_scores) != len(env_targets):
        raise ValueError(f"need one target tensor per environment: {len(env_scores)} scores, {len(env_targets)}")
    if env_weights is not None and len(env_weights) != len(env_scores):
        raise ValueError(f"{len(env_weights)} weight tensors for {len(env_scores)} environments")
    penalty = env_scores[0].new_zeros(())
    for k, (scores, targets) in enumerate(zip(env_scores, env_targets, strict=True)):
        scale = torch.ones((), dtype=scores.dtype, device=scores.device, requires_grad=True)
        loss = loss_fn(scores * scale, targets, None if env_weights is None else env_weights[k])
        (grad,) = torch.autograd.grad(loss, scale, create_graph=True)
        penalty = penalty + grad**2
    return penalty


# ----------------------------------------------------------------------------------------------------- V-REx


def vrex_penalty(env_losses: Tensor) -> Tensor:
    """V-REx: population variance ``mean_k (L_k - mean L)^2`` of the environment losses ``[E]``."""
    if env_losses.ndim != 1 or env_losses.numel() < 1:
        raise ValueError(f"env_losses must be [E] with E >= 1, got shape {tuple(env_losses.shape)}")
    return ((env_losses - env_losses.mean()) ** 2).mean()
