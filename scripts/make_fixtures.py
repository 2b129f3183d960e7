"""Build the committed test PKI in ``certs/fixtures/`` (``make fixtures``).

Idempotent: everything is generated in a scratch directory next to the target, then
swapped in, so ``certs/fixtures/`` is either the old set or the complete new one. Keys
and serials are random; names, subjects, extensions and validity periods are fixed.
Every certificate meant to be valid stays valid until 2076 (at least 20 years); the CA
certificates until 2099. ``README.md`` is regenerated from the certificates themselves.

Usage: ``python scripts/make_fixtures.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, cert_to_pem, certs_to_pem
from trisa_peer.fsutil import atomic_write, write_private

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "certs" / "fixtures"

CA_FROM = datetime(2019, 1, 1, tzinfo=UTC)
ROOT_TO = datetime(2099, 12, 31, tzinfo=UTC)
ISSUING_TO = datetime(2099, 6, 30, tzinfo=UTC)
VALID_FROM = datetime(2025, 1, 1, tzinfo=UTC)
VALID_TO = datetime(2076, 1, 1, tzinfo=UTC)
EXPIRED_FROM = datetime(2020, 1, 1, tzinfo=UTC)
EXPIRED_TO = datetime(2021, 1, 1, tzinfo=UTC)
FUTURE_FROM = datetime(2046, 1, 1, tzinfo=UTC)
FUTURE_TO = datetime(2066, 1, 1, tzinfo=UTC)
CRL_NEXT_UPDATE_DAYS = 365 * 50
CA_KEY_SIZE = 4096

# name -> purpose, in README order (filled in as files are written)
PURPOSES: dict[str, str] = {}


def _days(start: datetime, end: datetime) -> int:
    return (end - start).days


def write_identity(out: Path, name: str, identity: Identity, purpose: str) -> None:
    """``<name>.pem`` = leaf + its issuer (never the root); ``<name>.key`` 0600."""
    write_private(out / f"{name}.key", identity.key_pem())
    atomic_write(out / f"{name}.pem", certs_to_pem([identity.leaf, *identity.chain]))
    PURPOSES[f"{name}.pem"] = purpose


def build(out: Path) -> None:
    ca = CertificateAuthority.init(
        out / "ca",
        name="TRISA Test Root CA",
        key_size=CA_KEY_SIZE,
        not_before=CA_FROM,
        root_days=_days(CA_FROM, ROOT_TO),
        issuing_days=_days(CA_FROM, ISSUING_TO),
    )
    atomic_write(out / "trust.pem", ca.trust_pem())
    PURPOSES["trust.pem"] = "TRISA test trust bundle: root then issuing CA"

    valid = {"not_before": VALID_FROM, "not_after": VALID_TO, "key_size": 2048}

    def leaf(name: str, cn: str, purpose: str, **kw: object) -> Identity:
        opts: dict[str, object] = {**valid, **kw}
        identity = ca.issue(cn, **opts)  # type: ignore[arg-type]
        write_identity(out, name, identity, purpose)
        return identity

    leaf("alice", "alice.vasp.test", "registered VASP Alice (valid)")
    leaf("bob", "bob.vasp.test", "registered VASP Bob (valid)")
    leaf("charlie", "charlie.vasp.test", "registered VASP Charlie (valid)")
    leaf("mallory", "mallory.vasp.test", "right CA, never registered in the directory")
    leaf(
        "bob-reissued",
        "bob.vasp.test",
        "Bob after a reissue: same CN, new key and serial (rotation tests)",
    )
    leaf("alice-rsa4096", "alice.vasp.test", "Alice with an RSA-4096 key", key_size=4096)
    leaf("bob-rsa4096", "bob.vasp.test", "Bob with an RSA-4096 key", key_size=4096)
    leaf(
        "expired",
        "expired.vasp.test",
        "expired leaf (2020-01-01 .. 2021-01-01)",
        not_before=EXPIRED_FROM,
        not_after=EXPIRED_TO,
    )
    leaf(
        "notyetvalid",
        "notyetvalid.vasp.test",
        "not yet valid (from 2046-01-01)",
        not_before=FUTURE_FROM,
        not_after=FUTURE_TO,
    )
    leaf(
        "serverauth-only",
        "serverauth.vasp.test",
        "EKU serverAuth only: must fail as a client",
        client_auth=False,
    )
    leaf(
        "clientauth-only",
        "clientauth.vasp.test",
        "EKU clientAuth only: must fail as a server",
        server_auth=False,
    )
    leaf(
        "san-mismatch",
        "sanmismatch.vasp.test",
        "SAN does not contain the CN (SAN only other.vasp.test)",
        san_override=["other.vasp.test"],
    )
    revoked = leaf(
        "revoked", "revoked.vasp.test", "revoked (key compromise); listed in crl.pem / crl.der"
    )
    leaf(
        "weak-rsa1024",
        "weak.vasp.test",
        "RSA-1024 leaf key: below the 2048-bit minimum",
        key_size=1024,
        allow_weak=True,
    )

    expired_ca = ca.create_intermediate(
        "TRISA Test Expired Intermediate CA",
        key_size=2048,
        not_before=CA_FROM,
        not_after=EXPIRED_TO,
    )
    atomic_write(out / "expired-intermediate-ca.pem", cert_to_pem(expired_ca.leaf))
    PURPOSES["expired-intermediate-ca.pem"] = (
        "second intermediate signed by the test root, expired 2021-01-01"
    )
    leaf(
        "expired-intermediate",
        "expiredint.vasp.test",
        "valid leaf under the expired intermediate (pem = leaf + that intermediate)",
        issuer=expired_ca,
    )

    ca.revoke(revoked.leaf.serial_number, "key compromise")
    crl = ca.crl(next_update_days=CRL_NEXT_UPDATE_DAYS)
    atomic_write(out / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    atomic_write(out / "crl.der", crl.public_bytes(serialization.Encoding.DER))
    PURPOSES["crl.pem"] = "CRL of the test issuing CA (PEM), lists revoked; next update 50 years"
    PURPOSES["crl.der"] = "the same CRL, DER"

    evil = CertificateAuthority.init(
        out / "evil-ca",
        name="Evil Root CA",
        key_size=CA_KEY_SIZE,
        not_before=CA_FROM,
        root_days=_days(CA_FROM, ROOT_TO),
        issuing_days=_days(CA_FROM, ISSUING_TO),
    )
    atomic_write(out / "evil-trust.pem", evil.trust_pem())
    PURPOSES["evil-trust.pem"] = "a foreign CA's trust bundle (root then issuing)"
    for name, cn, purpose in (
        ("evil", "evil.vasp.test", "leaf under the evil CA: must not verify against trust.pem"),
        ("evil-bob", "bob.vasp.test", "impostor: Bob's CN under the evil CA"),
    ):
        write_identity(out, name, evil.issue(cn, **valid), purpose)  # type: ignore[arg-type]

    for directory in (ca.directory, evil.directory):
        (directory / "state.lock").unlink(missing_ok=True)
    atomic_write(out / "README.md", readme(out, ca, evil).encode("utf-8"))


# --------------------------------------------------------------------------- README


def _describe(cert: x509.Certificate) -> dict[str, str]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = ", ".join(san_ext.get_values_for_type(x509.DNSName)) or "-"
    except x509.ExtensionNotFound:
        san = "-"
    try:
        eku_ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        names = {
            ExtendedKeyUsageOID.CLIENT_AUTH: "client",
            ExtendedKeyUsageOID.SERVER_AUTH: "server",
        }
        eku = "+".join(names.get(o, o.dotted_string) for o in eku_ext.value)
    except x509.ExtensionNotFound:
        eku = "CA" if _is_ca(cert) else "-"
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_desc = f"RSA-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_desc = f"EC {key.curve.name}"
    else:
        key_desc = type(key).__name__
    return {
        "cn": str(cn[0].value) if cn else "-",
        "san": san,
        "eku": eku,
        "key": key_desc,
        "validity": (
            f"{cert.not_valid_before_utc.date().isoformat()} .. "
            f"{cert.not_valid_after_utc.date().isoformat()}"
        ),
        "issuer": str(cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value),
    }


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def readme(out: Path, ca: CertificateAuthority, evil: CertificateAuthority) -> str:
    lines = [
        "# Test PKI (generated: do not edit)",
        "",
        "Made by `make fixtures` (`scripts/make_fixtures.py`), which wipes and rebuilds this",
        "directory; keys and serials change on every run, names and profiles do not.",
        "All keys here are **test keys**, committed on purpose; git does not keep the 0600",
        "mode the script gives `*.key`.",
        "",
        "Leaves use the trisa-peer TRISA profile (`trisa_peer.ca`): SHA-384/RSA signature,",
        "KU digitalSignature + keyEncipherment (critical), EKU non-critical, SAN DNS = CN",
        "unless noted, BasicConstraints CA:FALSE, SKI + AKI. Each `<name>.pem` holds the",
        "leaf followed by its issuing CA (never the root); `<name>.key` is unencrypted",
        "PKCS#8 PEM.",
        "",
        "## Certificate authorities",
        "",
        "| path | content |",
        "|---|---|",
        f"| `ca/` | `CertificateAuthority` directory: root `{_cn(ca.root)}`, issuing "
        f"`{_cn(ca.issuing)}` (RSA-{CA_KEY_SIZE}, valid to "
        f"{ca.issuing.not_valid_after_utc.date()}); `state.json` records every leaf below |",
        "| `trust.pem` | test root + test issuing CA (PEM): the TRISA trust pool for tests |",
        f"| `evil-ca/` | a separate, foreign CA: root `{_cn(evil.root)}`, issuing "
        f"`{_cn(evil.issuing)}` |",
        "| `evil-trust.pem` | evil root + evil issuing CA |",
        "| `expired-intermediate-ca.pem` | second intermediate under the test root, "
        "expired 2021-01-01 (no key kept) |",
        "",
        "## Leaves",
        "",
        "| file | CN | SAN DNS | EKU | key | validity | issuer | purpose |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, purpose in PURPOSES.items():
        if not name.endswith(".pem") or name in {
            "trust.pem",
            "evil-trust.pem",
            "crl.pem",
            "expired-intermediate-ca.pem",
        }:
            continue
        cert = x509.load_pem_x509_certificate((out / name).read_bytes())
        d = _describe(cert)
        lines.append(
            f"| `{name}` / `.key` | {d['cn']} | {d['san']} | {d['eku']} | {d['key']} | "
            f"{d['validity']} | {d['issuer']} | {purpose} |"
        )
    lines += [
        "",
        "## Revocation",
        "",
        "| file | content |",
        "|---|---|",
        "| `crl.pem` | CRL signed by the test issuing CA, lists `revoked.pem` (reason "
        "keyCompromise); nextUpdate 50 years after generation |",
        "| `crl.der` | the same CRL in DER |",
        "",
        "Regenerate with `make fixtures`; tests that depend on names above: "
        "`tests/test_fixtures_pki.py` checks every file.",
        "",
    ]
    return "\n".join(lines)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target directory")
    args = parser.parse_args(argv)
    target: Path = args.out.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.build"
    old = target.parent / f".{target.name}.old"
    for leftover in (scratch, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    scratch.mkdir()
    started = time.monotonic()
    try:
        build(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    scratch.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    print(
        f"wrote {sum(1 for p in target.rglob('*') if p.is_file())} files to {target} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
