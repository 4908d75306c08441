"""The ``dataset`` section: which loader, where its files are, how the splits are built. A loader's own
settings live in its sub-section: ``dataset.movielens`` and the synthetic benchmark's ``dataset.synthetic``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SYNTHETIC_FIELDS = ("n_users", "n_items", "n_invariant_factors", "n_spurious_factors", "modality_dims",
                    "interactions_per_user", "train_env_strengths", "train_env_shares", "spurious_shared",
                    "ood_env_strength", "feature_noise", "ood_new_items", "iid_new_items", "scenario",
                    "exposure_front_fraction", "exposure_offpage_max", "exposure_tail", "exposure_strength",
                    "exposure_popularity_noise")
"""Fields of :class:`SyntheticConfig`; under ``dataset.`` itself such a key is refused with the new name."""
MOVIELENS_FIELDS = ("rating_threshold", "text_features", "feature_cache")
"""Fields of :class:`MovieLensConfig`, refused under ``dataset.`` the same way."""


@dataclass
class SyntheticConfig:
    """The synthetic shift benchmark (``dataset.name=synthetic``): planted invariant and spurious factors, or
    (``scenario: exposure``) exposure-biased clicks with a spurious front-page flag."""

    scenario: Literal["features", "exposure"] = "features"
    """Which spurious factor the benchmark plants. ``features``: spurious latent factors whose effect on clicks
    changes by environment (the fields from n_spurious_factors to ood_env_strength). ``exposure``: item
    EXPOSURE is the spurious factor: training, val and test clicks follow an exposure-biased logging policy
    (a front page and a long popularity tail, the ``exposure_*`` fields), the OOD clicks follow uniform
    exposure, as on a random-exposure test set (docs/data.md); n_spurious_factors, train_env_strengths,
    train_env_shares, spurious_shared and ood_env_strength are not read."""
    n_users: int = 600
    """Number of users."""
    n_items: int = 800
    """Number of items."""
    n_invariant_factors: int = 4
    """Latent factors users truly prefer items by, in every environment."""
    n_spurious_factors: int = 4
    """Latent factors whose correlation with clicks shifts by environment."""
    modality_dims: list[int] = field(default_factory=lambda: [32, 32])
    """Feature dimensions of each modality block."""
    interactions_per_user: int = 30
    """Positives drawn per user (over all environments)."""
    train_env_strengths: list[float] = field(default_factory=lambda: [1.1, -1.0])
    """Strength of the spurious factor's effect on clicks in each training environment (one value
    per environment; negative flips the correlation). The default (1.1, -1.0), with shares (3, 1), gives a net
    positive spurious effect in training, so ERM gains some IID recall from the spurious dims and loses OOD
    recall: an IID/OOD trade-off exists for preference sweeps and studies' Pareto fronts."""
    train_env_shares: list[float] = field(default_factory=lambda: [3.0, 1.0])
    """Share of each training environment in a user's training-side positives (same length as
    train_env_strengths, positive, normalised to sum 1). Empty: equal shares."""
    spurious_shared: float = 1.0
    """Fraction (in [0, 1]) of the variance of users' spurious taste that ALL users share:
    v_u = sqrt(rho) v + sqrt(1 - rho) e_u. 0: purely personal taste; 1 (default): one global spurious direction
    (a spurious item property that everybody's clicks follow, like a click-bait thumbnail), so an environment
    is a property of the interaction that can in principle be read off the item."""
    ood_env_strength: float = -1.0
    """Spurious strength in the OOD environment (flipped sign: correlation breaks)."""
    feature_noise: float = 0.1
    """Std of noise added to item features."""
    ood_new_items: float = 0.25
    """Fraction (in [0, 1)) of the items released only in the OOD environment (cold-start OOD).
    The training environments never click them, the OOD environment clicks only them, and the OOD splits are
    ranked among them (``InteractionData.ood_candidates``). The item ID embeddings then cannot carry the
    spurious item popularity into the OOD ranking, so the OOD gap measures the feature pathway, which the mask
    acts on. 0: the OOD environment clicks the same items as training, and the ID embeddings can learn the
    spurious popularity late in training."""
    iid_new_items: float = 0.15
    """Fraction of the items released in the training environments but held out of training
    (cold-start IID). Each user's val and test positives are clicks on these items, drawn in the training
    environments with their strengths, and the IID splits are ranked among them (``InteractionData
    .iid_candidates``); the train split holds the clicks on the other released items. IID and OOD then measure
    the same thing, the ranking of new items through their features, with and without the shift. 0: the val
    and test positives are a random 1/10 each of every user's training-environment clicks (warm IID), whose
    items' ID embeddings already carry the spurious popularity, so invariance costs no IID recall there."""
    exposure_front_fraction: float = 0.2
    """``scenario: exposure``: probability (in [0, 1]) that an item is on the front page. Front-page items have
    the highest exposure propensity (1) and a flag column in the first modality block."""
    exposure_offpage_max: float = 1.0
    """``scenario: exposure``: exposure propensity (in (0, 1]) of the most exposed item off the front page;
    the other off-page items follow the power law of exposure_tail below it. The default 1 with exposure_tail 1
    is Zipf's law over the off-page items: about 95% of the training clicks land on the 20% front-page items."""
    exposure_tail: float = 1.0
    """``scenario: exposure``: power-law exponent (>= 0) of the off-page items' exposure: the off-page item
    of exposure rank r (1 = most exposed, ranks drawn at random) has propensity exposure_offpage_max *
    r^(-exposure_tail). 0: every off-page item is exposed alike (exposure_offpage_max each)."""
    exposure_strength: float = 1.0
    """``scenario: exposure``: how strongly the training policy follows the exposure propensity (>= 0): a
    training click on item i has probability proportional to propensity_i^exposure_strength times the user's
    relevance exp(w_u . z_i / sqrt(k)). 0: uniform exposure in training too (the unbiased reference)."""
    exposure_popularity_noise: float = 0.3
    """``scenario: exposure``: std (>= 0) of the noise on the popularity column of the first modality block,
    the standardised log propensity plus noise of this std (a noisy popularity signal, as view or sales counts
    are). Large values leave the front-page flag as the only clean exposure signal."""


@dataclass
class MovieLensConfig:
    """The MovieLens loader (``dataset.name=movielens``): which ratings are positives, where text features come
    from."""

    rating_threshold: float = 4.0
    """A rating at or above this counts as a positive."""
    text_features: Literal["encode", "derived"] = "encode"
    """Encode titles and tags with MiniLM (cached by content hash) or read precomputed derived/ vectors."""
    feature_cache: str | None = None
    """Folder for cached text features; default: <path>/.painvrl-cache. A relative path resolves against the
    config file's folder."""


@dataclass
class DatasetConfig:
    name: Literal["synthetic", "mmrec", "mmgcn", "movielens"] = "synthetic"
    """Which loader builds the InteractionData."""
    path: str | None = None
    """Folder of the dataset files (mmrec, mmgcn, movielens). Relative paths resolve against the config file."""
    seed: int = 0
    """Seed of data generation and of the splits."""
    split: Literal["random", "temporal", "explicit"] = "random"
    """IID split: per-user random 8:1:1, global temporal, or the split stored in the files (mmrec/mmgcn)."""
    ood: Literal["none", "temporal", "popularity", "explicit", "synthetic"] = "none"
    """OOD split builder: later period, popularity-flattened test, the files' own OOD rows, or the synthetic
    benchmark's shifted environment."""
    temporal_scope: Literal["global", "user"] = "global"
    """Temporal builders: one global time cut, or each user's latest interactions (MovieLens users are active
    in short windows, so a global cut leaves few OOD users with training data)."""
    ood_fraction: float = 0.2
    """Fraction of interactions moved into the OOD split by the temporal / popularity builders."""
    ood_val_fraction: float = 0.0
    """MMRec files with OOD test rows (x_label 4) and no OOD validation rows (3), as random-exposure sets
    (Coat, Yahoo!R3) ship: the fraction of each user's OOD test rows moved into OOD validation, drawn with
    ``seed``. 0: no OOD validation (OOD is then test only, and selection or study objectives on OOD
    validation are refused)."""
    modalities: list[str] = field(default_factory=list)
    """Modalities to keep (empty: all the dataset provides)."""
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    """The MovieLens loader's own settings (read only when ``name`` is ``movielens``)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic benchmark's generator (read only when ``name`` is ``synthetic``)."""
