"""The README's placeholders, refused when pasted literally.

The README's commands carry values only the reader has (``VASP_ID``, ``TOKEN``,
``PKCS12_PASSWORD``, ``SERIAL``). A command given one of them verbatim -- as an
argument, as ``--option=VALUE`` or as the value of a ``TRISA_PEER_*`` or ``SECTIGO_*``
environment variable -- fails before it does anything, with one line naming what to
put there and where it comes from. Only exact, upper-case matches count: a value that
merely contains the word is the user's own. Nothing else about arguments is checked
here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ..errors import ConfigurationError

__all__ = ["PLACEHOLDERS", "refuse_placeholders"]

#: placeholder -> what to put in its place, and where that value comes from
PLACEHOLDERS: Mapping[str, str] = MappingProxyType({
    "VASP_ID": "the directory record id that 'trisa-peer gds register' printed "
               "('registered NAME as ID')",
    "TOKEN": "the token of the verification email "
             "('trisa-peer gds outbox --db FILE --id ID' shows it on a local directory)",
    "PKCS12_PASSWORD": "the PKCS#12 password that 'trisa-peer gds register' printed "
                       "(shown only once)",
    "SERIAL": "a serialNumber that 'sectigo find -n DOMAIN' printed",
})

_ENV_PREFIXES = ("TRISA_PEER_", "SECTIGO_")


def refuse_placeholders(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`ConfigurationError` for the first README placeholder in ``argv``,
    then in the ``TRISA_PEER_*`` / ``SECTIGO_*`` variables of ``environ`` (default:
    the process environment)."""
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        meaning = PLACEHOLDERS.get(value)
        if meaning is not None:
            raise ConfigurationError(
                f"{value} is a placeholder from the README: put {meaning} in its place")
    env = os.environ if environ is None else environ
    for name in sorted(env):
        meaning = PLACEHOLDERS.get(env[name])
        if name.startswith(_ENV_PREFIXES) and meaning is not None:
            raise ConfigurationError(
                f"{name}={env[name]} is a placeholder from the README: "
                f"put {meaning} in its place")
