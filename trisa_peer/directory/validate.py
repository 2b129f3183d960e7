"""Input validation and normalisation for directory records (upstream
``pkg/gds``).

Pure: no grpc, no storage. Every check raises
:class:`~trisa_peer.errors.ConfigurationError` with a one-line message; the servicer
turns it into ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import re
import secrets
import string
import urllib.parse
from email.utils import parseaddr

from ..errors import ConfigurationError
from ..records import split_endpoint
from .ivms101 import ISO3166_ALPHA2

__all__ = [
    "is_dns_name",
    "new_token",
    "normalize_common_name",
    "normalize_country",
    "normalize_name",
    "parse_email",
    "validate_common_name",
    "validate_country",
    "validate_endpoint",
    "website_host",
]

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ALPHANUMERIC = string.ascii_letters + string.digits
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def new_token(length: int) -> str:
    """A random alphanumeric token (48 for contact tokens, 16 for PKCS#12 passwords)."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def normalize_common_name(common_name: str) -> str:
    """The uniqueness key of a common name: trimmed, lower-case, no trailing dot."""
    return common_name.strip().lower().rstrip(".")


def normalize_name(name: str) -> str:
    """The key of the name index: trimmed, lower-case, inner whitespace collapsed."""
    return " ".join(name.lower().split())


def normalize_country(country: str) -> str:
    """Upper-case ISO 3166 code (alpha-2 expected; other values kept upper-cased)."""
    return country.strip().upper()


def validate_country(country: str) -> str:
    """An assigned ISO 3166-1 alpha-2 country code, upper-cased, or ConfigurationError.

    For an operator's command-line flag (``gds add --country us``), whose result is
    shown; what a registration carries is checked as sent by :mod:`.ivms101`."""
    code = normalize_country(country)
    if len(code) != 2 or not (code.isascii() and code.isalpha()):
        raise ConfigurationError(
            f"country {country.strip()!r} is not an ISO 3166-1 alpha-2 code (two letters, "
            "e.g. US)"
        )
    if code not in ISO3166_ALPHA2:
        raise ConfigurationError(
            f"country {country.strip()!r} is not an ISO 3166-1 alpha-2 code (not an "
            "assigned country code)"
        )
    return code


def is_dns_name(name: str) -> bool:
    """A DNS host name: labels of letters, digits and inner hyphens, each ≤ 63, total ≤ 253,
    at least two labels, no wildcard."""
    text = normalize_common_name(name)
    if not text or len(text) > 253 or "*" in text:
        return False
    labels = text.split(".")
    return len(labels) >= 2 and all(_LABEL_RE.match(label) for label in labels)


def validate_common_name(common_name: str) -> str:
    """Return the trimmed common name, or raise ConfigurationError saying what is wrong."""
    cn = common_name.strip().rstrip(".")
    if not cn:
        raise ConfigurationError("common name is required")
    if "*" in cn:
        raise ConfigurationError(f"common name {cn!r} must not be a wildcard")
    for label in cn.lower().split("."):
        if len(label) > 63:
            raise ConfigurationError(
                f"common name {cn!r} has a label longer than 63 characters"
            )
    if not is_dns_name(cn):
        raise ConfigurationError(f"common name {cn!r} is not a valid DNS name")
    return cn


def validate_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` with an integer port; returns ``(host, port)``."""
    text = endpoint.strip()
    if not text:
        raise ConfigurationError("TRISA endpoint is required (host:port)")
    try:
        host, port = split_endpoint(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"invalid TRISA endpoint: {exc}") from exc
    return host, port


def parse_email(address: str) -> str:
    """The bare address of ``address`` (``Name <a@b.c>`` accepted), or ConfigurationError."""
    _, addr = parseaddr(address.strip())
    if not addr or not _EMAIL_RE.match(addr):
        raise ConfigurationError(f"could not parse email address {address!r}")
    return addr


def website_host(website: str) -> str:
    """Hostname of a website URL (a bare host name is accepted), lower-case, or ``""``."""
    text = website.strip()
    if not text:
        return ""
    if "://" not in text:
        text = "https://" + text
    try:
        host = urllib.parse.urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")
