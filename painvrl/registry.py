"""Name -> implementation registries (models, methods, IRM penalties, Pareto solvers) with plugin entry points.

A :class:`Registry` is a mutable mapping from the names a config field takes to what they select. Looking up a
name that is not registered raises :class:`UnknownNameError`, a :class:`PainvrlInputError` (and a ``KeyError``,
so dict idioms keep working) whose message names the config field and lists the known names.

Third-party packages register entries through a Python entry-point group (``painvrl.models`` for the
``MODELS`` registry, and so on)::

    [project.entry-points."painvrl.models"]
    feature_mf = "my_package.feature_mf:FeatureMF"

Entry points are read lazily: a name missing from the registry is looked up in the group when it is asked for
(and every entry point is loaded when the registry is listed or iterated), so a plugin reaches every process
that looks the name up, including Ray Train workers and Tune trials, as long as its package is installed
there. An entry registered in code wins over an entry point of the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from importlib import metadata
from typing import Generic, TypeVar

from painvrl.errors import PainvrlInputError

T = TypeVar("T")


class UnknownNameError(PainvrlInputError, KeyError):
    """A registry lookup of a name nothing registers; the message names the config field and the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Names a config field takes -> what they select, extended by the entry points of ``group``."""

    def __init__(self, kind: str, field: str, group: str | None, entries: dict[str, T] | None = None,
                 accepts: Callable[[object], bool] | None = None) -> None:
        """``kind`` names one entry in messages ("model"), ``field`` is the config field whose values index the
        registry ("model.name"), ``group`` the entry-point group of plugins (None: no plugins); ``accepts`` checks
        what an entry point loads (an entry point whose object it refuses is an error naming the entry point)."""
        self.kind, self.field, self.group = kind, field, group
        self._entries: dict[str, T] = dict(entries or {})
        self._accepts = accepts
        self._from_entry_points: set[str] = set()

    def lookup(self, name: str, field: str | None = None) -> T:
        """The entry of ``name``; an unknown name raises :class:`UnknownNameError` naming ``field`` (default: the
        registry's own field) and the known names."""
        if name not in self._entries:
            self._load(name)
        try:
            return self._entries[name]
        except KeyError:
            where = field or self.field
            raise UnknownNameError(f"config field '{where}': unknown {self.kind} {name!r} "
                                   f"(known: {', '.join(self.names())})") from None

    def names(self) -> list[str]:
        """Every registered name, entry points included, sorted."""
        self._load_all()
        return sorted(self._entries)

    def registered(self) -> dict[str, T]:
        """The entries registered in code (the package's own and any added at run time), without reading entry
        points (docs/generate_configuration.py lists these)."""
        return {k: v for k, v in self._entries.items() if k not in self._from_entry_points}

    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def __setitem__(self, name: str, value: T) -> None:
        self._entries[name] = value
        self._from_entry_points.discard(name)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._from_entry_points.discard(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._entries:
            self._load(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_all()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, field={self.field!r}, group={self.group!r}, names={sorted(self._entries)})"

    def _entry_points(self, name: str | None = None) -> list[metadata.EntryPoint]:
        if self.group is None:
            return []
        found = metadata.entry_points(group=self.group)
        return [ep for ep in found if name is None or ep.name == name]

    def _load(self, name: str) -> None:
        for entry_point in self._entry_points(name)[:1]:
            self._add(entry_point)

    def _load_all(self) -> None:
        for entry_point in self._entry_points():
            if entry_point.name not in self._entries:
                self._add(entry_point)

    def _add(self, entry_point: metadata.EntryPoint) -> None:
        where = f"entry point {entry_point.name!r} = {entry_point.value!r} of group {self.group!r}"
        try:
            value = entry_point.load()
        except Exception as error:
            raise PainvrlInputError(f"{where}: cannot load it ({type(error).__name__}: {error})") from error
        if self._accepts is not None and not self._accepts(value):
            raise PainvrlInputError(f"{where}: {value!r} is not a {self.kind} (see docs/extending.md)")
        self._entries[entry_point.name] = value
        self._from_entry_points.add(entry_point.name)
