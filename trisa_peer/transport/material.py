"""Where a node's TLS material comes from, for the server and the client alike.

A :class:`MaterialSource` hands out the current :class:`~.identity.Material` (identity,
trust pool, CRLs) and tells subscribers when it changes;
:class:`~.identity.FileMaterial` watches files on disk, :class:`StaticMaterial` holds
material in memory. ``poll`` is what a running server calls every reload interval and
on SIGHUP (``force=True``): look for new material now, even without a new connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .identity import Material

__all__ = ["MaterialSource", "StaticMaterial"]


class MaterialSource(Protocol):
    def current(self) -> Material: ...

    def subscribe(self, listener: Callable[[Material], None]) -> None: ...

    def poll(self, *, force: bool = False) -> Material: ...


class StaticMaterial:
    """Material held in memory (tests, the simulated network); ``replace`` rotates it."""

    def __init__(self, material: Material) -> None:
        self._material = material
        self._listeners: list[Callable[[Material], None]] = []

    def current(self) -> Material:
        return self._material

    def subscribe(self, listener: Callable[[Material], None]) -> None:
        self._listeners.append(listener)

    def poll(self, *, force: bool = False) -> Material:
        """Nothing to look for: the material changes only by :meth:`replace`."""
        return self._material

    def replace(self, material: Material) -> None:
        self._material = Material(
            material.identity, material.pool, material.crl, self._material.generation + 1
        )
        for listener in self._listeners:
            listener(self._material)
