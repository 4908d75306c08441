"""Tests for painvrl.invariance.pareto: MGDA, EPO (closed form vs HiGHS), linear weights and the dispatcher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from painvrl.errors import PainvrlInputError
from painvrl.invariance.pareto import (
    EpoLinearProgram,
    build_epo_lp,
    cosine_from_gram,
    epo_from_gram,
    epo_weights,
    gradient_cosine,
    linear_weights,
    mgda_from_gram,
    mgda_weights,
    non_uniformity,
    normalise_losses,
    preference_from_pref_ood,
    solve_lp_highs,
    solve_lp_two,
    solve_weights,
    validate_preference,
)


def _on_simplex(alpha: torch.Tensor, tol: float = 1e-9) -> bool:
    return bool((alpha >= -tol).all()) and abs(float(alpha.sum()) - 1.0) <= tol


# ------------------------------------------------------------------------------------------------ helpers


def test_normalise_losses_divides_and_floors() -> None:
    out = normalise_losses(torch.tensor([2.0, 0.0, 3.0]), torch.tensor([4.0, 1.0, 0.0]), floor=1e-8)
    assert torch.allclose(out, torch.tensor([0.5, 1e-8, 3.0 / 1e-8]))
    with pytest.raises(ValueError, match="shape"):
        normalise_losses(torch.ones(2), torch.ones(3))


def test_normalise_losses_with_an_offset_measures_the_range() -> None:
    out = normalise_losses(torch.tensor([3.0, 0.5]), torch.tensor([2.0, 1.0]), 1e-8, torch.tensor([2.0, 0.0]))
    assert torch.allclose(out, torch.tensor([0.5, 0.5]))
    below_ideal = normalise_losses(torch.tensor([1.0]), torch.tensor([2.0]), 1e-8, torch.tensor([2.0]))
    assert torch.allclose(below_ideal, torch.tensor([1e-8]))
    with pytest.raises(ValueError, match="offset"):
        normalise_losses(torch.ones(2), torch.ones(2), 1e-8, torch.ones(3))


def test_validate_preference_normalises_and_rejects_bad_vectors() -> None:
    r = validate_preference([1.0, 3.0], m=2)
    assert r.dtype == torch.float64
    assert torch.allclose(r, torch.tensor([0.25, 0.75], dtype=torch.float64))
    bad_cases: list[tuple[object, int | None, str]] = [
        ([0.5, -0.1, 0.6], None, "non-negative"),
        ([0.5, 0.5], 3, "2 components but there are 3 objectives"),
        ([0.0, 0.0], 2, "positive sum"),
        ([[0.5, 0.5]], 2, "1-D"),
        ([], None, "1-D"),
        ([math.nan, 1.0], 2, "finite"),
    ]
    for values, m, message in bad_cases:
        with pytest.raises(PainvrlInputError, match=message):
            validate_preference(values, m)  # type: ignore[arg-type]
    assert issubclass(PainvrlInputError, ValueError)


def test_preference_from_pref_ood() -> None:
    r = preference_from_pref_ood(0.2)
    assert torch.allclose(r, torch.tensor([0.8, 0.2], dtype=torch.float64))
    assert torch.allclose(preference_from_pref_ood(np.float64(0.25)), torch.tensor([0.75, 0.25], dtype=torch.float64))
    for bad in (0.0, 1.0, -0.5, 1.5, math.nan):
        with pytest.raises(PainvrlInputError, match="strictly between 0 and 1"):
            preference_from_pref_ood(bad)
    for wrong_type in (True, "0.5", None):
        with pytest.raises(PainvrlInputError, match="number"):
            preference_from_pref_ood(wrong_type)  # type: ignore[arg-type]


def test_gradient_cosine() -> None:
    grads = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert gradient_cosine(grads) == pytest.approx(1.0 / math.sqrt(2.0))
    assert gradient_cosine(torch.tensor([[0.0, 0.0], [1.0, 1.0]])) == 0.0


# ----------------------------------------------------------------------------------------------------- MGDA


def test_mgda_two_objectives_matches_brute_force_grid() -> None:
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 1.0, 100_001)
    for _ in range(200):
        g = rng.normal(size=(2, 5)) * rng.uniform(0.1, 10.0, size=(2, 1))
        alpha = mgda_weights(torch.tensor(g))
        assert _on_simplex(alpha)
        c = g @ g.T
        values = ts**2 * c[0, 0] + 2 * ts * (1 - ts) * c[0, 1] + (1 - ts) ** 2 * c[1, 1]
        a = alpha.numpy()
        value = float(a @ c @ a)
        assert value <= values.min() + 1e-12 * max(1.0, abs(values.min()))
        assert abs(float(a[0]) - ts[int(np.argmin(values))]) <= 1e-4


def test_mgda_two_objectives_edge_cases() -> None:
    # one gradient dominates the other in the min-norm sense: the hull's min-norm point is a vertex
    assert torch.allclose(mgda_weights(torch.tensor([[1.0, 0.0], [3.0, 0.0]])), torch.tensor([1.0, 0.0]))
    # identical gradients: any weighting is optimal, result must still be on the simplex
    assert _on_simplex(mgda_weights(torch.tensor([[1.0, 2.0], [1.0, 2.0]])))
    # opposite gradients: the hull contains 0
    alpha = mgda_weights(torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(alpha, torch.tensor([2.0 / 3.0, 1.0 / 3.0], dtype=torch.float64))


def _brute_force_min_norm3(c: np.ndarray) -> tuple[np.ndarray, float]:
    """Grid search over the 2-simplex, then repeated finer grids around the best point (no gradients used)."""
    h = 200
    i, j = np.meshgrid(np.arange(h + 1), np.arange(h + 1), indexing="ij")
    keep = i + j <= h
    grid = np.stack([i[keep], j[keep], h - i[keep] - j[keep]], axis=1) / h
    values = np.einsum("ni,ij,nj->n", grid, c, grid)
    best = grid[int(np.argmin(values))]
    step = 1.0 / h
    offsets = np.linspace(-2.0, 2.0, 41)
    for _ in range(12):
        u, v = np.meshgrid(best[0] + offsets * step, best[1] + offsets * step, indexing="ij")
        cand = np.stack([u.ravel(), v.ravel(), 1.0 - u.ravel() - v.ravel()], axis=1)
        cand = cand[(cand >= 0.0).all(axis=1)]
        cand = np.vstack([cand, best[None, :]])
        values = np.einsum("ni,ij,nj->n", cand, c, cand)
        best = cand[int(np.argmin(values))]
        step /= 10.0
    return best, float(best @ c @ best)


@pytest.mark.parametrize("method", ["exact", "frank_wolfe"])
def test_mgda_three_objectives_matches_brute_force_simplex_grid(method: str) -> None:
    rng = np.random.default_rng(1)
    for trial in range(30):
        g = rng.normal(size=(3, 6))
        if trial % 2:  # near-conflicting third gradient: interior optimum
            g[2] = -0.5 * g[0] - 0.5 * g[1] + 0.1 * rng.normal(size=6)
        c = g @ g.T
        alpha = mgda_from_gram(torch.tensor(c), method=method)  # type: ignore[arg-type]
        assert _on_simplex(alpha)
        value = float(alpha.numpy() @ c @ alpha.numpy())
        brute, brute_value = _brute_force_min_norm3(c)
        assert value <= brute_value + 1e-12
        assert np.abs(alpha.numpy() - brute).max() <= 1e-4


def test_mgda_exact_and_frank_wolfe_agree_and_satisfy_kkt() -> None:
    rng = np.random.default_rng(2)
    for trial in range(60):
        m = 3 + trial % 3
        g = rng.normal(size=(m, 7))
        c = torch.tensor(g @ g.T)
        exact = mgda_from_gram(c, method="exact")
        fw = mgda_from_gram(c, method="frank_wolfe")
        assert torch.allclose(exact, fw, atol=1e-6)
        # min-norm optimality: every gradient has <g_j, d> >= |d|^2 (d = G^T alpha)
        d = g.T @ exact.numpy()
        assert (g @ d >= d @ d - 1e-9).all()


def test_mgda_rejects_non_finite_gradients() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        mgda_weights(torch.tensor([[1.0, math.nan], [0.0, 1.0]]))


# ------------------------------------------------------------------------------------------------------ EPO


def _random_epo_instance(rng: np.random.Generator, m: int, balanced: bool) -> tuple[np.ndarray, ...]:
    g = rng.normal(size=(m, 4)) * rng.uniform(0.1, 10.0)
    r = rng.dirichlet(np.ones(m))
    if balanced:  # r * l nearly equal: non-uniformity below eps -> descent mode
        losses = (1.0 / r) * (1.0 + 1e-4 * rng.normal(size=m))
    else:
        losses = rng.uniform(0.1, 3.0, size=m)
    return g, r, losses


def test_epo_two_objective_closed_form_equals_highs() -> None:
    rng = np.random.default_rng(3)
    counts = {"balance": 0, "descent": 0}
    for trial in range(600):
        g, r, losses = _random_epo_instance(rng, 2, balanced=trial % 2 == 1)
        lp, mode, _ = build_epo_lp(torch.tensor(losses), torch.tensor(g @ g.T), torch.tensor(r))
        counts[mode] += 1
        closed, highs = solve_lp_two(lp), solve_lp_highs(lp)
        assert closed is not None and highs is not None
        scale = max(1.0, float(np.abs(lp.objective).max()))
        assert abs(float(lp.objective @ closed) - float(lp.objective @ highs)) <= 1e-6 * scale
        if abs(lp.objective[0] - lp.objective[1]) > 1e-6 * scale:  # unique optimum
            assert np.allclose(closed, highs, atol=1e-6)
        # the closed form's point satisfies every constraint of the LP
        assert (lp.A @ closed >= lp.b - 1e-9 * max(1.0, float(np.abs(lp.A).max()))).all()
    assert counts["balance"] >= 200 and counts["descent"] >= 200


def test_epo_closed_form_on_hand_made_lps() -> None:
    # maximise t subject to t <= 0.3 (row: -t + 0 >= -0.3 with alpha=(t, 1-t) -> A=(-1, 0), b=-0.3)
    lp = EpoLinearProgram(objective=np.array([1.0, 0.0]), A=np.array([[-1.0, 0.0]]), b=np.array([-0.3]))
    closed = solve_lp_two(lp)
    assert closed is not None and np.allclose(closed, [0.3, 0.7])
    # contradictory rows: t >= 0.8 and t <= 0.2
    infeasible = EpoLinearProgram(
        objective=np.array([1.0, 0.0]), A=np.array([[1.0, 0.0], [-1.0, 0.0]]), b=np.array([0.8, -0.2])
    )
    assert solve_lp_two(infeasible) is None
    assert solve_lp_highs(infeasible) is None
    # constant row that can never hold
    assert solve_lp_two(EpoLinearProgram(np.array([1.0, 0.0]), np.array([[1.0, 1.0]]), np.array([2.0]))) is None


def test_epo_alpha_on_simplex_and_constraints_hold() -> None:
    rng = np.random.default_rng(4)
    for trial in range(200):
        m = 2 + trial % 2
        g, r, losses = _random_epo_instance(rng, m, balanced=trial % 4 == 1)
        step = epo_weights(torch.tensor(losses), torch.tensor(g), torch.tensor(r))
        assert _on_simplex(step.alpha)
        if step.lp_feasible:
            lp, mode, _ = build_epo_lp(torch.tensor(losses), torch.tensor(g @ g.T), torch.tensor(r))
            assert mode == step.mode
            assert (lp.A @ step.alpha.numpy() >= lp.b - 1e-6 * max(1.0, float(np.abs(lp.A).max()))).all()


def test_epo_modes_and_non_uniformity() -> None:
    g = torch.tensor([[1.0, 0.2], [0.1, 1.0]], dtype=torch.float64)
    r = torch.tensor([0.25, 0.75], dtype=torch.float64)
    balanced = torch.tensor([3.0, 1.0], dtype=torch.float64)  # r * l = (0.75, 0.75)
    step = epo_weights(balanced, g, r)
    assert step.mode == "descent" and step.non_uniformity == pytest.approx(0.0, abs=1e-15)
    unbalanced = torch.tensor([1.0, 1.0], dtype=torch.float64)  # r * l = (0.25, 0.75)
    step = epo_weights(unbalanced, g, r)
    expected_mu = 0.25 * math.log(0.25 * 2) + 0.75 * math.log(0.75 * 2)  # KL((1/4, 3/4) || (1/2, 1/2))
    assert step.mode == "balance"
    assert step.non_uniformity == pytest.approx(expected_mu, rel=1e-12)
    assert non_uniformity(unbalanced, r) == pytest.approx(expected_mu, rel=1e-12)
    # balance mode pushes the relatively larger r*l (objective 2) down: it gets the larger weight here
    assert float(step.alpha[1]) > float(step.alpha[0])
    # the preference is normalised before use: scaling it changes nothing
    scaled = epo_weights(unbalanced, g, 10.0 * r)
    assert torch.allclose(scaled.alpha, step.alpha)


def test_epo_infeasible_lp_falls_back_to_preference() -> None:
    # a three-objective descent-mode instance whose LP has no feasible point (found by search, checked by HiGHS)
    grads = torch.tensor(
        [
            [1.9021663184378317, -0.12095442694734128, -0.8296979166509034],
            [-0.38479025933978617, 1.0575736065142753, 2.081338255873305],
            [-1.445090014146335, 0.22777966761814972, 1.584716178417287],
        ],
        dtype=torch.float64,
    )
    r = torch.tensor([0.2058433399967001, 0.46071895437083077, 0.33343770563246905], dtype=torch.float64)
    losses = torch.tensor([4.867970263461727, 2.1715698162221604, 3.001664638606589], dtype=torch.float64)
    lp, mode, _ = build_epo_lp(losses, grads @ grads.T, r)
    assert mode == "descent" and solve_lp_highs(lp) is None
    step = epo_weights(losses, grads, r)
    assert not step.lp_feasible
    assert torch.allclose(step.alpha, r / r.sum())
    assert _on_simplex(step.alpha)


def test_epo_gram_and_gradient_entry_points_agree_and_keep_dtype() -> None:
    rng = np.random.default_rng(5)
    g = torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32)
    losses = torch.tensor([1.0, 2.0])
    r = torch.tensor([0.5, 0.5])
    step = epo_weights(losses, g, r)
    assert step.alpha.dtype == torch.float32
    from_gram = epo_from_gram(losses, g.double() @ g.double().T, r)
    assert torch.allclose(step.alpha.double(), from_gram.alpha, atol=1e-7)


def test_epo_rejects_negative_losses() -> None:
    with pytest.raises(ValueError, match="non-negative losses"):
        epo_weights(torch.tensor([-1.0, 1.0]), torch.eye(2), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize(
    ("pref_ood", "eps", "gap"), [(0.2, 1e-10, 1e-4), (0.5, 1e-10, 1e-4), (0.8, 1e-10, 1e-4), (0.8, 1e-4, 2e-2)]
)
def test_epo_iterates_to_the_exact_pareto_point(pref_ood: float, eps: float, gap: float) -> None:
    """Two quadratics L_j = |x - c_j|^2 / 2 + 0.05: EPO steps reach the Pareto point with r1 L1 = r2 L2.

    EPO balances until the non-uniformity is <= eps, so the remaining relative gap shrinks with eps.
    """
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    r = preference_from_pref_ood(pref_ood)
    x = torch.tensor([1.6, 0.7], dtype=torch.float64)
    lr = 0.05
    modes: set[str] = set()
    for _ in range(3000):
        losses = 0.5 * ((x - centres) ** 2).sum(dim=1) + 0.05
        grads = x - centres  # [2, 2]
        step = epo_weights(losses, grads, r, eps=eps)
        assert step.lp_feasible
        modes.add(step.mode)
        x = x - lr * (step.alpha @ grads)
    losses = 0.5 * ((x - centres) ** 2).sum(dim=1) + 0.05
    rl = r * losses
    assert float((rl[0] - rl[1]).abs() / rl.sum()) < gap
    assert non_uniformity(losses, r) <= eps
    # Pareto stationary: x lies on the segment between the centres (the Pareto set of this problem)
    assert abs(float(x.sum()) - 1.0) < 1e-3 and bool(((x > -1e-3) & (x < 1.0 + 1e-3)).all())
    # a larger IRM preference gives a lower second loss
    assert (float(losses[1]) < float(losses[0])) == (pref_ood > 0.5) or pref_ood == 0.5
    assert "balance" in modes and "descent" in modes


# ------------------------------------------------------------------------------------------ linear, dispatch


def test_linear_weights_are_the_preference_unnormalised() -> None:
    assert torch.equal(linear_weights([1.0, 100.0]), torch.tensor([1.0, 100.0], dtype=torch.float64))
    with pytest.raises(PainvrlInputError):
        linear_weights([1.0, -1.0])


def test_solve_weights_dispatches_every_solver() -> None:
    grads = torch.tensor([[1.0, 0.0, 0.5], [-0.5, 1.0, 0.0]])
    losses = torch.tensor([1.0, 0.4])
    r = preference_from_pref_ood(0.7)
    expected_cos = gradient_cosine(grads)

    mgda = solve_weights("mgda", losses, grads)
    assert mgda.mode == "mgda" and torch.allclose(mgda.alpha, mgda_weights(grads))
    assert mgda.cosine == pytest.approx(expected_cos)

    epo = solve_weights("epo", losses, grads, r)
    direct = epo_weights(losses, grads, r)
    assert epo.mode == direct.mode and torch.allclose(epo.alpha, direct.alpha)
    assert epo.non_uniformity == pytest.approx(direct.non_uniformity)
    assert epo.lp_feasible and epo.alpha.dtype == grads.dtype

    linear = solve_weights("linear", losses, grads, [1.0, 10.0])
    assert linear.mode == "linear" and torch.allclose(linear.alpha, torch.tensor([1.0, 10.0]))

    with pytest.raises(PainvrlInputError, match="unknown Pareto solver"):
        solve_weights("pcgrad", losses, grads, r)
    with pytest.raises(PainvrlInputError, match="needs a preference"):
        solve_weights("epo", losses, grads)
    with pytest.raises(PainvrlInputError, match="3 components"):
        solve_weights("epo", losses, grads, [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="grads"):
        solve_weights("mgda", torch.ones(3), grads)


def test_solve_weights_eps_controls_the_epo_mode() -> None:
    grads = torch.tensor([[1.0, 0.2], [0.1, 1.0]], dtype=torch.float64)
    losses = torch.tensor([1.0, 1.02], dtype=torch.float64)  # mu ~ 1e-4 under r = (1/2, 1/2)
    r = [0.5, 0.5]
    mu = non_uniformity(losses, torch.tensor(r, dtype=torch.float64))
    assert solve_weights("epo", losses, grads, r, eps=mu / 2).mode == "balance"
    assert solve_weights("epo", losses, grads, r, eps=mu * 2).mode == "descent"


def test_cosine_from_gram_matches_direct() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    assert cosine_from_gram(grads @ grads.T) == pytest.approx(gradient_cosine(grads), rel=1e-12)
    assert cosine_from_gram(torch.zeros(2, 2, dtype=torch.float64)) == 0.0
