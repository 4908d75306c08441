"""painvrl's imports flow one way: a layer imports only itself and the layers below it, and no module import
cycle exists. Every import counts, including imports inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "painvrl"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "console", "registry"),
    ("config",),
    ("data",),
    ("distributed",),
    ("model",),
    ("evaluation",),
    ("invariance",),
    ("training",),
    ("study",),
    ("analysis",),
    ("workflows",),
    ("runner", "serving", "cli", "__main__", "__init__"),  # entry points
)
"""Lowest first. ``__init__`` is the package's own top-level module (its public API)."""


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from pkg import submodule`` resolves to the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = name.split(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == top and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int:
    parts = module.split(".")
    segment = parts[1] if len(parts) > 1 else "__init__"
    for index, members in enumerate(layers):
        if segment in members:
            return index
    raise AssertionError(f"{module}: its top-level part {segment!r} is in no layer; add it to LAYERS")


def upward_imports(graph: dict[str, set[str]], layers: Sequence[Sequence[str]]) -> list[str]:
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if layer_of(target, layers) > layer_of(source, layers))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in import_graph(PACKAGE_ROOT):
        layer_of(module, LAYERS)


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports(import_graph(PACKAGE_ROOT), LAYERS) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph(PACKAGE_ROOT)) == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("statement", ["from pkg.high.top import thing", "import pkg.high.top",
                                       "from pkg.high import top", "from ..high import top"])
def test_checker_catches_an_upward_import_in_a_function(tmp_path: Path, statement: str) -> None:
    package = _write_package(tmp_path, {
        "__init__.py": "", "low/__init__.py": "", "high/__init__.py": "",
        "high/top.py": "from pkg.low import base\nthing = 1\n",
        "low/base.py": f"def f():\n    {statement}\n"})
    layers = (("low",), ("high",), ("__init__",))
    assert upward_imports(import_graph(package), layers) == ["pkg.low.base -> pkg.high.top"]


def test_checker_catches_a_cycle_within_a_layer(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "__init__.py": "", "low/__init__.py": "",
        "low/a.py": "from pkg.low.b import y\nx = 1\n", "low/b.py": "from pkg.low import c\ny = 1\n",
        "low/c.py": "def f():\n    from pkg.low.a import x\n", "low/d.py": "from pkg.low.a import x\n"})
    graph = import_graph(package)
    assert cycles(graph) == [["pkg.low.a", "pkg.low.b", "pkg.low.c"]]
    assert upward_imports(graph, (("low",), ("__init__",))) == []
