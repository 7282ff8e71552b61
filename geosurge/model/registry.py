"""One registry shape for every pluggable part (backbones, segmenters, geographic heads), as timm's."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> the class (or factory) that builds one kind of part; configs name parts by these names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, *names: str) -> Callable[[type], type]:
        """Class decorator registering the class under every name given."""

        def deco(cls: type) -> type:
            for n in names:
                self._entries[n] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def find(self, name: str) -> Callable[..., T] | None:
        return self._entries.get(name)

    def check(self, name: str, field: str) -> None:
        """For config validation: an unknown ``name`` in config ``field`` is an error listing the known ones."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}: {field} must be one of {self.names()}, not {name!r}")

    def get(self, name: str) -> Callable[..., T]:
        """The registered class; an unknown name is an error that lists the known ones."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._entries[name]
