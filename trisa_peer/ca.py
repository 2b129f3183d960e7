"""A local TRISA certificate authority: root, issuing CA, TRISA-profile leaves, CRL.

The CA lives in one directory::

    root.pem      self-signed root (CA, pathlen 1, keyCertSign + cRLSign)
    root.key      its private key (0600)
    issuing.pem   issuing CA signed by the root (CA, pathlen 0)
    issuing.key   its private key (0600)
    state.json    issued serials and revocations (written atomically)
    state.lock    created on the first mutation; ``flock``-ed around every state change

Leaves follow the profile of real TRISA (Sectigo) identity certificates, with one
deliberate difference: the EKU is **non-critical** by default, because cryptography's
default verifier insists on that (real Sectigo leaves mark it critical; pass
``eku_critical=True`` to get one). Profile: subject CN (+ O, C), SAN DNS = CN then the
extra names, EKU clientAuth + serverAuth, KU digitalSignature + keyEncipherment
(critical), BasicConstraints CA:FALSE, SKI, AKI, SHA-384 signature, RSA-4096 by
default, 395 days, random positive 128-bit-ish serial.

Several processes may share one CA directory (a Sectigo emulator and the CLI, say):
every mutation takes a thread lock and an exclusive ``flock`` on ``state.lock``, then
re-reads ``state.json`` before changing and rewriting it.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import secrets
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certs import (
    Identity,
    cert_to_pem,
    certs_to_pem,
    common_name,
    fingerprint,
    format_serial,
    key_to_pem,
    parse_serial,
)
from .clock import Clock, utcnow
from .errors import CertificateError, ConfigurationError
from .fsutil import atomic_write, write_private
from .revocation import REASONS, parse_reason, reason_flag

__all__ = [
    "CertificateAuthority",
    "IssuedRecord",
    "export_pkcs12_zip",
    "p12_member_name",
]

_ROOT_CERT = "root.pem"
_ROOT_KEY = "root.key"
_ISSUING_CERT = "issuing.pem"
_ISSUING_KEY = "issuing.key"
_STATE = "state.json"
_LOCK = "state.lock"
_STATE_FORMAT = "trisa-peer-ca/1"

_MIN_RSA_BITS = 2048
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ec": ec.SECP256R1(),
    "ec-p256": ec.SECP256R1(),
    "ec-p384": ec.SECP384R1(),
    "ec-p521": ec.SECP521R1(),
}
_ALLOWED_CSR_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_SIGNATURE_HASH = hashes.SHA384()
_BACKDATE = timedelta(minutes=5)  # tolerate small clock skew between peers


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be an aware datetime (UTC), got a naive one")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IssuedRecord:
    """One certificate this CA issued, as kept in ``state.json``."""

    serial: int
    common_name: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    issuer_fingerprint: str
    revoked_at: datetime | None = None
    reason: int | None = None

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def reason_name(self) -> str | None:
        return None if self.reason is None else REASONS[self.reason]

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial_hex,
            "common_name": self.common_name,
            "fingerprint": self.fingerprint,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "issuer_fingerprint": self.issuer_fingerprint,
            "revoked_at": None if self.revoked_at is None else _iso(self.revoked_at),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IssuedRecord:
        revoked_at = data.get("revoked_at")
        reason = data.get("reason")
        return cls(
            serial=parse_serial(str(data["serial"])),
            common_name=str(data["common_name"]),
            fingerprint=str(data["fingerprint"]),
            not_before=_parse_iso(str(data["not_before"])),
            not_after=_parse_iso(str(data["not_after"])),
            issuer_fingerprint=str(data.get("issuer_fingerprint", "")),
            revoked_at=None if revoked_at is None else _parse_iso(str(revoked_at)),
            reason=None if reason is None else int(reason),
        )


# --------------------------------------------------------------------------- key helpers


def _generate_key(
    key_type: str, key_size: int, *, allow_weak: bool
) -> CertificateIssuerPrivateKeyTypes:
    kind = key_type.lower()
    if kind == "rsa":
        if key_size < _MIN_RSA_BITS and not allow_weak:
            raise ConfigurationError(
                f"RSA-{key_size} is too weak; at least RSA-{_MIN_RSA_BITS} is required"
            )
        if key_size < 1024:
            raise ConfigurationError(f"RSA-{key_size} is not supported; at least 1024 bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if kind in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[kind])
    raise ConfigurationError(
        f"unknown key type {key_type!r}; choose rsa, " + ", ".join(sorted(_EC_CURVES))
    )


def _describe_key(key: CertificatePublicKeyTypes) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    return type(key).__name__.removesuffix("PublicKey") or "unknown"


def _check_public_key(key: CertificatePublicKeyTypes, what: str) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise CertificateError(
                f"{what} key is RSA-{key.key_size}; at least RSA-{_MIN_RSA_BITS} is required"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ALLOWED_CSR_CURVES:
            raise CertificateError(
                f"{what} key is on curve {key.curve.name}; P-256, P-384 or P-521 is required"
            )
        return
    raise CertificateError(f"{what} key type {_describe_key(key)} is not supported; use RSA or EC")


def _load_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: CA key must be RSA or EC")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise CertificateError(f"{path}: not a PEM certificate") from exc


def _same_key(key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, fmt) == cert.public_key().public_bytes(der, fmt)


def _name(
    common_name: str, organization: str | None = None, country: str | None = None
) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    try:
        if country:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    except ValueError as exc:
        raise ConfigurationError(f"invalid subject: {exc}") from exc
    return x509.Name(attrs)


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _is_dns_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    if labels and labels[0] == "*":  # a wildcard SAN, e.g. *.alice.example
        labels = labels[1:]
    return bool(labels) and len(name) <= 253 and all(_LABEL.match(label) for label in labels)


def _dns_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            raise ConfigurationError("empty DNS name")
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            name.encode("ascii")
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"DNS name {name!r} is not ASCII; give its IDNA (xn--) form"
            ) from exc
        if not _is_dns_name(name):
            raise ConfigurationError(
                f"{name!r} is not a DNS name (letters, digits and hyphens in dot-separated "
                "labels of at most 63 characters; a wildcard only as the whole first label)"
            )
        out.append(x509.DNSName(name))
    return out


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer_public_key: CertificatePublicKeyTypes,
    not_before: datetime,
    not_after: datetime,
    path_length: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key),  # type: ignore[arg-type]
            critical=False,
        )
    )


_KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    """A KeyUsage extension with the named usages set and every other one cleared."""
    unknown = set(enabled) - set(_KEY_USAGES)
    if unknown:
        raise TypeError(f"unknown key usage(s): {', '.join(sorted(unknown))}")
    return x509.KeyUsage(**{name: enabled.get(name, False) for name in _KEY_USAGES})


def _leaf_extensions(
    builder: x509.CertificateBuilder,
    *,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    san: list[x509.GeneralName],
    client_auth: bool,
    server_auth: bool,
    eku_critical: bool,
) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(
        _key_usage(digital_signature=True, key_encipherment=True), critical=True
    )
    usages = []
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=eku_critical)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    )
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return builder.add_extension(aki, critical=False)


# --------------------------------------------------------------------------- the CA


class CertificateAuthority:
    """A root + issuing CA kept in ``directory``; issues TRISA-profile identities.

    Build one with :meth:`init` (new directory), :meth:`open` (existing) or
    :meth:`open_or_init`. Time comes from ``clock`` (aware UTC); the default is the
    system clock.
    """

    def __init__(
        self,
        directory: Path,
        *,
        root: x509.Certificate,
        root_key: CertificateIssuerPrivateKeyTypes,
        issuing: x509.Certificate,
        issuing_key: CertificateIssuerPrivateKeyTypes,
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.root = root
        self.issuing = issuing
        self._root_key = root_key
        self._issuing_key = issuing_key
        self._clock: Clock = clock or utcnow
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CertificateAuthority({str(self.directory)!r})"

    # ----------------------------------------------------------------- construction

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        issuing_name: str | None = None,
        key_size: int = 4096,
        clock: Clock | None = None,
        not_before: datetime | None = None,
        root_days: int = 25 * 365,
        issuing_days: int = 20 * 365,
    ) -> CertificateAuthority:
        """Create a new CA in ``directory`` (created if missing; must be empty).

        Without ``name`` the root is "trisa-peer Local Root CA <folder>-<6 hex>" and the
        issuing CA "trisa-peer Local Issuing CA <same>": two local CAs never share a
        name, so a trust pool's list of roots tells them apart. An explicit ``name`` is
        kept as given (the issuing CA is named after it)."""
        path = Path(directory)
        if name is None:
            suffix = default_ca_suffix(path)
            name = f"{DEFAULT_CA_NAME} {suffix}"
            issuing_name = issuing_name or f"{DEFAULT_ISSUING_NAME} {suffix}"
        if path.exists() and not path.is_dir():
            raise ConfigurationError(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            raise ConfigurationError(f"{path} is not empty; refusing to create a CA there")
        if key_size < _MIN_RSA_BITS:
            raise ConfigurationError(
                f"CA key RSA-{key_size} is too weak; at least RSA-{_MIN_RSA_BITS} is required"
            )
        now = _aware((clock or utcnow)(), "clock()")
        start = _aware(not_before, "not_before") if not_before else now - _BACKDATE
        issuing_cn = issuing_name or _issuing_name_for(name)

        root_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        issuing_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        root_name = _name(name)
        root = _ca_builder(
            root_name,
            root_name,
            root_key.public_key(),
            root_key.public_key(),
            start,
            start + timedelta(days=root_days),
            path_length=1,
        ).sign(root_key, _SIGNATURE_HASH)
        issuing = _ca_builder(
            _name(issuing_cn),
            root_name,
            issuing_key.public_key(),
            root_key.public_key(),
            start,
            min(start + timedelta(days=issuing_days), root.not_valid_after_utc),
            path_length=0,
        ).sign(root_key, _SIGNATURE_HASH)

        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot create: {exc.strerror}") from exc
        write_private(path / _ROOT_KEY, key_to_pem(root_key))
        write_private(path / _ISSUING_KEY, key_to_pem(issuing_key))
        atomic_write(path / _ROOT_CERT, cert_to_pem(root))
        atomic_write(path / _ISSUING_CERT, cert_to_pem(issuing))
        state = {
            "format": _STATE_FORMAT,
            "root_fingerprint": fingerprint(root),
            "issuing_fingerprint": fingerprint(issuing),
            "crl_number": 0,
            "issued": {},
        }
        atomic_write(path / _STATE, _dump_state(state))
        return cls(
            path,
            root=root,
            root_key=root_key,
            issuing=issuing,
            issuing_key=issuing_key,
            clock=clock,
        )

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, clock: Clock | None = None
    ) -> CertificateAuthority:
        """Open the CA in ``directory``; a clear error if it is not one."""
        path = Path(directory)
        if not path.is_dir():
            raise ConfigurationError(f"{path}: no such CA directory")
        missing = cls.missing_files(path)
        if missing:
            raise ConfigurationError(
                f"{path} is not a trisa-peer CA directory (missing {', '.join(missing)})"
            )
        root = _load_cert(path / _ROOT_CERT)
        issuing = _load_cert(path / _ISSUING_CERT)
        root_key = _load_key(path / _ROOT_KEY)
        issuing_key = _load_key(path / _ISSUING_KEY)
        if not _same_key(root_key, root):
            raise ConfigurationError(f"{path}: {_ROOT_KEY} does not match {_ROOT_CERT}")
        if not _same_key(issuing_key, issuing):
            raise ConfigurationError(f"{path}: {_ISSUING_KEY} does not match {_ISSUING_CERT}")
        ca = cls(
            path,
            root=root,
            root_key=root_key,
            issuing=issuing,
            issuing_key=issuing_key,
            clock=clock,
        )
        ca._read_state()  # fail now on a corrupt state file
        return ca

    @staticmethod
    def missing_files(directory: str | os.PathLike[str]) -> list[str]:
        """The files of a CA directory that ``directory`` lacks (all of them if it is
        not a directory); empty for a CA directory."""
        path = Path(directory)
        return [
            n
            for n in (_ROOT_CERT, _ROOT_KEY, _ISSUING_CERT, _ISSUING_KEY, _STATE)
            if not (path / n).is_file()
        ]

    @classmethod
    def open_or_init(cls, directory: str | os.PathLike[str], **kw: Any) -> CertificateAuthority:
        """Open the CA in ``directory``, creating it first when the directory is empty."""
        path = Path(directory)
        if path.is_dir() and (path / _STATE).exists():
            return cls.open(path, clock=kw.get("clock"))
        return cls.init(path, **kw)

    # ----------------------------------------------------------------- public material

    def trust_pem(self) -> bytes:
        """Root followed by the issuing CA, PEM (a trust bundle for peers)."""
        return certs_to_pem([self.root, self.issuing])

    def now(self) -> datetime:
        return _aware(self._clock(), "clock()")

    # ----------------------------------------------------------------- issuing

    def issue(
        self,
        common_name: str,
        *,
        dns_names: Sequence[str] = (),
        key_size: int = 4096,
        key_type: str = "rsa",
        days: int = 395,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        client_auth: bool = True,
        server_auth: bool = True,
        organization: str | None = None,
        country: str | None = None,
        san_override: Sequence[str] | None = None,
        eku_critical: bool = False,
        allow_weak: bool = False,
        issuer: Identity | None = None,
        crl_urls: Sequence[str] = (),
    ) -> Identity:
        """Generate a key and a TRISA-profile leaf for ``common_name``.

        SAN DNS names are the CN followed by ``dns_names`` (deduplicated), or exactly
        ``san_override`` when given (an empty sequence leaves the SAN out). Validity is
        ``days`` from now (backdated five minutes) unless ``not_before`` / ``not_after``
        say otherwise. ``key_type`` is ``rsa`` (``key_size`` bits, at least 2048 unless
        ``allow_weak``) or ``ec`` / ``ec-p256`` / ``ec-p384`` / ``ec-p521``.
        ``issuer`` signs with another intermediate of this CA (see
        :meth:`create_intermediate`) instead of the issuing CA. ``crl_urls`` become the
        leaf's CRL distribution points (``http://`` URLs where :meth:`crl` is served).

        The returned :class:`Identity` has ``chain == (issuing,)``: the leaf's issuer,
        not the root.
        """
        cn = common_name.strip()
        if not cn:
            raise ConfigurationError("a common name is required")
        if not _is_dns_name(cn) or cn.startswith("*"):
            raise ConfigurationError(
                f"common name {cn!r} must be the endpoint's DNS host name (no wildcard)"
            )
        subject = _name(cn, organization, country)
        san = _dns_names(list(san_override) if san_override is not None else [cn, *dns_names])
        key = _generate_key(key_type, key_size, allow_weak=allow_weak)
        cert = self._sign_leaf(
            subject=subject,
            public_key=key.public_key(),
            san=san,
            days=days,
            not_before=not_before,
            not_after=not_after,
            client_auth=client_auth,
            server_auth=server_auth,
            eku_critical=eku_critical,
            issuer=issuer,
            crl_urls=crl_urls,
        )
        chain_cert = issuer.leaf if issuer is not None else self.issuing
        return Identity(key=key, leaf=cert, chain=(chain_cert,))

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        days: int = 395,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        eku_critical: bool = False,
    ) -> x509.Certificate:
        """Sign a PEM CSR with the TRISA profile, keeping its subject and SAN DNS names.

        The CSR's own signature must verify and its key must be RSA-2048+ or EC
        P-256/P-384/P-521. Without a SAN in the CSR the SAN is the CN.
        """
        try:
            csr = x509.load_pem_x509_csr(bytes(csr_pem))
        except (ValueError, TypeError) as exc:
            raise CertificateError("not a PEM certificate request") from exc
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateError("CSR signature cannot be checked") from exc
        if not valid:
            raise CertificateError("CSR signature is invalid")
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateError("CSR public key cannot be read") from exc
        _check_public_key(public_key, "CSR")
        cn = common_name(csr)
        try:
            san_ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in san_ext.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        except ValueError as exc:
            raise CertificateError("CSR extensions cannot be parsed") from exc
        if not names:
            if not cn:
                raise CertificateError("CSR has neither a common name nor a SAN DNS name")
            names = [cn]
        return self._sign_leaf(
            subject=csr.subject,
            public_key=public_key,
            san=_dns_names(names),
            days=days,
            not_before=not_before,
            not_after=not_after,
            client_auth=True,
            server_auth=True,
            eku_critical=eku_critical,
            issuer=None,
        )

    def create_intermediate(
        self,
        common_name: str,
        *,
        key_size: int = 4096,
        days: int = 20 * 365,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Identity:
        """A second intermediate (pathlen 0) signed by this root; not written to disk.

        ``Identity.chain`` is ``(root,)``. Pass the result as ``issue(issuer=...)``.
        Used for fixtures such as an expired intermediate.
        """
        start, end = self._validity(days, not_before, not_after)
        key = _generate_key("rsa", key_size, allow_weak=False)
        cert = _ca_builder(
            _name(common_name),
            self.root.subject,
            key.public_key(),
            self.root.public_key(),
            start,
            end,
            path_length=0,
        ).sign(self._root_key, _SIGNATURE_HASH)
        return Identity(key=key, leaf=cert, chain=(self.root,))

    def _validity(
        self, days: int, not_before: datetime | None, not_after: datetime | None
    ) -> tuple[datetime, datetime]:
        if days <= 0 and not_after is None:
            raise ConfigurationError(f"validity must be at least one day, got {days}")
        start = _aware(not_before, "not_before") if not_before else self.now() - _BACKDATE
        end = _aware(not_after, "not_after") if not_after else start + timedelta(days=days)
        if end <= start and not_before is None:
            start = end - timedelta(days=max(days, 1))  # an explicitly expired certificate
        if end <= start:
            raise ConfigurationError("not_after must be later than not_before")
        return start, end

    def _sign_leaf(
        self,
        *,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        san: list[x509.GeneralName],
        days: int,
        not_before: datetime | None,
        not_after: datetime | None,
        client_auth: bool,
        server_auth: bool,
        eku_critical: bool,
        issuer: Identity | None,
        crl_urls: Sequence[str] = (),
    ) -> x509.Certificate:
        start, end = self._validity(days, not_before, not_after)
        issuer_cert = issuer.leaf if issuer is not None else self.issuing
        issuer_key = issuer.key if issuer is not None else self._issuing_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )
        builder = _leaf_extensions(
            builder,
            public_key=public_key,
            issuer=issuer_cert,
            san=san,
            client_auth=client_auth,
            server_auth=server_auth,
            eku_critical=eku_critical,
        )
        if crl_urls:
            builder = builder.add_extension(x509.CRLDistributionPoints([
                x509.DistributionPoint([x509.UniformResourceIdentifier(u) for u in crl_urls],
                                       None, None, None)
            ]), critical=False)
        cert = builder.sign(issuer_key, _SIGNATURE_HASH)
        record = IssuedRecord(
            serial=cert.serial_number,
            common_name=common_name(subject),
            fingerprint=fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issuer_fingerprint=fingerprint(issuer_cert),
        )
        with self._mutate() as state:
            state["issued"][record.serial_hex] = record.to_json()
        return cert

    # ----------------------------------------------------------------- revocation

    def revoke(self, serial: int, reason: int | str = "unspecified") -> None:
        """Mark ``serial`` revoked with an RFC 5280 reason (name or code)."""
        code = parse_reason(reason)
        key = format_serial(serial)
        with self._mutate() as state:
            entry = state["issued"].get(key)
            if entry is None:
                raise ConfigurationError(f"serial {key} was not issued by this CA")
            if entry.get("revoked_at"):
                raise ConfigurationError(
                    f"serial {key} is already revoked ({REASONS.get(entry.get('reason') or 0)})"
                )
            entry["revoked_at"] = _iso(self.now())
            entry["reason"] = code

    def is_revoked(self, serial: int) -> bool:
        entry = self._read_state()["issued"].get(format_serial(serial))
        return bool(entry and entry.get("revoked_at"))

    def issued(self) -> list[IssuedRecord]:
        """Every certificate issued, oldest ``not_before`` first."""
        records = [IssuedRecord.from_json(e) for e in self._read_state()["issued"].values()]
        return sorted(records, key=lambda r: (r.not_before, r.serial))

    def crl(self, *, next_update_days: int = 7) -> x509.CertificateRevocationList:
        """A fresh CRL signed by the issuing CA, listing what the issuing CA revoked.

        ``thisUpdate`` is now, ``nextUpdate`` ``next_update_days`` later; the CRL number
        increases with every call.
        """
        if next_update_days <= 0:
            raise ConfigurationError("next_update_days must be positive")
        issuing_fp = fingerprint(self.issuing)
        with self._mutate() as state:
            state["crl_number"] = int(state.get("crl_number", 0)) + 1
            number = state["crl_number"]
            entries = [
                IssuedRecord.from_json(e) for e in state["issued"].values() if e.get("revoked_at")
            ]
        now = self.now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuing.subject)
            .last_update(now)
            .next_update(now + timedelta(days=next_update_days))
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        try:
            ski = self.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        except x509.ExtensionNotFound:
            pass
        for record in sorted(entries, key=lambda r: r.serial):
            if record.issuer_fingerprint and record.issuer_fingerprint != issuing_fp:
                continue  # issued by another intermediate: not this CRL's business
            assert record.revoked_at is not None
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(record.serial)
                .revocation_date(record.revoked_at)
            )
            if record.reason:  # RFC 5280: omit the extension for "unspecified"
                revoked = revoked.add_extension(
                    x509.CRLReason(reason_flag(record.reason)), critical=False
                )
            builder = builder.add_revoked_certificate(revoked.build())
        return builder.sign(self._issuing_key, _SIGNATURE_HASH)

    # ----------------------------------------------------------------- state

    def _read_state(self) -> dict[str, Any]:
        path = self.directory / _STATE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"{path}: corrupt CA state (not JSON)") from exc
        if not isinstance(data, dict) or data.get("format") != _STATE_FORMAT:
            raise ConfigurationError(f"{path}: not a trisa-peer CA state file")
        if not isinstance(data.get("issued"), dict):
            raise ConfigurationError(f"{path}: corrupt CA state (no 'issued' table)")
        return data

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[dict[str, Any]]:
        """Lock (thread + flock), re-read the state, yield it, write it back on success."""
        with self._lock:
            lock_path = self.directory / _LOCK
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigurationError(f"{lock_path}: cannot open: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                state = self._read_state()
                yield state
                atomic_write(self.directory / _STATE, _dump_state(state))
            finally:
                os.close(fd)  # releases the flock


#: The start of a local CA's default root and issuing names (a suffix makes them unique).
DEFAULT_CA_NAME = "trisa-peer Local Root CA"
DEFAULT_ISSUING_NAME = "trisa-peer Local Issuing CA"


def default_ca_suffix(directory: Path) -> str:
    """``<folder>-<6 random hex>``: the folder's name (up to 20 characters of letters,
    digits, ``.``, ``_`` and ``-``) and a random part, so that CAs made in folders of
    the same name still differ."""
    folder = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip("-.")[:20]
    return f"{folder or 'ca'}-{secrets.token_hex(3)}"


def _issuing_name_for(root_name: str) -> str:
    base = root_name.removesuffix(" CA").removesuffix(" Root").strip() or root_name
    return f"{base} Issuing CA"


def _dump_state(state: dict[str, Any]) -> bytes:
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- PKCS#12


def p12_member_name(common_name: str) -> str:
    """The zip member name the TRISA serializer uses: lower-case, spaces -> ``_``."""
    return common_name.strip().lower().replace(" ", "_") + ".p12"


def export_pkcs12_zip(
    identity: Identity,
    password: str,
    *,
    batch_name: str,
    legacy: bool = False,
    clock: Clock | None = None,
) -> bytes:
    """A Sectigo-style download: zip bytes holding ``<common name>.p12``.

    The PKCS#12 holds the key, the leaf and ``identity.chain``. Modern encryption is
    PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with a SHA-256 MAC: OpenSSL 3 reads it
    without ``-legacy``. ``legacy=True`` approximates real Sectigo downloads with
    PBES1 3DES (SHA-1) for key and certificates and a SHA-1 MAC, 2048 iterations
    (cryptography cannot write Sectigo's RC2-40 certificate bag). ``batch_name`` is
    stored as the zip comment (the archive itself is called ``<batch_name>.zip``).
    """
    if not password:
        raise ConfigurationError("a PKCS#12 password is required")
    if not batch_name.strip():
        raise ConfigurationError("a batch name is required")
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (
            builder.kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(
                hashes.SHA1()  # noqa: S303 - interoperability with Sectigo
            )
        )
    else:
        builder = (
            builder.kdf_rounds(100_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    name = identity.common_name or "identity"
    try:
        p12 = pkcs12.serialize_key_and_certificates(
            name.encode("utf-8"),
            identity.key,  # type: ignore[arg-type]
            identity.leaf,
            list(identity.chain) or None,
            builder.build(password.encode("utf-8")),
        )
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot build PKCS#12 for {name}: {exc}") from exc
    when = _aware((clock or utcnow)(), "clock()")
    info = zipfile.ZipInfo(p12_member_name(name), date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.comment = batch_name.encode("utf-8")[:65535]
        zf.writestr(info, p12)
    return buf.getvalue()
