"""Write docs/configuration.md from the run config's dataclasses: every field, its type, default and docstring.

    python docs/generate_configuration.py           # rewrite docs/configuration.md
    python docs/generate_configuration.py --check   # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "configuration.md"

INTRO = """# Configuration

Every run is described by one typed config. Set fields in a YAML file (`--config my.yaml`, sections as nested
mappings) or on the command line (`--set section.field=value`, repeatable; lists as `--set 'a.b=[1,2]'`).
`painvrl validate-config [--config FILE] [--set ...]` checks a config and prints it fully resolved; a wrong name,
type or value is refused with an error that names the field. A study YAML holds a run config under `base:`.

This page is generated from the field docstrings in `painvrl/config.py` by `python docs/generate_configuration.py`.
"""


def field_docstrings(cls: type) -> dict[str, str]:
    """Docstring of each field: the string literal right after the field's annotated assignment."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return f"`{value!r}`" if not dataclasses.is_dataclass(value) else "(section)"


def _type(cls: type, name: str) -> str:
    annotation = inspect.get_annotations(cls).get(name, "")
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return f"`{text}`".replace("|", "\\|")


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    docs = field_docstrings(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append((prefix + f.name, _type(cls, f.name), _default(f), docs.get(f.name, "").replace("|", "\\|")))
    return out


def render() -> str:
    from painvrl.config import Config

    parts = [INTRO, "## Top level\n", "| field | type | default | description |", "|---|---|---|---|"]
    sections = []
    for name, type_, default, doc in rows(Config):
        field_type = {f.name: f for f in dataclasses.fields(Config)}[name.split(".")[-1]]
        if field_type.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
                field_type.default_factory()):
            sections.append((name, field_type.default_factory().__class__, doc))
            continue
        parts.append(f"| `{name}` | {type_} | {default} | {doc} |")
    for name, cls, doc in sections:
        parts += ["", f"## `{name}`: {doc}", "", "| field | type | default | description |", "|---|---|---|---|"]
        parts += [f"| `{n}` | {t} | {d} | {text} |" for n, t, d, text in rows(cls, name + ".")]
    return "\n".join(parts) + "\n"


def undocumented() -> list[str]:
    """Dotted names of fields without a docstring."""
    from painvrl.config import Config

    missing = [n for n, _, _, doc in rows(Config) if not doc]
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory()):
            missing += [n for n, _, _, doc in rows(f.default_factory().__class__, f.name + ".") if not doc]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python docs/generate_configuration.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
