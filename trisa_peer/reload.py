"""The node's own identity: whether a set may be served, and when it is about to expire.

:func:`check_own_identity` decides whether a freshly loaded identity may replace the one
in use (and whether a node may start with it). Checked: the certificate is valid now
(neither expired nor not yet valid), and it chains to the node's own trust pool as a
TLS client (extendedKeyUsage clientAuth) and as a TLS server for its own common name
(serverAuth, SAN), with a strong enough key -- what every peer checks at steps 3 and 6.
That the private key matches the certificate is checked when the files are read
(:func:`trisa_peer.certs.load_identity` picks the leaf by the key). Not checked: the
node's own revocation (the CRLs are for peers) and whether the directory already holds
the certificate (during a reissue it may not, yet).

:class:`ExpiryWatch` says, once per threshold and certificate, that the certificate
expires within 30, 7 or 1 days, and once that it has expired. :class:`ProblemOnce`
lets a repeated failure (the same bad file polled every interval) be logged once.
:class:`Poller` runs a callable every interval, or at once when triggered (SIGHUP).

No gRPC here: this module is part of the pure core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography import x509

from .certs import Identity, common_name
from .errors import CertificateError, ConfigurationError, HandshakeError
from .trust import TrustPool
from .verify import ChainVerifier

__all__ = [
    "DEFAULT_RELOAD_INTERVAL",
    "EXPIRY_THRESHOLDS",
    "ExpiryWatch",
    "Poller",
    "ProblemOnce",
    "check_own_identity",
    "days_left",
    "describe_certificate",
    "expiry_notice",
    "expiry_problem",
]

#: Seconds between two looks at the identity files of a running node (``serve
#: --reload-interval``); SIGHUP looks at once.
DEFAULT_RELOAD_INTERVAL = 30.0

#: Days before expiry at which a node warns, once each (the TRISA directory's reminders).
EXPIRY_THRESHOLDS: tuple[int, ...] = (30, 7, 1)

_DAY = timedelta(days=1)


def _ts(dt: datetime) -> str:
    return f"{dt:%Y-%m-%dT%H:%M:%SZ}"


def describe_certificate(leaf: x509.Certificate) -> str:
    """``bob.vasp.test (serial 0x1f...)``: how log lines name our certificate."""
    return f"{common_name(leaf)} (serial {leaf.serial_number:#x})"


def days_left(leaf: x509.Certificate, now: datetime) -> float:
    """Days until ``leaf`` expires (negative once expired)."""
    return (leaf.not_valid_after_utc - now) / _DAY


def expiry_problem(leaf: x509.Certificate, now: datetime) -> str | None:
    """Why ``leaf`` cannot be served at ``now`` (expired, not yet valid); None if it can."""
    if now > leaf.not_valid_after_utc:
        return f"own certificate {describe_certificate(leaf)} expired at " \
               f"{_ts(leaf.not_valid_after_utc)}"
    if now < leaf.not_valid_before_utc:
        return f"own certificate {describe_certificate(leaf)} is not valid before " \
               f"{_ts(leaf.not_valid_before_utc)}"
    return None


def _left_text(left: float) -> str:
    if left >= 1:
        whole = int(left)
        return f"{whole} day{'s' if whole != 1 else ''}"
    hours = max(int(left * 24), 0)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def expiry_notice(
    leaf: x509.Certificate, now: datetime, *, within: int = EXPIRY_THRESHOLDS[0]
) -> str | None:
    """One line when ``leaf`` expires within ``within`` days (``check`` prints it)."""
    left = days_left(leaf, now)
    if left < 0 or left > within:
        return None
    return (f"own certificate {describe_certificate(leaf)} expires in {_left_text(left)} "
            f"({_ts(leaf.not_valid_after_utc)}): reissue it and install the new one")


def check_own_identity(identity: Identity, pool: TrustPool, now: datetime) -> None:
    """Raise :class:`CertificateError` (one line) unless ``identity`` may be served now."""
    problem = expiry_problem(identity.leaf, now)
    if problem is not None:
        raise CertificateError(problem)
    verifier = ChainVerifier(pool, clock=lambda: now)
    try:
        verifier.verify_client(identity.leaf, identity.chain)
        verifier.verify_server(identity.leaf, identity.chain, host=identity.common_name)
    except HandshakeError as exc:
        raise CertificateError(f"own certificate {describe_certificate(identity.leaf)} is not "
                               f"usable with the trust pool: "
                               f"{str(exc).removeprefix(f'{exc.step}: ')}") from exc


class ExpiryWatch:
    """Once per threshold (30, 7, 1 days) and certificate: a warning; once: expired.

    :meth:`note` returns ``(level, text)`` to log, or None when nothing new happened.
    A certificate first seen with 5 days left gets one line (the 7-day one), not two.
    """

    def __init__(self, thresholds: tuple[int, ...] = EXPIRY_THRESHOLDS) -> None:
        self.thresholds = tuple(sorted(thresholds, reverse=True))
        self._said: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def note(
        self, leaf: x509.Certificate, fingerprint: str, now: datetime
    ) -> tuple[str, str] | None:
        left = days_left(leaf, now)
        crossed = {t for t in self.thresholds if left <= t}
        if left < 0:
            crossed.add(-1)  # expired
        with self._lock:
            said = self._said.setdefault(fingerprint, set())
            new = crossed - said
            said |= crossed
        if not new:
            return None
        if -1 in new:
            return ("error", f"{expiry_problem(leaf, now)}: peers refuse this node until a "
                    "valid certificate is installed (health reports UNHEALTHY)")
        notice = expiry_notice(leaf, now, within=max(new))
        return ("warning", f"{notice} (warning at {min(new)} day{'s' if min(new) != 1 else ''})"
                if notice else f"own certificate {describe_certificate(leaf)} expires soon")


class ProblemOnce:
    """Remembers the last problem so the same one is reported only once."""

    def __init__(self) -> None:
        self.last: str | None = None

    def report(self, problem: str) -> bool:
        """True when ``problem`` differs from the last one reported (report it)."""
        if problem == self.last:
            return False
        self.last = problem
        return True

    def clear(self) -> None:
        self.last = None


class Poller:
    """Run ``tick`` now, then every ``interval`` seconds and whenever :meth:`trigger`
    is called, on one daemon thread, until :meth:`stop`. ``tick`` must not raise (an
    exception is passed to ``on_error``)."""

    def __init__(self, tick: Callable[[], None], interval: float, *,
                 on_error: Callable[[BaseException], None], name: str = "trisa-reload") -> None:
        if not interval > 0:
            raise ConfigurationError(f"the reload interval must be positive, not {interval}")
        self.tick = tick
        self.interval = interval
        self.on_error = on_error
        self.name = name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        """Run ``tick`` as soon as possible (safe from a signal handler)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.tick()
            except Exception as exc:  # a bug in tick must not end the loop
                self.on_error(exc)
            self._wake.wait(self.interval)
