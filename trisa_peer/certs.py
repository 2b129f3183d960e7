"""Certificate and key material: the :class:`Identity` value object, loaders and PEM helpers.

Pure: imports neither grpc nor the generated protobuf code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dh,
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from .errors import CertificateError
from .fsutil import PUBLIC_MODE, atomic_write, write_private

__all__ = [
    "Identity",
    "IdentityKey",
    "PeerPublicKey",
    "cert_to_pem",
    "certs_to_pem",
    "clean_serial",
    "common_name",
    "fingerprint",
    "format_serial",
    "key_to_pem",
    "load_certificates",
    "load_identity",
    "load_private_key",
    "load_public_key",
    "load_trust_pool",
    "order_chain",
    "parse_certificates",
    "parse_serial",
    "spki_der",
    "split_pem",
    "write_identity",
]


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_to_pem(certs: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(cert_to_pem(c) for c in certs)


def key_to_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM (callers write it with :func:`trisa_peer.fsutil.write_private`)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex: the identity of a certificate."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(
    source: x509.Certificate | x509.CertificateSigningRequest | x509.Name,
) -> str:
    """The first subject common name of a certificate or CSR (or of a name); ``""`` if none."""
    name = source if isinstance(source, x509.Name) else source.subject
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def format_serial(serial: int) -> str:
    """A serial number as upper-case hex without prefix or padding: ``0x0A1B`` → ``A1B``."""
    return format(serial, "X")


def clean_serial(text: str) -> str:
    """A hex serial as typed (``0x0a1b``, ``0a:1B``, spaces ignored) → ``0A1B``.

    Leading zeros are kept (some services show them); raises :class:`ValueError` if the
    text is empty or not hexadecimal.
    """
    cleaned = "".join(text.split()).replace(":", "").upper().removeprefix("0X")
    if not cleaned or any(c not in "0123456789ABCDEF" for c in cleaned):
        raise ValueError(f"not a hexadecimal serial number: {text.strip()!r}")
    return cleaned


def parse_serial(text: str) -> int:
    """A hex serial as typed (see :func:`clean_serial`) → its integer value."""
    return int(clean_serial(text), 16)


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """The SubjectPublicKeyInfo DER of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Identity:
    """A VASP's identity: private key, leaf certificate and the rest of its chain.

    ``chain`` holds the certificates after the leaf (intermediates, possibly the root),
    in issuing order. Nothing here is verified; see :mod:`trisa_peer.verify`.
    """

    key: CertificateIssuerPrivateKeyTypes
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def common_name(self) -> str:
        return common_name(self.leaf)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.leaf)

    def chain_pem(self) -> bytes:
        """Leaf followed by the chain, PEM: what a TLS endpoint presents."""
        return certs_to_pem([self.leaf, *self.chain])

    def key_pem(self) -> bytes:
        return key_to_pem(self.key)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

StrPath = str | os.PathLike[str]

#: Private keys a VASP identity (mTLS) or a sealing key may use.
IdentityKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: Public keys accepted from a peer's KeyExchange or a certificate.
PeerPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_ACCEPTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_K = TypeVar("_K", bound=object)
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

_MAX_INFLATED = 16 * 1024 * 1024  # decompressed size cap for gzip and zip entries
_MAX_DEPTH = 3  # zip -> gzip -> PEM is the deepest nesting we expect

_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
_KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
_IGNORED_LABELS = frozenset({"EC PARAMETERS"})  # written by `openssl ecparam -genkey`
_PUBLIC_KEY_LABELS = frozenset(
    {"PUBLIC KEY", "RSA PUBLIC KEY", "ECDSA PUBLIC KEY", "EC PUBLIC KEY", "ED25519 PUBLIC KEY"}
)

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 ]*?)-----(.*?)-----END \1-----", re.DOTALL)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"

_Purpose = Literal["identity", "trust", "key"]


@dataclass(frozen=True)
class _PemBlock:
    label: str
    headers: dict[str, str]
    der: bytes
    raw: bytes


@dataclass
class _Material:
    """What one file (or in-memory blob) held: keys with where they came from, certs."""

    keys: list[tuple[PrivateKeyTypes, str]] = field(default_factory=list)
    certs: list[x509.Certificate] = field(default_factory=list)

    def extend(self, other: _Material) -> None:
        self.keys.extend(other.keys)
        self.certs.extend(other.certs)


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None:
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    return bytes(password)


def _read(path: StrPath) -> tuple[bytes, str]:
    source = os.fspath(path)
    try:
        return Path(path).read_bytes(), source
    except FileNotFoundError as exc:
        raise CertificateError(f"{source}: file not found") from exc
    except IsADirectoryError as exc:
        raise CertificateError(f"{source}: is a directory, not a file") from exc
    except PermissionError as exc:
        raise CertificateError(f"{source}: permission denied") from exc
    except OSError as exc:
        raise CertificateError(f"{source}: cannot read: {exc.strerror or exc}") from exc


def _pem_blocks(data: bytes, source: str) -> list[_PemBlock]:
    blocks: list[_PemBlock] = []
    for match in _PEM_RE.finditer(data):
        label = match.group(1).decode("ascii")
        body = match.group(2)
        headers: dict[str, str] = {}
        lines = body.replace(b"\r", b"").split(b"\n")
        payload: list[bytes] = []
        for line in lines:
            text = line.strip()
            if not text:
                continue
            if not payload and b":" in text:
                name, _, value = text.partition(b":")
                headers[name.decode("ascii", "replace").strip()] = value.decode(
                    "ascii", "replace"
                ).strip()
                continue
            payload.append(text)
        joined = b"".join(payload)
        try:
            der = base64.b64decode(joined, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CertificateError(f"{source}: PEM block {label!r} is not valid base64") from exc
        if not der:
            raise CertificateError(f"{source}: PEM block {label!r} is empty")
        blocks.append(_PemBlock(label, headers, der, match.group(0)))
    if not blocks and b"-----BEGIN " in data:
        raise CertificateError(f"{source}: malformed PEM (BEGIN line without matching END)")
    return blocks


def split_pem(data: bytes, *, source: str = "PEM data") -> list[tuple[str, bytes]]:
    """Split PEM text into ``(label, DER)`` pairs, in order; text around blocks is ignored.

    RFC 1421 headers (``Proc-Type``, ``DEK-Info``) inside a block are skipped; use
    :func:`load_private_key` for legacy encrypted keys.
    """
    return [(b.label, b.der) for b in _pem_blocks(data, source)]


_KEY_TYPE_NAMES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "RSA"),
    ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "DSA"),
    ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "Ed25519"),
    ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "Ed448"),
    ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "X25519"),
    ((x448.X448PrivateKey, x448.X448PublicKey), "X448"),
)  # DH is looked up only when needed: touching it warns (deprecated in cryptography)


def _key_type_name(key: object) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}"
    for types, name in _KEY_TYPE_NAMES:
        if isinstance(key, types):
            return name
    if isinstance(key, (dh.DHPrivateKey, dh.DHPublicKey)):
        return "DH"
    return type(key).__name__


def _check_curve(key: _K, source: str) -> _K:
    """``key``, unless it is an EC key on a curve TRISA does not accept."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name not in _ACCEPTED_CURVES:
            raise CertificateError(
                f"{source}: unsupported EC curve {key.curve.name} (use P-256, P-384 or P-521)"
            )
    return key


def _check_identity_key(key: object, source: str) -> IdentityKey:
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return _check_curve(key, source)
    raise CertificateError(
        f"{source}: unsupported key type {_key_type_name(key)} (private keys must be RSA or EC)"
    )


def _check_public_key(key: object, source: str) -> PeerPublicKey:
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        return _check_curve(key, source)
    raise CertificateError(
        f"{source}: unsupported key type {_key_type_name(key)} "
        "(public keys must be RSA, EC or Ed25519)"
    )


def _parse_der_cert(der: bytes, source: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"{source}: malformed certificate") from exc


def _key_from_pem_block(block: _PemBlock, source: str, password: bytes | None) -> PrivateKeyTypes:
    encrypted_legacy = "ENCRYPTED" in block.headers.get("Proc-Type", "").upper()
    if block.label == "ENCRYPTED PRIVATE KEY" or encrypted_legacy:
        if password is None:
            raise CertificateError(f"{source}: private key is encrypted and no password was given")
        try:
            if encrypted_legacy:
                return serialization.load_pem_private_key(block.raw, password)
            return serialization.load_der_private_key(block.der, password)
        except UnsupportedAlgorithm as exc:
            raise CertificateError(
                f"{source}: private key uses an unsupported encryption algorithm"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"{source}: wrong password or corrupt private key") from exc
    # Unencrypted. The DER loader accepts PKCS#8, PKCS#1 and SEC1 whatever the label
    # says, which covers a PKCS#8 body under an `RSA PRIVATE KEY` label (sealing_key.pem).
    try:
        return serialization.load_der_private_key(block.der, None)
    except UnsupportedAlgorithm as exc:
        raise CertificateError(f"{source}: unsupported private key algorithm") from exc
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{source}: malformed private key ({block.label})") from exc


def _decode_pem(data: bytes, source: str, password: bytes | None, purpose: _Purpose) -> _Material:
    material = _Material()
    for block in _pem_blocks(data, source):
        if block.label in _CERT_LABELS:
            material.certs.append(_parse_der_cert(block.der, source))
        elif block.label in _KEY_LABELS:
            if purpose == "trust":
                raise CertificateError(
                    f"{source}: holds a private key ({block.label}); certificates only here"
                )
            material.keys.append((_key_from_pem_block(block, source, password), source))
        elif block.label == "DSA PRIVATE KEY":
            raise CertificateError(f"{source}: unsupported key type DSA")
        elif block.label in _IGNORED_LABELS:
            continue
        else:
            raise CertificateError(f"{source}: unexpected PEM block {block.label!r}")
    return material


def _looks_like_pkcs12(data: bytes) -> bool:
    """PFX ::= SEQUENCE { version INTEGER (3), ... }: check the DER prefix."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    offset = 2 if first < 0x80 else 2 + (first & 0x7F)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _decode_pkcs12(data: bytes, source: str, password: bytes | None) -> _Material:
    from cryptography.hazmat.primitives.serialization import pkcs12  # .p12 files only

    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except UnsupportedAlgorithm as exc:
        raise CertificateError(f"{source}: PKCS#12 uses an unsupported algorithm") from exc
    except (ValueError, TypeError) as exc:
        hint = " (no password given)" if password is None else ""
        raise CertificateError(f"{source}: wrong password or corrupt PKCS#12{hint}") from exc
    material = _Material()
    if key is not None:
        material.keys.append((key, source))
    if cert is not None:
        material.certs.append(cert)
    material.certs.extend(extra)
    return material


def _decode_der(data: bytes, source: str, password: bytes | None, purpose: _Purpose) -> _Material:
    if _looks_like_pkcs12(data) or source.lower().endswith((".p12", ".pfx")):
        return _decode_pkcs12(data, source, password)
    if data[:1] == b"\x30":
        try:
            return _Material(certs=[x509.load_der_x509_certificate(data)])
        except ValueError:
            pass
        key: PrivateKeyTypes | None = None
        try:
            key = serialization.load_der_private_key(data, None)
        except TypeError as exc:  # encrypted PKCS#8 DER
            if purpose == "trust":
                raise CertificateError(
                    f"{source}: holds a private key; certificates only here"
                ) from exc
            if password is None:
                raise CertificateError(
                    f"{source}: private key is encrypted and no password was given"
                ) from exc
            try:
                key = serialization.load_der_private_key(data, password)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc2:
                raise CertificateError(f"{source}: wrong password or corrupt private key") from exc2
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if key is not None:
            if purpose == "trust":
                raise CertificateError(f"{source}: holds a private key; certificates only here")
            return _Material(keys=[(key, source)])
    raise CertificateError(f"{source}: not a certificate, key, PKCS#12 or zip file")


def _gunzip(data: bytes, source: str) -> bytes:
    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decomp.decompress(data, _MAX_INFLATED + 1)
    except zlib.error as exc:
        raise CertificateError(f"{source}: corrupt gzip data") from exc
    if len(out) > _MAX_INFLATED:
        raise CertificateError(f"{source}: gzip content larger than {_MAX_INFLATED} bytes")
    if not decomp.eof:
        raise CertificateError(f"{source}: corrupt gzip data (truncated)")
    return out


def _zip_entries(data: bytes, source: str, password: bytes | None) -> list[tuple[str, bytes]]:
    import zipfile  # .zip bundles only (not loaded by a node that reads PEM files)

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [
                info
                for info in zf.infolist()
                if not info.is_dir()
                and not info.filename.startswith("__MACOSX/")
                and not info.filename.rsplit("/", 1)[-1].startswith(".")
            ]
            entries: list[tuple[str, bytes]] = []
            for info in infos:
                if info.file_size > _MAX_INFLATED:
                    raise CertificateError(
                        f"{source}: zip entry {info.filename} is larger than {_MAX_INFLATED} bytes"
                    )
                try:
                    entries.append((info.filename, zf.read(info, pwd=password)))
                except RuntimeError as exc:  # encrypted entry: no or bad password
                    raise CertificateError(
                        f"{source}: zip entry {info.filename} is encrypted: "
                        "wrong or missing password"
                    ) from exc
                except NotImplementedError as exc:
                    raise CertificateError(
                        f"{source}: zip entry {info.filename} uses an unsupported "
                        "compression or encryption method"
                    ) from exc
            return entries
    except CertificateError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise CertificateError(f"{source}: corrupt zip file") from exc


def _decode(
    data: bytes,
    source: str,
    password: bytes | None,
    purpose: _Purpose,
    *,
    depth: int = 0,
) -> _Material:
    """Decode one blob by content: zip, gzip, PEM, then DER (PKCS#12, certificate, key)."""
    if depth > _MAX_DEPTH:
        raise CertificateError(f"{source}: too deeply nested archive")
    if not data.strip():
        raise CertificateError(f"{source}: empty file")
    if data.startswith(_ZIP_MAGIC):
        entries = _zip_entries(data, source, password)
        if purpose != "trust" and len(entries) != 1:
            raise CertificateError(
                f"{source}: zip holds {len(entries)} entries, expected one identity"
            )
        if not entries:
            raise CertificateError(f"{source}: zip holds no entries")
        material = _Material()
        for name, content in entries:
            material.extend(
                _decode(content, f"{source} ({name})", password, purpose, depth=depth + 1)
            )
        return material
    if data.startswith(_GZIP_MAGIC):
        return _decode(_gunzip(data, source), source, password, purpose, depth=depth + 1)
    if b"-----BEGIN " in data:
        return _decode_pem(data, source, password, purpose)
    return _decode_der(data, source, password, purpose)


def _dedup(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[str] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        fp = fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            out.append(cert)
    return out


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def order_chain(
    leaf: x509.Certificate, others: Iterable[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Order ``others`` issuer by issuer from ``leaf`` up to the root.

    Certificates that are not on the leaf's issuing path are kept, after the path, in
    their original order. Duplicates (and the leaf itself) are dropped.
    """
    leaf_fp = fingerprint(leaf)
    remaining = [c for c in _dedup(others) if fingerprint(c) != leaf_fp]
    path: list[x509.Certificate] = []
    current = leaf
    while remaining and current.issuer != current.subject:
        candidates = [c for c in remaining if c.subject == current.issuer]
        if not candidates:
            break
        verified = [c for c in candidates if _issued_by(current, c)]
        nxt = (verified or candidates)[0]
        path.append(nxt)
        remaining.remove(nxt)
        current = nxt
    return (*path, *remaining)


def _pick_leaf(
    key: IdentityKey, certs: list[x509.Certificate], source: str, key_source: str | None = None
) -> x509.Certificate:
    if not certs:
        raise CertificateError(f"{source}: no certificate found")
    want = spki_der(key.public_key())
    matching = [c for c in certs if spki_der(c.public_key()) == want]
    if not matching:
        what = "the certificate" if len(certs) == 1 else f"any of the {len(certs)} certificates"
        if key_source is None:
            raise CertificateError(f"{source}: private key does not match {what}")
        raise CertificateError(f"{key_source}: private key does not match {what} in {source}")
    end_entity = [c for c in matching if not _is_ca(c)]
    return (end_entity or matching)[0]


def _single_key(material: _Material, source: str) -> tuple[PrivateKeyTypes, str]:
    if not material.keys:
        raise CertificateError(f"{source}: no private key found")
    distinct: dict[bytes, tuple[PrivateKeyTypes, str]] = {}
    for key, where in material.keys:
        distinct.setdefault(spki_der(key.public_key()), (key, where))
    if len(distinct) > 1:
        raise CertificateError(
            f"{source}: holds {len(distinct)} different private keys, expected one"
        )
    return next(iter(distinct.values()))


def load_private_key(
    path_or_bytes: StrPath | bytes,
    *,
    password: str | bytes | None = None,
    source: str | None = None,
) -> IdentityKey:
    """Load one RSA or EC private key from a file path or from bytes.

    Accepts PEM (``PRIVATE KEY``, ``RSA PRIVATE KEY`` with a PKCS#1 *or* PKCS#8 body,
    ``EC PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY``, legacy ``Proc-Type`` encryption;
    certificates in the same file are ignored), DER, PKCS#12, a zip holding one entry
    and gzip. ``source`` names the data in error messages (defaults to the path).
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        name = source or "private key data"
    else:
        data, name = _read(path_or_bytes)
        name = source or name
    material = _decode(data, name, _password_bytes(password), "key")
    key, where = _single_key(material, name)
    return _check_identity_key(key, where)


def load_identity(
    path: StrPath,
    *,
    password: str | bytes | None = None,
    key_path: StrPath | None = None,
) -> Identity:
    """Load a VASP identity (private key, leaf, chain) from one file, or two.

    ``path`` may be PEM (certificates and key in any order), PKCS#12 (legacy or modern),
    a Sectigo-style zip holding exactly one ``.p12`` or PEM entry, or gzip PEM; the
    format is detected from the content. With ``key_path`` the key is read from that
    file instead. The leaf is the certificate whose public key matches the private key;
    the chain is the other certificates ordered from the leaf's issuer to the root.
    """
    pw = _password_bytes(password)
    data, source = _read(path)
    material = _decode(data, source, pw, "identity")
    if key_path is not None:
        key = load_private_key(key_path, password=password)
        key_source = os.fspath(key_path)
        if material.keys:
            own, _ = _single_key(material, source)
            if spki_der(own.public_key()) != spki_der(key.public_key()):
                raise CertificateError(
                    f"{source}: holds a private key that differs from the key file {key_source}"
                )
        certs = _dedup(material.certs)
        leaf = _pick_leaf(key, certs, source, key_source)
    else:
        raw_key, where = _single_key(material, source)
        key = _check_identity_key(raw_key, where)
        certs = _dedup(material.certs)
        leaf = _pick_leaf(key, certs, source)
    return Identity(key=key, leaf=leaf, chain=order_chain(leaf, certs))


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Certificates in ``data``: PEM, DER, gzip PEM (as GDS ``Certificate.chain``) or zip.

    Order is kept; private keys are refused.
    """
    material = _decode(bytes(data), source, None, "trust")
    if not material.certs:
        raise CertificateError(f"{source}: no certificates found")
    return material.certs


def load_certificates(
    path: StrPath, *, password: str | bytes | None = None
) -> list[x509.Certificate]:
    """Certificates of a trust file: PEM bundle, DER, gzip PEM, PKCS#12 or a zip of those.

    A PEM or DER private key is an error (a trust file must not hold secrets); the key
    inside a PKCS#12 is discarded and only its certificates are returned.
    """
    data, source = _read(path)
    material = _decode(data, source, _password_bytes(password), "trust")
    if not material.certs:
        raise CertificateError(f"{source}: no certificates found")
    return material.certs


def load_trust_pool(
    paths: Iterable[StrPath], *, password: str | bytes | None = None
) -> tuple[x509.Certificate, ...]:
    """All certificates of all ``paths``, first occurrence kept, deduplicated by fingerprint."""
    certs: list[x509.Certificate] = []
    for path in paths:
        certs.extend(load_certificates(path, password=password))
    return tuple(_dedup(certs))


def _public_key_from_der(der: bytes) -> PublicKeyTypes | None:
    try:
        return serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        return None


def load_public_key(data: bytes, *, source: str) -> PeerPublicKey:
    """Parse a peer's KeyExchange ``SigningKey.data`` (or any public key blob).

    In TRISA's order: SubjectPublicKeyInfo DER; then PEM (the first ``CERTIFICATE``,
    ``PUBLIC KEY``, ``RSA PUBLIC KEY`` with an SPKI or PKCS#1 body, or the non-standard
    ``ECDSA PUBLIC KEY`` / ``ED25519 PUBLIC KEY`` labels); then a DER certificate.
    Only RSA, EC P-256/384/521 and Ed25519 keys are accepted.
    """
    data = bytes(data)
    if not data.strip():
        raise CertificateError(f"{source}: empty key data")
    key = _public_key_from_der(data)
    if key is not None:
        return _check_public_key(key, source)
    if b"-----BEGIN " in data:
        for block in _pem_blocks(data, source):
            if block.label in _CERT_LABELS:
                cert = _parse_der_cert(block.der, source)
                try:
                    return _check_public_key(cert.public_key(), source)
                except UnsupportedAlgorithm as exc:
                    raise CertificateError(
                        f"{source}: certificate has an unsupported key type"
                    ) from exc
            if block.label in _PUBLIC_KEY_LABELS:
                key = _public_key_from_der(block.der)
                if key is None:
                    raise CertificateError(f"{source}: malformed {block.label} block")
                return _check_public_key(key, source)
            if block.label in _KEY_LABELS:
                raise CertificateError(f"{source}: holds a private key; send only the public key")
        raise CertificateError(f"{source}: no public key or certificate PEM block found")
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{source}: not a public key or certificate") from exc
    try:
        return _check_public_key(cert.public_key(), source)
    except UnsupportedAlgorithm as exc:
        raise CertificateError(f"{source}: certificate has an unsupported key type") from exc


def write_identity(identity: Identity, cert_path: StrPath, key_path: StrPath) -> None:
    """Write the leaf + chain PEM (0644) and the unencrypted PKCS#8 key (0600) atomically.

    Each file is replaced atomically (the key first, then the certificate); write
    failures raise :class:`~trisa_peer.errors.ConfigurationError`.
    """
    write_private(key_path, identity.key_pem())
    atomic_write(cert_path, identity.chain_pem(), mode=PUBLIC_MODE)
