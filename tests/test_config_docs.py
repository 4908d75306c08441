"""docs/configuration.md is generated from painvrl/config.py and must stay in sync with it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "generate_configuration.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_configuration", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_up_to_date() -> None:
    message = _generator().check()
    assert message is None, f"{message}: docs/configuration.md must be regenerated with " \
        "`python docs/generate_configuration.py`"


def test_every_field_has_a_docstring() -> None:
    generator = _generator()
    missing = [row.name for _, _, rows in generator.sections() for row in rows if not row.description.strip()]
    assert not missing, f"config fields without a docstring in painvrl/config.py: {missing}"


def test_every_section_is_documented() -> None:
    generator = _generator()
    text = generator.render()
    for _, _, rows in generator.sections():
        assert rows
        for row in rows:
            assert f"| `{row.name}` |" in text
    assert "mask.pref_ood" in text
