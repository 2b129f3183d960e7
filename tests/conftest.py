"""Shared test paths.

``UPSTREAM`` holds byte-exact copies of ``../shared/fixtures`` (the upstream TRISA
vectors), so a fresh clone tests without the shared folder beside it.
``PKI`` is the committed test PKI made by ``make fixtures`` (``certs/fixtures``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The gRPC C core logs INFO lines (handshake failures the tests provoke on purpose).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = Path(__file__).resolve().parent / "upstream"
UPSTREAM_TRISA = UPSTREAM / "upstream-trisa"
UPSTREAM_SECTIGO = UPSTREAM / "upstream-sectigo"
PKI = ROOT / "certs" / "fixtures"
