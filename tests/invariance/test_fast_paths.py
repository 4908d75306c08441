"""The batched linear models (LinearMaskModel, StackedEnvironmentModels) equal autograd through the backbone's
own per-interaction loss (tests/invariance/autograd_reference.py), on the same UltraGCN and the same weights."""

from __future__ import annotations

import pytest
import torch
from autograd_reference import AutogradMaskModel, EnvironmentModels
from test_masks import _backbone, _batches

from painvrl.invariance.linear_models import LinearMaskModel, StackedEnvironmentModels
from painvrl.invariance.mask_models import MaskModel

SCALES = [torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
          torch.tensor(1.3, dtype=torch.float64, requires_grad=True)]


def _mask_pair(use_item_ids: bool) -> tuple[MaskModel, LinearMaskModel]:
    backbone, _ = _backbone(dtype=torch.float64)
    models = []
    for cls in (AutogradMaskModel, LinearMaskModel):
        model = cls(backbone, 4, 0.01, 0.3, torch.Generator().manual_seed(5), init_from_pretrained=True,
                    use_item_ids=use_item_ids).to(torch.float64)
        with torch.no_grad():
            model.gate.mu.copy_(torch.linspace(-0.3, 0.3, 8, dtype=torch.float64))
        models.append(model)
    return models[0], models[1]  # type: ignore[return-value]


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("use_item_ids", [True, False])
def test_linear_mask_model_equals_autograd(pooled: bool, scaled: bool, use_item_ids: bool) -> None:
    generic, fast = _mask_pair(use_item_ids)
    _, train = _backbone()
    batches = _batches(train, pooled=pooled)
    eps = torch.randn(8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    results = []
    for model in (generic, fast):
        gates = model.gates(eps)
        partials, cache = model.env_forward(gates, batches, SCALES if scaled else None)
        grads = model.env_weight_grads(cache)
        # second order: the IRM penalties backpropagate through dL_k/dW into the gates and W
        second = torch.autograd.grad(grads.pow(2).sum() + partials.sum(), model.trainable())
        results.append((partials.detach(), grads.detach(), [g.detach() for g in second]))
    (p0, g0, s0), (p1, g1, s1) = results
    torch.testing.assert_close(p1, p0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12)
    for a, b in zip(s1, s0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("input_mode", ["variant", "invrl"])
def test_stacked_environment_models_equal_the_generic_ones(input_mode: str) -> None:
    backbone, train = _backbone(dtype=torch.float64)
    mask = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)
    generic = EnvironmentModels(3, backbone, mask, 4, input_mode, l1_rho=0.2, init_std=0.5,
                                generator=torch.Generator().manual_seed(1)).to(torch.float64)
    fast = StackedEnvironmentModels(3, backbone, mask, 4, input_mode, l1_rho=0.2, init_std=0.5,
                                    generator=torch.Generator().manual_seed(1)).to(torch.float64)
    torch.testing.assert_close(fast.weight.detach(), generic.weight.detach())
    gen = torch.Generator().manual_seed(4)
    users, pos = torch.as_tensor(train[:, 0]), torch.as_tensor(train[:, 1])
    negs = torch.randint(30, (len(users), 5), generator=gen)
    envs = torch.randint(3, (len(users),), generator=gen)
    pools = torch.randint(30, (3, 9), generator=gen)
    positions = torch.randint(9, (len(users), 5), generator=gen)
    torch.testing.assert_close(fast.score_all(users, pos), generic.score_all(users, pos))
    torch.testing.assert_close(fast.loss_all(users, pos, negs, chunk=7), generic.loss_all(users, pos, negs, chunk=7))
    torch.testing.assert_close(fast.penalty(), generic.penalty())
    for name, args in (("example_losses", (users, pos, negs, envs)),
                       ("example_losses_pooled", (users, pos, pools, positions, envs))):
        losses = [getattr(model, name)(*args) for model in (generic, fast)]
        torch.testing.assert_close(losses[1], losses[0])
        grads = [torch.autograd.grad(loss.sum(), model.weight)[0] for loss, model in zip(losses, (generic, fast),
                                                                                          strict=True)]
        torch.testing.assert_close(grads[1], grads[0])
