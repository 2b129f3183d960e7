"""CRLs fetched over HTTP from a certificate's CRL distribution points, and cached.

:class:`CrlFetcher` is a :class:`~trisa_peer.verify.CrlSource`: the chain verifier asks
it for the CRLs covering each certificate of a verified chain (``node serve
--crl-fetch``), besides the CRL files given with ``--crl``.

What is checked, per fetched CRL:

- only ``http://`` distribution-point URLs are used (RFC 5280's usual form; a CRL is
  signed, so the transport need not be); ``ldap:`` and other URLs are ignored, and a
  certificate naming no usable URL is checked against the CRL files only;
- the download is bounded: ``timeout`` seconds per request (default 10) and
  ``max_bytes`` (default 10 MiB; a larger body is refused, not truncated);
- the CRL's issuer is the certificate's issuer and its signature verifies with the
  issuer's key (the issuer is in the chain just built to a trust-pool root);
- it has a ``nextUpdate``, and it is not older (``thisUpdate``, then CRL number) than
  the CRL already cached for that URL (a replayed old CRL cannot un-revoke a
  certificate).

Caching and refresh (times are the verifier's clock, so tests move them):

- a CRL is cached per (URL, issuer) with its ``nextUpdate``; it is refetched
  ``interval`` seconds after the last successful fetch (default 3600) or as soon as its
  ``nextUpdate`` has passed, whichever comes first. The first fetch of a URL happens in
  the handshake that needs it (bounded by ``timeout``); later refreshes run in a
  background thread (``background=False``: in the caller, for tests and scripts) while
  the cached CRL keeps answering. A failed fetch is retried at most every ``retry``
  seconds (default 60) and logged once per URL until it succeeds again.
- Stale / unreachable: a cached CRL stays in use after failed refreshes until its
  ``nextUpdate`` plus the checker's grace (``node serve`` uses 0); after that every
  chain through that issuer fails closed with reason ``crl-stale``. A URL never fetched
  successfully fails closed the same way ("CRL ... unavailable").

Not checked: delta CRLs, indirect CRLs (a CRL issuer other than the certificate's
issuer), ``issuingDistributionPoint`` scopes, OCSP.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .certs import common_name, fingerprint
from .errors import CertificateError, ConfigurationError

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "CrlFetcher",
    "distribution_points",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 3600.0
DEFAULT_RETRY = 60.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def distribution_points(cert: x509.Certificate) -> tuple[str, ...]:
    """The ``http://`` URLs of ``cert``'s CRL distribution points, in order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return ()
    urls = []
    for point in ext:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and (
                name.value.lower().startswith("http://")
            ):
                urls.append(name.value)
    return tuple(dict.fromkeys(urls))


@dataclass
class _Entry:
    crl: x509.CertificateRevocationList | None = None
    fetched_at: datetime | None = None
    attempted_at: datetime | None = None
    problem: str | None = None
    in_flight: bool = False
    settled: threading.Event = field(default_factory=threading.Event)  # a fetch ended


class CrlFetcher:
    """Fetches, checks and caches CRLs from distribution points (see the module doc)."""

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        retry: float = DEFAULT_RETRY,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        background: bool = True,
    ) -> None:
        for what, value in (("interval", interval), ("retry", retry), ("timeout", timeout),
                            ("max_bytes", max_bytes)):
            if value <= 0:
                raise ConfigurationError(f"CRL fetch {what} must be positive, got {value}")
        self.interval = timedelta(seconds=interval)
        self.retry = timedelta(seconds=retry)
        self.timeout = timeout
        self.max_bytes = int(max_bytes)
        self.background = background
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._opener = urllib.request.build_opener()  # honours $http_proxy / $no_proxy
        #: successful downloads so far (what a test counts to see the cache work)
        self.fetches = 0

    # -- CrlSource --------------------------------------------------------------------

    def crls_for(
        self, cert: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> Sequence[x509.CertificateRevocationList]:
        urls = distribution_points(cert)
        problems = []
        for url in urls:
            crl = self._get(url, issuer, at)
            if crl is not None:
                return (crl,)
            entry = self._cache.get((url, fingerprint(issuer)))
            problems.append(f"{url}: {entry.problem if entry else 'not fetched'}")
        if problems:
            raise CertificateError(
                f"CRL of {common_name(issuer)!r} unavailable ({'; '.join(problems)})"
            )
        return ()

    # -- cache ------------------------------------------------------------------------

    def _get(
        self, url: str, issuer: x509.Certificate, at: datetime
    ) -> x509.CertificateRevocationList | None:
        key = (url, fingerprint(issuer))
        with self._lock:
            entry = self._cache.setdefault(key, _Entry())
            due = self._due(entry, at)
            if due and entry.crl is not None and self.background:
                entry.in_flight = True
                entry.settled.clear()
                threading.Thread(target=self._refresh, args=(key, url, issuer, at),
                                 name="crl-fetch", daemon=True).start()
                return entry.crl
            first_in_flight = entry.crl is None and entry.in_flight
            if not due and not first_in_flight:
                return entry.crl
            if due:
                entry.in_flight = True
                entry.settled.clear()
        if not due:  # another handshake is making the first fetch: wait for it
            entry.settled.wait(self.timeout + 1)
            return entry.crl
        self._refresh(key, url, issuer, at)  # first fetch, or background=False
        return self._cache[key].crl

    def _due(self, entry: _Entry, at: datetime) -> bool:
        if entry.in_flight:
            return False
        if entry.attempted_at is not None and entry.problem is not None and (
            at < entry.attempted_at + self.retry
        ):
            return False  # a failed fetch is retried at most every `retry`
        if entry.crl is None or entry.fetched_at is None:
            return True
        next_update = entry.crl.next_update_utc
        return at >= entry.fetched_at + self.interval or (
            next_update is not None and at >= next_update
        )

    def _refresh(self, key: tuple[str, str], url: str, issuer: x509.Certificate,
                 at: datetime) -> None:
        try:
            crl = self.fetch(url, issuer)
        except CertificateError as exc:
            with self._lock:
                entry = self._cache[key]
                first = entry.problem != str(exc)
                entry.problem, entry.attempted_at, entry.in_flight = str(exc), at, False
                entry.settled.set()
                kept = entry.crl is not None
            if first:
                log.warning("%s%s", exc, "; keeping the cached CRL until its nextUpdate"
                            if kept else "")
            return
        with self._lock:
            entry = self._cache[key]
            entry.in_flight = False
            entry.settled.set()
            entry.attempted_at = at
            if entry.crl is not None and _age(crl) < _age(entry.crl):
                entry.problem = f"{url}: CRL is older than the one cached; ignored"
                log.warning("%s", entry.problem)
                return
            entry.crl, entry.fetched_at, entry.problem = crl, at, None
            self.fetches += 1
        log.info("CRL of %s fetched from %s (%d entries, next update %s)",
                 common_name(issuer), url, len(crl), crl.next_update_utc)

    # -- one download -----------------------------------------------------------------

    def fetch(self, url: str, issuer: x509.Certificate) -> x509.CertificateRevocationList:
        """Download and check one CRL (no cache); CertificateError saying why not."""
        if not url.lower().startswith("http://"):
            raise CertificateError(f"{url}: only http:// CRL distribution points are fetched")
        # the scheme is checked just above: no file:// or other schemes
        request = urllib.request.Request(url, headers={"User-Agent": "trisa-peer"})  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise CertificateError(
                        f"{url}: CRL is {length} bytes, more than the {self.max_bytes} allowed"
                    )
                data = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise CertificateError(f"{url}: CRL download failed: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CertificateError(f"{url}: CRL download failed: {reason}") from None
        if len(data) > self.max_bytes:
            raise CertificateError(f"{url}: CRL is more than the {self.max_bytes} bytes allowed")
        return check_crl(data, issuer, source=url)


def _age(crl: x509.CertificateRevocationList) -> tuple[datetime, int]:
    """What orders two CRLs of one issuer: thisUpdate, then the CRL number."""
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return crl.last_update_utc, number


def check_crl(data: bytes, issuer: x509.Certificate, *, source: str
              ) -> x509.CertificateRevocationList:
    """Parse ``data`` (PEM or DER) and check it is ``issuer``'s CRL, signed by it, with
    a nextUpdate; CertificateError otherwise."""
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN")
               else x509.load_der_x509_crl(data))
    except ValueError:
        digest = hashlib.sha256(data).hexdigest()[:16]
        raise CertificateError(
            f"{source}: not a PEM or DER CRL ({len(data)} bytes, sha256 {digest}...)"
        ) from None
    if crl.issuer != issuer.subject:
        raise CertificateError(
            f"{source}: CRL issued by {crl.issuer.rfc4514_string()}, not by the "
            f"certificate's issuer {issuer.subject.rfc4514_string()}"
        )
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) or not (
        crl.is_signature_valid(key)
    ):
        raise CertificateError(
            f"{source}: CRL signature does not verify with the key of "
            f"{common_name(issuer)!r}"
        )
    if crl.next_update_utc is None:
        raise CertificateError(f"{source}: CRL has no nextUpdate; cannot know it is fresh")
    return crl
