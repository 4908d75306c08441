"""Helpers shared by the Pareto solvers: loss normalisation, preference vectors, Gram matrices."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from painvrl.errors import PainvrlInputError

# ------------------------------------------------------------------------------------------------ helpers


def normalise_losses(losses: Tensor, initial: Tensor, floor: float = 1e-8, offset: Tensor | None = None) -> Tensor:
    """(losses - offset) / initial, floored at ``floor`` (elementwise): by default the losses divided by their
    values at the start of the round; ``offset`` (an ideal value) makes it a range normalisation.

    A zero or negative scale would make the ratio meaningless, so ``initial`` is floored too.
    """
    if losses.shape != initial.shape or (offset is not None and offset.shape != losses.shape):
        raise ValueError(f"losses {tuple(losses.shape)}, initial {tuple(initial.shape)} and offset "
                         f"{None if offset is None else tuple(offset.shape)} differ in shape")
    shifted = losses if offset is None else losses - offset
    return (shifted / initial.clamp_min(floor)).clamp_min(floor)


def validate_preference(preference: Tensor | Sequence[float], m: int | None = None) -> Tensor:
    """Check a preference vector and return it normalised onto the simplex (float64, CPU).

    Raises :class:`painvrl.errors.PainvrlInputError` (a ``ValueError``) when the vector is not 1-D, has the
    wrong length, holds non-finite or negative entries, or sums to zero.
    """
    r = torch.as_tensor(preference, dtype=torch.float64).detach().cpu()
    if r.ndim != 1 or r.numel() == 0:
        raise PainvrlInputError(f"preference must be a non-empty 1-D vector, got shape {tuple(r.shape)}")
    if m is not None and r.numel() != m:
        raise PainvrlInputError(f"preference has {r.numel()} components but there are {m} objectives")
    if not bool(torch.isfinite(r).all()):
        raise PainvrlInputError(f"preference must be finite, got {r.tolist()}")
    if bool((r < 0).any()):
        raise PainvrlInputError(f"preference must be non-negative (it lives on the simplex), got {r.tolist()}")
    total = float(r.sum())
    if total <= 0.0:
        raise PainvrlInputError(f"preference must have a positive sum to be normalised, got {r.tolist()}")
    return r / total


def preference_from_pref_ood(pref_ood: float) -> Tensor:
    """Two-objective preference r = (1 - pref_ood, pref_ood) over (ERM, IRM); larger pref_ood asks lower IRM."""
    if not isinstance(pref_ood, numbers.Real) or isinstance(pref_ood, bool):
        raise PainvrlInputError(f"pref_ood must be a number in (0, 1), got {pref_ood!r}")
    value = float(pref_ood)
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise PainvrlInputError(f"pref_ood must lie strictly between 0 and 1, got {pref_ood!r}")
    return torch.tensor([1.0 - value, value], dtype=torch.float64)


def gram(grads: Tensor) -> Tensor:
    """Gram matrix ``C = G G^T`` of objective gradients ``[m, p]`` in float64 (computed on grads' device)."""
    if grads.ndim != 2:
        raise ValueError(f"grads must be [m, p], got shape {tuple(grads.shape)}")
    g = grads.detach().to(torch.float64)
    return (g @ g.T).cpu()


def gradient_cosine(grads: Tensor) -> float:
    """Cosine between the first two objective gradients (0.0 when either is zero or m < 2)."""
    if grads.ndim != 2 or grads.shape[0] < 2:
        return 0.0
    g = grads.detach().to(torch.float64)
    n0, n1 = float(g[0].norm()), float(g[1].norm())
    if n0 == 0.0 or n1 == 0.0:
        return 0.0
    return float(g[0] @ g[1]) / (n0 * n1)


def check_gram(C: Tensor) -> np.ndarray:
    c = C.detach().to(torch.float64).cpu().numpy()
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ValueError(f"Gram matrix must be square [m, m], got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("Gram matrix has non-finite entries (NaN/inf objective gradients)")
    result: np.ndarray = 0.5 * (c + c.T)
    return result
