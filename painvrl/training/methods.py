"""The ``METHODS`` registry: what each value of config field ``method`` trains.

A method declares its phases and its overrides; :func:`painvrl.training.pipeline.run_pipeline` runs them:

- ``erm``: one training phase, the backbone with a plain projection of the full features;
- ``oracle``: one training phase on the TRUE invariant dims of the synthetic benchmark (invariant_only convert
  module): the upper bound of what a mask can give;
- ``painvrl``: ERM pretraining, the mask from rounds of HEI and IMG (Pareto-weighted ERM/IRM objectives), then
  a final model trained from scratch with the convert module and the learned mask;
- ``invrl``: the same phases with InvRL's settings, declared as config overrides: the linear solver with
  r = (1, irm_weight), the ||mu||^2 regulariser, the last round's mask and the invariant_only convert module.
- ``ips``: ERM with each positive weighted by its inverse (popularity) propensity (config section ``ips``);
- ``pda``: popularity-deconfounded training: logits f(u, i) + gamma * log m_i in training, f alone for ranking
  (section ``pda``);
- ``dro`` / ``vrex``: ERM pretraining, the environments of one HEI round on the backbone's feature path, then a
  final model trained with GroupDRO's / V-REx's objective over them (sections ``dro``, ``vrex``);
- ``invpref``: an MF backbone as the invariant preference plus variant preferences over environments it infers
  itself by EM, an environment classifier behind gradient reversal (section ``invpref``);

Adding a method is one :class:`Method` entry here (plus its own module if it needs new phases), or one entry
point of group ``painvrl.methods`` in the method's own package (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from painvrl.config import Config
from painvrl.errors import PainvrlInputError
from painvrl.invariance.masks import resolve_settings
from painvrl.registry import Registry
from painvrl.training.objectives import environments, invpref, popularity
from painvrl.training.objectives.base import ObjectiveFactory, erm

MaskSource = Literal["none", "ground_truth", "learned"]


@dataclass(frozen=True)
class Method:
    """What a method trains: where its mask comes from, which encoder the final model uses, and the config
    values it fixes."""

    mask_source: MaskSource = "none"
    """``learned``: pretrain, then HEI + IMG rounds; ``ground_truth``: the dataset's true invariant dims."""
    final_encoder: Literal["projection", "convert"] = "projection"
    """The final model's encoder slot: a plain projection, or the convert module over the mask."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted config fields the method fixes, whatever the config says (``{"mask.solver": "linear"}``)."""
    objective: ObjectiveFactory = erm
    """Builds what the final phase's batch loss is (painvrl/training/objectives/)."""
    environments: bool = False
    """Identify training environments (pretraining + one HEI round) before the final phase, for an objective
    over environments."""
    needs_logit_offset: bool = False
    """The objective adds a term to the backbone's training logits: refused for a backbone whose loss has none
    (Recommender.reads_logit_offset)."""
    needs_mf_backbone: bool = False
    """The objective wraps a matrix-factorisation backbone, score <p_u, q_i> over user and item vectors
    (LinearContentRecommender): refused for any other."""

    @property
    def final_phase(self) -> str:
        return "final" if self.mask_source == "learned" or self.environments else "train"

    def effective_config(self, config: Config) -> Config:
        """``config`` with the method's overrides applied: the resolved config of a run (applied once, by
        :func:`painvrl.training.checks.resolve_run`; the user's config is what a run records)."""
        return with_values(config, self.overrides)

    def encoder_spec(self, config: Config) -> dict[str, Any]:
        """The final model's encoder spec for :func:`painvrl.model.encoders.build_encoder`, from the resolved
        ``config``."""
        if self.final_encoder == "projection":
            return {"encoder": "projection", "mode": None}
        spec: dict[str, Any] = {"encoder": "convert", "mode": config.convert.mode}
        if config.convert.mode == "preference":
            preference = resolve_settings(config.mask, config.mask.sparsity_weight, config.mask.irm_weight).preference
            spec["variant_keep"] = preference[0] / sum(preference)
        return spec


INVRL_SETTINGS = {"mask.solver": "linear", "mask.sparsity": "l2", "mask.normalisation": "start",
                  "painvrl.mask_average": "last", "convert.mode": "invariant_only"}

METHODS: Registry[Method] = Registry("method", "method", "painvrl.methods", {
    "erm": Method(),
    "oracle": Method(mask_source="ground_truth", final_encoder="convert",
                     overrides={"convert.mode": "invariant_only"}),
    "painvrl": Method(mask_source="learned", final_encoder="convert"),
    "invrl": Method(mask_source="learned", final_encoder="convert", overrides=INVRL_SETTINGS),
    "ips": Method(objective=popularity.ips),
    "pda": Method(objective=popularity.pda, needs_logit_offset=True),
    "dro": Method(objective=environments.dro, environments=True),
    "vrex": Method(objective=environments.vrex, environments=True),
    "invpref": Method(objective=invpref.invpref, needs_mf_backbone=True),
}, accepts=lambda value: isinstance(value, Method))


def method_of(config: Config) -> Method:
    """``METHODS[config.method]``, or an error naming the field and the registered methods."""
    return METHODS.lookup(config.method)


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted fields replaced (``{"mask.solver": "linear"}``)."""
    for dotted, value in values.items():
        section_name, _, name = dotted.partition(".")
        section: Any = getattr(config, section_name, None)
        names = {f.name for f in dataclasses.fields(section)} if dataclasses.is_dataclass(section) else set()
        if name not in names:
            raise PainvrlInputError(f"config field 'method': method {config.method!r} overrides {dotted!r}, "
                                    "which is not a config field of the form section.name")
        updated: Any = dataclasses.replace(section, **{name: value})
        config = dataclasses.replace(config, **{section_name: updated})
    return config
