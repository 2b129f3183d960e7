"""Loading identities, trust pools and keys: upstream vectors, round trips, failures."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from helpers import UPSTREAM_SECTIGO, UPSTREAM_TRISA

from trisa_peer.certs import (
    Identity,
    cert_to_pem,
    fingerprint,
    load_certificates,
    load_identity,
    load_private_key,
    load_public_key,
    load_trust_pool,
    order_chain,
    parse_certificates,
    spki_der,
    split_pem,
    write_identity,
)
from trisa_peer.errors import CertificateError

TRUST_ZIP = UPSTREAM_TRISA / "pkg/trust/testdata/110831.zip"
TRUST_ZIP_PASSWORD = "supersecretsquirrel"
SECTIGO_ZIP = UPSTREAM_SECTIGO / "directory/pkg/sectigo/mock/testdata/certificate.zip"
SECTIGO_ZIP_PASSWORD = "qDhAwnfMjgDEzzUC"
ENVELOPE_DATA = UPSTREAM_TRISA / "pkg/trisa/envelope/testdata"
LOOKUP_JSON = UPSTREAM_TRISA / "pkg/trisa/keys/testdata/lookup.json"
SIGNATURE_DATA = UPSTREAM_TRISA / "pkg/trisa/keys/signature/testdata"

PASSWORD = "correct horse battery staple"

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def one_line_error(err: pytest.ExceptionInfo[CertificateError], names: str) -> str:
    """The message is one line, names ``names`` and leaks no password."""
    msg = str(err.value)
    assert "\n" not in msg
    assert names in msg
    for secret in (PASSWORD, TRUST_ZIP_PASSWORD, SECTIGO_ZIP_PASSWORD, "wrong-password"):
        assert secret not in msg
    assert "BEGIN" not in msg
    return msg


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | dsa.DSAPrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    signer = issuer_key if issuer_key is not None else key
    assert not isinstance(signer, dsa.DSAPrivateKey) or issuer_key is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    rsa_key: rsa.RSAPrivateKey
    rsa_leaf: x509.Certificate
    other_key: ec.EllipticCurvePrivateKey

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.inter, self.root)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Test Root CA", root_key, None, None, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Test Issuing CA", inter_key, root, root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("vasp.example.com", leaf_key, inter, inter_key, ca=False)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_leaf = _cert("rsa.example.com", rsa_key, inter, inter_key, ca=False)
    other_key = ec.generate_private_key(ec.SECP256R1())
    return Pki(root_key, root, inter_key, inter, leaf_key, leaf, rsa_key, rsa_leaf, other_key)


def pem_key(key: object, fmt: serialization.PrivateFormat, enc: object = None) -> bytes:
    encryption = enc if enc is not None else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[attr-defined,no-any-return]


def pkcs8(key: object) -> bytes:
    return pem_key(key, serialization.PrivateFormat.PKCS8)


def modern_p12(pki: Pki, password: str = PASSWORD) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"vasp",
        pki.leaf_key,
        pki.leaf,
        [pki.root, pki.inter],  # deliberately root first
        serialization.BestAvailableEncryption(password.encode()),
    )


def legacy_p12(pki: Pki, password: str = PASSWORD) -> bytes:
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - the legacy profile Go writes
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        b"vasp", pki.rsa_key, pki.rsa_leaf, [pki.inter, pki.root], encryption
    )


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_identity(ident: Identity, pki: Pki, *, leaf: x509.Certificate | None = None) -> None:
    want = leaf if leaf is not None else pki.leaf
    assert fingerprint(ident.leaf) == fingerprint(want)
    assert [fingerprint(c) for c in ident.chain] == [fingerprint(c) for c in pki.chain]
    assert spki_der(ident.key.public_key()) == spki_der(want.public_key())


# ---------------------------------------------------------------------------
# upstream vectors
# ---------------------------------------------------------------------------


def test_trust_zip_legacy_pkcs12() -> None:
    ident = load_identity(TRUST_ZIP, password=TRUST_ZIP_PASSWORD)
    assert ident.common_name == "docs.trisa.dev"
    assert [cn(c) for c in ident.chain] == ["trisa.dev"]
    assert isinstance(ident.key, rsa.RSAPrivateKey)
    assert spki_der(ident.key.public_key()) == spki_der(ident.leaf.public_key())


def test_trust_zip_bytes_password() -> None:
    ident = load_identity(TRUST_ZIP, password=TRUST_ZIP_PASSWORD.encode())
    assert ident.common_name == "docs.trisa.dev"


def test_sectigo_zip() -> None:
    ident = load_identity(SECTIGO_ZIP, password=SECTIGO_ZIP_PASSWORD)
    assert ident.common_name == "api.bob.vaspbot.net"
    assert [cn(c) for c in ident.chain] == ["CipherTrace Issuing CA", "CipherTrace Root CA"]
    assert ident.chain_pem().count(b"BEGIN CERTIFICATE") == 3


def test_sectigo_zip_as_trust_pool() -> None:
    certs = load_certificates(SECTIGO_ZIP, password=SECTIGO_ZIP_PASSWORD)
    assert {cn(c) for c in certs} == {
        "api.bob.vaspbot.net",
        "CipherTrace Issuing CA",
        "CipherTrace Root CA",
    }


def test_sealing_key_pkcs8_under_rsa_label() -> None:
    path = ENVELOPE_DATA / "sealing_key.pem"
    with pytest.raises(ValueError):  # the quirk: cryptography's PEM loader refuses it
        serialization.load_pem_private_key(path.read_bytes(), None)
    key = load_private_key(path)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 4096


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "common_name", "issuer"),
    [
        (ENVELOPE_DATA / "alice.vaspbot.net.pem", "alice.vaspbot.net", "trisatest.dev"),
        (UPSTREAM_TRISA / "pkg/trisa/keys/testdata/certs.pem", "keys.trisa.dev", "trisa.dev"),
        (UPSTREAM_TRISA / "pkg/trisa/peers/testdata/server.pem", "server.trisa.dev", "trisa.dev"),
        (UPSTREAM_TRISA / "pkg/trisa/peers/testdata/client.pem", "client.trisa.dev", "trisa.dev"),
    ],
)
def test_pem_with_certs_and_key(path: Path, common_name: str, issuer: str) -> None:
    ident = load_identity(path)
    assert ident.common_name == common_name
    assert [cn(c) for c in ident.chain] == [issuer]
    assert spki_der(ident.key.public_key()) == spki_der(ident.leaf.public_key())
    # load_private_key ignores the certificates in the same file
    assert spki_der(load_private_key(path).public_key()) == spki_der(ident.leaf.public_key())


def test_lookup_json_gzip_chain_and_pem_data() -> None:
    record = json.loads(LOOKUP_JSON.read_text())["identity_certificate"]
    chain = parse_certificates(base64.b64decode(record["chain"]), source="lookup chain")
    assert [cn(c) for c in chain] == [
        "api.alice.vaspbot.net",
        "CipherTrace Issuing CA",
        "CipherTrace Root CA",
    ]
    data = parse_certificates(base64.b64decode(record["data"]), source="lookup data")
    assert [fingerprint(c) for c in data] == [fingerprint(chain[0])]
    der = chain[0].public_bytes(serialization.Encoding.DER)
    assert fingerprint(parse_certificates(der, source="der")[0]) == fingerprint(chain[0])


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("rsapub.pem", rsa.RSAPublicKey),
        ("ecdsa.pem", ec.EllipticCurvePublicKey),
        ("ed25519.pem", ed25519.Ed25519PublicKey),
    ],
)
def test_signature_public_keys(name: str, kind: type) -> None:
    key = load_public_key((SIGNATURE_DATA / name).read_bytes(), source=name)
    assert isinstance(key, kind)


# ---------------------------------------------------------------------------
# public keys (KeyExchange parsing order)
# ---------------------------------------------------------------------------


def test_public_key_forms(pki: Pki) -> None:
    pub = pki.rsa_key.public_key()
    want = spki_der(pub)
    forms = {
        "spki der": want,
        "spki pem": pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "pkcs1 pem": pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "cert pem chain": cert_to_pem(pki.rsa_leaf) + cert_to_pem(pki.inter),
        "cert der": pki.rsa_leaf.public_bytes(serialization.Encoding.DER),
        "text around": b"key follows\n" + cert_to_pem(pki.rsa_leaf) + b"trailer\n",
    }
    for source, data in forms.items():
        assert spki_der(load_public_key(data, source=source)) == want, source


def test_public_key_failures(pki: Pki) -> None:
    dsa_key = dsa.generate_private_key(key_size=1024)  # noqa: S505 - must be refused
    dsa_pub = dsa_key.public_key()
    with pytest.raises(CertificateError) as err:
        load_public_key(spki_der(dsa_pub), source="peer key")
    assert "peer key: unsupported key type DSA" in one_line_error(err, "peer key")
    with pytest.raises(CertificateError) as err:
        load_public_key(b"\x01\x02garbage", source="peer key")
    assert "not a public key or certificate" in one_line_error(err, "peer key")
    with pytest.raises(CertificateError) as err:
        load_public_key(b"", source="peer key")
    one_line_error(err, "peer key")
    with pytest.raises(CertificateError) as err:
        load_public_key(pkcs8(pki.leaf_key), source="peer key")
    assert "private key" in one_line_error(err, "peer key")


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


def test_modern_pkcs12(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.p12", modern_p12(pki))
    assert_identity(load_identity(path, password=PASSWORD), pki)


def test_legacy_pkcs12_3des(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.pfx", legacy_p12(pki))
    assert_identity(load_identity(path, password=PASSWORD), pki, leaf=pki.rsa_leaf)


def test_pkcs12_detected_without_extension(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "identity.bin", modern_p12(pki))
    assert_identity(load_identity(path, password=PASSWORD), pki)


def test_zip_of_one_p12(tmp_path: Path, pki: Pki) -> None:
    data = zip_bytes({"vasp.example.com.p12": legacy_p12(pki)})
    for name in ("vasp.zip", "download"):  # by content, not by extension
        path = write(tmp_path / name, data)
        assert_identity(load_identity(path, password=PASSWORD), pki, leaf=pki.rsa_leaf)


def test_zip_of_one_pem_ignores_directories(tmp_path: Path, pki: Pki) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("certs/", b"")
        zf.writestr("certs/vasp.pem", certs_and_key(pki))
    path = write(tmp_path / "vasp.zip", buf.getvalue())
    assert_identity(load_identity(path), pki)


def certs_and_key(pki: Pki) -> bytes:
    # root, key, leaf, intermediate: neither the leaf nor the key comes first
    return (
        b"Bag Attributes: friendlyName: root\n"
        + cert_to_pem(pki.root)
        + pkcs8(pki.leaf_key)
        + cert_to_pem(pki.leaf)
        + b"\n# comment between blocks\n"
        + cert_to_pem(pki.inter)
    )


def test_pem_any_order(tmp_path: Path, pki: Pki) -> None:
    assert_identity(load_identity(write(tmp_path / "vasp.pem", certs_and_key(pki))), pki)


def test_leaf_is_the_cert_matching_the_key(tmp_path: Path, pki: Pki) -> None:
    # Two leaves in one file: the one matching the key is chosen, the other goes last.
    data = cert_to_pem(pki.rsa_leaf) + certs_and_key(pki)
    ident = load_identity(write(tmp_path / "vasp.pem", data))
    assert fingerprint(ident.leaf) == fingerprint(pki.leaf)
    assert [fingerprint(c) for c in ident.chain] == [
        fingerprint(pki.inter),
        fingerprint(pki.root),
        fingerprint(pki.rsa_leaf),
    ]


def test_gzip_pem(tmp_path: Path, pki: Pki) -> None:
    data = gzip.compress(certs_and_key(pki))
    for name in ("vasp.pem.gz", "vasp.gzip", "vasp.pem"):
        assert_identity(load_identity(write(tmp_path / name, data)), pki)


def test_separate_key_file(tmp_path: Path, pki: Pki) -> None:
    cert_path = write(tmp_path / "vasp.crt", cert_to_pem(pki.leaf) + cert_to_pem(pki.inter))
    cert_path.write_bytes(cert_path.read_bytes() + cert_to_pem(pki.root))
    key_path = write(
        tmp_path / "vasp.key",
        pem_key(
            pki.leaf_key,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        ),
    )
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()
    assert_identity(load_identity(cert_path, key_path=key_path, password=PASSWORD), pki)


@pytest.mark.parametrize(
    ("fmt", "label"),
    [
        (serialization.PrivateFormat.TraditionalOpenSSL, b"EC PRIVATE KEY"),
        (serialization.PrivateFormat.PKCS8, b"PRIVATE KEY"),
    ],
)
def test_ec_key_formats(
    tmp_path: Path, pki: Pki, fmt: serialization.PrivateFormat, label: bytes
) -> None:
    key_pem = pem_key(pki.leaf_key, fmt)
    assert b"BEGIN " + label + b"-----" in key_pem
    path = write(tmp_path / "vasp.pem", cert_to_pem(pki.leaf) + key_pem + cert_to_pem(pki.inter))
    path.write_bytes(path.read_bytes() + cert_to_pem(pki.root))
    ident = load_identity(path)
    assert isinstance(ident.key, ec.EllipticCurvePrivateKey)
    assert_identity(ident, pki)


def test_rsa_pkcs1_key_and_der_key(tmp_path: Path, pki: Pki) -> None:
    pkcs1 = pem_key(pki.rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"BEGIN RSA PRIVATE KEY" in pkcs1
    want = spki_der(pki.rsa_key.public_key())
    assert spki_der(load_private_key(pkcs1, source="pkcs1").public_key()) == want
    der = pki.rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = write(tmp_path / "rsa.der", der)
    cert_path = write(
        tmp_path / "rsa.pem",
        cert_to_pem(pki.root) + cert_to_pem(pki.inter) + cert_to_pem(pki.rsa_leaf),
    )
    assert_identity(load_identity(cert_path, key_path=key_path), pki, leaf=pki.rsa_leaf)


def test_legacy_encrypted_pem_key(pki: Pki) -> None:
    data = pem_key(
        pki.rsa_key,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    assert b"Proc-Type: 4,ENCRYPTED" in data
    key = load_private_key(data, password=PASSWORD, source="legacy.pem")
    assert spki_der(key.public_key()) == spki_der(pki.rsa_key.public_key())


def test_write_identity_round_trip(tmp_path: Path, pki: Pki) -> None:
    ident = load_identity(write(tmp_path / "in.p12", modern_p12(pki)), password=PASSWORD)
    cert_path, key_path = tmp_path / "out.pem", tmp_path / "out.key"
    write_identity(ident, cert_path, key_path)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert_path).st_mode) == 0o644
    again = load_identity(cert_path, key_path=key_path)
    assert again.chain_pem() == ident.chain_pem()
    assert again.key_pem() == ident.key_pem()


def test_order_chain_keeps_strangers_last(pki: Pki) -> None:
    chain = order_chain(pki.leaf, [pki.rsa_leaf, pki.root, pki.leaf, pki.inter, pki.root])
    assert [fingerprint(c) for c in chain] == [
        fingerprint(pki.inter),
        fingerprint(pki.root),
        fingerprint(pki.rsa_leaf),
    ]


# ---------------------------------------------------------------------------
# trust pools
# ---------------------------------------------------------------------------


def test_split_pem_tolerates_text() -> None:
    data = (
        b"subject=CN = a\r\nissuer=CN = b\r\n"
        + b"-----BEGIN CERTIFICATE-----\r\nAAEC\r\nAwQ=\r\n-----END CERTIFICATE-----\r\n"
        + b"junk -----BEGIN PUBLIC KEY-----\nBQY=\n-----END PUBLIC KEY----- tail"
    )
    assert split_pem(data) == [
        ("CERTIFICATE", b"\x00\x01\x02\x03\x04"),
        ("PUBLIC KEY", b"\x05\x06"),
    ]
    assert split_pem(b"no pem here") == []


def test_trust_pool_forms(tmp_path: Path, pki: Pki) -> None:
    bundle = write(
        tmp_path / "bundle.pem", b"roots:\n" + cert_to_pem(pki.root) + cert_to_pem(pki.inter)
    )
    der = write(tmp_path / "root.cer", pki.root.public_bytes(serialization.Encoding.DER))
    gz = write(tmp_path / "chain.pem.gz", gzip.compress(cert_to_pem(pki.inter)))
    archive = write(
        tmp_path / "pool.zip",
        zip_bytes(
            {
                "a.pem": cert_to_pem(pki.root),
                "b.der": pki.inter.public_bytes(serialization.Encoding.DER),
                "c.p12": modern_p12(pki),
                "d.pem.gz": gzip.compress(cert_to_pem(pki.rsa_leaf)),
            }
        ),
    )
    assert [fingerprint(c) for c in load_certificates(bundle)] == [
        fingerprint(pki.root),
        fingerprint(pki.inter),
    ]
    assert [fingerprint(c) for c in load_certificates(der)] == [fingerprint(pki.root)]
    assert [fingerprint(c) for c in load_certificates(gz)] == [fingerprint(pki.inter)]
    in_zip = load_certificates(archive, password=PASSWORD)
    assert {fingerprint(c) for c in in_zip} == {
        fingerprint(c) for c in (pki.root, pki.inter, pki.leaf, pki.rsa_leaf)
    }
    pool = load_trust_pool([bundle, der, gz])
    assert [fingerprint(c) for c in pool] == [fingerprint(pki.root), fingerprint(pki.inter)]


@pytest.mark.slow
def test_upstream_trust_pool() -> None:
    pool = load_trust_pool([TRUST_ZIP, TRUST_ZIP], password=TRUST_ZIP_PASSWORD)
    assert [cn(c) for c in pool] == ["docs.trisa.dev", "trisa.dev"]


# ---------------------------------------------------------------------------
# failures: one line, names the file, never the password
# ---------------------------------------------------------------------------


def test_wrong_password_upstream_zip() -> None:
    with pytest.raises(CertificateError) as err:
        load_identity(TRUST_ZIP, password="wrong-password")
    msg = one_line_error(err, str(TRUST_ZIP))
    assert "wrong password or corrupt PKCS#12" in msg
    assert "docs.trisa.dev.p12" in msg
    assert isinstance(err.value.__cause__, ValueError)


def test_wrong_and_missing_password_p12(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.p12", legacy_p12(pki))
    with pytest.raises(CertificateError) as err:
        load_identity(path, password="wrong-password")
    assert "wrong password or corrupt PKCS#12" in one_line_error(err, str(path))
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert "no password given" in one_line_error(err, str(path))


def test_truncated_p12(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.p12", modern_p12(pki)[:300])
    with pytest.raises(CertificateError) as err:
        load_identity(path, password=PASSWORD)
    assert "wrong password or corrupt PKCS#12" in one_line_error(err, str(path))


def test_truncated_zip(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.zip", zip_bytes({"vasp.p12": modern_p12(pki)})[:200])
    with pytest.raises(CertificateError) as err:
        load_identity(path, password=PASSWORD)
    one_line_error(err, str(path))


def test_garbage_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "vasp.bin", bytes(range(7, 250)) * 3)
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert one_line_error(err, str(path)).endswith(": not a certificate, key, PKCS#12 or zip file")
    with pytest.raises(CertificateError) as err:
        load_certificates(path)
    assert "not a certificate, key, PKCS#12 or zip file" in one_line_error(err, str(path))


def test_corrupt_gzip(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.pem.gz", gzip.compress(certs_and_key(pki))[:60])
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert "corrupt gzip" in one_line_error(err, str(path))


def test_zip_with_two_entries(tmp_path: Path, pki: Pki) -> None:
    path = write(
        tmp_path / "two.zip", zip_bytes({"a.p12": modern_p12(pki), "b.p12": legacy_p12(pki)})
    )
    with pytest.raises(CertificateError) as err:
        load_identity(path, password=PASSWORD)
    assert one_line_error(err, str(path)) == f"{path}: zip holds 2 entries, expected one identity"


def test_key_does_not_match_certificate(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.pem", cert_to_pem(pki.leaf) + pkcs8(pki.other_key))
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert "private key does not match the certificate" in one_line_error(err, str(path))

    cert_path = write(tmp_path / "vasp.crt", cert_to_pem(pki.leaf) + cert_to_pem(pki.inter))
    key_path = write(tmp_path / "vasp.key", pkcs8(pki.other_key))
    with pytest.raises(CertificateError) as err:
        load_identity(cert_path, key_path=key_path)
    msg = one_line_error(err, str(key_path))
    assert str(cert_path) in msg
    assert "does not match" in msg


def test_key_file_and_embedded_key_disagree(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "vasp.pem", certs_and_key(pki))
    key_path = write(tmp_path / "other.key", pkcs8(pki.other_key))
    with pytest.raises(CertificateError) as err:
        load_identity(path, key_path=key_path)
    msg = one_line_error(err, str(path))
    assert str(key_path) in msg
    assert "differs" in msg


def test_zip_with_no_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.zip", zip_bytes({}))
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert "zip holds 0 entries, expected one identity" in one_line_error(err, str(path))


def test_dsa_key_unsupported(tmp_path: Path) -> None:
    key = dsa.generate_private_key(key_size=1024)  # noqa: S505 - must be refused
    cert = _cert("dsa.example.com", key, None, None, ca=False)
    path = write(tmp_path / "dsa.pem", cert_to_pem(cert) + pkcs8(key))
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert f"{path}: unsupported key type DSA" in one_line_error(err, str(path))
    traditional = write(
        tmp_path / "dsa.key", pem_key(key, serialization.PrivateFormat.TraditionalOpenSSL)
    )
    with pytest.raises(CertificateError) as err:
        load_private_key(traditional)
    assert "unsupported key type DSA" in one_line_error(err, str(traditional))


def test_ed25519_identity_key_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path / "ed.key", pkcs8(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(CertificateError) as err:
        load_private_key(path)
    assert "unsupported key type Ed25519" in one_line_error(err, str(path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.zip"
    for load in (load_identity, load_certificates, load_private_key):
        with pytest.raises(CertificateError) as err:
            load(path)
        assert one_line_error(err, str(path)) == f"{path}: file not found"
    with pytest.raises(CertificateError) as err:
        load_trust_pool([path])
    one_line_error(err, str(path))


def test_trust_file_with_private_key(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "trust.pem", certs_and_key(pki))
    with pytest.raises(CertificateError) as err:
        load_certificates(path)
    assert "holds a private key" in one_line_error(err, str(path))
    with pytest.raises(CertificateError) as err:
        parse_certificates(pkcs8(pki.leaf_key), source="GDS chain")
    assert "holds a private key" in one_line_error(err, "GDS chain")


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.pem", b"")
    for load in (load_identity, load_certificates, load_private_key):
        with pytest.raises(CertificateError) as err:
            load(path)
        assert one_line_error(err, str(path)) == f"{path}: empty file"


def test_no_private_key(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "certs.pem", cert_to_pem(pki.leaf) + cert_to_pem(pki.inter))
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert one_line_error(err, str(path)) == f"{path}: no private key found"


def test_encrypted_key_without_password(tmp_path: Path, pki: Pki) -> None:
    data = cert_to_pem(pki.leaf) + pem_key(
        pki.leaf_key,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    path = write(tmp_path / "vasp.pem", data)
    with pytest.raises(CertificateError) as err:
        load_identity(path)
    assert "encrypted and no password" in one_line_error(err, str(path))
    with pytest.raises(CertificateError) as err:
        load_identity(path, password="wrong-password")
    assert "wrong password" in one_line_error(err, str(path))


def test_unexpected_and_malformed_pem(tmp_path: Path, pki: Pki) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("x"))
        .sign(pki.leaf_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    path = write(tmp_path / "csr.pem", csr)
    with pytest.raises(CertificateError) as err:
        load_certificates(path)
    assert "CERTIFICATE REQUEST" in one_line_error(err, str(path))
    bad = write(
        tmp_path / "bad.pem", b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CertificateError) as err:
        load_certificates(bad)
    one_line_error(err, str(bad))
    broken = write(
        tmp_path / "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CertificateError) as err:
        load_certificates(broken)
    assert "malformed certificate" in one_line_error(err, str(broken))
