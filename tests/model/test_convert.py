"""Convert module: shapes of every mode, invariant_only == W(m*f), attention weights, fixed mask."""

from __future__ import annotations

import pytest
import torch

from painvrl.errors import PainvrlInputError
from painvrl.model.convert import CONVERT_MODES, build_final_encoder


@pytest.mark.parametrize("mode", CONVERT_MODES)
def test_modes_map_rows_to_k_f(mode: str) -> None:
    torch.manual_seed(0)
    mask = torch.rand(10)
    enc = build_final_encoder(mode, mask, 10, 6, init_std=0.1, attention_dim=4)
    out = enc(torch.randn(7, 10))
    assert out.shape == (7, 6)
    out.sum().backward()
    assert "mask" in dict(enc.named_buffers()) and all(n != "mask" for n, _ in enc.named_parameters())
    assert enc.w_inv.grad is not None and enc.w_inv.grad.abs().sum() > 0


def test_invariant_only_equals_projection_of_masked_features() -> None:
    torch.manual_seed(1)
    mask = (torch.rand(8) > 0.5).float()
    enc = build_final_encoder("invariant_only", mask, 8, 3, init_std=0.5)
    f = torch.randn(5, 8)
    torch.testing.assert_close(enc(f), (mask * f) @ enc.w_inv.T)
    # variant dims do not matter at all
    torch.testing.assert_close(enc(f + (1 - mask) * torch.randn(5, 8)), enc(f))


def test_attention_is_convex_combination_per_item() -> None:
    torch.manual_seed(2)
    enc = build_final_encoder("attention", torch.full((6,), 0.5), 6, 4, init_std=0.5, attention_dim=5)
    f = torch.randn(9, 6)
    h_inv, h_var = enc.parts(f)
    a = enc.weights(h_inv, h_var)
    torch.testing.assert_close(a.sum(1), torch.ones(9))
    assert a[:, 0].std() > 0  # per item, not global
    torch.testing.assert_close(enc(f), a[:, :1] * h_inv + a[:, 1:] * h_var)
    glob = build_final_encoder("global", torch.full((6,), 0.5), 6, 4)
    h_inv, h_var = glob.parts(f)
    torch.testing.assert_close(glob(f), 0.5 * h_inv + 0.5 * h_var)  # zero logits: equal weights


def test_bad_mode_and_mask_shape() -> None:
    with pytest.raises(PainvrlInputError, match=r"convert\.mode"):
        build_final_encoder("sum", torch.zeros(4), 4, 2)
    with pytest.raises(PainvrlInputError, match="mask"):
        build_final_encoder("attention", torch.zeros(3), 4, 2)
