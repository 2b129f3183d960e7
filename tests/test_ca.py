"""The local TRISA CA (``trisa_peer.ca``) and its CLI (``trisa-peer ca``).

Every positive check has a failing twin next to it. RSA-2048 throughout for speed.
"""

from __future__ import annotations

import io
import re
import stat
import subprocess
import threading
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from helpers import CliResult

from trisa_peer.ca import CertificateAuthority, IssuedRecord, export_pkcs12_zip, p12_member_name
from trisa_peer.certs import Identity, cert_to_pem, certs_to_pem
from trisa_peer.errors import CertificateError, ConfigurationError

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(
        tmp_path_factory.mktemp("evil") / "ca", name="Evil Root CA", key_size=2048
    )


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> Identity:
    return ca.issue("alice.vasp.test", dns_names=["api.alice.vasp.test"], key_size=2048)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def openssl_verify(
    tmp: Path,
    root: x509.Certificate,
    issuing: x509.Certificate,
    leaf: x509.Certificate,
    purpose: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "verify",
            "-CAfile", str(write(tmp / "root.pem", cert_to_pem(root))),
            "-untrusted", str(write(tmp / "issuing.pem", cert_to_pem(issuing))),
            "-purpose", purpose,
            str(write(tmp / "leaf.pem", cert_to_pem(leaf))),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- CA certs


def test_ca_directory_layout_and_modes(ca: CertificateAuthority) -> None:
    names = {p.name for p in ca.directory.iterdir()}
    assert {"root.pem", "root.key", "issuing.pem", "issuing.key", "state.json"} <= names
    for key in ("root.key", "issuing.key"):
        assert stat.S_IMODE((ca.directory / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((ca.directory / "root.pem").stat().st_mode) == 0o644


def test_ca_certificates_profile(ca: CertificateAuthority) -> None:
    root_bc = ca.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_bc.ca and root_bc.path_length == 1
    iss_bc = ca.issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert iss_bc.ca and iss_bc.path_length == 0
    ku = ca.root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert re.fullmatch(r"CN=trisa-peer Local Root CA [\w.-]+-[0-9a-f]{6}",
                        ca.root.subject.rfc4514_string())
    assert ca.issuing.issuer == ca.root.subject
    years = (ca.root.not_valid_after_utc - ca.root.not_valid_before_utc).days / 365
    assert 24.9 < years < 25.1
    assert ca.trust_pem() == certs_to_pem([ca.root, ca.issuing])


def test_init_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        CertificateAuthority.init(tmp_path, key_size=2048)


def test_init_refuses_weak_ca_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="RSA-2048"):
        CertificateAuthority.init(tmp_path / "ca", key_size=1024)


def test_open_roundtrip_and_not_a_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    again = CertificateAuthority.open(ca.directory)
    assert again.root == ca.root and again.issuing == ca.issuing
    with pytest.raises(ConfigurationError, match="not a trisa-peer CA directory"):
        CertificateAuthority.open(tmp_path)
    with pytest.raises(ConfigurationError, match="no such CA directory"):
        CertificateAuthority.open(tmp_path / "missing")


def test_open_or_init(tmp_path: Path) -> None:
    first = CertificateAuthority.open_or_init(tmp_path / "ca", key_size=2048)
    second = CertificateAuthority.open_or_init(tmp_path / "ca", key_size=2048)
    assert first.root == second.root


# --------------------------------------------------------------------------- leaf profile


def test_leaf_profile(ca: CertificateAuthority, alice: Identity) -> None:
    leaf = alice.leaf
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice.vasp.test"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "alice.vasp.test",
        "api.alice.vasp.test",
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert set(eku.value) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert eku.critical is False
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    iss_ski = ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == iss_ski.digest
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA384)
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert 394 <= days <= 396
    assert 0 < leaf.serial_number < 2**160
    assert alice.chain == (ca.issuing,)


def test_leaf_options(ca: CertificateAuthority) -> None:
    ident = ca.issue(
        "Bob.VASP.test",
        dns_names=["bob.vasp.test", "x.bob.vasp.test", "x.bob.vasp.test"],
        key_type="ec-p256",
        organization="Bob VASP",
        country="US",
        server_auth=False,
        eku_critical=True,
    )
    assert ident.leaf.subject.rfc4514_string() == "CN=Bob.VASP.test,O=Bob VASP,C=US"
    san = ident.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["Bob.VASP.test", "x.bob.vasp.test"]
    eku = ident.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH] and eku.critical
    only = ca.issue("sanmismatch.vasp.test", key_type="ec", san_override=["other.vasp.test"])
    san = only.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["other.vasp.test"]


def test_leaf_weak_key_refused_unless_allowed(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="RSA-1024 is too weak"):
        ca.issue("weak.vasp.test", key_size=1024)
    weak = ca.issue("weak.vasp.test", key_size=1024, allow_weak=True)
    key = weak.leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 1024


def test_leaf_bad_input(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="common name"):
        ca.issue("  ", key_type="ec")
    with pytest.raises(ConfigurationError, match="key type"):
        ca.issue("x.vasp.test", key_type="dsa")
    with pytest.raises(ConfigurationError, match="ASCII"):
        ca.issue("x.vasp.test", key_type="ec", dns_names=["bücher.example"])
    with pytest.raises(ConfigurationError, match="naive"):
        ca.issue("x.vasp.test", key_type="ec", not_before=datetime(2030, 1, 1))


def test_explicit_validity_and_clock(tmp_path: Path) -> None:
    frozen = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    ca = CertificateAuthority.init(tmp_path / "ca", key_size=2048, clock=lambda: frozen)
    assert ca.root.not_valid_before_utc <= frozen
    leaf = ca.issue("t.vasp.test", key_type="ec").leaf
    assert leaf.not_valid_before_utc <= frozen < leaf.not_valid_after_utc
    expired = ca.issue(
        "expired.vasp.test",
        key_type="ec",
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2021, 1, 1, tzinfo=UTC),
    ).leaf
    assert expired.not_valid_after_utc == datetime(2021, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="later than"):
        ca.issue(
            "x.vasp.test",
            key_type="ec",
            not_before=datetime(2021, 1, 1, tzinfo=UTC),
            not_after=datetime(2020, 1, 1, tzinfo=UTC),
        )


# --------------------------------------------------------------------------- chain checks


@pytest.mark.slow
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_openssl_verifies_leaf(
    ca: CertificateAuthority, alice: Identity, tmp_path: Path, purpose: str
) -> None:
    result = openssl_verify(tmp_path, ca.root, ca.issuing, alice.leaf, purpose)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_openssl_rejects_leaf_under_foreign_root(
    evil: CertificateAuthority, alice: Identity, tmp_path: Path
) -> None:
    result = openssl_verify(tmp_path, evil.root, evil.issuing, alice.leaf, "sslclient")
    assert result.returncode != 0


@pytest.mark.slow
def test_openssl_purpose_twin(ca: CertificateAuthority, tmp_path: Path) -> None:
    server_only = ca.issue("s.vasp.test", key_size=2048, client_auth=False).leaf
    assert openssl_verify(tmp_path, ca.root, ca.issuing, server_only, "sslserver").returncode == 0
    assert openssl_verify(tmp_path, ca.root, ca.issuing, server_only, "sslclient").returncode != 0


def test_cryptography_default_verifiers_accept(ca: CertificateAuthority, alice: Identity) -> None:
    # the default webpki policies: CA certs pass webpki_defaults_ca(), leaf EKU non-critical
    client = PolicyBuilder().store(Store([ca.root])).build_client_verifier()
    verified = client.verify(alice.leaf, [ca.issuing])
    assert verified.chain[-1] == ca.root
    server = (
        PolicyBuilder()
        .store(Store([ca.root]))
        .build_server_verifier(x509.DNSName("api.alice.vasp.test"))
    )
    assert server.verify(alice.leaf, [ca.issuing])[-1] == ca.root


# --------------------------------------------------------------------------- CSR


def _openssl_csr(tmp: Path, bits: int = 2048) -> bytes:
    subprocess.run(
        [
            "openssl", "req", "-new", "-newkey", f"rsa:{bits}", "-nodes", "-sha384",
            "-subj", "/CN=example.com",
            "-addext", "subjectAltName=DNS:example.com,DNS:www.example.com",
            "-keyout", str(tmp / "csr.key"), "-out", str(tmp / "req.csr"),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return (tmp / "req.csr").read_bytes()


@pytest.mark.slow
def test_sign_csr_keeps_subject_and_san(ca: CertificateAuthority, tmp_path: Path) -> None:
    csr_pem = _openssl_csr(tmp_path)
    cert = ca.sign_csr(csr_pem)
    assert cert.subject.rfc4514_string() == "CN=example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.com", "www.example.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    csr = x509.load_pem_x509_csr(csr_pem)
    assert cert.public_key() == csr.public_key()
    assert cert.serial_number in {r.serial for r in ca.issued()}
    assert openssl_verify(tmp_path, ca.root, ca.issuing, cert, "sslserver").returncode == 0


def test_sign_csr_without_san_uses_cn(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nosan.vasp.test")]))
        .sign(key, hashes.SHA256())
    )
    cert = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nosan.vasp.test"]


@pytest.mark.slow
def test_sign_csr_tampered_signature(ca: CertificateAuthority, tmp_path: Path) -> None:
    csr = x509.load_pem_x509_csr(_openssl_csr(tmp_path))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="CSR signature is invalid"):
        ca.sign_csr(tampered)


def test_sign_csr_weak_key(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak.vasp.test")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="CSR key is RSA-1024; at least RSA-2048"):
        ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"])
def test_sign_csr_garbage(ca: CertificateAuthority, garbage: bytes) -> None:
    with pytest.raises(CertificateError, match="not a PEM certificate request"):
        ca.sign_csr(garbage)


# --------------------------------------------------------------------------- PKCS#12


def _p12_from_zip(data: bytes, cn: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [p12_member_name(cn)]
        return zf.read(p12_member_name(cn))


def test_p12_member_name() -> None:
    assert p12_member_name("Alice VASP.test") == "alice_vasp.test.p12"


@pytest.mark.slow
def test_pkcs12_modern_opens_without_legacy(alice: Identity, tmp_path: Path) -> None:
    data = export_pkcs12_zip(alice, "s3cret", batch_name="batch-1")
    p12 = write(tmp_path / "alice.p12", _p12_from_zip(data, "alice.vasp.test"))
    result = subprocess.run(
        ["openssl", "pkcs12", "-in", str(p12), "-nodes", "-passin", "pass:s3cret"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "BEGIN PRIVATE KEY" in result.stdout
    assert result.stdout.count("BEGIN CERTIFICATE") == 2
    wrong = subprocess.run(
        ["openssl", "pkcs12", "-in", str(p12), "-nodes", "-passin", "pass:wrong"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0


def test_pkcs12_legacy_loads_with_cryptography(alice: Identity) -> None:
    data = export_pkcs12_zip(alice, "s3cret", batch_name="batch-2", legacy=True)
    p12 = _p12_from_zip(data, "alice.vasp.test")
    key, cert, extra = pkcs12.load_key_and_certificates(p12, b"s3cret")
    assert cert == alice.leaf and list(extra) == list(alice.chain)
    assert key is not None and key.public_key() == alice.key.public_key()
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(p12, b"wrong")


def test_pkcs12_requires_password(alice: Identity) -> None:
    with pytest.raises(ConfigurationError, match="password"):
        export_pkcs12_zip(alice, "", batch_name="b")


# --------------------------------------------------------------------------- revocation


@pytest.mark.slow
def test_revoke_and_crl(ca: CertificateAuthority, tmp_path: Path) -> None:
    victim = ca.issue("revoked.vasp.test", key_type="ec").leaf
    assert not ca.is_revoked(victim.serial_number)
    ca.revoke(victim.serial_number, "Key Compromise")
    assert ca.is_revoked(victim.serial_number)
    crl = ca.crl()
    assert crl.is_signature_valid(ca.issuing.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(ca.root.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(victim.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert timedelta(days=6) < crl.next_update_utc - crl.last_update_utc <= timedelta(days=7)
    assert crl.issuer == ca.issuing.subject
    pem = write(tmp_path / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    text = subprocess.run(
        ["openssl", "crl", "-in", str(pem), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert format(victim.serial_number, "X") in text and "Key Compromise" in text
    record = next(r for r in ca.issued() if r.serial == victim.serial_number)
    assert isinstance(record, IssuedRecord) and record.revoked and record.reason == 1
    # a second CRL has a higher number
    n1 = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    n2 = ca.crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert n2 > n1
    far = ca.crl(next_update_days=365 * 30)
    assert far.next_update_utc is not None
    assert far.next_update_utc > datetime.now(UTC) + timedelta(days=365 * 29)


def test_revoke_twice_is_an_error(ca: CertificateAuthority) -> None:
    serial = ca.issue("twice.vasp.test", key_type="ec").leaf.serial_number
    ca.revoke(serial, "superseded")
    with pytest.raises(ConfigurationError, match="already revoked"):
        ca.revoke(serial, "superseded")


def test_revoke_unknown_serial(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="was not issued by this CA"):
        ca.revoke(0xDEADBEEF, "unspecified")


@pytest.mark.parametrize("reason", ["value 7", "bogus", 7])
def test_revoke_bad_reason_lists_valid(ca: CertificateAuthority, reason: str | int) -> None:
    serial = ca.issue("reason.vasp.test", key_type="ec").leaf.serial_number
    with pytest.raises(ConfigurationError, match=r"valid reasons:.*key compromise"):
        ca.revoke(serial, reason)
    assert not ca.is_revoked(serial)


def test_concurrent_instances_lose_no_updates(ca: CertificateAuthority) -> None:
    before = len(ca.issued())
    instances = [CertificateAuthority.open(ca.directory) for _ in range(3)]
    errors: list[BaseException] = []

    def work(inst: CertificateAuthority) -> None:
        try:
            for i in range(4):
                inst.issue(f"c{i}.vasp.test", key_type="ec")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ca.issued()) == before + 12


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(trisa_peer_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Callable[..., CliResult]:
    """``cli("issue", ...)`` runs ``trisa-peer ca issue ...`` in process, in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return lambda *args: trisa_peer_cli("ca", *args)


def assert_one_line_error(result: CliResult) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("trisa-peer: error: ")


@pytest.mark.slow
def test_cli_end_to_end(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    cadir = tmp_path / "ca"
    r = cli("init", "--dir", str(cadir), "--key-size", "2048")
    assert r.returncode == 0, r.stderr
    assert "root" in r.stdout and (cadir / "state.json").is_file()

    out = tmp_path / "out"
    out.mkdir()
    r = cli("issue", "--dir", str(cadir), "alice.vasp.test", "--dns", "api.alice.vasp.test",
            "--out", str(out), "--key-size", "2048")  # fmt: skip
    assert r.returncode == 0, r.stderr
    pem, key = out / "alice.vasp.test.pem", out / "alice.vasp.test.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certs = x509.load_pem_x509_certificates(pem.read_bytes())
    assert len(certs) == 2 and certs[1] == CertificateAuthority.open(cadir).issuing
    serial_hex = format(certs[0].serial_number, "X")
    assert serial_hex in r.stdout
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert loaded.public_key() == certs[0].public_key()

    # refuses to overwrite without --force, file unchanged
    before = pem.read_bytes()
    r = cli("issue", "--dir", str(cadir), "alice.vasp.test", "--out", str(out),
            "--key-size", "2048")  # fmt: skip
    assert_one_line_error(r)
    assert "--force" in r.stderr and pem.read_bytes() == before
    r = cli("issue", "--dir", str(cadir), "alice.vasp.test", "--out", str(out),
            "--key-size", "2048", "--force")  # fmt: skip
    assert r.returncode == 0 and pem.read_bytes() != before

    # sign-csr to stdout and to a file
    csr = tmp_path / "req.csr"
    csr.write_bytes(_openssl_csr(tmp_path))
    r = cli("sign-csr", "--dir", str(cadir), str(csr))
    assert r.returncode == 0, r.stderr
    signed = x509.load_pem_x509_certificates(r.stdout.encode())
    assert signed[0].subject.rfc4514_string() == "CN=example.com"
    r = cli("sign-csr", "--dir", str(cadir), str(csr), "--out", str(tmp_path / "signed.pem"))
    assert r.returncode == 0 and (tmp_path / "signed.pem").is_file()

    # revoke (hex with colons and 0x), then CRL in PEM and DER
    colons = ":".join(serial_hex[i : i + 2] for i in range(0, len(serial_hex), 2))
    victim = x509.load_pem_x509_certificates(pem.read_bytes())[0]
    v_hex = format(victim.serial_number, "x")
    r = cli("revoke", "--dir", str(cadir), "--serial", f"0x{v_hex}", "--reason", "keyCompromise")
    assert r.returncode == 0, r.stderr
    assert v_hex.upper() in r.stdout and "key compromise" in r.stdout
    r = cli("revoke", "--dir", str(cadir), "--serial", colons, "--reason", "superseded")
    assert r.returncode == 0, r.stderr
    r = cli("crl", "--dir", str(cadir), "--out", str(tmp_path / "crl.pem"))
    assert r.returncode == 0, r.stderr
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(victim.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(certs[0].serial_number) is not None
    r = cli("crl", "--dir", str(cadir), "--out", str(tmp_path / "crl.der"))
    assert r.returncode == 0
    x509.load_der_x509_crl((tmp_path / "crl.der").read_bytes())
    r = cli("crl", "--dir", str(cadir), "--out", str(tmp_path / "crl.bin"), "--der")
    x509.load_der_x509_crl((tmp_path / "crl.bin").read_bytes())

    r = cli("list", "--dir", str(cadir))
    assert r.returncode == 0 and "revoked (key compromise)" in r.stdout

    # unknown serial, bad reason, bad hex
    assert_one_line_error(cli("revoke", "--dir", str(cadir), "--serial", "DEADBEEF"))
    r = cli("revoke", "--dir", str(cadir), "--serial", v_hex, "--reason", "bogus")
    assert_one_line_error(r)
    assert "valid reasons" in r.stderr
    assert_one_line_error(cli("revoke", "--dir", str(cadir), "--serial", "xyz"))


def test_cli_usage_and_bad_dirs(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    r = cli("issue", "alice.vasp.test")
    assert r.returncode == 2 and "required: --ca-dir" in r.stderr
    r = cli("revoke", "--dir", str(tmp_path))
    assert r.returncode == 2
    assert_one_line_error(cli("issue", "--dir", str(tmp_path), "alice.vasp.test"))
    assert_one_line_error(cli("crl", "--dir", str(tmp_path / "nope"), "--out", "x.pem"))
    (tmp_path / "junk").write_text("x")
    r = cli("init", "--dir", str(tmp_path), "--key-size", "2048")
    assert_one_line_error(r)
    assert "not empty" in r.stderr
    r = cli("sign-csr", "--dir", str(tmp_path), str(tmp_path / "junk"))
    assert_one_line_error(r)


def test_cli_sign_csr_garbage(
    cli: Callable[..., CliResult], ca: CertificateAuthority, tmp_path: Path
) -> None:
    bad = write(tmp_path / "bad.csr", b"garbage")
    r = cli("sign-csr", "--dir", str(ca.directory), str(bad))
    assert_one_line_error(r)
    assert "not a PEM certificate request" in r.stderr


def test_issue_refuses_names_that_are_not_dns_names(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", key_size=2048)
    ca.issue("ok.example", dns_names=["*.ok.example"], key_size=2048)  # the accepted twin
    for cn, extra in (("bad name", ()), ("*.wild.example", ()), ("ok.example", ("*bad*",)),
                      ("-x.example", ()), ("a" * 64 + ".example", ())):
        with pytest.raises(ConfigurationError):
            ca.issue(cn, dns_names=extra, key_size=2048)
    assert len(ca.issued()) == 1


def test_cli_records_nothing_when_output_cannot_be_written(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # a missing --out folder is created (tests/test_cli_names.py); a file in its place is not
    ca_dir = tmp_path / "ca"
    CertificateAuthority.init(ca_dir, key_size=2048)
    (tmp_path / "afile").write_text("x")
    out = cli("issue", "--dir", str(ca_dir), "x.example", "--out", str(tmp_path / "afile"),
              "--key-size", "2048")
    assert_one_line_error(out)
    assert "exists and is not a directory" in out.stderr
    assert CertificateAuthority.open(ca_dir).issued() == []
