"""The registries (painvrl/registry.py): dict-like access, errors that name the config field and the known names,
and third-party entries read lazily from an entry-point group (a package's dist-info on sys.path, as pip
installs it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from painvrl.errors import PainvrlInputError
from painvrl.invariance.pareto import SOLVERS
from painvrl.invariance.penalties import PENALTIES
from painvrl.model.registry import MODELS
from painvrl.registry import Registry, UnknownNameError
from painvrl.training.methods import METHODS

GROUP = "painvrl_tests.things"


def _registry() -> Registry[int]:
    return Registry("thing", "section.thing", GROUP, {"one": 1, "two": 2}, accepts=lambda v: isinstance(v, int))


def test_dict_like_access_and_an_error_naming_the_field() -> None:
    things = _registry()
    assert things["one"] == 1 and "two" in things and "three" not in things and 3 not in things
    assert sorted(things) == ["one", "two"] and len(things) == 2 and things.get("three") is None
    things["three"] = 3
    assert things.lookup("three") == 3
    del things["three"]
    with pytest.raises(PainvrlInputError, match=r"^config field 'section\.thing': unknown thing 'four' "
                                                r"\(known: one, two\)$"):
        things["four"]
    with pytest.raises(KeyError):  # still a KeyError for dict idioms
        things["four"]
    with pytest.raises(UnknownNameError, match=r"'other\.field'"):
        things.lookup("four", "other.field")


@pytest.mark.parametrize(("registry", "field"), [(MODELS, "model.name"), (METHODS, "method"),
                                                 (PENALTIES, "mask.penalty"), (SOLVERS, "mask.solver")])
def test_every_registry_names_its_field(registry: Registry[object], field: str) -> None:
    with pytest.raises(PainvrlInputError, match=rf"^config field '{field}': unknown .* 'nope' \(known: "):
        registry["nope"]


def _install_dist(root: Path, entry_points: str, module: str) -> None:
    """A package as pip leaves it: the module and a dist-info folder with its entry points."""
    (root / "things_plugin.py").write_text(textwrap.dedent(module))
    info = root / "things_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: things-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{textwrap.dedent(entry_points)}")


def test_entry_points_are_read_lazily_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    things = _registry()
    assert "plugged" not in things
    _install_dist(tmp_path, "plugged = things_plugin:PLUGGED\nwrong = things_plugin:WRONG\n"
                            "broken = things_plugin:MISSING\n",
                  "PLUGGED = 42\nWRONG = 'not an int'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugged" in things and things["plugged"] == 42  # found at lookup, after the registry was built
    assert "plugged" not in things.registered() and "one" in things.registered()
    things["one"] = 11
    with pytest.raises(PainvrlInputError, match=r"entry point 'wrong' = 'things_plugin:WRONG' of group "
                                                r"'painvrl_tests.things': 'not an int' is not a thing"):
        things["wrong"]
    with pytest.raises(PainvrlInputError, match=r"entry point 'broken' .* cannot load it \(AttributeError"):
        things["broken"]
    assert things["one"] == 11  # a name registered in code wins over an entry point
