"""A throw-away EC P-256 PKI for the directory and memory figures (fast to mint).

RSA-4096 keys take ~1 s each to generate, so the 10,000 distinct leaves of B4 and B5
are EC P-256 leaves (TRISA profile: clientAuth + serverAuth, SAN = CN) under an EC
root and issuing CA. The leaf key does not matter to either figure: B4 measures the
directory, B5 the memory of cached decisions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class BenchPKI:
    """Root -> issuing CA -> leaves, all EC P-256."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.not_before = now - timedelta(minutes=5)
        self.not_after = now + timedelta(days=30)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name("Bench Root CA"), self.root_key, None, None)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = self._ca(
            _name("Bench Issuing CA"), self.issuing_key, self.root, self.root_key
        )
        self._serial = 1000

    def _ca(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate | None,
        issuer_key: ec.EllipticCurvePrivateKey | None,
    ) -> x509.Certificate:
        signer = issuer_key or key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )
        return builder.sign(signer, hashes.SHA256())

    def leaf(self, cn: str, key: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
        """A TRISA-profile leaf for ``cn`` (a fresh P-256 key unless ``key`` is given)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        self._serial += 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.issuing.subject)
            .public_key(key.public_key())
            .serial_number(self._serial)
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.issuing_key.public_key()
                ),
                False,
            )
        )
        return builder.sign(self.issuing_key, hashes.SHA256())

    def trust_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.root, self.issuing)
        )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
