"""IMG: objective gradients vs finite differences, 2-rank formulation == one process, preference wiring."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from invariance_helpers import run_two_ranks

from painvrl.config import MaskConfig
from painvrl.distributed.collective import LocalCollective, shard_slice
from painvrl.invariance.linear_models import LinearMaskModel
from painvrl.invariance.mask_models import EnvBatch
from painvrl.invariance.masks import (
    StepSettings,
    compute_objectives,
    learn_mask,
    mask_step,
    normalisation_constants,
    resolve_settings,
)
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights


def _backbone(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[UltraGCN, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    n_users, n_items, d = 20, 30, 8
    features = torch.nn.functional.normalize(torch.randn(n_items, d, generator=gen), dim=1)
    train = np.stack([np.arange(n_users).repeat(3), (np.arange(n_users * 3) * 7) % n_items], axis=1)
    b_u, b_i = degree_weights(train, n_users, n_items)
    model = UltraGCN(n_users, n_items, features, FeatureProjection(d, 4), b_u, b_i, k_id=3, k_f=4)
    with torch.no_grad():
        model.user_embedding.copy_(torch.randn(n_users, 7, generator=gen))
        model.item_embedding.copy_(torch.randn(n_items, 3, generator=gen) * 0.3)
    return model.to(dtype), train.astype(np.int64)


def _batches(train: np.ndarray, rank: int = 0, world: int = 1, seed: int = 1, pooled: bool = False
             ) -> list[EnvBatch]:
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(30, (9,), generator=gen)
    out = []
    for env in range(2):
        rows = torch.as_tensor(train[env * 10: env * 10 + 7])
        part = shard_slice(7, rank, world)
        if pooled:
            positions = torch.randint(9, (7, 3), generator=gen)[part]
            out.append(EnvBatch(rows[part, 0], rows[part, 1], pool[positions], 7, pool, positions))
        else:
            negs = torch.randint(30, (7, 3), generator=gen)
            out.append(EnvBatch(rows[part, 0], rows[part, 1], negs[part], 7))
    return out


def test_pooled_env_losses_equal_explicit_negatives() -> None:
    backbone, train = _backbone()
    model = _mask_model(backbone)
    gates = model.gates(torch.zeros(8))
    pooled = _batches(train, pooled=True)
    explicit = [EnvBatch(b.users, b.pos_items, b.neg_items, b.global_count) for b in pooled]
    torch.testing.assert_close(model.env_partial_losses(gates, pooled), model.env_partial_losses(gates, explicit))


def _mask_model(backbone: UltraGCN, dtype: torch.dtype = torch.float32) -> LinearMaskModel:
    model = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5),
                            init_from_pretrained=False).to(dtype)
    with torch.no_grad():
        model.gate.mu.copy_(torch.linspace(-0.3, 0.3, 8))
    return model


@pytest.mark.parametrize("penalty", ["gradvar", "irmv1", "vrex"])
def test_objective_gradients_match_finite_differences(penalty: str) -> None:
    backbone, train = _backbone(dtype=torch.float64)
    model = _mask_model(backbone, torch.float64)
    batches = _batches(train)
    eps = torch.randn(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    settings = StepSettings(penalty=penalty)
    params = model.trainable()

    def values() -> list[float]:
        objs, _ = compute_objectives(model, batches, eps, settings, LocalCollective())
        return [float(o.detach()) for o in objs]

    objs, _ = compute_objectives(model, batches, eps, settings, LocalCollective())
    for j, obj in enumerate(objs):
        grads = torch.autograd.grad(obj, params, retain_graph=True, allow_unused=True)
        for param, grad in zip(params, grads, strict=True):
            assert grad is not None
            flat = param.data.view(-1)
            for idx in range(0, flat.numel(), 3):
                old = float(flat[idx])
                h = 1e-6
                flat[idx] = old + h
                up = values()[j]
                flat[idx] = old - h
                down = values()[j]
                flat[idx] = old
                numeric = (up - down) / (2 * h)
                tolerance = 1e-9 + 1e-4 * abs(float(obj.detach()))
                assert float(grad.view(-1)[idx]) == pytest.approx(numeric, rel=1e-4, abs=tolerance), (j, idx)


@pytest.mark.parametrize("penalty,extra,solver,pooled", [("gradvar", "none", "epo", False),
                                                         ("gradvar", "none", "epo", True),
                                                         ("irmv1", "vrex", "mgda", False),
                                                         ("vrex", "none", "linear", True)])
def test_two_rank_step_equals_single_process(penalty: str, extra: str, solver: str, pooled: bool) -> None:
    torch.set_num_threads(1)
    backbone, train = _backbone(dtype=torch.float64)
    base = _mask_model(backbone, torch.float64)
    eps = torch.randn(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    n_obj = 2 + (extra != "none")
    settings = StepSettings(penalty=penalty, extra_objective=extra, solver=solver,
                            preference=[0.3, 0.7] if n_obj == 2 else [0.2, 0.4, 0.4], sparsity_weight=0.05)

    def run(collective: Any) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.trainable(), lr=0.05)
        initial = None
        stats = None
        for step in range(3):
            batches = _batches(train, collective.rank, collective.world_size, seed=step, pooled=pooled)
            stats, initial = mask_step(model, opt, batches, eps, settings, collective, initial)
        assert stats is not None
        return model.gate.mu.detach().clone(), model.weight.detach().clone(), stats.alpha, stats.losses

    single = run(LocalCollective())
    ranks = run_two_ranks(run)
    for result in ranks:
        torch.testing.assert_close(result[0], single[0], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(result[1], single[1], rtol=1e-9, atol=1e-10)
        assert result[2] == pytest.approx(single[2], rel=1e-9, abs=1e-12)
        assert result[3] == pytest.approx(single[3], rel=1e-9, abs=1e-14)


def test_higher_ood_preference_weights_irm_more() -> None:
    backbone, train = _backbone()
    batches = _batches(train)
    eps = torch.zeros(8)
    alphas = {}
    for pref in (0.2, 0.8):
        model = _mask_model(backbone)
        opt = torch.optim.Adam(model.trainable(), lr=1e-3)
        settings = resolve_settings(MaskConfig(pref_ood=pref), 1e-3, 1.0)
        assert settings.preference == pytest.approx([1 - pref, pref])
        # Start of round: both normalised losses are 1, so r*l is non-uniform and EPO is in balance mode.
        stats, _ = mask_step(model, opt, batches, eps, settings, LocalCollective(), None)
        assert stats.mode == "balance"
        alphas[pref] = stats.alpha[1]
    assert alphas[0.8] > alphas[0.2]


def test_resolve_settings_methods() -> None:
    from painvrl.config import load_config
    from painvrl.training.methods import METHODS

    config = load_config(None, ["mask.irm_weight=3.0", "mask.solver=epo", "mask.sparsity=l0"])
    cfg = METHODS["invrl"].effective_config(config).mask
    invrl = resolve_settings(cfg, 0.1, 3.0)
    assert (invrl.solver, invrl.sparsity) == ("linear", "l2") and invrl.preference == pytest.approx([0.25, 0.75])
    three = resolve_settings(MaskConfig(extra_objective="vrex", pref_ood=0.6), 0.1, 1.0)
    assert three.n_objectives == 3 and three.preference == pytest.approx([0.4, 0.3, 0.3])
    explicit = resolve_settings(MaskConfig(preference=[1.0, 3.0]), 0.1, 1.0)
    assert explicit.preference == pytest.approx([0.25, 0.75])


def test_warmup_is_erm_only_and_gate_regulariser_applies() -> None:
    backbone, train = _backbone()
    model = _mask_model(backbone)
    opt = torch.optim.SGD(model.trainable(), lr=0.0)
    settings = StepSettings(sparsity="l2", sparsity_weight=0.5)
    stats, initial = mask_step(model, opt, _batches(train), torch.zeros(8), settings, LocalCollective(), None,
                               warmup=True)
    assert stats.mode == "warmup" and stats.alpha == [1.0, 0.0] and initial.shape == (2, 2)
    assert (initial[0] == 0).all()  # "start" normalisation: no offset, scale = the first losses
    objs, _ = compute_objectives(model, _batches(train), torch.zeros(8), settings, LocalCollective(), True)
    (erm_grad,) = torch.autograd.grad(objs[0], model.gate.mu)
    expected = erm_grad / initial[1, 0].float() + 0.5 * 2 * model.gate.mu.detach()
    torch.testing.assert_close(model.gate.mu.grad, expected, rtol=1e-5, atol=1e-7)


def test_learn_mask_logs_epochs() -> None:
    backbone, train = _backbone()
    labels = np.arange(len(train)) % 2
    cfg = MaskConfig(epochs=2, warmup_steps=2, steps_per_epoch=3)
    settings = resolve_settings(cfg, cfg.sparsity_weight, cfg.irm_weight)
    result = learn_mask(backbone, train, labels, 2, cfg, settings, batch_size=16, n_negatives=4, seed=0,
                        negative_pool=10)
    assert result.mask.shape == (8,) and result.mask.dtype == np.float32
    assert [h["epoch"] for h in result.history] == [0, 1]
    first, second = result.history
    assert first["modes"] == {"warmup": 2, "balance": 1} or sum(first["modes"].values()) == 3
    assert second["alpha"] is not None and sum(second["alpha"]) == pytest.approx(1.0)
    assert 0.0 <= second["density"] <= 1.0 and 0.0 <= second["fraction_open"] <= 1.0
    again = learn_mask(backbone, train, labels, 2, cfg, settings, batch_size=16, n_negatives=4, seed=0,
                       negative_pool=10)
    np.testing.assert_array_equal(result.mask, again.mask)


def test_epochs_log_how_far_the_gates_moved() -> None:
    backbone, train = _backbone()
    labels = np.arange(len(train)) % 2
    cfg = MaskConfig(epochs=3, warmup_steps=2, steps_per_epoch=3, lr=0.5, sparsity_weight=0.5)
    settings = resolve_settings(cfg, cfg.sparsity_weight, cfg.irm_weight)
    history = learn_mask(backbone, train, labels, 2, cfg, settings, batch_size=16, n_negatives=4, seed=0).history
    for record in history:
        assert 0.0 <= record["gate_change_mean"] <= record["gate_change_max"] <= 1.0
        assert 0.0 <= record["fraction_closed"] <= 1.0
    assert history[0]["gate_change_max"] > 0.0  # measured from the start at 0.5: an lr of 0.5 moves the gates
    assert history[-1]["fraction_closed"] > 0.0  # a strong sparsity weight closes some gates ...
    assert sum(r["gates_crossed"] for r in history) >= round(8 * history[-1]["fraction_closed"])  # ... each once


@pytest.mark.parametrize("pooled", [False, True])
def test_closed_form_env_grads_equal_autograd(pooled: bool) -> None:
    from painvrl.invariance.penalties import per_env_param_grads

    backbone, train = _backbone(dtype=torch.float64)
    model = _mask_model(backbone, torch.float64)
    gates = model.gates(torch.randn(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    losses, cache = model.env_forward(gates, _batches(train, pooled=pooled))
    closed = model.env_weight_grads(cache)
    auto = per_env_param_grads(list(losses), model.weight)
    torch.testing.assert_close(closed, auto, rtol=1e-10, atol=1e-12)
    probe = torch.randn(closed.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for param in model.trainable():
        (g_closed,) = torch.autograd.grad((closed * probe).sum(), param, retain_graph=True)
        (g_auto,) = torch.autograd.grad((auto * probe).sum(), param, retain_graph=True)
        torch.testing.assert_close(g_closed, g_auto, rtol=1e-9, atol=1e-12)


def test_init_from_pretrained_reproduces_pretrained_scores() -> None:
    """W = 2 W_pre at gates 0.5 gives exactly the pretrained item vectors (False: a fresh random W)."""
    backbone, _train = _backbone()
    with torch.no_grad():
        backbone.encoder.weight.copy_(torch.randn(4, 8, generator=torch.Generator().manual_seed(7)))
    warm = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5), init_from_pretrained=True)
    fresh = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5), init_from_pretrained=False)
    items = torch.arange(30)
    expected = backbone.encoder(backbone.features[items])
    gates = warm.gate.mask()
    torch.testing.assert_close((warm.features[items] * gates) @ warm.weight.T, expected)
    assert not torch.allclose((fresh.features[items] * gates) @ fresh.weight.T, expected)


def test_normalisation_constants_are_recorded_again_at_the_first_pareto_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At step 0 the projection is fresh and the IRM value is init noise; the constants the solver divides by
    must be the losses of the first Pareto step, after the ERM warm-up."""
    from painvrl.invariance import masks

    backbone, train = _backbone()
    labels = np.arange(len(train)) % 2
    cfg = MaskConfig(epochs=2, warmup_steps=2, steps_per_epoch=3)
    settings = resolve_settings(cfg, cfg.sparsity_weight, cfg.irm_weight)
    calls: list[tuple[Any, Any, bool, list[float]]] = []
    real = masks.mask_step

    def spy(*args: Any, **kwargs: Any) -> Any:
        initial_in = args[6]
        stats, initial_out = real(*args, **kwargs)
        calls.append((None if initial_in is None else initial_in.clone(), initial_out.clone(), kwargs["warmup"],
                      list(stats.losses)))
        return stats, initial_out

    monkeypatch.setattr(masks, "mask_step", spy)
    learn_mask(backbone, train, labels, 2, cfg, settings, batch_size=16, n_negatives=4, seed=0)
    assert [c[2] for c in calls] == [True, True, False, False, False, False]
    assert calls[0][0] is None and calls[1][0] is not None
    assert calls[2][0] is None  # the first Pareto step records the constants afresh ...
    torch.testing.assert_close(calls[2][1][1], torch.tensor(calls[2][3], dtype=torch.float64))  # ... its losses
    assert not torch.equal(calls[2][1], calls[0][1])
    for later in calls[3:]:
        torch.testing.assert_close(later[0], calls[2][1])


def _range_constants(model: LinearMaskModel, batches: list[EnvBatch], settings: StepSettings
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective values, normalisation constants, ERM loss with every gate closed) at the current parameters."""
    objectives, _ = compute_objectives(model, batches, torch.zeros(8, dtype=torch.float64), settings,
                                       LocalCollective())
    losses = torch.stack([o.detach() for o in objectives])
    constants = normalisation_constants(model, batches, losses, settings, LocalCollective())
    closed = model.env_partial_losses(torch.zeros(8, dtype=torch.float64), batches).mean()
    return losses, constants, closed + model.l2 * model.weight.pow(2).sum()


def test_range_normalisation_measures_erm_from_its_fit_to_all_gates_closed() -> None:
    backbone, train = _backbone(dtype=torch.float64)
    model = _mask_model(backbone, torch.float64)
    batches = _batches(train)
    settings = StepSettings(penalty="vrex", normalisation="range")
    losses, constants, nadir = _range_constants(model, batches, settings)
    # This projection is random, not an ERM fit: closing every gate LOWERS the loss, no range -> start values.
    assert nadir < losses[0]
    torch.testing.assert_close(constants, torch.stack([torch.zeros(2), losses]).double())
    fit = torch.optim.Adam([model.weight], lr=0.05)  # an ERM fit of W: the loss rises when the gates close
    for _ in range(50):
        fit.zero_grad()
        compute_objectives(model, batches, torch.zeros(8, dtype=torch.float64), settings, LocalCollective(),
                           erm_only=True)[0][0].backward()
        fit.step()
    losses, constants, nadir = _range_constants(model, batches, settings)
    assert nadir > losses[0]
    torch.testing.assert_close(constants[0], torch.stack([losses[0], torch.zeros(())]).double())
    torch.testing.assert_close(constants[1], torch.stack([nadir - losses[0], losses[1]]).double())
    start = normalisation_constants(model, batches, losses, StepSettings(penalty="vrex"), LocalCollective())
    torch.testing.assert_close(start, torch.stack([torch.zeros(2), losses]).double())
    with pytest.raises(ValueError, match="normalisation"):
        normalisation_constants(model, batches, losses, StepSettings(normalisation="ideal"), LocalCollective())


def test_range_normalisation_is_wired_from_the_config() -> None:
    assert resolve_settings(MaskConfig(normalisation="range"), 0.1, 1.0).normalisation == "range"
    assert resolve_settings(MaskConfig(), 0.1, 1.0).normalisation == "start"


def test_item_ids_off_scores_items_by_their_features_alone() -> None:
    """mask.use_item_ids = False: the item vector is [0 ; W (g * f)], the pretrained Q is left as it was, and the
    closed-form per-environment gradients still equal autograd's."""
    from painvrl.invariance.penalties import per_env_param_grads

    backbone, train = _backbone(dtype=torch.float64)
    q_before = backbone.item_embedding.detach().clone()
    with_ids = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5), init_from_pretrained=False)
    without = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5), init_from_pretrained=False,
                        use_item_ids=False)
    with_ids, without = with_ids.to(torch.float64), without.to(torch.float64)
    torch.testing.assert_close(backbone.item_embedding.detach(), q_before)
    assert (without.backbone.item_embedding == 0).all() and not (with_ids.backbone.item_embedding == 0).all()
    batches = _batches(train)
    gates = without.gates(torch.zeros(8, dtype=torch.float64))
    losses, cache = without.env_forward(gates, batches)
    with torch.no_grad():
        backbone.item_embedding.zero_()
    reference = LinearMaskModel(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5),
                          init_from_pretrained=False).to(torch.float64)
    torch.testing.assert_close(losses, reference.env_partial_losses(gates, batches))
    assert not torch.allclose(losses, with_ids.env_partial_losses(gates, batches))
    torch.testing.assert_close(without.env_weight_grads(cache), per_env_param_grads(list(losses), without.weight),
                               rtol=1e-10, atol=1e-12)


def test_item_ids_option_reaches_the_mask_model() -> None:
    backbone, train = _backbone()
    labels = np.arange(len(train)) % 2
    masks = {}
    for use_item_ids in (True, False):
        cfg = MaskConfig(epochs=2, warmup_steps=2, steps_per_epoch=3, use_item_ids=use_item_ids)
        settings = resolve_settings(cfg, cfg.sparsity_weight, cfg.irm_weight)
        masks[use_item_ids] = learn_mask(backbone, train, labels, 2, cfg, settings, batch_size=16, n_negatives=4,
                                     seed=0, negative_pool=10).mask
    assert not np.array_equal(masks[True], masks[False])
