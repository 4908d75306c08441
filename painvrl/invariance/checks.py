"""Checks of the invariance settings against the backbone, run before any training (errors name the field)."""

from __future__ import annotations

from painvrl.config import Config
from painvrl.errors import PainvrlInputError
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender


def check_invariance_config(config: Config, model_cls: type[Recommender]) -> None:
    """Refuse settings under which environment identification or mask learning cannot do what they claim."""
    env = config.environments

    def refuse(field: str, message: str) -> None:
        raise PainvrlInputError(f"config field '{field}': {message}")

    if env.source == "hei" and env.n_envs < 2:
        refuse("environments.n_envs", f"is {env.n_envs}; identifying environments needs at least 2 (with one "
               "there is no heterogeneity for the invariance penalties to measure)")
    if not 0.0 <= env.min_size * env.n_envs <= 1.0:
        refuse("environments.min_size", f"{env.min_size} x {env.n_envs} environments must lie in [0, 1]")
    if not 0.0 < env.max_tied <= 1.0:
        refuse("environments.max_tied", "must be in (0, 1]")
    if model_cls.score_factors is Recommender.score_factors and not issubclass(model_cls, LinearContentRecommender):
        refuse("model.name", f"backbone {model_cls.name!r} does not give its score as a product of user and item "
               "factors (Recommender.score_factors), which the invariance methods read as the frozen pair score of "
               "their feature path")
    if env.init_components < 1:
        refuse("environments.init_components", "must be >= 1")
    if config.painvrl.feature_path_epochs < 1:
        refuse("painvrl.feature_path_epochs", "must be >= 1 (an unfitted feature path has no user tastes)")
    if config.painvrl.feature_path_lr <= 0:
        refuse("painvrl.feature_path_lr", "must be > 0")
