"""Constants and plain helpers shared by the tests (fixtures live in ``conftest.py``).

``UPSTREAM`` holds byte-exact copies of ``../shared/fixtures`` (the upstream TRISA
vectors), so a fresh clone tests without the shared folder beside it.
``PKI`` is the committed test PKI made by ``make fixtures`` (``certs/fixtures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = Path(__file__).resolve().parent / "upstream"
UPSTREAM_TRISA = UPSTREAM / "upstream-trisa"
UPSTREAM_SECTIGO = UPSTREAM / "upstream-sectigo"
PKI = ROOT / "certs" / "fixtures"

#: the local Sectigo service's user in the Sectigo tests (the ``emu`` fixture)
SECTIGO_USER, SECTIGO_PASSWORD = "cathyadmin", "supersecretsquirrel"


@dataclass(frozen=True)
class CliResult:
    """What an in-process CLI run returns (the fields of ``CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


__all__ = [
    "PKI",
    "ROOT",
    "SECTIGO_PASSWORD",
    "SECTIGO_USER",
    "UPSTREAM",
    "UPSTREAM_SECTIGO",
    "UPSTREAM_TRISA",
    "CliResult",
    "bob_key",
]


def bob_key(net: Any) -> Any:
    """The key an originator seals to for Bob in the simulated network."""
    return net.bob.identity.leaf.public_key()
