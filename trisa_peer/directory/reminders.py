"""Certificate expiry for the directory: the ``--expiring`` listing and reissue reminders.

What is checked:

- :func:`expiring` lists the *current* identity certificate of every record that has
  one (superseded certificates are not listed: nobody reissues them) whose
  ``not_after`` is within the window, already expired ones included (negative days
  left), revoked ones excluded (a revoked certificate is reissued after a compromise,
  not on a reminder).
- :func:`send_due` writes a reissue reminder to the outbox (the ``emails`` table, and
  ``--outbox`` ``.eml`` files) for VERIFIED records, at most once per threshold per
  certificate. Thresholds are :data:`THRESHOLDS` days (30, 7, 1, as the TRISA
  directory does). Only the *tightest* threshold already reached is due: a certificate
  first seen with 5 days left gets the 7-day reminder only, never the 30-day one
  afterwards. An expired certificate gets no reminder (the node refuses to start with
  it; the operator sees it in ``gds certs --expiring``).

How "once" holds (restarts and replicas): a reminder's ``Email.reason`` is the
deterministic key ``reminder:<serial>:<threshold>``; the emails of the record are read
*after* the record itself, and the reminder is committed together with the record at
the version that was read (the store's optimistic lock). A replica that sent the same
reminder in between bumped that version, so the second commit is refused and the
retry sees the email: exactly one reminder, on SQLite and on PostgreSQL (the store's
``UPDATE ... WHERE version = ?``; tests/test_reminders.py races two replicas on both).
A side effect: the record's version moves by one per reminder sent (an operator edit
racing it is told "changed concurrently; try again"). Not checked:
that the email reached anybody (the outbox is the record of truth; delivery is
someone else's job).

Recipients: the record's contact emails (every kind, de-duplicated, verified first);
a record without any gets its reminder addressed to the directory's admin address.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .._pb.trisa.gds.models.v1beta1 import models_pb2
from ..clock import Clock, utcnow
from ..errors import ConfigurationError, DirectoryError, StoreError
from .convert import rfc3339, serial_hex
from .service import CONTACT_KINDS, Directory
from .store import Changes, Email

__all__ = [
    "DEFAULT_INTERVAL",
    "SUBJECT_REMINDER",
    "THRESHOLDS",
    "Expiring",
    "ReminderLoop",
    "due_threshold",
    "expiring",
    "parse_window",
    "reminder_reason",
    "send_due",
]

log = logging.getLogger(__name__)

#: days before ``not_after`` at which a reminder is due (tightest first is picked)
THRESHOLDS: tuple[int, ...] = (30, 7, 1)
#: seconds between two reminder passes of ``gds serve`` (one pass also runs at start)
DEFAULT_INTERVAL = 3600.0
SUBJECT_REMINDER = "TRISA: your identity certificate expires soon; please reissue"

_WINDOW = re.compile(r"(\d{1,6})([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_RETRIES = 5


def parse_window(text: str) -> timedelta:
    """``30d``, ``7d``, ``12h``, ``90m``, ``45s`` → a positive timedelta;
    ConfigurationError (naming the accepted forms) for anything else."""
    match = _WINDOW.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ConfigurationError(
            f"not a duration: {text!r} (give a positive whole number with d, h, m or s, "
            "e.g. 30d or 12h)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


@dataclass(frozen=True)
class Expiring:
    vasp_id: str
    common_name: str
    serial: str
    not_after: datetime
    left: timedelta

    @property
    def days_left(self) -> float:
        return self.left.total_seconds() / 86400


def _not_after(vasp: models_pb2.VASP) -> datetime | None:
    text = vasp.identity_certificate.not_after
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        log.warning("VASP %s: unreadable certificate not_after %r", vasp.id, text)
        return None


def _current(vasp: models_pb2.VASP) -> tuple[str, datetime] | None:
    """(serial, not_after) of the record's unrevoked identity certificate, if any."""
    cert = vasp.identity_certificate
    if not vasp.HasField("identity_certificate") or not cert.data or cert.revoked:
        return None
    end = _not_after(vasp)
    return (serial_hex(bytes(cert.serial_number)), end) if end is not None else None


def expiring(directory: Directory, window: timedelta, now: datetime) -> list[Expiring]:
    """Current identity certificates expiring before ``now + window`` (soonest first)."""
    found = []
    for vasp in directory.list_vasps():
        current = _current(vasp)
        if current is None:
            continue
        serial, end = current
        if end - now <= window:
            found.append(Expiring(vasp.id, vasp.common_name, serial, end, end - now))
    return sorted(found, key=lambda e: (e.not_after, e.common_name))


def due_threshold(left: timedelta) -> int | None:
    """The tightest threshold (days) reached with ``left`` to go; None if none is or
    the certificate has expired."""
    if left <= timedelta(0):
        return None
    reached = [t for t in THRESHOLDS if left <= timedelta(days=t)]
    return min(reached) if reached else None


def reminder_reason(serial: str, threshold: int) -> str:
    """The outbox ``reason`` that makes a reminder unique: ``reminder:<serial>:<days>``."""
    return f"reminder:{serial}:{threshold}"


def _recipients(directory: Directory, vasp: models_pb2.VASP) -> list[str]:
    tokens = directory.store.tokens_for(vasp.id)
    verified = [t.email for t in tokens if t.verified]
    others = [getattr(vasp.contacts, k).email.strip() for k in CONTACT_KINDS]
    emails = list(dict.fromkeys(e for e in (*verified, *others) if e))
    return emails or [directory.admin_email]


def _body(vasp: models_pb2.VASP, serial: str, end: datetime, threshold: int) -> str:
    return (
        f"The TRISA identity certificate of {vasp.common_name} (serial {serial}) expires "
        f"on {rfc3339(end)}, in less than {threshold} day{'s' if threshold != 1 else ''}.\n"
        "Please request a reissue now: with a CSR (`trisa-peer csr` then "
        "`trisa-peer gds renew`), or ask the directory to reissue it.\n"
        "Install the new certificate on your node before this one expires; peers refuse "
        "an expired certificate.\n"
    )


def _send_one(directory: Directory, vasp_id: str, now: datetime) -> list[Email]:
    """Send the due reminder of one record (at most one threshold); returns the emails
    committed (none when not due or already sent, here or by another replica)."""
    for _ in range(_RETRIES):
        vasp = directory.store.get_vasp(vasp_id)  # first the version...
        if vasp is None or vasp.verification_status != models_pb2.VerificationState.VERIFIED:
            return []
        current = _current(vasp)
        if current is None:
            return []
        serial, end = current
        threshold = due_threshold(end - now)
        if threshold is None:
            return []
        # ...then the outbox: an email committed after the read above bumped the version
        sent = {m.reason for m in directory.store.emails(vasp_id=vasp.id)}
        if any(reminder_reason(serial, t) in sent for t in THRESHOLDS if t <= threshold):
            return []  # this threshold (or a tighter one) was already sent
        reason = reminder_reason(serial, threshold)
        mails = [
            directory.email(vasp.id, to, SUBJECT_REMINDER, _body(vasp, serial, end, threshold),
                            reason)
            for to in _recipients(directory, vasp)
        ]
        # the record is written back unchanged at the version read: the lock
        if directory.store.commit(Changes(vasp=vasp, emails=mails)):
            directory.deliver(mails)
            log.info("VASP %s: %d-day reissue reminder for certificate %s sent to %d "
                     "recipient(s)", vasp.id, threshold, serial, len(mails))
            return mails
    raise DirectoryError(f"VASP {vasp_id}: reminder not sent, the record kept changing")


def send_due(directory: Directory, now: datetime) -> list[Email]:
    """One pass over every VERIFIED record; returns the reminders sent by this pass."""
    sent: list[Email] = []
    for vasp in directory.list_vasps(status=models_pb2.VerificationState.VERIFIED):
        try:
            sent.extend(_send_one(directory, vasp.id, now))
        except DirectoryError as exc:
            log.warning("%s", exc)
    return sent


class ReminderLoop:
    """``gds serve``'s reminders: one pass at :meth:`start`, then one every
    ``interval`` seconds until :meth:`stop`. A pass that fails (store unavailable)
    logs one line and the next pass retries."""

    def __init__(
        self, directory: Directory, *, interval: float = DEFAULT_INTERVAL,
        clock: Clock | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"reminder interval must be positive, got {interval}")
        self.directory = directory
        self.interval = interval
        self._clock: Clock = clock or utcnow
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def run_once(self) -> Sequence[Email]:
        try:
            return send_due(self.directory, self._clock())
        except StoreError as exc:
            log.warning("reissue reminders skipped this pass: %s", exc)
            return []
        finally:
            self.passes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def start(self) -> None:
        """Run the first pass now (in the caller: a started server has sent what was
        due), then one pass every ``interval`` seconds in a daemon thread."""
        self.run_once()
        self._thread = threading.Thread(target=self._run, name="gds-reminders", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
