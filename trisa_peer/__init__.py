"""trisa-peer: a TRISA Travel Rule toolkit that enforces all eight handshake steps."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
