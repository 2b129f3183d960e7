"""CSR registration and renewal (issue 14 section 1).

- ``trisa_peer.csr``: the key and CSR a VASP makes, and every check the directory makes
  before a CSR reaches the CA, each as an accepted case and its near-identical
  rejected twin;
- the directory's CSR path through the local Sectigo service (real HTTP): register with
  a CSR, accept, reissue with a CSR, the VASP receives only its chain;
- renewal by CSR over the directory's members mTLS endpoint (real TLS on 127.0.0.1);
- the ``trisa-peer csr`` and ``gds`` commands.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import ROOT, CliResult

from trisa_peer._pb.gds.models.v1 import models_pb2 as gds_models_pb2
from trisa_peer._pb.ivms101 import ivms101_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.models.v1beta1 import models_pb2
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import (
    cert_to_pem,
    certs_to_pem,
    key_to_pem,
    load_identity,
    parse_certificates,
)
from trisa_peer.csr import (
    SubjectFields,
    build_csr,
    check_csr,
    csr_der,
    csr_pem,
    load_csr,
    new_key,
    profile_min_rsa_bits,
)
from trisa_peer.directory import (
    Directory,
    DirectoryClient,
    DirectoryServer,
    SQLiteStore,
    accept,
    reissue,
    revoke,
)
from trisa_peer.directory.issuance import certificate_zip
from trisa_peer.directory.members import MembersServer, renew_over_mtls
from trisa_peer.errors import (
    CertificateError,
    ConfigurationError,
    DirectoryError,
    DirectoryNotFoundError,
)
from trisa_peer.fsutil import write_private
from trisa_peer.sectigo import SectigoClient
from trisa_peer.sectigo.emulator import SectigoEmulator

CN = "charlie.example.com"
VS = models_pb2.VerificationState
CRS = gds_models_pb2.CertificateRequestState


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key(2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return new_key(2048)


def custom_csr(
    key: object,
    *,
    cns: tuple[str, ...] = (CN,),
    san: list[x509.GeneralName] | None = None,
    extra: list[x509.ExtensionType] | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR made by hand: ``san=None`` means DNS:CN, ``[]`` means no SAN extension."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Charlie Holdings"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    names = [x509.DNSName(CN)] if san is None else san
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, algorithm or hashes.SHA256())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- build


def test_new_key_refuses_less_than_2048_bits() -> None:
    assert new_key(2048).key_size == 2048
    with pytest.raises(ConfigurationError, match="at least 2048 bits"):
        new_key(2047)


def test_built_csr_has_the_trisa_conf_fields_and_passes_the_check(
    key: rsa.RSAPrivateKey,
) -> None:
    csr = build_csr(key, "Charlie.Example.com.", SubjectFields(
        organization="Charlie Holdings", locality="Menlo Park", state="California",
        country="us"))
    check_csr(csr, CN)
    subject = {a.oid: a.value for a in csr.subject}
    assert subject == {
        NameOID.COMMON_NAME: CN, NameOID.ORGANIZATION_NAME: "Charlie Holdings",
        NameOID.LOCALITY_NAME: "Menlo Park", NameOID.STATE_OR_PROVINCE_NAME: "California",
        NameOID.COUNTRY_NAME: "US",
    }
    ext = csr.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_encipherment, usage.content_commitment) == (
        True, True, True)
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [CN]
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)


def test_build_csr_refuses_a_country_that_is_not_two_letters(key: rsa.RSAPrivateKey) -> None:
    build_csr(key, CN, SubjectFields(country="DE"))
    with pytest.raises(ConfigurationError, match="2-letter"):
        build_csr(key, CN, SubjectFields(country="DEU"))


def test_load_csr_reads_pem_and_der_and_refuses_anything_else(
    key: rsa.RSAPrivateKey,
) -> None:
    csr = build_csr(key, CN)
    assert load_csr(csr_pem(csr)) == csr
    assert load_csr(csr_der(csr)) == csr
    cert_pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError, match="one PEM CERTIFICATE REQUEST block"):
        load_csr(cert_pem)
    with pytest.raises(CertificateError, match="not a certificate signing request"):
        load_csr(csr_der(csr)[:-40])
    with pytest.raises(CertificateError, match="larger than"):
        load_csr(b"0" * (16 * 1024 + 1))


# --------------------------------------------------------------------------- checks


def test_proof_of_possession_a_tampered_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    der = bytearray(csr_der(build_csr(key, CN)))
    check_csr(load_csr(bytes(der)), CN)
    der[-1] ^= 0x01  # the last byte of the signature
    with pytest.raises(CertificateError, match="signature does not verify"):
        check_csr(load_csr(bytes(der)), CN)


def test_proof_of_possession_a_subject_swapped_under_the_signature_is_refused(
    key: rsa.RSAPrivateKey,
) -> None:
    """Replace the CN bytes inside the signed part (same length): the signature no
    longer covers what is asked for."""
    der = csr_der(build_csr(key, CN))
    check_csr(load_csr(der), CN)
    forged = der.replace(b"charlie.example.com", b"mallory.example.com")
    assert forged != der
    with pytest.raises(CertificateError, match="signature does not verify"):
        check_csr(load_csr(forged), "mallory.example.com")


def test_signature_hash_weaker_than_sha256_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, algorithm=hashes.SHA256()), CN)
    with pytest.raises(CertificateError, match="SHA224; SHA-256, SHA-384 or SHA-512"):
        check_csr(custom_csr(key, algorithm=hashes.SHA224()), CN)


def test_common_name_must_be_the_records(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key), CN)
    check_csr(custom_csr(key), "Charlie.Example.COM")  # DNS names ignore case
    with pytest.raises(CertificateError, match="is not the registered common name"):
        check_csr(custom_csr(key), "charlie.example.org")


def test_exactly_one_common_name(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, cns=(CN,)), CN)
    with pytest.raises(CertificateError, match="exactly one common name, it has 2"):
        check_csr(custom_csr(key, cns=(CN, "other.example.com")), CN)
    with pytest.raises(CertificateError, match="exactly one common name, it has 0"):
        check_csr(custom_csr(key, cns=()), CN)


def test_san_is_required(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, san=[x509.DNSName(CN)]), CN)
    with pytest.raises(CertificateError, match="no subjectAltName"):
        check_csr(custom_csr(key, san=[]), CN)


def test_san_with_an_extra_dns_name_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, san=[x509.DNSName(CN)]), CN)
    with pytest.raises(CertificateError, match=re.escape("names DNS:api.example.com; only DNS:")):
        check_csr(custom_csr(key, san=[x509.DNSName(CN), x509.DNSName("api.example.com")]), CN)


def test_san_with_an_ip_address_is_refused(key: rsa.RSAPrivateKey) -> None:
    import ipaddress

    check_csr(custom_csr(key, san=[x509.DNSName(CN)]), CN)
    with pytest.raises(CertificateError, match=re.escape("names IP:127.0.0.1")):
        check_csr(custom_csr(
            key, san=[x509.DNSName(CN), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), CN)


def test_san_naming_another_host_only_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, san=[x509.DNSName(CN)]), CN)
    with pytest.raises(CertificateError, match=re.escape("names DNS:other.example.com")):
        check_csr(custom_csr(key, san=[x509.DNSName("other.example.com")]), CN)


def test_san_repeating_the_name_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, san=[x509.DNSName(CN)]), CN)
    with pytest.raises(CertificateError, match="exactly once"):
        check_csr(custom_csr(key, san=[x509.DNSName(CN), x509.DNSName(CN.upper())]), CN)


def test_key_policy_rsa_2048_is_the_floor() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the refused case
    big = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    check_csr(custom_csr(big), CN)
    with pytest.raises(CertificateError, match="RSA-1024; at least RSA-2048"):
        check_csr(custom_csr(small), CN)


def test_key_policy_the_profiles_stricter_rule(key: rsa.RSAPrivateKey) -> None:
    assert profile_min_rsa_bits("RSA - 4096") == 4096
    assert profile_min_rsa_bits("RSA - 1024") == 2048  # never below the floor
    assert profile_min_rsa_bits("ECDSA") == 2048
    check_csr(custom_csr(key), CN, min_rsa_bits=profile_min_rsa_bits("RSA - 2048"))
    with pytest.raises(CertificateError, match="RSA-2048; at least RSA-4096"):
        check_csr(custom_csr(key), CN, min_rsa_bits=profile_min_rsa_bits("RSA - 4096"))


def test_key_policy_ec_keys_are_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key), CN)
    with pytest.raises(CertificateError,
                       match="CSR key is EC secp256r1; the TRISA profile requires RSA"):
        check_csr(custom_csr(ec.generate_private_key(ec.SECP256R1())), CN)


def test_a_csr_asking_for_a_ca_certificate_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, extra=[x509.BasicConstraints(ca=False, path_length=None)]), CN)
    with pytest.raises(CertificateError, match="CA:TRUE"):
        check_csr(custom_csr(key, extra=[x509.BasicConstraints(ca=True, path_length=0)]), CN)


def test_an_extension_outside_the_profile_is_refused(key: rsa.RSAPrivateKey) -> None:
    check_csr(custom_csr(key, extra=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]),
              CN)
    with pytest.raises(CertificateError,
                       match=re.escape("extension 2.5.29.14, which the TRISA profile")):
        check_csr(custom_csr(key, extra=[
            x509.SubjectKeyIdentifier.from_public_key(key.public_key())]), CN)


def test_a_csr_of_another_key_is_still_a_valid_csr(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    """The check is about the CSR, not about which key the VASP used before: a new key
    (the point of a renewal after a compromise) passes."""
    check_csr(build_csr(other_key, CN), CN)
    assert build_csr(other_key, CN).public_key() != build_csr(key, CN).public_key()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- directory

USER, PASSWORD = "admin", "emulator-secret"


@pytest.fixture
def make_emulator(sectigo_ca_dir: Path, tmp_path: Path) -> Iterator[Callable[..., SectigoEmulator]]:
    started: list[SectigoEmulator] = []

    def make(key_size: int = 2048) -> SectigoEmulator:
        emu = SectigoEmulator(ca_dir=sectigo_ca_dir, state_path=tmp_path / "sectigo.json",
                              username=USER, password=PASSWORD, key_size=key_size)
        emu.set_balance(1, 10)
        emu.start("127.0.0.1", 0)
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., SectigoEmulator]) -> SectigoEmulator:
    return make_emulator()


def sectigo_client(emu: SectigoEmulator) -> SectigoClient:
    return SectigoClient(emu.base_url, USER, PASSWORD, cache_path=False, timeout=5, retries=1)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    store = SQLiteStore(tmp_path / "gds.db")
    yield Directory(store, directory_id="testnet.local", outbox_dir=tmp_path / "outbox")
    store.close()


@pytest.fixture
def client(directory: Directory) -> Iterator[DirectoryClient]:
    with DirectoryServer(directory, listen="127.0.0.1:0") as server, DirectoryClient(
        server.endpoint, insecure=True, timeout=5.0, cache_ttl=0
    ) as c:
        yield c


def register_request(cn: str = CN) -> gds_pb2.RegisterRequest:
    req = gds_pb2.RegisterRequest(trisa_endpoint=f"{cn}:443", common_name=cn)
    req.entity.name.name_identifiers.append(
        ivms101_pb2.LegalPersonNameId(legal_person_name="Charlie Holdings",
                                      legal_person_name_identifier_type=1))
    req.entity.country_of_registration = "DE"
    req.contacts.administrative.name = "Carla Admin"
    req.contacts.administrative.email = "admin@charlie.example.com"
    return req


def register_pending(client: DirectoryClient, directory: Directory, csr: bytes,
                     cn: str = CN) -> gds_pb2.RegisterReply:
    reply = client.register(register_request(cn), csr_der=csr)
    token = next(t.token for t in directory.store.tokens_for(reply.id))
    assert client.verify_contact(reply.id, token).status == VS.PENDING_REVIEW
    return reply


def test_register_with_a_csr_issues_for_the_vasps_own_key_without_a_password(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey,
) -> None:
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    assert reply.pkcs12password == ""
    assert "certificate signing request accepted" in reply.message
    req = directory.store.certreqs_for(reply.id)[-1]
    assert directory.store.get_secret(f"{req.id}-password") is None
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.identity is None and result.pkcs12password == ""
    assert result.leaf.public_key() == key.public_key()
    assert [c.subject for c in result.chain] == [emulator.ca.issuing.subject,
                                                 emulator.ca.root.subject]
    record = client.lookup(common_name=CN)
    assert record.identity_certificate == result.leaf
    name, data = certificate_zip(directory, reply.id)
    assert name == f"{CN}.pem" and b"PRIVATE KEY" not in data
    assert parse_certificates(data, source="chain") == [result.leaf, *result.chain]
    req = directory.store.certreqs_for(reply.id)[-1]
    assert req.status == CRS.COMPLETED and req.batch_id


def test_register_without_a_csr_still_gets_a_pkcs12_password(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
) -> None:
    reply = client.register(register_request())
    assert len(reply.pkcs12password) == 16
    token = next(t.token for t in directory.store.tokens_for(reply.id))
    client.verify_contact(reply.id, token)
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.identity is not None and certificate_zip(directory, reply.id)[0].endswith(
        ".zip")


def test_register_refuses_a_csr_for_another_name_over_grpc(
    directory: Directory, client: DirectoryClient, key: rsa.RSAPrivateKey,
) -> None:
    client.register(register_request("good.example.com"),
                    csr_der=csr_der(build_csr(key, "good.example.com")))
    with pytest.raises(DirectoryError) as info:
        client.register(register_request(), csr_der=csr_der(build_csr(key, "other.example.com")))
    message = str(info.value)
    assert "INVALID_ARGUMENT" in message and "\n" not in message
    assert "is not the registered common name 'charlie.example.com'" in message
    assert [v.common_name for v in directory.list_vasps()] == ["good.example.com"]


def test_register_refuses_a_forged_csr_over_grpc(
    directory: Directory, client: DirectoryClient, key: rsa.RSAPrivateKey,
) -> None:
    der = bytearray(csr_der(build_csr(key, CN)))
    client.register(register_request("first.example.com"),
                    csr_der=csr_der(build_csr(key, "first.example.com")))
    der[-1] ^= 0x01
    with pytest.raises(DirectoryError, match=r"INVALID_ARGUMENT.*signature does not verify"):
        client.register(register_request(), csr_der=bytes(der))
    assert [v.common_name for v in directory.list_vasps()] == ["first.example.com"]


def test_reissue_with_a_csr_rotates_the_key_and_returns_the_chain_only(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    sectigo = sectigo_client(emulator)
    first = accept(directory, reply.id, sectigo, poll_interval=0.05)
    second = reissue(directory, reply.id, sectigo, csr=csr_pem(build_csr(other_key, CN)),
                     poll_interval=0.05)
    assert second.pkcs12password == "" and second.identity is None
    assert second.leaf.public_key() == other_key.public_key()
    assert second.serial != first.serial
    assert client.lookup(common_name=CN).identity_certificate == second.leaf
    assert directory.superseded(reply.id) == [first.serial]


def test_reissue_refuses_a_csr_with_an_extra_name_before_anything_is_stored(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey,
) -> None:
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    sectigo = sectigo_client(emulator)
    accept(directory, reply.id, sectigo, poll_interval=0.05)
    before = directory.store.certreqs_for(reply.id)
    bad = custom_csr(key, san=[x509.DNSName(CN), x509.DNSName("evil.example.com")])
    with pytest.raises(CertificateError, match=re.escape("names DNS:evil.example.com")):
        reissue(directory, reply.id, sectigo, csr=csr_pem(bad), poll_interval=0.05)
    assert directory.store.certreqs_for(reply.id) == before
    reissue(directory, reply.id, sectigo, csr=csr_pem(custom_csr(key)), poll_interval=0.05)


def test_the_profiles_stricter_key_rule_is_applied_before_the_upload(
    make_emulator: Callable[..., SectigoEmulator], directory: Directory,
    client: DirectoryClient, key: rsa.RSAPrivateKey,
) -> None:
    """The emulator's profile says ``RSA - <key_size>``: a 2048-bit CSR passes the
    registration check, then the 4096 profile refuses it (CR_REJECTED, no batch)."""
    strict = make_emulator(key_size=4096)
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    with pytest.raises(DirectoryError, match=r"CR_REJECTED.*RSA-2048; at least RSA-4096"):
        accept(directory, reply.id, sectigo_client(strict), poll_interval=0.05)
    req = directory.store.certreqs_for(reply.id)[-1]
    assert req.status == CRS.CR_REJECTED and not req.batch_id
    assert directory.get(reply.id).verification_status == VS.REVIEWED
    strict.stop()
    relaxed = make_emulator(key_size=2048)  # same CA and state, profile RSA - 2048
    result = accept(directory, reply.id, sectigo_client(relaxed), poll_interval=0.05)
    assert result.leaf.public_key() == key.public_key()  # the retry kept the CSR


def test_a_certificate_for_another_key_is_never_installed(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CA that signs something else than the CSR's key (fault injected into the
    local Sectigo service's signer) ends the request CR_ERRORED."""
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    real_sign = emulator.ca.sign_csr
    monkeypatch.setattr(emulator.ca, "sign_csr",
                        lambda pem, **kw: real_sign(csr_pem(build_csr(other_key, CN)), **kw))
    with pytest.raises(DirectoryError, match=r"CR_ERRORED.*does not carry the CSR.s public key"):
        accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    with pytest.raises(DirectoryNotFoundError):
        client.lookup(common_name=CN)
    monkeypatch.setattr(emulator.ca, "sign_csr", real_sign)
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    assert result.leaf.public_key() == key.public_key()


# --------------------------------------------------------------------------- renewal (mTLS)


@pytest.fixture
def members(
    directory: Directory, emulator: SectigoEmulator, ca: CertificateAuthority,
) -> Iterator[tuple[str, bytes]]:
    """The members endpoint: directory certificate from the test CA, client
    certificates must chain to the local Sectigo service's CA. Yields (endpoint,
    directory CA PEM)."""
    server_id = ca.issue("localhost", key_size=2048)
    client_ca = certs_to_pem([emulator.ca.root, emulator.ca.issuing])
    with MembersServer(directory, listen="127.0.0.1:0",
                       tls=(server_id.chain_pem(), server_id.key_pem()), client_ca=client_ca,
                       sectigo=lambda: sectigo_client(emulator), poll_interval=0.05) as srv:
        yield f"127.0.0.1:{srv.port}", cert_to_pem(ca.root)


def renew_call(members: tuple[str, bytes], chain_pem: bytes, key_pem: bytes,
               csr: x509.CertificateSigningRequest) -> list[x509.Certificate]:
    endpoint, ca_pem = members
    chain = renew_over_mtls(endpoint, csr_der(csr), client_chain_pem=chain_pem,
                            client_key_pem=key_pem, ca_pem=ca_pem, server_name="localhost",
                            timeout=30)
    return parse_certificates(chain, source="renewal reply")


def issued_with_csr(directory: Directory, client: DirectoryClient, emulator: SectigoEmulator,
                    key: rsa.RSAPrivateKey) -> tuple[str, bytes]:
    reply = register_pending(client, directory, csr_der(build_csr(key, CN)))
    result = accept(directory, reply.id, sectigo_client(emulator), poll_interval=0.05)
    return reply.id, result.chain_pem()


def test_renewal_by_csr_needs_the_current_certificate_over_mtls(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    members: tuple[str, bytes], key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    _, chain_a = issued_with_csr(directory, client, emulator, key)
    new = renew_call(members, chain_a, key_to_pem(key), build_csr(other_key, CN))
    assert new[0].public_key() == other_key.public_key()
    assert client.lookup(common_name=CN).identity_certificate == new[0]
    # twin: the superseded certificate (still valid, chains fine) may not renew again
    with pytest.raises(DirectoryError) as info:
        renew_call(members, chain_a, key_to_pem(key), build_csr(key, CN))
    assert "PERMISSION_DENIED" in str(info.value)
    assert "is not the current identity certificate of charlie.example.com" in str(info.value)
    assert client.lookup(common_name=CN).identity_certificate == new[0]


def test_renewal_with_a_revoked_certificate_is_refused_and_the_operator_reissues(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    members: tuple[str, bytes], key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    vasp_id, chain_a = issued_with_csr(directory, client, emulator, key)
    revoke(directory, vasp_id, "keyCompromise", sectigo=sectigo_client(emulator))
    with pytest.raises(DirectoryError, match=r"PERMISSION_DENIED.*is revoked; after a compromise"):
        renew_call(members, chain_a, key_to_pem(key), build_csr(other_key, CN))
    new_csr = csr_pem(build_csr(other_key, CN))
    with pytest.raises(DirectoryError, match="needs contact verification; a token was sent "
                       "to 1 verified contact"):
        reissue(directory, vasp_id, sectigo_client(emulator), csr=new_csr, poll_interval=0.05)
    token = reissue_token(directory, vasp_id)
    # twin: a wrong token is refused (and a fresh one is sent), nothing issued
    with pytest.raises(DirectoryError, match="the contact token is wrong or expired"):
        reissue(directory, vasp_id, sectigo_client(emulator), csr=new_csr,
                contact_token=token[::-1], poll_interval=0.05)
    assert len(directory.store.certreqs_for(vasp_id)) == 1
    token = reissue_token(directory, vasp_id)
    result = reissue(directory, vasp_id, sectigo_client(emulator), csr=new_csr,
                     contact_token=token, poll_interval=0.05)
    assert client.lookup(common_name=CN).identity_certificate == result.leaf
    assert result.leaf.public_key() == other_key.public_key()


def reissue_token(directory: Directory, vasp_id: str) -> str:
    mails = [m for m in directory.store.emails(vasp_id=vasp_id)
             if m.reason == "reissue_verification"]
    return mails[-1].body.split("Token: ", 1)[1].split()[0]


def test_a_reissue_contact_token_is_single_use(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey,
) -> None:
    vasp_id, _ = issued_with_csr(directory, client, emulator, key)
    sectigo = sectigo_client(emulator)
    revoke(directory, vasp_id, "keyCompromise", sectigo=sectigo)
    with pytest.raises(DirectoryError, match="contact verification"):
        reissue(directory, vasp_id, sectigo, csr=csr_pem(build_csr(key, CN)))
    token = reissue_token(directory, vasp_id)
    first = reissue(directory, vasp_id, sectigo, csr=csr_pem(build_csr(key, CN)),
                    contact_token=token, poll_interval=0.05)
    revoke(directory, vasp_id, "keyCompromise", sectigo=sectigo)
    with pytest.raises(DirectoryError, match="the contact token is wrong or expired"):
        reissue(directory, vasp_id, sectigo, csr=csr_pem(build_csr(key, CN)),
                contact_token=token, poll_interval=0.05)
    assert directory.get(vasp_id).identity_certificate.data == cert_to_pem(first.leaf)


def test_a_planned_reissue_needs_no_contact_token(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    key: rsa.RSAPrivateKey,
) -> None:
    vasp_id, _ = issued_with_csr(directory, client, emulator, key)
    result = reissue(directory, vasp_id, sectigo_client(emulator),
                     csr=csr_pem(build_csr(key, CN)), poll_interval=0.05)
    assert directory.get(vasp_id).identity_certificate.data == cert_to_pem(result.leaf)


def test_renewal_refuses_a_csr_for_another_name(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    members: tuple[str, bytes], key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    vasp_id, chain_a = issued_with_csr(directory, client, emulator, key)
    before = directory.store.certreqs_for(vasp_id)
    with pytest.raises(DirectoryError) as info:
        renew_call(members, chain_a, key_to_pem(key), build_csr(other_key, "mallory.example.com"))
    assert "INVALID_ARGUMENT" in str(info.value) and "\n" not in str(info.value)
    assert "is not the registered common name 'charlie.example.com'" in str(info.value)
    assert directory.store.certreqs_for(vasp_id) == before


def test_renewal_refuses_a_client_certificate_of_another_ca(
    emulator: SectigoEmulator, directory: Directory, client: DirectoryClient,
    members: tuple[str, bytes], key: rsa.RSAPrivateKey, ca: CertificateAuthority,
) -> None:
    """Same common name, same shape, but issued by a CA the members endpoint does not
    trust: the TLS layer refuses it before any request is read."""
    vasp_id, chain_a = issued_with_csr(directory, client, emulator, key)
    stranger = ca.issue(CN, key_size=2048)
    with pytest.raises(DirectoryError, match="UNAVAILABLE"):
        renew_call(members, stranger.chain_pem(), stranger.key_pem(), build_csr(key, CN))
    assert len(directory.store.certreqs_for(vasp_id)) == 1
    renew_call(members, chain_a, key_to_pem(key), build_csr(key, CN))  # the accepted twin


# --------------------------------------------------------------------------- CLI


def test_cli_csr_writes_a_private_key_and_a_checked_csr(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
) -> None:
    key_path, csr_path = tmp_path / "vasp.key", tmp_path / "vasp.csr"
    done = trisa_peer_cli("csr", "--common-name", "Charlie.Example.com", "--bits", "2048",
                          "--organization", "Charlie Holdings", "--country", "DE",
                          "--key-out", key_path, "--csr-out", csr_path)
    assert done.returncode == 0, done.stderr
    assert _mode(key_path) == 0o600
    request = load_csr(csr_path.read_bytes())
    check_csr(request, CN)
    assert request.subject.rfc4514_string() == "C=DE,O=Charlie Holdings,CN=charlie.example.com"
    assert b"PRIVATE KEY" in key_path.read_bytes()
    # twin: an existing key is never overwritten without --force
    again = trisa_peer_cli("csr", "--common-name", CN, "--bits", "2048",
                           "--key-out", key_path, "--csr-out", tmp_path / "other.csr")
    assert again.returncode == 1
    assert again.stderr.strip() == f"trisa-peer: error: {key_path} already exists; use --force " \
        "to overwrite it"
    assert not (tmp_path / "other.csr").exists()


def test_cli_csr_refuses_a_small_key_and_writes_nothing(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
) -> None:
    ok = trisa_peer_cli("csr", "--common-name", CN, "--bits", "2048",
                        "--key-out", tmp_path / "a.key", "--csr-out", tmp_path / "a.csr")
    assert ok.returncode == 0
    done = trisa_peer_cli("csr", "--common-name", CN, "--bits", "1024",
                          "--key-out", tmp_path / "b.key", "--csr-out", tmp_path / "b.csr")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("trisa-peer: error: RSA key size 1024 is too small: at "
                                   "least 2048 bits are required")
    assert not (tmp_path / "b.key").exists() and not (tmp_path / "b.csr").exists()


def test_cli_csr_reads_the_guides_trisa_conf(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path,
) -> None:
    conf = ROOT / "docs" / "trisa.conf"
    done = trisa_peer_cli("csr", "--config", conf, "--bits", "2048", "--common-name", CN,
                          "--key-out", tmp_path / "k", "--csr-out", tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert load_csr((tmp_path / "c").read_bytes()).subject.rfc4514_string() == (
        "C=US,ST=California,L=Menlo Park,O=TRISA Member VASP,CN=charlie.example.com")
    broken = tmp_path / "broken.conf"
    broken.write_text("[req]\ndistinguished_name = dn_req\n")
    bad = trisa_peer_cli("csr", "--config", broken, "--bits", "2048", "--common-name", CN,
                         "--key-out", tmp_path / "k2", "--csr-out", tmp_path / "c2")
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"trisa-peer: error: {broken}: no [dn_req] section with "
                                  "the subject")


@pytest.fixture
def served(directory: Directory) -> Iterator[str]:
    with DirectoryServer(directory, listen="127.0.0.1:0") as server:
        yield server.endpoint


def test_cli_register_review_certs_renew_and_reissue_with_csrs(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, emulator: SectigoEmulator,
    directory: Directory, served: str, members: tuple[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "gds.db")
    monkeypatch.setenv("SECTIGO_ENDPOINT", emulator.base_url)
    monkeypatch.setenv("SECTIGO_USERNAME", USER)
    monkeypatch.setenv("SECTIGO_PASSWORD", PASSWORD)
    for name in ("one", "two", "bad"):
        made = trisa_peer_cli("csr", "--common-name", "mallory.example.com" if name == "bad"
                              else CN, "--bits", "2048", "--key-out", tmp_path / f"{name}.key",
                              "--csr-out", tmp_path / f"{name}.csr")
        assert made.returncode == 0, made.stderr
    client_args = ("--directory", served, "--directory-insecure")
    # a CSR for another name: refused by the directory, one line, nothing registered
    bad = trisa_peer_cli("gds", "register", *client_args, "--common-name", CN, "--endpoint",
                         f"{CN}:443", "--name", "Charlie Holdings", "--email",
                         "admin@charlie.example.com", "--country", "DE",
                         "--csr", tmp_path / "bad.csr")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "INVALID_ARGUMENT" in bad.stderr
    assert "'mallory.example.com' is not the registered common name" in bad.stderr
    assert directory.list_vasps() == []
    done = trisa_peer_cli("gds", "register", *client_args, "--common-name", CN, "--endpoint",
                          f"{CN}:443", "--name", "Charlie Holdings", "--email",
                          "admin@charlie.example.com", "--country", "DE", "--json",
                          "--csr", tmp_path / "one.csr")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["pkcs12password"] == ""
    vasp_id = doc["id"]
    token = next(t.token for t in directory.store.tokens_for(vasp_id))
    assert trisa_peer_cli("gds", "verify-contact", *client_args, "--id", vasp_id,
                          "--token", token).returncode == 0
    review = trisa_peer_cli("gds", "review", vasp_id, "--accept", "--db", db, "--directory-id",
                            "testnet.local", "--poll-interval", "0.05")
    assert review.returncode == 0, review.stderr
    out = tmp_path / "out"
    certs = trisa_peer_cli("gds", "certs", vasp_id, "--out", out, "--db", db)
    assert certs.returncode == 0, certs.stderr
    chain_one = out / f"{CN}.pem"
    assert b"PRIVATE KEY" not in chain_one.read_bytes()
    one = load_identity(chain_one, key_path=tmp_path / "one.key")  # the VASP's own key fits

    endpoint, ca_pem = members
    (tmp_path / "members-ca.pem").write_bytes(ca_pem)
    renew_args = ("gds", "renew", "--members", endpoint, "--members-ca",
                  tmp_path / "members-ca.pem", "--server-name", "localhost")
    renewed = trisa_peer_cli(*renew_args, "--cert", chain_one, "--key", tmp_path / "one.key",
                             "--csr", tmp_path / "two.csr", "--chain-out", tmp_path / "two.pem")
    assert renewed.returncode == 0, renewed.stderr
    two = load_identity(tmp_path / "two.pem", key_path=tmp_path / "two.key")
    assert directory.get(vasp_id).identity_certificate.data == cert_to_pem(two.leaf)
    # twin: the superseded certificate cannot renew; one line, nothing written
    again = trisa_peer_cli(*renew_args, "--cert", chain_one, "--key", tmp_path / "one.key",
                           "--csr", tmp_path / "one.csr", "--chain-out", tmp_path / "x.pem")
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "PERMISSION_DENIED" in again.stderr and "not the current identity" in again.stderr
    assert not (tmp_path / "x.pem").exists()
    assert one.leaf != two.leaf

    # the operator reissues with a CSR: a wrong name is refused, the right one issued
    reissue_args = ("gds", "reissue", vasp_id, "--db", db, "--poll-interval", "0.05")
    refused = trisa_peer_cli(*reissue_args, "--csr", tmp_path / "bad.csr")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "is not the registered common name" in refused.stderr
    requests = len(directory.store.certreqs_for(vasp_id))
    missing = trisa_peer_cli(*reissue_args, "--csr", tmp_path / "one.csr",
                             "--chain-out", tmp_path / "nope" / "three.pem")
    assert missing.returncode == 1 and "nope does not exist" in missing.stderr
    assert len(directory.store.certreqs_for(vasp_id)) == requests  # nothing issued
    done = trisa_peer_cli(*reissue_args, "--csr", tmp_path / "one.csr",
                          "--chain-out", tmp_path / "three.pem", "--json")
    assert done.returncode == 0, done.stderr
    assert "pkcs12password" not in json.loads(done.stdout)
    three = load_identity(tmp_path / "three.pem", key_path=tmp_path / "one.key")
    assert directory.get(vasp_id).identity_certificate.data == cert_to_pem(three.leaf)


@pytest.mark.slow
def test_cli_gds_members_serves_renewals_until_sigterm(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, emulator: SectigoEmulator,
    directory: Directory, client: DirectoryClient, ca: CertificateAuthority,
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
) -> None:
    _, chain = issued_with_csr(directory, client, emulator, key)
    (tmp_path / "cur.pem").write_bytes(chain)
    write_private(tmp_path / "cur.key", key_to_pem(key))
    (tmp_path / "new.csr").write_bytes(csr_pem(build_csr(other_key, CN)))
    server_id = ca.issue("localhost", key_size=2048)
    (tmp_path / "tls.pem").write_bytes(server_id.chain_pem())
    write_private(tmp_path / "tls.key", server_id.key_pem())
    (tmp_path / "clients.pem").write_bytes(certs_to_pem([emulator.ca.root, emulator.ca.issuing]))
    (tmp_path / "members-ca.pem").write_bytes(cert_to_pem(ca.root))
    args = ["gds", "members", "--db", str(tmp_path / "gds.db"), "--directory-id",
            "testnet.local", "--listen", "127.0.0.1:0", "--tls-cert", str(tmp_path / "tls.pem"),
            "--tls-key", str(tmp_path / "tls.key"), "--poll-interval", "0.05"]
    # twin: a client CA file without certificates is refused at start, one line
    (tmp_path / "empty.pem").write_text("")
    bad = trisa_peer_cli(*args, "--client-ca", tmp_path / "empty.pem")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "empty file" in bad.stderr
    env = dict(os.environ, SECTIGO_ENDPOINT=emulator.base_url, SECTIGO_USERNAME=USER,
               SECTIGO_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", *args, "--client-ca", str(tmp_path / "clients.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "members endpoint (mTLS) listening on port" in line, (
            line or (proc.stderr.read() if proc.stderr else ""))
        port = int(line.rsplit(" ", 1)[1])
        done = trisa_peer_cli("gds", "renew", "--members", f"127.0.0.1:{port}", "--members-ca",
                              tmp_path / "members-ca.pem", "--server-name", "localhost",
                              "--cert", tmp_path / "cur.pem", "--key", tmp_path / "cur.key",
                              "--csr", tmp_path / "new.csr", "--chain-out", tmp_path / "new.pem")
        assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    leaf = parse_certificates((tmp_path / "new.pem").read_bytes(), source="new")[0]
    assert leaf.public_key() == other_key.public_key()
    assert directory.get(directory.list_vasps()[0].id).identity_certificate.data == (
        cert_to_pem(leaf))


def test_csr_module_is_pure() -> None:
    """``trisa_peer.csr`` builds and checks CSRs only: no gRPC (the directory's server
    and the CLI carry it)."""
    code = ("import sys, trisa_peer.csr; "
            "print(','.join(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
    out = subprocess.run([sys.executable, "-c", code.replace("trisa_peer.csr",
                                                             "trisa_peer.directory.members")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "grpc" or out.stdout.strip().startswith("grpc")  # the twin


def test_register_refuses_a_call_carrying_two_csrs(
    directory: Directory, served: str, key: rsa.RSAPrivateKey,
) -> None:
    import grpc

    from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
    from trisa_peer.csr import CSR_METADATA

    der = csr_der(build_csr(key, CN))
    with grpc.insecure_channel(served) as channel:
        stub = gds_grpc.TRISADirectoryStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(register_request(), metadata=((CSR_METADATA, der), (CSR_METADATA, der)),
                          timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "the call carries 2 CSRs; send one"
        assert directory.list_vasps() == []
        reply = stub.Register(register_request(), metadata=((CSR_METADATA, der),), timeout=10)
        assert reply.pkcs12password == ""


class _UpstreamLikeDirectory(Directory):
    """A directory that knows nothing of CSR metadata, as upstream's GDS."""

    def register(self, request: gds_pb2.RegisterRequest, *,
                 csr: bytes | None = None) -> Any:
        return super().register(request)


def test_cli_register_warns_when_the_directory_ignores_the_csr(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, key: rsa.RSAPrivateKey,
) -> None:
    (tmp_path / "c.csr").write_bytes(csr_pem(build_csr(key, CN)))
    args = ("--common-name", CN, "--endpoint", f"{CN}:443", "--name", "Charlie Holdings",
            "--email", "admin@charlie.example.com", "--csr", tmp_path / "c.csr")
    for kind, directory_type in (("ours", Directory), ("upstream", _UpstreamLikeDirectory)):
        store = SQLiteStore(tmp_path / f"{kind}.db")
        try:
            with DirectoryServer(directory_type(store), listen="127.0.0.1:0") as server:
                done = trisa_peer_cli("gds", "register", "--directory", server.endpoint,
                                      "--directory-insecure", *args)
        finally:
            store.close()
        assert done.returncode == 0, done.stderr
        if kind == "ours":
            assert done.stderr == "" and "no PKCS#12 password" in done.stdout
        else:
            assert done.stderr.startswith("warning: the directory ignored the CSR")
            assert len(done.stderr.strip().splitlines()) == 1
            assert "PKCS#12 password (shown only once" in done.stdout
