"""The reissue grace: a superseded identity certificate stays acceptable for binding.

After a *planned* reissue (issue 14 section 2) the directory keeps the previous
identity certificate acceptable for steps 4 and 7 until ``grace_until`` (default
:data:`DEFAULT_REISSUE_GRACE`, ``gds serve --reissue-grace`` / ``gds reissue --grace``),
so that peers accept the node while it still presents the old certificate, before its
operator installed the new one. Never after a revocation: :func:`end_grace` is part of
every revocation, and :func:`superseded_in_grace` offers a certificate only while its
record is ``ISSUED`` and not flagged revoked.

Where it lives (no store schema change): the grace is the secret
``<vasp id>-superseded-grace`` holding ``"<SERIAL HEX> <ISO 8601 end>"`` (empty: none);
the certificate itself is its ``gds.models.v1.Certificate`` row (the history every
issuance keeps).

How peers see it without a new proto field: the Lookup reply is unchanged (upstream
TRISA wire format: ``identity_certificate`` is the current certificate); a trisa-peer
directory adds two gRPC response headers, :data:`SUPERSEDED_METADATA` (the superseded
certificate as a serialised ``trisa.gds.models.v1beta1.Certificate``, the upstream
message) and :data:`GRACE_UNTIL_METADATA` (the end of the grace, ISO 8601 UTC). Go
clients ignore unknown headers; :func:`superseded_from_metadata` reads them.

Not checked here: chains, validity and CRLs of the superseded certificate (the binding
side runs steps 3 and 6 on it like on any certificate).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from .._pb.trisa.gds.models.v1beta1 import ca_pb2
from ..errors import CertificateError, DirectoryError
from ..records import SupersededCertificate
from .convert import certificate_from_proto, serial_hex

if TYPE_CHECKING:
    from .service import Directory
    from .store import Changes

__all__ = [
    "DEFAULT_REISSUE_GRACE",
    "GRACE_UNTIL_METADATA",
    "SUPERSEDED_METADATA",
    "end_grace",
    "grace_changes",
    "lookup_grace",
    "lookup_metadata",
    "parse_grace",
    "superseded_from_metadata",
    "superseded_in_grace",
]

#: How long a superseded certificate stays acceptable after a planned reissue.
DEFAULT_REISSUE_GRACE = timedelta(hours=24)

#: Lookup response header: the superseded certificate (``models.Certificate`` bytes).
SUPERSEDED_METADATA = "trisa-peer-superseded-bin"
#: Lookup response header: the end of its grace (ISO 8601, UTC).
GRACE_UNTIL_METADATA = "trisa-peer-superseded-until"


def _secret(vasp_id: str) -> str:
    return f"{vasp_id}-superseded-grace"


def parse_grace(text: str) -> timedelta:
    """``"24h"``, ``"90m"``, ``"30s"``, ``"2d"`` or plain seconds -> timedelta (>= 0);
    ValueError (one line) otherwise, for the CLI to report as a usage error."""
    value = text.strip().lower()
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    scale = units.get(value[-1:], 0.0)
    number = value[:-1] if scale else value
    problem = f"grace {text!r} must be a duration >= 0 (e.g. 24h, 90m, 0)"
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(problem) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(problem)
    return timedelta(seconds=seconds)


def grace_changes(vasp_id: str, serial: str, until: datetime | None) -> Changes:
    """The store change that starts (``until`` set) or ends (``None``) a grace."""
    from .store import Changes  # the directory's store: not loaded by a node's client

    value = f"{serial} {until.astimezone(UTC).isoformat()}" if until is not None else ""
    return Changes(secrets={_secret(vasp_id): value.encode("ascii")})


def end_grace(directory: Directory, vasp_id: str) -> None:
    """No superseded certificate of ``vasp_id`` is acceptable from now on."""
    directory.commit(grace_changes(vasp_id, "", None), what="end grace")


def _stored(directory: Directory, vasp_id: str) -> tuple[str, datetime] | None:
    raw = (directory.store.get_secret(_secret(vasp_id)) or b"").decode("ascii", "replace")
    serial, _, until = raw.partition(" ")
    if not serial or not until:
        return None
    try:
        return serial, datetime.fromisoformat(until)
    except ValueError:
        return None  # fail closed: an unreadable grace is no grace


def superseded_in_grace(
    directory: Directory, vasp_id: str, current_serial: str,
) -> tuple[gds_models_pb2.Certificate, datetime] | None:
    """The superseded certificate of ``vasp_id`` and the end of its grace, while it
    lasts, is not the current one, and its record is ISSUED and not revoked."""
    stored = _stored(directory, vasp_id)
    if stored is None:
        return None
    serial, until = stored
    if serial == current_serial or directory.utcnow() >= until:
        return None
    record = directory.store.get_certificate(serial)
    if record is None or record.status != gds_models_pb2.ISSUED or record.details.revoked:
        return None
    return record, until


def lookup_metadata(
    directory: Directory, vasp_id: str, current: ca_pb2.Certificate,
) -> tuple[tuple[str, str | bytes], ...]:
    """The response headers of a Lookup of ``vasp_id`` (empty outside a grace, and
    when the current certificate is revoked)."""
    return lookup_grace(directory, vasp_id, current)[0]


def lookup_grace(
    directory: Directory, vasp_id: str, current: ca_pb2.Certificate,
) -> tuple[tuple[tuple[str, str | bytes], ...], datetime | None]:
    """:func:`lookup_metadata` and the end of the grace they announce (None without
    headers): the Lookup reply cache serves them only until then."""
    if current.revoked:
        return (), None
    found = superseded_in_grace(directory, vasp_id, serial_hex(
        int.from_bytes(bytes(current.serial_number), "big")))
    if found is None:
        return (), None
    record, until = found
    return ((SUPERSEDED_METADATA, record.details.SerializeToString()),
            (GRACE_UNTIL_METADATA, until.astimezone(UTC).isoformat())), until


def superseded_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None, *, source: str,
) -> SupersededCertificate | None:
    """The superseded certificate a Lookup reply's headers carry (``None`` without);
    headers that do not parse raise DirectoryError (fail closed, like a bad record)."""
    found: dict[str, str | bytes] = {}
    for key, value in metadata or ():
        if key in (SUPERSEDED_METADATA, GRACE_UNTIL_METADATA):
            found.setdefault(key, value)
    data, until = found.get(SUPERSEDED_METADATA), found.get(GRACE_UNTIL_METADATA)
    if data is None or until is None:
        return None
    try:
        proto = ca_pb2.Certificate()
        proto.ParseFromString(bytes(data) if isinstance(data, bytes) else data.encode())
        parsed = certificate_from_proto(proto, source=f"{source} superseded certificate")
        end = datetime.fromisoformat(until if isinstance(until, str) else until.decode())
    except (CertificateError, ValueError) as exc:
        raise DirectoryError(f"{source}: unreadable superseded certificate: {exc}") from exc
    if parsed is None or end.tzinfo is None or proto.revoked:
        return None
    return SupersededCertificate(parsed[0], parsed[1], end)


def history(
    directory: Directory, vasp_id: str, current_serial: str,
) -> Sequence[tuple[gds_models_pb2.Certificate, str]]:
    """Every identity certificate of ``vasp_id`` with its status for ``gds certs``:
    ``current``, ``superseded, grace until T``, ``superseded``, ``revoked``, ``expired``."""
    grace = superseded_in_grace(directory, vasp_id, current_serial)
    rows = []
    for record in directory.store.certificates_for(vasp_id):
        if record.status == gds_models_pb2.REVOKED or record.details.revoked:
            status = "revoked"
        elif record.status == gds_models_pb2.EXPIRED:
            status = "expired"
        elif record.id == current_serial:
            status = "current"
        elif grace is not None and grace[0].id == record.id:
            status = f"superseded, grace until {grace[1]:%Y-%m-%dT%H:%M:%SZ}"
        else:
            status = "superseded"
        rows.append((record, status))
    return rows

