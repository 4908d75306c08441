"""Config sections of the out-of-distribution baselines (methods ``ips``, ``pda``, ``dro``, ``vrex``,
``invpref``): one dataclass per method, a docstring under every field, and the checks types alone cannot
express."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from painvrl.errors import PainvrlInputError


@dataclass
class IPSConfig:
    propensity: Literal["popularity", "known"] = "popularity"
    """Where the propensity of an item comes from: ``popularity``, p_i = (n_i / max_j n_j) ** power over the
    training positives; ``known``, the dataset's known exposure propensities (only a synthetic scenario that
    plants exposure has them)."""
    power: float = 0.5
    """Exponent of the popularity propensity (0 gives uniform weights, 1 weights by inverse popularity)."""
    clip: float = 0.05
    """Propensities are clipped below at this value, so no example weighs more than 1 / clip before
    normalisation (the usual clipped-IPS variance control)."""
    normalise: bool = True
    """Self-normalise: divide the weights by their mean over the training positives, so the loss keeps ERM's
    scale and the learning rate keeps its meaning."""


@dataclass
class PDAConfig:
    gamma: float = 0.1
    """Strength of the popularity term: training logits are f(u, i) + gamma * log m_i, with m_i the item's
    share of training positives; ranking uses f(u, i) alone (the deconfounded ranking)."""


@dataclass
class DROConfig:
    step_size: float = 0.01
    """GroupDRO's exponentiated-gradient step eta: after every batch, q_e <- q_e * exp(eta * L_e), renormalised,
    with L_e the batch loss of environment e."""


@dataclass
class VREXConfig:
    weight: float = 1.0
    """beta of V-REx: the objective is the mean of the environments' losses plus beta times their variance."""
    warmup_epochs: int = 0
    """Epochs trained with beta = 0 first (V-REx's penalty annealing), so the variance acts on a fitted model."""


@dataclass
class InvPrefConfig:
    n_envs: int = 2
    """Number of environments InvPref assigns the training positives to (the authors' setting on Yahoo!R3 and
    MovieLens; 6 on MIND)."""
    reassign_every: int = 5
    """Epochs between two EM reassignments of every training positive to the environment whose variant
    prediction fits it best (the authors' interval on Yahoo!R3 and MIND; 20 on MovieLens). The first
    assignment is uniform at random."""
    variant_weight: float = 1.0
    """Weight of the environment-aware loss (the BCE of sigma(f) * sigma(g_e), invariant times variant
    prediction) against the backbone's own loss on the invariant score f. The paper tunes its three loss
    weights per dataset; 1 weighs the two predictions equally."""
    classifier_weight: float = 1.0
    """Weight of the environment classifier's negative log-likelihood on the invariant pair representation
    p_u * q_i (tuned per dataset in the paper)."""
    reversal: float = 1.0
    """Factor alpha of the gradient reversal layer: the classifier minimises its loss while the backbone's
    vectors receive -alpha times the classifier's gradient, so the invariant preference sheds what identifies
    the environment. 1 is the end value of DANN's schedule, which the paper's implementation uses; its tuned
    runs take 1.5 to 1.9."""


def validate_ood_methods(ips: IPSConfig, pda: PDAConfig, dro: DROConfig, vrex: VREXConfig,
                         invpref: InvPrefConfig) -> None:
    """Range checks of the baselines' sections; errors name the field."""
    checks = [
        (ips.power >= 0, "ips.power", "must be >= 0"),
        (0 < ips.clip <= 1, "ips.clip", "must be in (0, 1]"),
        (pda.gamma >= 0, "pda.gamma", "must be >= 0"),
        (dro.step_size > 0, "dro.step_size", "must be > 0"),
        (vrex.weight >= 0, "vrex.weight", "must be >= 0"),
        (vrex.warmup_epochs >= 0, "vrex.warmup_epochs", "must be >= 0"),
        (invpref.n_envs >= 2, "invpref.n_envs", "must be >= 2"),
        (invpref.reassign_every >= 1, "invpref.reassign_every", "must be >= 1"),
        (invpref.variant_weight >= 0, "invpref.variant_weight", "must be >= 0"),
        (invpref.classifier_weight >= 0, "invpref.classifier_weight", "must be >= 0"),
        (invpref.reversal >= 0, "invpref.reversal", "must be >= 0"),
    ]
    for ok, where, message in checks:
        if not ok:
            raise PainvrlInputError(f"config field '{where}': {message}")
