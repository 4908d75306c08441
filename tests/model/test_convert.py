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


def test_preference_mode_keeps_the_variant_part_at_the_erm_share() -> None:
    torch.manual_seed(3)
    enc = build_final_encoder("preference", torch.full((6,), 0.5), 6, 4, init_std=0.5, variant_keep=0.25)
    f = torch.randn(4000, 6)
    h_inv, h_var = enc.parts(f)
    assert h_var is not None
    enc.eval()
    torch.testing.assert_close(enc(f), h_inv + 0.25 * h_var)
    enc.train()
    out = enc(f)
    kept = ~torch.isclose(out, h_inv).all(dim=1)  # rows whose variant part was added
    assert 0.22 < float(kept.float().mean()) < 0.28
    torch.testing.assert_close(out[kept], (h_inv + h_var)[kept])


def test_the_preference_mode_takes_its_share_from_the_preference() -> None:
    from painvrl.config import load_config
    from painvrl.training.methods import METHODS

    config = load_config(None, ["method=painvrl", "convert.mode=preference", "mask.pref_ood=0.8"])
    spec = METHODS["painvrl"].encoder_spec(config)
    assert spec["variant_keep"] == pytest.approx(0.2)
