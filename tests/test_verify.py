"""The TRISA chain policy (steps 3 and 6), each accepted case with a rejected twin."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, VerificationError
from helpers import PKI, UPSTREAM_SECTIGO, UPSTREAM_TRISA
from pki import identity, pool

from trisa_peer.certs import fingerprint, load_identity, parse_certificates
from trisa_peer.errors import CertificateError, ChainVerificationError, RevokedError
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.trust import TrustPool
from trisa_peer.verify import ChainVerifier, CrlChecker


def verifier(**kw: object) -> ChainVerifier:
    return ChainVerifier(pool(), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- accepted vs rejected


@pytest.mark.parametrize("name", ["alice", "bob", "charlie", "alice-rsa4096"])
def test_valid_leaf_verifies_both_ways(name: str) -> None:
    ident = identity(name)
    client = verifier().verify_client(ident.leaf, ident.chain)
    server = verifier().verify_server(ident.leaf, ident.chain, host=ident.common_name)
    assert client.common_name == server.common_name == ident.common_name
    assert client.chain[-1] in pool().roots
    assert client.fingerprint == ident.fingerprint


def test_leaf_without_presented_intermediate_uses_pool() -> None:
    # The pool holds the issuing CA, so a bare leaf still chains.
    ident = identity("alice")
    assert verifier().verify_client(ident.leaf, []).chain[-1] in pool().roots


def test_bare_leaf_fails_when_pool_has_only_the_root() -> None:
    only_root = TrustPool(pool().roots)
    ident = identity("alice")
    ChainVerifier(only_root).verify_client(ident.leaf, ident.chain)  # with intermediate: ok
    with pytest.raises(ChainVerificationError) as err:
        ChainVerifier(only_root).verify_client(ident.leaf, [])
    assert err.value.reason == "unknown-issuer"


@pytest.mark.parametrize(
    ("name", "client_reason", "server_reason"),
    [
        ("expired", Reason.EXPIRED, Reason.EXPIRED),
        ("notyetvalid", Reason.NOT_YET_VALID, Reason.NOT_YET_VALID),
        ("weak-rsa1024", Reason.WEAK_KEY, Reason.WEAK_KEY),
        # An expired intermediate is "expired" too (it was "chain-expired" before).
        ("expired-intermediate", Reason.EXPIRED, Reason.EXPIRED),
        ("evil", Reason.UNKNOWN_ISSUER, Reason.UNKNOWN_ISSUER),
        ("evil-bob", Reason.UNKNOWN_ISSUER, Reason.UNKNOWN_ISSUER),
    ],
)
def test_rejected_leaves(name: str, client_reason: Reason, server_reason: Reason) -> None:
    ident = identity(name)
    with pytest.raises(ChainVerificationError) as err:
        verifier().verify_client(ident.leaf, ident.chain)
    assert err.value.step == HandshakeStep.VERIFY_CLIENT_CHAIN
    assert err.value.reason == client_reason
    assert str(err.value).startswith("step 3 ")
    with pytest.raises(ChainVerificationError) as err:
        verifier().verify_server(ident.leaf, ident.chain, host=ident.common_name)
    assert err.value.step == HandshakeStep.VERIFY_SERVER_CHAIN
    assert err.value.reason == server_reason


def test_eku_serverauth_only_is_a_server_not_a_client() -> None:
    ident = identity("serverauth-only")
    verifier().verify_server(ident.leaf, ident.chain, host=ident.common_name)
    with pytest.raises(ChainVerificationError) as err:
        verifier().verify_client(ident.leaf, ident.chain)
    assert err.value.reason == "eku"


def test_eku_clientauth_only_is_a_client_not_a_server() -> None:
    ident = identity("clientauth-only")
    verifier().verify_client(ident.leaf, ident.chain)
    with pytest.raises(ChainVerificationError) as err:
        verifier().verify_server(ident.leaf, ident.chain, host=ident.common_name)
    assert err.value.reason == "eku"


def test_server_san_must_name_the_host() -> None:
    ident = identity("bob")
    verifier().verify_server(ident.leaf, ident.chain, host="bob.vasp.test")
    with pytest.raises(ChainVerificationError) as err:
        verifier().verify_server(ident.leaf, ident.chain, host="alice.vasp.test")
    assert err.value.reason == "san-mismatch"
    san = identity("san-mismatch")
    verifier().verify_server(san.leaf, san.chain, host="other.vasp.test")
    with pytest.raises(ChainVerificationError):
        verifier().verify_server(san.leaf, san.chain, host=san.common_name)


def test_injected_clock_decides_validity() -> None:
    ident = identity("expired")
    inside = ChainVerifier(pool(), clock=lambda: datetime(2020, 6, 1, tzinfo=UTC))
    inside.verify_client(ident.leaf, ident.chain)
    after = ChainVerifier(pool(), clock=lambda: datetime(2021, 6, 1, tzinfo=UTC))
    with pytest.raises(ChainVerificationError, match="expired"):
        after.verify_client(ident.leaf, ident.chain)


# ------------------------------------------------ real Sectigo leaves (critical EKU)


def _lookup_chain() -> list[x509.Certificate]:
    reply = json.loads((UPSTREAM_TRISA / "pkg/trisa/keys/testdata/lookup.json").read_text())
    import base64

    chain = base64.b64decode(reply["identity_certificate"]["chain"])
    return parse_certificates(gzip.decompress(chain), source="lookup.json chain")


def test_real_sectigo_leaf_with_critical_eku_verifies() -> None:
    leaf, issuing, root = _lookup_chain()
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical  # the quirk the custom policy exists for
    at = datetime(2022, 6, 1, tzinfo=UTC)
    trisa = ChainVerifier(TrustPool((root,), (issuing,)), clock=lambda: at)
    assert trisa.verify_client(leaf, []).common_name == "api.alice.vaspbot.net"
    trisa.verify_server(leaf, [], host="api.alice.vaspbot.net")


def test_default_webpki_policy_would_reject_the_real_sectigo_leaf() -> None:
    # The twin of the test above: without the TRISA EE policy the leaf is refused,
    # which is why verify.py re-declares ExtendedKeyUsage.
    leaf, issuing, root = _lookup_chain()
    from cryptography.x509.verification import Store

    builder = PolicyBuilder().store(Store([root])).time(datetime(2022, 6, 1, tzinfo=UTC))
    with pytest.raises(VerificationError):
        builder.build_client_verifier().verify(leaf, [issuing])


def test_real_sectigo_leaf_rejected_after_expiry() -> None:
    leaf, issuing, root = _lookup_chain()
    late = ChainVerifier(TrustPool((root,), (issuing,)))
    with pytest.raises(ChainVerificationError) as err:
        late.verify_client(leaf, [])
    assert err.value.reason == "expired"


def test_docs_trisa_dev_pkcs12_chain_verifies_at_its_time() -> None:
    ident = load_identity(
        UPSTREAM_TRISA / "pkg/trust/testdata/110831.zip", password="supersecretsquirrel"
    )
    at = datetime(2022, 7, 1, tzinfo=UTC)
    trust = TrustPool.from_certificates(ident.chain)
    got = ChainVerifier(trust, clock=lambda: at).verify_client(ident.leaf, ident.chain)
    # leaf first, then the anchor: the bundle's self-signed trisa.dev root, in the pool
    [root] = ident.chain
    assert got.chain == (ident.leaf, root)
    assert root in trust.roots and root.subject == root.issuer == ident.leaf.issuer
    assert (got.leaf, got.common_name, got.verified_at) == (ident.leaf, "docs.trisa.dev", at)
    assert got.fingerprint == fingerprint(ident.leaf)
    with pytest.raises(ChainVerificationError):
        ChainVerifier(pool(), clock=lambda: at).verify_client(ident.leaf, ident.chain)


def test_sectigo_mock_bundle_verifies_at_its_time() -> None:
    ident = load_identity(
        UPSTREAM_SECTIGO / "directory/pkg/sectigo/mock/testdata/certificate.zip",
        password="qDhAwnfMjgDEzzUC",
    )
    trust = TrustPool.from_certificates(ident.chain)
    at = ident.leaf.not_valid_before_utc + timedelta(days=30)
    got = ChainVerifier(trust, clock=lambda: at).verify_client(ident.leaf, ident.chain)
    issuing, root = ident.chain  # leaf -> CipherTrace Issuing CA -> CipherTrace Root CA
    assert got.chain == (ident.leaf, issuing, root)
    assert root in trust.roots and root.subject == root.issuer == issuing.issuer


@pytest.mark.slow
def test_upstream_peer_fixtures_verify() -> None:
    base = UPSTREAM_TRISA / "pkg/trisa/peers/testdata"
    server = load_identity(base / "server.pem")
    client = load_identity(base / "client.pem")
    trust = TrustPool.from_certificates(server.chain)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    v = ChainVerifier(trust, clock=lambda: at)
    v.verify_server(server.leaf, server.chain, host="server.trisa.dev")
    v.verify_client(client.leaf, client.chain)
    with pytest.raises(ChainVerificationError):
        v.verify_server(server.leaf, server.chain, host="client.trisa.dev")


def test_anyextendedkeyusage_does_not_satisfy_client_auth() -> None:
    # Our EKU callback must not accept a leaf listing only anyExtendedKeyUsage.
    import trustme

    ca = trustme.CA()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_key = load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)

    def leaf(usages: list[x509.ObjectIdentifier]) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "any.vasp.test")])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("any.vasp.test")]), False)
            .add_extension(x509.ExtendedKeyUsage(usages), True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )

    trust = ChainVerifier(TrustPool((ca_cert,)))
    trust.verify_client(leaf([ExtendedKeyUsageOID.CLIENT_AUTH]), [])
    with pytest.raises(ChainVerificationError):
        trust.verify_client(leaf([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]), [])


# ----------------------------------------------------------------------------- CRL


def crl_checker(**kw: object) -> CrlChecker:
    return CrlChecker.load([PKI / "crl.der"], pool(), **kw)  # type: ignore[arg-type]


def test_crl_lists_the_revoked_leaf_only() -> None:
    v = verifier(crl=crl_checker())
    revoked = identity("revoked")
    with pytest.raises(RevokedError) as err:
        v.verify_client(revoked.leaf, revoked.chain)
    assert err.value.step == HandshakeStep.VERIFY_CLIENT_CHAIN
    assert err.value.reason == "crl-revoked"
    with pytest.raises(RevokedError):
        v.verify_server(revoked.leaf, revoked.chain, host=revoked.common_name)
    v.verify_client(identity("alice").leaf, identity("alice").chain)


def test_stale_crl_fails_closed(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes, serialization

    issuing_key = serialization.load_pem_private_key(
        (PKI / "ca" / "issuing.key").read_bytes(), None
    )
    issuing = x509.load_pem_x509_certificate((PKI / "ca" / "issuing.pem").read_bytes())
    now = datetime.now(UTC)

    def crl_file(next_update: datetime) -> Path:
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing.subject)
            .last_update(now - timedelta(days=10))
            .next_update(next_update)
            .sign(issuing_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        path = tmp_path / f"crl-{next_update:%s}.der"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return path

    alice = identity("alice")
    fresh = CrlChecker.load([crl_file(now + timedelta(days=1))], pool())
    ChainVerifier(pool(), crl=fresh).verify_client(alice.leaf, alice.chain)
    stale = CrlChecker.load([crl_file(now - timedelta(days=1))], pool())
    with pytest.raises(ChainVerificationError) as err:
        ChainVerifier(pool(), crl=stale).verify_client(alice.leaf, alice.chain)
    assert err.value.reason == "crl-stale"
    tolerant = CrlChecker.load([crl_file(now - timedelta(days=1))], pool(), grace=timedelta(days=2))
    ChainVerifier(pool(), crl=tolerant).verify_client(alice.leaf, alice.chain)


def test_crl_from_a_foreign_ca_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="not signed by a CA in the trust pool"):
        CrlChecker.load([PKI / "crl.pem"], TrustPool.load(PKI / "evil-trust.pem"))
    bad = tmp_path / "bad.crl"
    bad.write_bytes(b"not a crl")
    with pytest.raises(CertificateError, match=r"bad\.crl: not a PEM or DER CRL"):
        CrlChecker.load([bad], pool())


def test_trust_pool_needs_a_root(tmp_path: Path) -> None:
    inter = tmp_path / "issuing-only.pem"
    inter.write_bytes((PKI / "ca" / "issuing.pem").read_bytes())
    with pytest.raises(CertificateError, match="no self-signed root"):
        TrustPool.load(inter)
    assert len(pool().roots) == 1 and len(pool().intermediates) == 1
