"""Convert module of the final recommender (docs/algorithm.md): combine invariant and variant parts.

With a fixed mask m (a buffer, never trained here): h_inv = W_inv(m * f), h_var = W_var((1 - m) * f), and

- ``attention`` (default): per-item [a_inv, a_var] = softmax(q^T tanh(A h_inv + b), q^T tanh(A h_var + b)),
  h = a_inv h_inv + a_var h_var;
- ``global``: the same weighted sum with two learned logits shared by all items;
- ``invariant_only``: h = h_inv (InvRL's final model);
- ``concat``: h = P [h_inv ; h_var] with a learned [k_f, 2 k_f] projection back to k_f;
- ``preference``: h = h_inv + z h_var, where during training z ~ Bernoulli(r_ERM) independently per item and at
  evaluation z = r_ERM, the ERM share of the preference vector (1 - pref_ood). The variant part serves the IID
  side as often as the preference asks for it; an item ranked without it (probability r_OOD in training) must be
  ranked from the invariant part alone, so the preference, not ERM, sets how much the spurious dims can weigh.

Every mode maps feature rows [b, d] to [b, k_f], so it plugs into any Recommender as its encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from painvrl.errors import PainvrlInputError

CONVERT_MODES = ("attention", "global", "invariant_only", "concat", "preference")


def _projection(in_dim: int, out_dim: int, init_std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(out_dim, in_dim) * init_std)


class ConvertEncoder(nn.Module):
    """Feature encoder [b, d] -> [b, k_f] combining the masked (invariant) and complementary (variant) parts."""

    mask: torch.Tensor

    def __init__(self, mode: str, mask: torch.Tensor, feature_dim: int, k_f: int, init_std: float = 0.01,
                 attention_dim: int = 32, variant_keep: float = 1.0) -> None:
        super().__init__()
        if mode not in CONVERT_MODES:
            raise PainvrlInputError(f"config field 'convert.mode': {mode!r} is not one of {list(CONVERT_MODES)}")
        if mask.shape != (feature_dim,):
            raise PainvrlInputError(f"convert module: mask has shape {tuple(mask.shape)}, expected ({feature_dim},)")
        if not 0.0 <= variant_keep <= 1.0:
            raise PainvrlInputError(f"convert module: variant share {variant_keep} must lie in [0, 1]")
        self.mode, self.feature_dim, self.k_f, self.variant_keep = mode, feature_dim, k_f, float(variant_keep)
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())
        self.w_inv = _projection(feature_dim, k_f, init_std)
        if mode != "invariant_only":
            self.w_var = _projection(feature_dim, k_f, init_std)
        if mode == "attention":
            self.att_a = _projection(k_f, attention_dim, init_std)
            self.att_b = nn.Parameter(torch.zeros(attention_dim))
            self.att_q = nn.Parameter(torch.randn(attention_dim) * init_std)
        elif mode == "global":
            self.logits = nn.Parameter(torch.zeros(2))
        elif mode == "concat":
            self.w_out = _projection(2 * k_f, k_f, init_std)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, feature_dim={self.feature_dim}, k_f={self.k_f}"

    def feature_gate(self) -> torch.Tensor | None:
        """The mask for ``invariant_only`` (the only features the model then sees); None when both parts are used."""
        return self.mask if self.mode == "invariant_only" else None

    def parts(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(h_inv, h_var); h_var is None for ``invariant_only``."""
        h_inv = (features * self.mask) @ self.w_inv.T
        if self.mode == "invariant_only":
            return h_inv, None
        return h_inv, (features * (1.0 - self.mask)) @ self.w_var.T

    def weights(self, h_inv: torch.Tensor, h_var: torch.Tensor) -> torch.Tensor:
        """[b, 2] combination weights (a_inv, a_var) for ``attention`` and ``global``."""
        if self.mode == "global":
            return torch.softmax(self.logits, dim=0).expand(h_inv.shape[0], 2)
        score_inv = torch.tanh(h_inv @ self.att_a.T + self.att_b) @ self.att_q
        score_var = torch.tanh(h_var @ self.att_a.T + self.att_b) @ self.att_q
        return torch.softmax(torch.stack([score_inv, score_var], dim=1), dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h_inv, h_var = self.parts(features)
        if h_var is None:
            return h_inv
        if self.mode == "concat":
            return torch.cat([h_inv, h_var], dim=1) @ self.w_out.T
        if self.mode == "preference":
            if not self.training:
                return h_inv + self.variant_keep * h_var
            keep = torch.rand(h_var.shape[0], 1, device=h_var.device) < self.variant_keep
            return h_inv + keep.to(h_var.dtype) * h_var
        a = self.weights(h_inv, h_var)
        return a[:, :1] * h_inv + a[:, 1:] * h_var


def build_final_encoder(mode: str, mask: torch.Tensor, feature_dim: int, k_f: int, init_std: float = 0.01,
                        attention_dim: int = 32, variant_keep: float = 1.0) -> nn.Module:
    """The final model's feature encoder for a convert ``mode`` with the mask fixed as a buffer; ``variant_keep``
    is the ERM share of the preference (``preference`` mode)."""
    return ConvertEncoder(mode, mask, feature_dim, k_f, init_std, attention_dim, variant_keep)
