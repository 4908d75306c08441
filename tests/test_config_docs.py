"""docs/configuration.md is generated from the config dataclasses and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_configuration", ROOT / "docs" / "generate_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_up_to_date() -> None:
    expected = generator().render()
    actual = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/configuration.md is out of date: run python docs/generate_configuration.py"


def test_every_config_field_has_a_docstring() -> None:
    missing = generator().undocumented()
    assert not missing, f"config fields without a docstring in painvrl/config.py: {missing}"


def test_the_page_lists_every_section_and_a_known_field() -> None:
    text = generator().render()
    for section in ("dataset", "model", "train", "environments", "mask", "convert", "painvrl", "eval", "scaling"):
        assert f"## `{section}`" in text
    assert "| `mask.pref_ood` |" in text and "| `method` |" in text
