"""RFC 5280 revocation reasons, parsed the way operators type them.

``"cessation of operation"``, ``"CessationOfOperation"`` and ``" key compromise "``
all parse: the text is lower-cased and all whitespace is removed before lookup. Code 7
is unused in RFC 5280 and is refused (the upstream Sectigo parser accepts it; we do not).
The empty string is *not* accepted here: callers that want a default pass
``"unspecified"`` explicitly.
"""

from __future__ import annotations

from cryptography import x509

from .errors import ConfigurationError

__all__ = ["REASONS", "parse_reason", "reason_flag", "reason_name"]

#: code -> canonical name (as the Sectigo CLI prints them)
REASONS: dict[int, str] = {
    0: "unspecified",
    1: "key compromise",
    2: "ca compromise",
    3: "affiliation changed",
    4: "superseded",
    5: "cessation of operation",
    6: "certificate hold",
    8: "remove from crl",
    9: "privilege withdrawn",
    10: "aa compromise",
}

_BY_KEY = {name.replace(" ", ""): code for code, name in REASONS.items()}

_FLAGS: dict[int, x509.ReasonFlags] = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}


def parse_reason(text: str | int) -> int:
    """Return the RFC 5280 reason code for ``text`` (a name in any spacing/case, or a code).

    Raises :class:`ConfigurationError` listing the valid names for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text in REASONS:
            return text
        raise ConfigurationError(f"unknown revocation reason code {text}; {_valid()}")
    key = "".join(str(text).lower().split())
    if key.isdigit() and int(key) in REASONS:
        return int(key)
    if key in _BY_KEY:
        return _BY_KEY[key]
    raise ConfigurationError(f"unknown revocation reason {str(text).strip()!r}; {_valid()}")


def reason_name(code: int) -> str:
    """The canonical name of a reason code."""
    return REASONS[parse_reason(code)]


def reason_flag(code: int) -> x509.ReasonFlags:
    """The :class:`cryptography.x509.ReasonFlags` member for a reason code."""
    return _FLAGS[parse_reason(code)]


def _valid() -> str:
    return "valid reasons: " + ", ".join(f'"{name}"' for name in REASONS.values())
