"""Builds the schema's dataclasses from plain YAML values, checking each value against its declared type;
every error names the dotted field."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from painvrl.config.datasets import MOVIELENS_FIELDS, SYNTHETIC_FIELDS
from painvrl.errors import PainvrlInputError

MOVED_FIELDS = {**{f"dataset.{name}": f"dataset.synthetic.{name}" for name in SYNTHETIC_FIELDS},
                **{f"dataset.{name}": f"dataset.movielens.{name}" for name in MOVIELENS_FIELDS},
                "model.loss_weights": "model.settings.ultragcn.loss_weights"}
"""Keys that moved: old dotted key -> new one (named in the error for a config that still uses the old)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_plain(value: Any) -> bool:
    """A YAML value: None, bool, number, string, or a list / mapping of those."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """Check and convert one YAML value to the declared type; errors name the field."""
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise PainvrlInputError(f"config field '{where}': {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, where)
            except PainvrlInputError as exc:
                errors.append(str(exc))
        raise PainvrlInputError(errors[0] if errors else f"config field '{where}': bad value {value!r}")
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise PainvrlInputError(f"config field '{where}': expected a list, got {value!r}")
        return [coerce_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = get_args(tp)
        if not isinstance(value, dict):
            raise PainvrlInputError(f"config field '{where}': expected a mapping, got {value!r}")
        return {coerce_value(k, key_type, f"{where} (key)"): coerce_value(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if tp is Any:
        if not _is_plain(value):
            raise PainvrlInputError(f"config field '{where}': expected a YAML value, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PainvrlInputError(f"config section '{where}': expected a mapping, got {value!r}")
        return build_section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise PainvrlInputError(f"config field '{where}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise PainvrlInputError(f"config field '{where}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-5" (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PainvrlInputError(f"config field '{where}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PainvrlInputError(f"config field '{where}': expected a string, got {value!r}")
        return value
    raise PainvrlInputError(f"config field '{where}': unsupported type {_type_name(tp)}")


def build_section(cls: Any, values: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            moved = MOVED_FIELDS.get(where)
            if moved is not None:
                raise PainvrlInputError(f"config field '{where}' is now '{moved}'")
            raise PainvrlInputError(f"unknown config field '{where}' (known: {sorted(names)})")
        kwargs[key] = coerce_value(value, hints[key], where)
    return cls(**kwargs)
