"""Looking a peer up in the directory as a handshake step (1 and 4), failing closed.

A missing or unverified record is :class:`~trisa_peer.errors.PeerNotRegisteredError`;
a directory that cannot answer is a :class:`~trisa_peer.errors.HandshakeError` with
reason :attr:`~trisa_peer.steps.Reason.DIRECTORY_UNAVAILABLE` (the caller should try
again later, and a server answers UNAVAILABLE).

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import contextlib
import logging

from .errors import (
    DirectoryError,
    DirectoryNotFoundError,
    HandshakeError,
    PeerNotRegisteredError,
    TrisaPeerError,
)
from .logtext import peer_text
from .records import DirectoryLookup, PeerRecord
from .steps import HandshakeStep, Reason

__all__ = ["lookup_peer"]

log = logging.getLogger("trisa_peer.handshake")


def lookup_peer(
    directory: DirectoryLookup, cn: str, *, step: HandshakeStep, fresh: bool = False
) -> PeerRecord:
    """The VERIFIED record of ``cn`` (a common name or id), as step ``step``."""
    if not cn.strip():
        raise PeerNotRegisteredError(
            "the certificate has no common name to look up", step=step, reason=Reason.NO_COMMON_NAME
        )
    try:
        return directory.lookup(common_name=cn, fresh=fresh)
    except DirectoryNotFoundError as exc:
        status = None
        with contextlib.suppress(DirectoryError):
            status = directory.verification_status(cn)
        if status and status != "VERIFIED":
            why, reason = f"is registered but not VERIFIED (status {status})", Reason.NOT_VERIFIED
        else:
            why, reason = "has no VERIFIED directory record", Reason.NOT_REGISTERED
        raise PeerNotRegisteredError(f"{cn!r} {why}", step=step, peer=cn, reason=reason) from exc
    except DirectoryError as exc:
        # The detail (addresses, gRPC text) goes to our log, not to the peer.
        log.warning("directory unavailable while looking up %s: %s", peer_text(cn),
                    peer_text(str(exc), 300))
        raise HandshakeError(
            f"directory unavailable while looking up {cn!r}; try again later",
            step=step,
            peer=cn,
            reason=Reason.DIRECTORY_UNAVAILABLE,
        ) from exc
    except TrisaPeerError as exc:  # e.g. a name the directory client refuses
        raise PeerNotRegisteredError(
            f"cannot look {cn!r} up in the directory: {exc}", step=step, peer=cn,
            reason=Reason.NOT_REGISTERED,
        ) from exc
