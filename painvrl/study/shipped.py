"""The study configs shipped with the package (``painvrl/study/configs/NAME.yaml``), addressable by name.

``painvrl study --config smoke`` reads the shipped ``smoke.yaml``; ``--config path/to/my.yaml`` reads that file.
A path that names no file but ends in ``tune/configs/NAME.yaml`` (the repository folder the shipped configs are
typed from in ``ray job submit`` commands) resolves to the shipped ``NAME``.

Relative ``dataset.path`` values in a shipped config resolve against the working directory (an installed
package has no data beside its configs); in any other study file they resolve against that file's folder.
"""

from __future__ import annotations

from pathlib import Path

from painvrl.errors import PainvrlInputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_STUDY = "default"
SUFFIXES = (".yaml", ".yml")
REPOSITORY_FOLDER = ("tune", "configs")
"""Where a checkout's commands name the shipped configs from: ``tune/configs/NAME.yaml``."""


def shipped_names() -> list[str]:
    """The names of the shipped study configs, sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def shipped_config(name: str) -> Path:
    """The file of the shipped config ``name`` (an error listing the shipped names otherwise)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PainvrlInputError(f"no shipped study config {name!r} (shipped: {', '.join(shipped_names())})")
    return path


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the shipped config files."""
    resolved = Path(path).resolve()
    return resolved.parent == CONFIG_DIR and resolved.suffix == ".yaml"


def _shipped_stem(text: str) -> str | None:
    stem = text
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem if (CONFIG_DIR / f"{stem}.yaml").is_file() else None


def resolve_study_config(value: str | Path) -> Path:
    """The study file ``value`` names: an existing file, a shipped config's name (``smoke`` or ``smoke.yaml``),
    or ``.../tune/configs/NAME.yaml`` of a shipped ``NAME``; anything else is an error naming the shipped
    configs."""
    text = str(value)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if "/" not in text and "\\" not in text:
        stem = _shipped_stem(text)
        if stem is not None:
            return CONFIG_DIR / f"{stem}.yaml"
    elif path.parent.parts[-len(REPOSITORY_FOLDER):] == REPOSITORY_FOLDER:
        stem = _shipped_stem(path.name)
        if stem is not None:
            return CONFIG_DIR / f"{stem}.yaml"
    raise PainvrlInputError(f"--config {text}: no such file and no shipped study config of that name "
                            f"(shipped: {', '.join(shipped_names())})")
