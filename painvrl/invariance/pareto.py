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
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

EpoMode = Literal["balance", "descent"]
SolverName = Literal["mgda", "epo", "linear"]
SOLVERS: tuple[str, ...] = ("mgda", "epo", "linear")


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


def _check_gram(C: Tensor) -> np.ndarray:
    c = C.detach().to(torch.float64).cpu().numpy()
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ValueError(f"Gram matrix must be square [m, m], got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("Gram matrix has non-finite entries (NaN/inf objective gradients)")
    result: np.ndarray = 0.5 * (c + c.T)
    return result


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
    c = _check_gram(C)
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


# ------------------------------------------------------------------------------------------------------ EPO


@dataclass(frozen=True)
class EpoLinearProgram:
    """``maximise objective^T alpha  s.t.  A alpha >= b,  alpha >= 0,  sum(alpha) = 1`` (all float64)."""

    objective: np.ndarray  # [m]
    A: np.ndarray  # [k, m]
    b: np.ndarray  # [k]


@dataclass(frozen=True)
class EpoStep:
    """Result of one EPO weighting step."""

    alpha: Tensor
    mode: EpoMode
    non_uniformity: float
    lp_feasible: bool


def non_uniformity(losses: Tensor, preference: Tensor) -> float:
    """mu(rl) = KL(rl_hat || 1/m) with rl_hat = r*l / sum(r*l); 0 means r_j * L_j are all equal."""
    rl = (preference.to(torch.float64).cpu() * losses.detach().to(torch.float64).cpu()).numpy()
    return _mu_and_adjustments(rl, preference.to(torch.float64).cpu().numpy())[0]


def _mu_and_adjustments(rl: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
    """Non-uniformity mu(rl) and the EPO adjustment vector a_j = r_j (log(m rl_hat_j) - mu).

    a is (up to the positive factor sum(r*l)) the derivative of mu with respect to the losses, so
    ``G^T a`` is the direction in parameter space along which the non-uniformity grows fastest.
    Components with r_j = 0 get a_j = 0 (the limit of r log r); a zero loss with r_j > 0 is floored at the
    smallest positive float so a_j stays finite.
    """
    m = rl.shape[0]
    total = float(rl.sum())
    if total <= 0.0:  # every preferred loss is zero: nothing to balance
        return 0.0, np.zeros(m)
    l_hat = rl / total
    eps = np.finfo(np.float64).eps
    keep = l_hat > eps
    mu = float(np.sum(l_hat[keep] * np.log(l_hat[keep] * m)))
    log_term = np.log(np.maximum(l_hat, np.finfo(np.float64).tiny) * m)
    a = np.where(r > 0, r * (log_term - mu), 0.0)
    return mu, a


def build_epo_lp(
    losses: Tensor, C: Tensor, preference: Tensor, eps: float = 1e-4
) -> tuple[EpoLinearProgram, EpoMode, float]:
    """The EPO linear program of Mahapatra & Rajan (ICML 2020, their ``epo_lp.py``) for one step.

    With ``rl = r * l``, non-uniformity ``mu = KL(rl_hat || 1/m)``, adjustments
    ``a_j = r_j (log(m rl_hat_j) - mu)`` and ``Ca = C a`` (``(Ca)_j = <g_j, G^T a>``):

    - balance mode (``mu > eps``): maximise ``alpha^T Ca`` (decrease the non-uniformity fastest) subject to
      the simplex and, with ``J = {j: (Ca)_j > 0}`` and ``J* = argmax_j rl_j`` (all ties):
      if J is empty, ``(C alpha)_j >= 0`` for every j (a common descent direction); otherwise
      ``(C alpha)_j >= 0`` for j in J*, ``(C alpha)_j >= (Ca)_j`` for j outside J and J*, and no constraint
      for j in J minus J* (those losses may rise: "controlled ascent").
    - descent mode (``mu <= eps``): maximise ``alpha^T C 1`` (sum of the per-objective decrease rates)
      subject to the simplex, ``C alpha >= 0`` (no objective increases) and
      ``alpha^T Ca >= min(max_j (Ca)_j, 0)`` (the non-uniformity does not grow much).

    The update direction is ``d = G^T alpha`` (parameters move along ``-d``), so ``(C alpha)_j = <g_j, d>`` is
    the first-order decrease rate of objective j. Returns the LP, the mode and mu.
    """
    c = _check_gram(C)
    m = c.shape[0]
    r = validate_preference(preference, m).numpy()
    loss = losses.detach().to(torch.float64).cpu().numpy().reshape(-1)
    if loss.shape[0] != m:
        raise ValueError(f"{loss.shape[0]} losses for a {m} x {m} Gram matrix")
    if not np.isfinite(loss).all() or (loss < 0).any():
        raise ValueError(f"EPO needs finite non-negative losses, got {loss.tolist()}")
    rl = r * loss
    mu, a = _mu_and_adjustments(rl, r)
    ca = c @ a
    if mu > eps:
        J = ca > 0
        if J.any():
            j_star = rl == rl.max()
            rows = j_star | ~J
            b = np.where(j_star, 0.0, ca)[rows]
            A = c[rows]
        else:
            A, b = c, np.zeros(m)
        return EpoLinearProgram(objective=ca, A=A, b=b), "balance", mu
    A = np.vstack([c, ca[None, :]])
    b = np.concatenate([np.zeros(m), [min(float(ca.max()), 0.0)]])
    return EpoLinearProgram(objective=c.sum(axis=1), A=A, b=b), "descent", mu


def solve_lp_two(lp: EpoLinearProgram, rel_tol: float = 1e-12) -> np.ndarray | None:
    """Closed-form optimum of a two-variable :class:`EpoLinearProgram`; None when infeasible.

    With alpha = (t, 1 - t), t in [0, 1], each constraint row ``A_k alpha >= b_k`` reads
    ``(A_k1 - A_k2) t >= b_k - A_k2``: a half-line in t. Their intersection with [0, 1] is an interval
    [lo, hi]; the objective ``c2 + (c1 - c2) t`` is affine, so the optimum is hi when c1 > c2, lo when
    c1 < c2, and the midpoint when the objective is flat (every feasible t is then optimal).
    ``rel_tol`` (relative to the largest coefficient) absorbs round-off at the interval's ends.
    """
    if lp.objective.shape[0] != 2:
        raise ValueError("solve_lp_two handles exactly two objectives")
    scale = max(1.0, float(np.abs(lp.A).max(initial=0.0)), float(np.abs(lp.b).max(initial=0.0)))
    tol = rel_tol * scale
    lo, hi = 0.0, 1.0
    for (a1, a2), bk in zip(lp.A, lp.b, strict=True):
        slope, rhs = a1 - a2, bk - a2
        if abs(slope) <= tol:
            if rhs > tol:  # constant row violated
                return None
            continue
        bound = rhs / slope
        if slope > 0:
            lo = max(lo, bound)
        else:
            hi = min(hi, bound)
    if lo > hi + tol:
        return None
    lo, hi = min(lo, hi), max(lo, hi)
    lo, hi = min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)
    c1, c2 = float(lp.objective[0]), float(lp.objective[1])
    obj_scale = max(1e-300, abs(c1), abs(c2))
    if c1 - c2 > rel_tol * obj_scale:
        t = hi
    elif c2 - c1 > rel_tol * obj_scale:
        t = lo
    else:
        t = 0.5 * (lo + hi)
    return np.array([t, 1.0 - t])


def solve_lp_highs(lp: EpoLinearProgram) -> np.ndarray | None:
    """Optimum of an :class:`EpoLinearProgram` with scipy's HiGHS (any m); None when infeasible or failed."""
    from scipy.optimize import linprog

    m = lp.objective.shape[0]
    res = linprog(
        c=-lp.objective,
        A_ub=-lp.A if lp.A.shape[0] else None,
        b_ub=-lp.b if lp.A.shape[0] else None,
        A_eq=np.ones((1, m)),
        b_eq=np.ones(1),
        bounds=[(0.0, None)] * m,
        method="highs",
    )
    if res.status != 0 or res.x is None:
        logger.debug("EPO LP not solved by HiGHS: status %s (%s)", res.status, res.message)
        return None
    alpha = np.clip(np.asarray(res.x, dtype=np.float64), 0.0, None)
    result: np.ndarray = alpha / alpha.sum()
    return result


def epo_from_gram(losses: Tensor, C: Tensor, preference: Tensor, eps: float = 1e-4) -> EpoStep:
    """EPO weights (float64 alpha) from losses ``[m]``, Gram matrix ``[m, m]`` and a preference ``[m]``.

    Solves the LP of :func:`build_epo_lp` in closed form for m = 2 (:func:`solve_lp_two`) and with scipy's
    HiGHS for m >= 3. An infeasible LP falls back to alpha = r / sum(r) with ``lp_feasible=False``.
    """
    r = validate_preference(preference, C.shape[0])
    lp, mode, mu = build_epo_lp(losses, C, r, eps)
    m = r.numel()
    alpha = solve_lp_two(lp) if m == 2 else (np.ones(1) if m == 1 else solve_lp_highs(lp))
    if alpha is None:
        logger.debug("EPO %s LP infeasible; falling back to alpha = r", mode)
        return EpoStep(alpha=r.clone(), mode=mode, non_uniformity=mu, lp_feasible=False)
    return EpoStep(alpha=torch.tensor(alpha, dtype=torch.float64), mode=mode, non_uniformity=mu, lp_feasible=True)


def epo_weights(losses: Tensor, grads: Tensor, preference: Tensor, eps: float = 1e-4) -> EpoStep:
    """Exact Pareto Optimal search weights (Mahapatra & Rajan, ICML 2020) for losses ``[m]``, grads ``[m, p]``.

    ``preference`` r (validated, normalised onto the simplex) follows the EPO meaning: larger r_j asks for a
    smaller L_j; EPO drives ``r_j * L_j`` toward equality. Mode is "balance" when the non-uniformity
    ``mu = KL(rl_hat || 1/m)`` exceeds ``eps``, else "descent". The LP solved each step (C = G G^T):

    - balance: ``max alpha^T C a`` s.t. simplex, ``(C alpha)_j >= 0`` for j in J* = argmax r*l,
      ``(C alpha)_j >= (C a)_j`` for j with ``(C a)_j <= 0``; if no ``(C a)_j > 0``, ``C alpha >= 0``.
    - descent: ``max alpha^T C 1`` s.t. simplex, ``C alpha >= 0``, ``alpha^T C a >= min(max(C a), 0)``.

    with ``a_j = r_j (log(m rl_hat_j) - mu)``. m = 2 uses the closed form (optimum at an end of the feasible
    t-interval), m >= 3 scipy ``linprog(method="highs")``. Infeasible: alpha = r, ``lp_feasible=False``.
    The returned alpha has grads' dtype and device.
    """
    step = epo_from_gram(losses, gram(grads), preference, eps)
    return EpoStep(
        alpha=step.alpha.to(dtype=grads.dtype, device=grads.device),
        mode=step.mode,
        non_uniformity=step.non_uniformity,
        lp_feasible=step.lp_feasible,
    )


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
        raise PainvrlInputError(f"unknown Pareto solver {solver!r} (known: {', '.join(SOLVERS)})")
    m = C.shape[0]
    if C.ndim != 2 or losses.numel() != m:
        raise ValueError(f"need losses [m] and C [m, m], got {tuple(losses.shape)} and {tuple(C.shape)}")
    if preference is None:
        if solver != "mgda":
            raise PainvrlInputError(f"the {solver!r} solver needs a preference vector")
        r = torch.full((m,), 1.0 / m, dtype=torch.float64)
    else:
        r = validate_preference(preference, m)
    cosine = cosine_from_gram(C)
    if solver == "epo":
        step = epo_from_gram(losses, C, r, eps)
        return ParetoStep(step.alpha, step.mode, step.non_uniformity, cosine, step.lp_feasible)
    mu = non_uniformity(losses, r)
    if solver == "mgda":
        return ParetoStep(mgda_from_gram(C), "mgda", mu, cosine)
    assert preference is not None
    return ParetoStep(linear_weights(preference), "linear", mu, cosine)
