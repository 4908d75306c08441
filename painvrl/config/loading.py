"""Config files and ``--set`` overrides: YAML in, a validated :class:`Config` out, and back to YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from painvrl.config.coercion import build_section
from painvrl.config.schema import Config
from painvrl.config.validation import validate_config
from painvrl.errors import PainvrlInputError


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from nested plain values."""
    config: Config = build_section(Config, values)
    validate_config(config)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=VALUE``; VALUE is read as YAML (numbers, booleans, lists) so ``[1,2]`` works."""
    if "=" not in text:
        raise PainvrlInputError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise PainvrlInputError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise PainvrlInputError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def set_dotted(values: dict[str, Any], path: list[str], value: Any) -> None:
    """Set values[a][b]... = value in place, creating sections on the way."""
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PainvrlInputError(f"'{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=VALUE`` overrides onto nested plain values (a deep copy is returned)."""
    result = json.loads(json.dumps(values))
    for text in overrides:
        path, value = parse_override(text)
        set_dotted(result, path, value)
    return result


def load_config_values(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config file into plain values; relative dataset.path resolves against the file's folder."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise PainvrlInputError(f"config file {file}: not found")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PainvrlInputError(f"config file {file}: not valid YAML ({exc})") from exc
    if not isinstance(values, dict):
        raise PainvrlInputError(f"config file {file}: top level must be a mapping")
    resolve_dataset_paths(values.get("dataset"), file.parent)
    return values


def resolve_dataset_paths(dataset: Any, folder: Path) -> None:
    """Relative dataset.path / dataset.movielens.feature_cache resolve against the folder of the file naming
    them."""
    if not isinstance(dataset, dict):
        return
    places = [(dataset, "path")]
    if isinstance(dataset.get("movielens"), dict):
        places.append((dataset["movielens"], "feature_cache"))
    for section, key in places:
        if isinstance(section.get(key), str):
            value = Path(section[key]).expanduser()
            if not value.is_absolute():
                section[key] = str((folder / value).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or defaults), apply ``--set`` overrides, build and validate."""
    values = apply_overrides(load_config_values(path), overrides or [])
    return config_from_dict(values)


def dump_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
