"""The committed test PKI in ``certs/fixtures`` (``make fixtures``) is what it claims.

Other tests rely on these exact names; this file pins them. Chain checks use
``openssl verify`` so they do not depend on the project's own verifier.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import fingerprint

PKI = Path(__file__).resolve().parent.parent / "certs" / "fixtures"
NOW = datetime.now(UTC)
TWENTY_YEARS = NOW + timedelta(days=365 * 20)

LEAVES: dict[str, str] = {
    "alice": "alice.vasp.test",
    "bob": "bob.vasp.test",
    "charlie": "charlie.vasp.test",
    "mallory": "mallory.vasp.test",
    "bob-reissued": "bob.vasp.test",
    "alice-rsa4096": "alice.vasp.test",
    "bob-rsa4096": "bob.vasp.test",
    "expired": "expired.vasp.test",
    "notyetvalid": "notyetvalid.vasp.test",
    "serverauth-only": "serverauth.vasp.test",
    "clientauth-only": "clientauth.vasp.test",
    "san-mismatch": "sanmismatch.vasp.test",
    "revoked": "revoked.vasp.test",
    "weak-rsa1024": "weak.vasp.test",
    "expired-intermediate": "expiredint.vasp.test",
    "evil": "evil.vasp.test",
    "evil-bob": "bob.vasp.test",
}
VALID_UNDER_TRUST = [
    "alice", "bob", "charlie", "mallory", "bob-reissued", "alice-rsa4096", "bob-rsa4096",
    "serverauth-only", "clientauth-only", "san-mismatch", "revoked", "weak-rsa1024",
]  # fmt: skip
OTHER_FILES = [
    "README.md",
    "trust.pem",
    "evil-trust.pem",
    "crl.pem",
    "crl.der",
    "expired-intermediate-ca.pem",
    *(f"{d}/{n}" for d in ("ca", "evil-ca") for n in (
        "root.pem", "root.key", "issuing.pem", "issuing.key", "state.json"
    )),
]  # fmt: skip


def chain(name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((PKI / f"{name}.pem").read_bytes())


def leaf(name: str) -> x509.Certificate:
    return chain(name)[0]


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def openssl_verify(
    name: str, *, trust: str = "trust.pem", purpose: str = "sslclient"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "verify", "-CAfile", str(PKI / trust),
            "-untrusted", str(PKI / f"{name}.pem"), "-purpose", purpose, str(PKI / f"{name}.pem"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_every_file_exists() -> None:
    missing = [
        f
        for f in [*OTHER_FILES, *(f"{n}.pem" for n in LEAVES), *(f"{n}.key" for n in LEAVES)]
        if not (PKI / f).is_file()
    ]
    assert not missing, f"run `make fixtures`; missing: {missing}"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_leaf_cn_key_and_chain_shape(name: str) -> None:
    certs = chain(name)
    assert cn(certs[0]) == LEAVES[name]
    assert len(certs) == 2, "leaf + issuing CA, never the root"
    assert certs[0].issuer == certs[1].subject and certs[1].subject != certs[1].issuer
    key = serialization.load_pem_private_key((PKI / f"{name}.key").read_bytes(), password=None)
    assert key.public_key() == certs[0].public_key()
    pub = certs[0].public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    expected_bits = 4096 if name.endswith("rsa4096") else 1024 if name == "weak-rsa1024" else 2048
    assert pub.key_size == expected_bits


@pytest.mark.slow
def test_test_ca_directory() -> None:
    ca = CertificateAuthority.open(PKI / "ca")
    assert cn(ca.root) == "TRISA Test Root CA"
    assert ca.trust_pem() == (PKI / "trust.pem").read_bytes()
    assert ca.root.not_valid_after_utc >= TWENTY_YEARS
    assert ca.issuing.not_valid_after_utc >= TWENTY_YEARS
    issued = {r.serial for r in ca.issued()}
    for name in LEAVES:
        if not name.startswith("evil"):
            assert leaf(name).serial_number in issued, name
    evil = CertificateAuthority.open(PKI / "evil-ca")
    assert cn(evil.root) == "Evil Root CA"
    assert evil.trust_pem() == (PKI / "evil-trust.pem").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alice", "bob", "charlie", "bob-reissued", "alice-rsa4096"])
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_valid_leaves_verify_against_trust(name: str, purpose: str) -> None:
    result = openssl_verify(name, purpose=purpose)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evil", "evil-bob"])
def test_evil_leaves_do_not_verify_against_trust(name: str) -> None:
    assert openssl_verify(name).returncode != 0
    assert openssl_verify(name, trust="evil-trust.pem").returncode == 0


@pytest.mark.slow
def test_alice_does_not_verify_against_evil_trust() -> None:
    assert openssl_verify("alice", trust="evil-trust.pem").returncode != 0


@pytest.mark.slow
def test_validity_windows() -> None:
    for name in [*VALID_UNDER_TRUST, "evil", "evil-bob", "expired-intermediate"]:
        cert = leaf(name)
        assert cert.not_valid_before_utc <= NOW, name
        assert cert.not_valid_after_utc >= TWENTY_YEARS, name
    expired = leaf("expired")
    assert expired.not_valid_before_utc == datetime(2020, 1, 1, tzinfo=UTC)
    assert expired.not_valid_after_utc == datetime(2021, 1, 1, tzinfo=UTC)
    assert "expired" in openssl_verify("expired").stdout + openssl_verify("expired").stderr
    assert leaf("notyetvalid").not_valid_before_utc > NOW
    assert leaf("notyetvalid").not_valid_before_utc.year == 2046


@pytest.mark.slow
def test_expired_intermediate() -> None:
    inter = x509.load_pem_x509_certificate((PKI / "expired-intermediate-ca.pem").read_bytes())
    root = x509.load_pem_x509_certificate((PKI / "ca" / "root.pem").read_bytes())
    assert inter.issuer == root.subject and inter.not_valid_after_utc < NOW
    inter.verify_directly_issued_by(root)
    certs = chain("expired-intermediate")
    assert certs[1] == inter
    certs[0].verify_directly_issued_by(inter)
    assert certs[0].not_valid_after_utc >= TWENTY_YEARS
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(PKI / "ca" / "root.pem"),
         "-untrusted", str(PKI / "expired-intermediate.pem"),
         str(PKI / "expired-intermediate.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "expired" in result.stdout + result.stderr


@pytest.mark.slow
def test_eku_variants() -> None:
    def eku(name: str) -> set[x509.ObjectIdentifier]:
        return set(leaf(name).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    both = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert eku("alice") == both
    assert eku("serverauth-only") == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert eku("clientauth-only") == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert openssl_verify("serverauth-only", purpose="sslclient").returncode != 0
    assert openssl_verify("serverauth-only", purpose="sslserver").returncode == 0
    assert openssl_verify("clientauth-only", purpose="sslserver").returncode != 0
    assert openssl_verify("clientauth-only", purpose="sslclient").returncode == 0


def test_san() -> None:
    def san(name: str) -> list[str]:
        ext = leaf(name).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return ext.value.get_values_for_type(x509.DNSName)

    assert san("alice") == ["alice.vasp.test"]
    assert san("san-mismatch") == ["other.vasp.test"]


def test_bob_and_bob_reissued_differ() -> None:
    bob, again = leaf("bob"), leaf("bob-reissued")
    assert cn(bob) == cn(again) == "bob.vasp.test"
    assert fingerprint(bob) != fingerprint(again)
    assert bob.serial_number != again.serial_number
    assert bob.public_key() != again.public_key()
    assert cn(leaf("evil-bob")) == "bob.vasp.test"
    assert leaf("evil-bob").issuer != bob.issuer


@pytest.mark.slow
def test_crl_lists_revoked() -> None:
    issuing = x509.load_pem_x509_certificate((PKI / "ca" / "issuing.pem").read_bytes())
    der = x509.load_der_x509_crl((PKI / "crl.der").read_bytes())
    pem = x509.load_pem_x509_crl((PKI / "crl.pem").read_bytes())
    assert der == pem
    assert der.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert der.next_update_utc is not None and der.next_update_utc >= TWENTY_YEARS
    entry = der.get_revoked_certificate_by_serial_number(leaf("revoked").serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    for name in ("alice", "bob", "bob-reissued"):
        assert der.get_revoked_certificate_by_serial_number(leaf(name).serial_number) is None
    assert CertificateAuthority.open(PKI / "ca").is_revoked(leaf("revoked").serial_number)


def test_readme_mentions_every_file() -> None:
    text = (PKI / "README.md").read_text()
    for name in LEAVES:
        assert f"`{name}.pem`" in text, name
    for other in ("trust.pem", "evil-trust.pem", "crl.pem", "crl.der", "expired-intermediate-ca"):
        assert other in text


def test_fixture_script_is_committed() -> None:
    assert (PKI.parent.parent / "scripts" / "make_fixtures.py").is_file()
