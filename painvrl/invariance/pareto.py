"""Pareto weighting of the mask objectives (docs/algorithm.md): MGDA, EPO and fixed linear weights.

Every function here is pure: it maps objective losses and objective gradients (or their Gram matrix) to weights
alpha over the objectives. No training code lives here; the mask trainer calls :func:`solve_weights` once per
step and backpropagates ``sum_j alpha_j L_j`` with alpha detached.

Conventions
-----------
- ``grads`` is ``[m, p]``: row j is the flattened gradient of objective j with respect to the trainable
  parameters. All solvers need only the Gram matrix ``C = G G^T`` (``m x m``), so the ``*_from_gram`` variants
  accept C directly (useful when gradients are sharded or too large to keep).
- Preference vectors follow the EPO meaning: a LARGER component ``r_j`` asks for a SMALLER loss ``L_j`` at the
  target point; EPO drives ``r_j * L_j`` toward equality. Preferences are validated and normalised onto the
  simplex by :func:`validate_preference`.
- Numerics run in float64 on the CPU (the problems are ``m x m`` with m = 2 or 3); the returned alpha has the
  dtype and device of the input gradients.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from painvrl.errors import PainvrlInputError
from painvrl.invariance.epo import (  # noqa: F401  (re-exported: the solvers' public names live here)
    EpoLinearProgram,
    EpoMode,
    EpoStep,
    build_epo_lp,
    epo_from_gram,
    epo_weights,
    non_uniformity,
    solve_lp_highs,
    solve_lp_two,
)
from painvrl.invariance.solver_common import (  # noqa: F401
    check_gram,
    gradient_cosine,
    gram,
    normalise_losses,
    preference_from_pref_ood,
    validate_preference,
)
from painvrl.registry import Registry

logger = logging.getLogger(__name__)

SolverName = Literal["mgda", "epo", "linear"]


# ----------------------------------------------------------------------------------------------------- MGDA


MgdaMethod = Literal["auto", "exact", "frank_wolfe"]


def mgda_from_gram(C: Tensor, method: MgdaMethod = "auto", max_iter: int = 2000, tol: float = 1e-14) -> Tensor:
    """Min-norm point of the convex hull of the gradients, given their Gram matrix; alpha on the simplex (float64).

    Solves ``min_alpha alpha^T C alpha`` over the simplex. m = 1: alpha = (1,). m = 2: closed form
    ``t = clip((C22 - C12) / (C11 + C22 - 2 C12), 0, 1)``, alpha = (t, 1 - t). m > 2: ``method="exact"``
    enumerates supports (active sets) and solves each face's KKT system (used by "auto" for m <= 8);
    ``method="frank_wolfe"`` (used by "auto" for m > 8) runs away-step Frank-Wolfe with exact line search
    (Frank-Wolfe as in Sener & Koltun, NeurIPS 2018, plus away steps) from the best pair, stopping when the
    duality gap falls below ``tol * max(1, max|C|)`` or after ``max_iter`` iterations.
    """
    c = check_gram(C)
    m = c.shape[0]
    if m == 1:
        return torch.ones(1, dtype=torch.float64)
    if m == 2:
        t = _min_norm_pair(c[0, 0], c[0, 1], c[1, 1])
        return torch.tensor([t, 1.0 - t], dtype=torch.float64)
    if method == "exact" or (method == "auto" and m <= 8):
        alpha = _min_norm_exact(c)
    elif method in ("frank_wolfe", "auto"):
        alpha = _min_norm_frank_wolfe(c, max_iter, tol)
    else:
        raise ValueError(f"unknown MGDA method {method!r}")
    alpha = np.clip(alpha, 0.0, None)
    return torch.tensor(alpha / alpha.sum(), dtype=torch.float64)


def _min_norm_exact(c: np.ndarray) -> np.ndarray:
    """Exact min-norm point by enumerating supports S: on each face, min alpha_S^T C_SS alpha_S s.t. sum = 1.

    The optimum's support gives a KKT system ``[C_SS 1; 1^T 0] [alpha_S; -lambda] = [0; 1]`` whose solution is
    non-negative; every non-negative face solution is feasible, so the best of them is the global optimum.
    Singular faces (dependent gradients) use least squares; a smaller face then attains the same value.
    """
    import itertools

    m = c.shape[0]
    best_val, best = math.inf, np.full(m, 1.0 / m)
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            idx = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = c[np.ix_(idx, idx)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if (sol < -1e-12).any() or abs(sol.sum() - 1.0) > 1e-9:
                continue
            cand = np.zeros(m)
            cand[idx] = np.clip(sol, 0.0, None)
            cand /= cand.sum()
            val = float(cand @ c @ cand)
            if val < best_val:
                best_val, best = val, cand
    return best


def _min_norm_frank_wolfe(c: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Away-step Frank-Wolfe (linear convergence on the simplex) with exact line search, from the best pair."""
    m = c.shape[0]
    scale = max(1.0, float(np.abs(c).max()))
    best_val, alpha = math.inf, np.full(m, 1.0 / m)
    for i in range(m):
        for j in range(i + 1, m):
            t = _min_norm_pair(c[i, i], c[i, j], c[j, j])
            cand = np.zeros(m)
            cand[i], cand[j] = t, 1.0 - t
            val = float(cand @ c @ cand)
            if val < best_val:
                best_val, alpha = val, cand
    for _ in range(max_iter):
        grad = c @ alpha  # half the gradient of alpha^T C alpha
        current = float(alpha @ grad)
        s_idx = int(np.argmin(grad))
        support = np.flatnonzero(alpha > 0.0)
        v_idx = int(support[np.argmax(grad[support])])
        gap_fw, gap_away = current - float(grad[s_idx]), float(grad[v_idx]) - current
        if gap_fw <= tol * scale:
            break
        direction = -alpha.copy()
        if gap_fw >= gap_away:  # toward the best vertex
            direction[s_idx] += 1.0
            gamma_max = 1.0
        else:  # away from the worst vertex in the support
            direction = alpha.copy()
            direction[v_idx] -= 1.0
            gamma_max = alpha[v_idx] / max(1.0 - alpha[v_idx], 1e-300)
        curvature = float(direction @ c @ direction)
        slope = float(direction @ grad)
        gamma = gamma_max if curvature <= 0.0 else min(gamma_max, max(0.0, -slope / curvature))
        alpha = alpha + gamma * direction
        alpha[np.abs(alpha) < 1e-15] = 0.0
    return alpha


def _min_norm_pair(c11: float, c12: float, c22: float) -> float:
    """t in [0, 1] minimising |t g1 + (1 - t) g2|^2 given <g1,g1>, <g1,g2>, <g2,g2>."""
    denom = c11 + c22 - 2.0 * c12
    if denom <= 0.0:  # g1 == g2 (numerically): every t is optimal
        return 0.5 if c11 == c22 else (1.0 if c11 < c22 else 0.0)
    return float(min(1.0, max(0.0, (c22 - c12) / denom)))


def mgda_weights(grads: Tensor) -> Tensor:
    """MGDA weights for gradients ``[m, p]``: the min-norm point of their convex hull (alpha on the simplex)."""
    alpha = mgda_from_gram(gram(grads))
    return alpha.to(dtype=grads.dtype, device=grads.device)


# ---------------------------------------------------------------------------------------------------- linear


def linear_weights(preference: Tensor | Sequence[float]) -> Tensor:
    """Fixed weights alpha = r, NOT normalised (InvRL parity: r = (1, irm_weight)); float64.

    Entries must be finite and non-negative with a positive sum.
    """
    validate_preference(preference)
    return torch.as_tensor(preference, dtype=torch.float64).detach().cpu().clone()


# -------------------------------------------------------------------------------------------------- dispatch


@dataclass(frozen=True)
class ParetoStep:
    """Weights of one step plus the quantities the mask trainer logs."""

    alpha: Tensor
    mode: str
    """"balance" | "descent" (EPO), "mgda" or "linear"."""
    non_uniformity: float
    """mu(r*l) under the preference (uniform r when none is given)."""
    cosine: float
    """Cosine between the first two objective gradients (ERM, IRM)."""
    lp_feasible: bool = True


def solve_weights(
    solver: str,
    losses: Tensor,
    grads: Tensor,
    preference: Tensor | Sequence[float] | None = None,
    eps: float = 1e-4,
) -> ParetoStep:
    """Dispatch to the ``mgda`` | ``epo`` | ``linear`` solver and gather logging quantities.

    ``losses`` should already be normalised (:func:`normalise_losses`). EPO and linear need a preference;
    MGDA ignores it (it only enters the logged non-uniformity). ``eps`` is EPO's balance threshold. The Gram
    matrix is computed once (:func:`gram`); alpha has grads' dtype and device.
    """
    if grads.ndim != 2 or losses.numel() != grads.shape[0]:
        raise ValueError(f"need losses [m] and grads [m, p], got {tuple(losses.shape)} and {tuple(grads.shape)}")
    step = solve_weights_from_gram(solver, losses, gram(grads), preference, eps)
    return replace(step, alpha=step.alpha.to(dtype=grads.dtype, device=grads.device))


def cosine_from_gram(C: Tensor) -> float:
    """Cosine between the first two gradients from their Gram matrix (0.0 when either is zero or m < 2)."""
    if C.shape[0] < 2:
        return 0.0
    n0, n1 = float(C[0, 0]), float(C[1, 1])
    if n0 <= 0.0 or n1 <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, float(C[0, 1]) / math.sqrt(n0 * n1)))


def solve_weights_from_gram(
    solver: str,
    losses: Tensor,
    C: Tensor,
    preference: Tensor | Sequence[float] | None = None,
    eps: float = 1e-4,
) -> ParetoStep:
    """:func:`solve_weights` on a precomputed Gram matrix ``[m, m]``; alpha is float64 on the CPU."""
    if solver not in SOLVERS:
        raise PainvrlInputError(f"config field 'mask.solver': unknown Pareto solver {solver!r} "
                                f"(known: {', '.join(SOLVERS)})")
    m = C.shape[0]
    if C.ndim != 2 or losses.numel() != m:
        raise ValueError(f"need losses [m] and C [m, m], got {tuple(losses.shape)} and {tuple(C.shape)}")
    if preference is None:
        if SOLVERS[solver].needs_preference:
            raise PainvrlInputError(f"the {solver!r} solver needs a preference vector")
        r = torch.full((m,), 1.0 / m, dtype=torch.float64)
    else:
        r = validate_preference(preference, m)
    inputs = SolverInputs(losses, C, r, preference, eps, cosine_from_gram(C))
    return SOLVERS[solver].weights(inputs)


@dataclass(frozen=True)
class SolverInputs:
    """One weighting problem: normalised losses [m], Gram matrix C [m, m], the preference r on the simplex
    (``preference`` as given, un-normalised), EPO's balance threshold and the cosine to log."""

    losses: Tensor
    C: Tensor
    r: Tensor
    preference: Tensor | Sequence[float] | None
    eps: float
    cosine: float


@dataclass(frozen=True)
class Solver:
    """A Pareto weighting rule ``weights(inputs) -> ParetoStep``; ``needs_preference`` is False for rules that
    ignore the preference (it then only enters the logged non-uniformity)."""

    weights: Callable[[SolverInputs], ParetoStep]
    needs_preference: bool = True


def _epo(p: SolverInputs) -> ParetoStep:
    step = epo_from_gram(p.losses, p.C, p.r, p.eps)
    return ParetoStep(step.alpha, step.mode, step.non_uniformity, p.cosine, step.lp_feasible)


def _mgda(p: SolverInputs) -> ParetoStep:
    return ParetoStep(mgda_from_gram(p.C), "mgda", non_uniformity(p.losses, p.r), p.cosine)


def _linear(p: SolverInputs) -> ParetoStep:
    assert p.preference is not None
    return ParetoStep(linear_weights(p.preference), "linear", non_uniformity(p.losses, p.r), p.cosine)


SOLVERS: Registry[Solver] = Registry("Pareto solver", "mask.solver", "painvrl.solvers", {
    "epo": Solver(_epo),
    "mgda": Solver(_mgda, needs_preference=False),
    "linear": Solver(_linear),
}, accepts=lambda value: isinstance(value, Solver))
"""Config field ``mask.solver`` -> Pareto weighting rule."""
