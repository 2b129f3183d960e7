"""Certificate signing requests for TRISA identity certificates: build and check.

Pure (no gRPC, no files, no network). The VASP side builds a key and a CSR with the
TRISA profile's fields (the guide's ``trisa.conf``, see docs/trisa.conf); the directory
checks every CSR before it reaches the CA with :func:`check_csr`.

What :func:`check_csr` checks, each with the reason in one line
(:class:`~trisa_peer.errors.CertificateError`):

- the self-signature verifies (proof of possession of the private key), made with
  SHA-256, SHA-384 or SHA-512;
- the subject has exactly one common name, equal to the record's common name (DNS
  names compare case-insensitively, without a trailing dot);
- the subjectAltName extension is present and holds exactly one name, a DNS name equal
  to the common name (no extra names, no IP addresses, e-mail addresses or URIs);
- the key is RSA of at least :data:`MIN_RSA_BITS` bits, or of the profile's stricter
  size (``min_rsa_bits``, see :func:`profile_min_rsa_bits`); other key types are refused
  (the TRISA profile issues RSA, and TRISA seals envelopes to the identity key);
- no extension other than basicConstraints (not a CA), keyUsage, extendedKeyUsage and
  subjectAltName is requested.

What it does not check: the other subject fields (O, L, ST, C are the VASP's to state;
the CA may override them), key usages (the CA's profile sets them), and whether the
common name is the VASP's (the caller passes the record's name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from .errors import CertificateError, ConfigurationError

__all__ = [
    "CSR_METADATA",
    "DEFAULT_KEY_BITS",
    "MAX_CSR_BYTES",
    "MIN_RSA_BITS",
    "SubjectFields",
    "build_csr",
    "check_csr",
    "csr_der",
    "csr_pem",
    "load_csr",
    "new_key",
    "profile_min_rsa_bits",
]

#: gRPC metadata key carrying a DER CSR on ``TRISADirectory/Register`` (the TRISA
#: ``RegisterRequest`` has no CSR field - trisa PR #60 was never merged - and this
#: project adds none): a directory that does not know it ignores it and answers with a
#: PKCS#12 password, which the client then reports.
CSR_METADATA = "trisa-peer-csr-bin"

#: RSA size of a new key (the guide's ``default_bits = 4096``).
DEFAULT_KEY_BITS = 4096
#: The smallest RSA key the directory accepts in a CSR, and ``new_key`` makes.
MIN_RSA_BITS = 2048
#: The largest RSA key ``new_key`` makes (bigger keys only slow every handshake).
MAX_RSA_BITS = 16384
#: A CSR larger than this is refused unread (an RSA-16384 CSR is about 2.5 KiB DER).
MAX_CSR_BYTES = 16 * 1024

_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_ALLOWED_EXTENSIONS = {
    ExtensionOID.BASIC_CONSTRAINTS: "basicConstraints",
    ExtensionOID.KEY_USAGE: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE: "extendedKeyUsage",
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "subjectAltName",
}
_PROFILE_RSA = re.compile(r"\bRSA\b\D*(\d{3,5})", re.IGNORECASE)


@dataclass(frozen=True)
class SubjectFields:
    """The subject fields of ``trisa.conf`` besides the common name: ``O``, ``L``,
    ``ST`` (spelled out) and ``C`` (ISO alpha-2). Empty fields are left out."""

    organization: str = ""
    locality: str = ""
    state: str = ""
    country: str = ""


def new_key(bits: int = DEFAULT_KEY_BITS) -> rsa.RSAPrivateKey:
    """A new RSA private key of ``bits`` bits; ConfigurationError below
    :data:`MIN_RSA_BITS` or above :data:`MAX_RSA_BITS`."""
    if bits < MIN_RSA_BITS:
        raise ConfigurationError(
            f"RSA key size {bits} is too small: at least {MIN_RSA_BITS} bits are required"
        )
    if bits > MAX_RSA_BITS:
        raise ConfigurationError(f"RSA key size {bits} is too large: at most {MAX_RSA_BITS}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def build_csr(
    key: rsa.RSAPrivateKey, common_name: str, subject: SubjectFields = SubjectFields()
) -> x509.CertificateSigningRequest:
    """The CSR ``openssl req -new -sha384 -config trisa.conf`` makes: subject CN (and
    the given O, L, ST, C), basicConstraints CA:FALSE, keyUsage digitalSignature,
    keyEncipherment, nonRepudiation, extendedKeyUsage clientAuth, serverAuth and
    subjectAltName DNS = CN. ``common_name`` is lower-cased, its trailing dot removed;
    the caller validates it as a DNS name."""
    cn = common_name.strip().lower().rstrip(".")
    if not cn:
        raise ConfigurationError("a common name is required for the CSR")
    if subject.country and (len(subject.country.strip()) != 2
                            or not subject.country.strip().isalpha()):
        raise ConfigurationError(
            f"country {subject.country!r} must be a 2-letter ISO 3166 code"
        )
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    for oid, value in (
        (NameOID.ORGANIZATION_NAME, subject.organization),
        (NameOID.LOCALITY_NAME, subject.locality),
        (NameOID.STATE_OR_PROVINCE_NAME, subject.state),
        (NameOID.COUNTRY_NAME, subject.country.upper()),
    ):
        if value.strip():
            attrs.append(x509.NameAttribute(oid, value.strip()))
    try:
        name = x509.Name(attrs)
    except ValueError as exc:
        raise ConfigurationError(f"CSR subject: {exc}") from exc
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                   ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    return builder.sign(key, hashes.SHA384())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def load_csr(data: bytes, *, source: str = "CSR") -> x509.CertificateSigningRequest:
    """A CSR from PEM (``CERTIFICATE REQUEST``) or DER bytes; CertificateError if it is
    not one, or larger than :data:`MAX_CSR_BYTES`."""
    if len(data) > MAX_CSR_BYTES:
        raise CertificateError(f"{source} is larger than {MAX_CSR_BYTES} bytes")
    blob = bytes(data)
    try:
        if b"-----BEGIN" in blob:
            if blob.count(b"-----BEGIN") != 1 or b"CERTIFICATE REQUEST-----" not in blob:
                raise CertificateError(
                    f"{source} must hold exactly one PEM CERTIFICATE REQUEST block"
                )
            return x509.load_pem_x509_csr(blob)
        return x509.load_der_x509_csr(blob)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{source} is not a certificate signing request") from exc


def profile_min_rsa_bits(key_algorithm_info: str) -> int:
    """The smallest RSA size a Sectigo profile accepts, from its ``keyAlgorithmInfo``
    (e.g. ``"RSA - 4096"`` → 4096), never below :data:`MIN_RSA_BITS`; text naming no
    RSA size keeps :data:`MIN_RSA_BITS`."""
    match = _PROFILE_RSA.search(key_algorithm_info or "")
    return max(MIN_RSA_BITS, int(match.group(1))) if match else MIN_RSA_BITS


def _key_text(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return type(key).__name__


def check_csr(
    csr: x509.CertificateSigningRequest,
    common_name: str,
    *,
    min_rsa_bits: int = MIN_RSA_BITS,
) -> None:
    """Raise CertificateError (one line, the reason) unless ``csr`` may be sent to the
    CA for the record named ``common_name``; see the module docstring for the list."""
    want = common_name.strip().lower().rstrip(".")
    # proof of possession first: nothing else of a forged request matters
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CertificateError(
            "CSR signature does not verify: it was not signed by the key it carries"
        )
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, _HASHES):
        used = algorithm.name if algorithm is not None else "none"
        raise CertificateError(
            f"CSR is signed with {used.upper()}; SHA-256, SHA-384 or SHA-512 is required"
        )
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError("CSR public key cannot be read") from exc
    floor = max(MIN_RSA_BITS, min_rsa_bits)
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError(
            f"CSR key is {_key_text(key)}; the TRISA profile requires RSA of at least "
            f"{floor} bits"
        )
    if key.key_size < floor:
        raise CertificateError(
            f"CSR key is RSA-{key.key_size}; at least RSA-{floor} is required"
        )
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CertificateError(
            f"CSR subject must have exactly one common name, it has {len(cns)}"
        )
    cn = str(cns[0].value)
    if cn.strip().lower().rstrip(".") != want:
        raise CertificateError(
            f"CSR common name {cn!r} is not the registered common name {want!r}"
        )
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"CSR extensions cannot be parsed: {exc}") from exc
    san: x509.SubjectAlternativeName | None = None
    for ext in extensions:
        if ext.oid not in _ALLOWED_EXTENSIONS:
            raise CertificateError(
                f"CSR requests extension {ext.oid.dotted_string}, which the TRISA "
                "profile does not issue"
            )
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise CertificateError("CSR asks for a CA certificate (basicConstraints CA:TRUE)")
        if isinstance(ext.value, x509.SubjectAlternativeName):
            san = ext.value
    if san is None:
        raise CertificateError(
            f"CSR has no subjectAltName; it must name DNS:{want} (and nothing else)"
        )
    names = list(san)
    extra = [n for n in names
             if not (isinstance(n, x509.DNSName) and n.value.lower().rstrip(".") == want)]
    if extra:
        shown = ", ".join(_general_name(n) for n in extra)
        raise CertificateError(
            f"CSR subjectAltName names {shown}; only DNS:{want} is allowed"
        )
    if len(names) != 1:
        raise CertificateError(
            f"CSR subjectAltName repeats DNS:{want}; it must name it exactly once"
        )


def _general_name(name: x509.GeneralName) -> str:
    kind = {
        x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
        x509.UniformResourceIdentifier: "URI",
    }.get(type(name), type(name).__name__)
    return f"{kind}:{name.value}"
