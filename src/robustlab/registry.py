"""One registry per kind of thing (models, layers, losses, datasets, experiments).

Everything configurable is found by name, and an unknown name is an error that
lists the known ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registry entry carries; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._listeners: list[Callable[[str, T], None]] = []

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("lipconvnet")``; the object's __name__ by default."""

        def add(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]  # registered objects are named
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[key] = obj
        for callback in self._listeners:
            callback(key, obj)

    def on_add(self, callback: Callable[[str, T], None]) -> None:
        """Calls ``callback(name, obj)`` for every entry: those there now and each one added later
        (the models of a layer family registered after ``nn.models`` was imported)."""
        self._listeners.append(callback)
        for key, obj in list(self._entries.items()):
            callback(key, obj)

    def get(self, name: str) -> T:
        try:
            return self._entries[name.lower()]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"known {_plural(self.kind)}: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'cifar10'?)`` for a close miss of one of ``known``, else ``""``: the
    hint an unknown name, config key or preset gets in front of the list of valid ones."""
    close = difflib.get_close_matches(str(name).lower(), [str(k) for k in known], n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"  # layer family -> layer families
    return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")
