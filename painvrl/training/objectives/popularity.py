"""Popularity-debiasing objectives: inverse propensity weighting (``ips``) and popularity-deconfounded training
(``pda``).

IPS (Schnabel et al., ICML 2016; for implicit feedback Saito et al., WSDM 2020) weights each observed positive
(u, i) by 1 / p_i, the probability that item i was exposed, so the weighted loss is an unbiased estimate of the
loss under uniform exposure. Without logged exposure the propensity is modelled from popularity,
p_i = (n_i / max_j n_j) ** power, clipped below (bounded weights) and self-normalised (mean weight 1 over the
training positives).

PDA (Zhang et al., SIGIR 2021, "Causal Intervention for Leveraging Popularity Bias in Recommendation") models a
click as P(c | u, i) proportional to g(f(u, i)) * m_i ** gamma, with m_i the item's popularity, so that the
backbone's f(u, i) learns the preference with popularity's effect taken out, and ranks by f alone (the
deconfounded ranking, PD). The paper's g is ELU + 1; we take g = exp, which makes the popularity term an
additive logit offset gamma * log m_i that fits BPR and BCE backbones alike (any positive increasing g keeps
the model's decomposition). The offset reaches only the training logits (Recommender.item_logit_offset).
"""

from __future__ import annotations

import numpy as np
import torch

from painvrl.config.ood_methods import IPSConfig
from painvrl.distributed.collective import Collective
from painvrl.errors import PainvrlInputError
from painvrl.model.recommender import Recommender
from painvrl.training.objectives.base import Batch, Objective, ObjectiveContext


def item_counts(train: np.ndarray, n_items: int) -> np.ndarray:
    return np.bincount(np.asarray(train)[:, 1], minlength=n_items).astype(np.float64)


def propensities(counts: np.ndarray, cfg: IPSConfig, true_propensity: np.ndarray | None = None) -> np.ndarray:
    """Clipped propensity of every item: the popularity model, or the dataset's true exposure propensity."""
    if cfg.propensity == "known":
        if true_propensity is None:
            raise PainvrlInputError("config field 'ips.propensity': 'known' needs a dataset that knows its exposure "
                                    "propensities (the synthetic exposure scenario); use 'popularity'")
        raw = np.asarray(true_propensity, dtype=np.float64)
        if raw.shape != counts.shape:
            raise PainvrlInputError(f"ips.propensity=known: the dataset's propensities have shape {raw.shape}, "
                                    f"expected ({len(counts)},)")
    else:
        raw = (counts / max(float(counts.max()), 1.0)) ** cfg.power
    return np.clip(raw, cfg.clip, 1.0)


def ips_weights(train: np.ndarray, n_items: int, cfg: IPSConfig,
                true_propensity: np.ndarray | None = None) -> np.ndarray:
    """float64 [n_train]: 1 / p_i of each training positive, divided by their mean when ``cfg.normalise``."""
    items = np.asarray(train)[:, 1]
    weights = 1.0 / propensities(item_counts(train, n_items), cfg, true_propensity)[items]
    if cfg.normalise and len(weights):
        weights = weights / weights.mean()
    return weights


class IPSObjective(Objective):
    """ERM with each positive's example loss weighted by its inverse propensity."""

    name = "ips"

    def __init__(self, weights: np.ndarray, device: torch.device) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32, device=device)

    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        per_example, example_reg = self.per_example(model, batch)
        return self.total(model, batch, (self.weights[batch.rows] * per_example).sum() + example_reg)

    def summary(self) -> dict[str, float]:
        w = self.weights
        return {"weight_max": float(w.max()), "weight_min": float(w.min()),
                "effective_sample_share": float(w.sum() ** 2 / (w.pow(2).sum() * len(w)))}


def ips(context: ObjectiveContext) -> Objective:
    data = context.data
    truth = data.ground_truth
    true_propensity = getattr(truth, "item_propensity", None) if truth is not None else None
    return IPSObjective(ips_weights(data.train, data.n_items, context.config.ips, true_propensity), context.device)


def popularity_offset(train: np.ndarray, n_items: int, gamma: float) -> np.ndarray:
    """float32 [n_items]: gamma * log m_i, m_i the item's share of training positives (at least one count, so
    an item never seen in training gets the rarest item's offset, not -inf)."""
    counts = np.maximum(item_counts(train, n_items), 1.0)
    return (gamma * np.log(counts / counts.sum())).astype(np.float32)


class PDAObjective(Objective):
    """ERM on logits f(u, i) + gamma * log m_i; the backbone itself (ranking) never sees the offset."""

    name = "pda"

    def __init__(self, offset: np.ndarray, device: torch.device) -> None:
        self.offset = torch.as_tensor(offset, device=device)

    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        model.item_logit_offset = self.offset
        try:
            return super().batch_loss(model, batch, collective)
        finally:
            model.item_logit_offset = None


def pda(context: ObjectiveContext) -> Objective:
    data = context.data
    return PDAObjective(popularity_offset(data.train, data.n_items, context.config.pda.gamma), context.device)
