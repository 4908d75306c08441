"""Typed run configuration: the schema (one dataclass per section), YAML files and ``--set`` overrides, and
cross-field validation. Every error names the dotted field it is about."""

from __future__ import annotations

from painvrl.config.datasets import (
    MOVIELENS_FIELDS,
    SYNTHETIC_FIELDS,
    DatasetConfig,
    MovieLensConfig,
    SyntheticConfig,
)
from painvrl.config.loading import (
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
    load_config_values,
    parse_override,
    resolve_dataset_paths,
    set_dotted,
)
from painvrl.config.schema import (
    Config,
    ConvertConfig,
    EnvironmentsConfig,
    EvalConfig,
    MaskConfig,
    ModelConfig,
    PainvrlConfig,
    ScalingConfig,
    TrainConfig,
)
from painvrl.config.validation import validate_config

__all__ = [
    "MOVIELENS_FIELDS", "SYNTHETIC_FIELDS", "Config", "ConvertConfig", "DatasetConfig", "EnvironmentsConfig",
    "EvalConfig", "MaskConfig", "ModelConfig", "MovieLensConfig", "PainvrlConfig", "ScalingConfig",
    "SyntheticConfig", "TrainConfig", "apply_overrides", "config_from_dict", "dump_config", "load_config",
    "load_config_values", "parse_override", "resolve_dataset_paths", "set_dotted", "validate_config",
]
