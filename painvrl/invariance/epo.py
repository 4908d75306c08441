"""Exact Pareto optimal search (EPO, Mahapatra & Rajan, ICML 2020) over the Gram matrix of the objectives.

EPO balances the preference-weighted losses r_j L_j: while they are unequal it picks the weights that reduce the
non-uniformity fastest (``balance``), once they are equal it descends along a direction that keeps them equal
(``descent``); each step solves a small linear program (closed form for m = 2, HiGHS otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from painvrl.invariance.solver_common import check_gram, gram, validate_preference

logger = logging.getLogger(__name__)

EpoMode = Literal["balance", "descent"]


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
    c = check_gram(C)
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
