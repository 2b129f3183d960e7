"""Prometheus metrics and the /metrics, /livez, /readyz listener (issue 15, section 3).

Real parts only: transfers between real nodes of the simulated network (the
``trisa_network`` fixture), real certificates from its CA, a real HTTP scrape of the
probe server, a real ``serve`` process for the command-line option.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import PKI, CliResult
from prometheus_client.parser import text_string_to_metric_families
from serve_proc import BobProcess, close_quietly

from trisa_peer import events
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
from trisa_peer.certs import certs_to_pem
from trisa_peer.cli.observe import node_sources
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.errors import DirectoryNotFoundError, HandshakeError
from trisa_peer.metrics import Metrics, NodeCollector, code_label
from trisa_peer.metrics.probes import ProbeServer
from trisa_peer.network.handler import Accept
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.steps import HandshakeStep, Reason
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.policies import originator_payload
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial

Code = errors_pb2.Error
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
ROOT = Path(__file__).resolve().parent.parent


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Series:
    status, text = fetch(port, "/metrics")
    assert status == 200
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def total(series: Series, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= ls)


@pytest.fixture
def probe(net: Any) -> Iterator[tuple[Metrics, int]]:
    """Fresh metrics (counters at zero) for Bob's node, scraped over HTTP."""
    metrics = Metrics()
    metrics.registry.register(NodeCollector(**{k: v for k, v in node_sources(net.bob.node).items()
                                               if k != "problem"},
                                            problem=net.bob.node.server.problem))
    server = ProbeServer("127.0.0.1", 0, metrics.registry, net.bob.node.server.problem)
    metrics.subscribe()
    port = server.start()
    yield metrics, port
    metrics.close()
    server.stop()


def payload(sender: str = "alice.vasp.test", receiver: str = "bob.vasp.test") -> Any:
    o = BOOK.wallets_of(sender)[1]
    b = BOOK.wallets_of(receiver)[0]
    return originator_payload(o, b, sent_at=datetime.now(UTC))


# ------------------------------------------------------------------ counters moved


def test_accepted_transfer_moves_the_accepted_counters(net: Any, probe: Any) -> None:
    _, port = probe
    net.bob.node.server.authenticator.forget()  # a fresh decision, not a cached one
    result = net.alice.send(net.bob.common_name, payload())
    assert result.state == "accepted"
    got = scrape(port)
    assert value(got, "trisa_transfers_total", direction="incoming", state="accepted") == 1
    assert value(got, "trisa_transfers_total", direction="outgoing", state="accepted") == 1
    assert value(got, "trisa_transfer_seconds_count", direction="incoming") == 1
    assert value(got, "trisa_handshake_decisions_total", step="4", outcome="accept",
                 reason="verified") >= 1
    assert total(got, "trisa_directory_lookups_total", result="found") >= 1
    assert value(got, "trisa_directory_reachable") == 1
    assert total(got, "trisa_envelope_errors_total") == 0  # twin: nothing was rejected
    own = [ls for (n, ls) in got if n == "trisa_certificate_expiry_seconds"
           and ("certificate", "own") in ls]
    assert len(own) == 1
    assert value(got, "trisa_ready") == 1


def test_rejected_transfer_moves_the_error_counters_by_trisa_code(net: Any, probe: Any) -> None:
    _, port = probe
    result = net.alice.node.send_error(net.bob.common_name, Code.COMPLIANCE_CHECK_FAIL, "frozen")
    assert result.state == "rejected"
    got = scrape(port)
    assert value(got, "trisa_transfers_total", direction="incoming", state="rejected") == 1
    assert value(got, "trisa_transfers_total", direction="incoming", state="accepted") == 0
    assert value(got, "trisa_envelope_errors_total", direction="incoming",
                 code="COMPLIANCE_CHECK_FAIL") == 1
    assert value(got, "trisa_envelope_errors_total", direction="outgoing",
                 code="COMPLIANCE_CHECK_FAIL") == 1


def test_refused_peer_counts_its_step_and_reason(net: Any, probe: Any) -> None:
    _, port = probe
    stranger = net.ca.issue("stranger.vasp.test", key_type="ec")  # chains, not registered
    with pytest.raises(HandshakeError) as refused:
        net.bob.node.server.authenticator.authenticate_pem(
            certs_to_pem([stranger.leaf]), certs_to_pem(stranger.chain))
    assert refused.value.reason == Reason.NOT_REGISTERED
    got = scrape(port)
    assert value(got, "trisa_handshake_decisions_total", step="4", outcome="reject",
                 reason="not-registered") == 1
    assert value(got, "trisa_directory_lookups_total", result="not-found", cached="false") >= 1


def test_pending_transfers_and_their_age_are_gauges(net: Any, probe: Any,
                                                    tmp_path: Path) -> None:
    _, port = probe
    store = net.bob.node.store
    before = value(scrape(port), "trisa_pending_transfers", direction="incoming")
    seq = store.add(envelope_id="0c4c6b2e-9d1b-4d7e-9f2a-3d0f4d1c6a01", peer="alice.vasp.test",
                    direction="incoming", kind="request", state="pending", envelope=b"x")
    try:
        got = scrape(port)
        assert value(got, "trisa_pending_transfers", direction="incoming") == before + 1
        assert value(got, "trisa_pending_oldest_age_seconds", direction="incoming") >= 0
    finally:
        store.set_state(seq, "rejected", error_code=Code.REJECTED)
    assert value(scrape(port), "trisa_pending_transfers", direction="incoming") == before


# ------------------------------------------------------------------ bounded labels


def _self_signed(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))


def _label_values(series: Series) -> set[str]:
    return {v for (_, ls) in series for _, v in ls}


def test_hostile_names_and_envelope_ids_never_become_labels(net: Any, probe: Any) -> None:
    _, port = probe
    stub = net.alice.node.connect(net.bob.common_name).network
    auth = net.bob.node.server.authenticator

    def attack(first: int, last: int) -> None:
        for i in range(first, last):
            if i % 2:  # any bytes in the name: self-signed, refused at step 3
                leaf, chain = _self_signed(f"evil{i}\u2028\n\x1b[31m" + "y" * 40), []
            else:  # a name the CA issues, not registered: refused at step 4
                cert = net.ca.issue(f"evil-{i}.vasp.test", key_type="ec")
                leaf, chain = cert.leaf, list(cert.chain)
            with pytest.raises(HandshakeError):
                auth.authenticate_pem(certs_to_pem([leaf]), certs_to_pem(chain) or None)
            reply = stub.Transfer(api_pb2.SecureEnvelope(id=f"evil-id-{i}\n" + "z" * 500),
                                  timeout=10)
            assert reply.error.code == Code.BAD_REQUEST

    attack(0, 4)
    early = scrape(port)
    attack(4, 40)
    late = scrape(port)
    assert set(late) == set(early)  # 36 more names and ids: not one new series
    assert not any("evil" in v or "zzz" in v for v in _label_values(late))
    assert total(late, "trisa_handshake_decisions_total", outcome="reject") == 40
    assert value(late, "trisa_envelope_errors_total", direction="incoming",
                 code="BAD_REQUEST") == 40


def test_out_of_set_values_are_folded_into_other() -> None:
    metrics = Metrics()
    metrics.transfer("incoming", "accepted", 0, 0.01)
    metrics.transfer("sideways", "made-up\nstate", 99999, 0.01)
    metrics.webhook_call("accept", 0.1)
    metrics.webhook_call("<script>", 0.1)
    reg = metrics.registry
    assert reg.get_sample_value("trisa_transfers_total",
                                {"direction": "incoming", "state": "accepted"}) == 1
    assert reg.get_sample_value("trisa_transfers_total",
                                {"direction": "other", "state": "other"}) == 1
    assert reg.get_sample_value("trisa_envelope_errors_total",
                                {"direction": "other", "code": "other"}) == 1
    assert reg.get_sample_value("trisa_webhook_calls_total", {"outcome": "accept"}) == 1
    assert reg.get_sample_value("trisa_webhook_calls_total", {"outcome": "other"}) == 1
    assert code_label(Code.BAD_REQUEST) == "BAD_REQUEST" and code_label(-7) == "other"
    with pytest.raises(ValueError):  # a reason outside the enum is a programming error
        metrics.decision(HandshakeStep.BIND_CLIENT_RECORD, "reject", "made-up")  # type: ignore[arg-type]


def test_a_broken_subscriber_never_breaks_the_call(net: Any, probe: Any) -> None:
    class Broken(events.Listener):
        def transfer(self, direction: str, state: str, code: int, seconds: float) -> None:
            raise RuntimeError("bug in a subscriber")

    _, port = probe
    undo = events.subscribe(Broken())
    try:
        result = net.alice.send(net.bob.common_name, payload())
    finally:
        undo()
    assert result.state == "accepted"
    assert value(scrape(port), "trisa_transfers_total", direction="incoming",
                 state="accepted") == 1  # the other subscriber still got the event


# ------------------------------------------------------------------ probes


@pytest.fixture
def lone_node(net: Any, tmp_path: Path) -> Iterator[tuple[TrisaNode, list[datetime], int]]:
    """An unstarted node of Bob's identity on its own SQLite file and clock."""
    now = [datetime.now(UTC)]
    material = StaticMaterial(Material(net.bob.identity, net.pool, None, 1))
    directory = net.directory_client()
    node = TrisaNode(material, directory, store=TransferStore(tmp_path / "lone.db"),
                     handler=lambda incoming: Accept(), listen="127.0.0.1:0",
                     clock=lambda: now[0])
    server = ProbeServer("127.0.0.1", 0, Metrics().registry, node.server.problem)
    port = server.start()
    yield node, now, port
    server.stop()
    node.close()
    directory.close()


def test_readyz_fails_when_the_own_certificate_expires(lone_node: Any) -> None:
    node, now, port = lone_node
    assert fetch(port, "/readyz") == (200, "ready\n")
    assert fetch(port, "/livez") == (200, "ok\n")
    now[0] = node.material.current().identity.leaf.not_valid_after_utc + timedelta(seconds=1)
    status, text = fetch(port, "/readyz")
    assert status == 503 and "expired" in text
    assert fetch(port, "/livez") == (200, "ok\n")  # alive, just not ready
    now[0] = datetime.now(UTC)
    assert fetch(port, "/readyz") == (200, "ready\n")


def test_readyz_fails_when_the_store_file_is_gone(lone_node: Any, tmp_path: Path) -> None:
    _, _, port = lone_node
    assert fetch(port, "/readyz")[0] == 200
    (tmp_path / "lone.db").unlink()
    status, text = fetch(port, "/readyz")
    assert status == 503 and "lone.db" in text


def test_unknown_path_is_404_and_nothing_but_get(lone_node: Any) -> None:
    _, _, port = lone_node
    assert fetch(port, "/metrics/../etc")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="POST",
                                     data=b"x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 (http to 127.0.0.1)
    assert refused.value.code == 501


# ------------------------------------------------------------------ command line


def test_plain_node_never_imports_prometheus_client() -> None:
    code = ("import sys, trisa_peer.cli.main, trisa_peer.network.node, trisa_peer.cli.observe; "
            "print('prometheus_client' in sys.modules); import trisa_peer.metrics; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(("extra", "status", "text"), [
    (["--workers", "2", "--db", "{tmp}/x.db", "--metrics-listen", "127.0.0.1:x"], 1,
     "--metrics-listen '127.0.0.1:x' is not HOST:PORT"),
    (["--metrics-listen", "nonsense:port"], 1, "--metrics-listen 'nonsense:port' is not HOST:PORT"),
])
def test_metrics_listen_mistakes_are_one_line(
    trisa_peer_cli: Callable[..., CliResult], tmp_path: Path, extra: list[str], status: int,
    text: str,
) -> None:
    args = ["serve", "--listen", "127.0.0.1:0", "--cert", str(PKI / "bob.pem"),
            "--key", str(PKI / "bob.key"), "--trust", str(PKI / "trust.pem"),
            "--directory", "127.0.0.1:9", "--directory-insecure"]
    if "--metrics-listen" not in extra:
        args += ["--metrics-listen", "127.0.0.1:0"]
    out = trisa_peer_cli(*args, *[e.format(tmp=tmp_path) for e in extra])
    assert out.returncode == status
    assert text in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.db").exists()


def test_docs_list_every_metric_and_alert_rules_use_them(net: Any, probe: Any) -> None:
    _, port = probe
    net.alice.send(net.bob.common_name, payload())
    text = fetch(port, "/metrics")[1]
    names = {f.name for f in text_string_to_metric_families(text)
             if f.name.startswith("trisa_")}
    doc = (ROOT / "docs" / "metrics.md").read_text()
    missing = sorted(n for n in names if f"`{n}" not in doc)
    assert not missing, f"docs/metrics.md does not list {missing}"
    documented = set(re.findall(r"`(trisa_[a-z_]+)`", doc))
    assert documented <= {n for n in names} | {f"{n}_total" for n in names}, (
        documented - names)


def _rule_problems(doc: Any, known: set[str]) -> list[str]:
    """What makes ``doc`` not a Prometheus rule file on our metrics (PromQL itself is
    checked only for balanced parentheses and known metric names)."""
    problems = []
    if not isinstance(doc, dict) or set(doc) != {"groups"}:
        return ["top level must be exactly 'groups'"]
    for group in doc["groups"]:
        if not group.get("name") or set(group) - {"name", "rules", "interval", "limit"}:
            problems.append(f"group {group.get('name')!r}: bad keys")
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            if set(rule) - {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}:
                problems.append(f"{name}: unknown keys")
            expr = rule.get("expr")
            if not name or not isinstance(expr, str):
                problems.append(f"{name}: alert and expr are required")
                continue
            if not re.fullmatch(r"\d+[smhdwy]", str(rule.get("for", "0m"))):
                problems.append(f"{name}: bad 'for'")
            used = set(re.findall(r"trisa_[a-z_]+", expr))
            if not used or used - known:
                problems.append(f"{name}: unknown metrics {sorted(used - known)}")
            if expr.count("(") != expr.count(")"):
                problems.append(f"{name}: unbalanced parentheses")
    return problems


def _known_metrics() -> set[str]:
    return set(re.findall(r"`(trisa_[a-z_]+)`", (ROOT / "docs" / "metrics.md").read_text()))


def test_alert_rules_are_prometheus_rule_groups_on_real_metrics() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
    assert _rule_problems(doc, _known_metrics()) == []
    alerts = {rule["alert"] for group in doc["groups"] for rule in group["rules"]}
    assert {"TrisaCertificateExpiresSoon", "TrisaRefusalsByReason", "TrisaDirectoryUnreachable",
            "TrisaPendingPastDeadline"} <= alerts


def test_alert_rule_check_catches_a_wrong_rule() -> None:
    # the twin: the same file with one rule naming a metric nobody exports, a bad 'for'
    doc = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
    rule = doc["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("trisa_certificate_expiry_seconds",
                                        "trisa_certificate_expiry_days")
    rule["for"] = "1 hour"
    problems = _rule_problems(doc, _known_metrics())
    assert problems == [f"{rule['alert']}: bad 'for'",
                        f"{rule['alert']}: unknown metrics ['trisa_certificate_expiry_days']"]


@pytest.mark.slow
def test_serve_process_scrape_after_a_transfer_and_readyz_on_a_gone_store(
    tmp_path: Path,
) -> None:
    bob = BobProcess(tmp_path, "--metrics-listen", "127.0.0.1:0")
    try:
        port = bob.metrics_port
        assert port and fetch(port, "/readyz") == (200, "ready\n")
        before = scrape(port)
        assert value(before, "trisa_transfers_total", direction="incoming", state="accepted") == 0
        sent = bob.alice().send("bob.vasp.test", payload())
        assert sent.state == "accepted"
        after = scrape(port)
        assert value(after, "trisa_transfers_total", direction="incoming", state="accepted") == 1
        assert value(after, "trisa_handshake_decisions_total", step="4", outcome="accept",
                     reason="verified") == 1
        assert value(after, "trisa_ready") == 1
        bob.db.unlink()  # the store's file is gone: nothing written now would last
        status, text = fetch(port, "/readyz")
        assert status == 503 and "bob.db" in text
        assert fetch(port, "/livez") == (200, "ok\n")
        assert value(scrape(port), "trisa_ready") == 0
    finally:
        close_quietly(bob)


@pytest.mark.slow
def test_serve_metrics_port_in_use_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "trisa_peer", "serve", "--listen", "127.0.0.1:0",
             "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
             "--trust", str(PKI / "trust.pem"), "--directory", "127.0.0.1:9",
             "--directory-insecure", "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"trisa-peer: error: --metrics-listen 127.0.0.1:{port}: cannot listen: "
        "Address already in use"]
    assert "serving" not in out.stdout


@pytest.mark.slow
def test_gds_serve_counts_requests_and_logs_them_as_json(tmp_path: Path) -> None:
    db = tmp_path / "gds.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "-v", "gds", "serve", "--db", str(db),
         "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "0",
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert found, proc.stdout.readline()
        port = int(found.group(1))
        listening = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert listening
        client = DirectoryClient(f"127.0.0.1:{listening.group(1)}", insecure=True, timeout=5,
                                 cache_ttl=0)
        try:
            client.status()
            with pytest.raises(DirectoryNotFoundError):
                client.lookup(common_name="nobody.vasp.test")
        finally:
            client.close()
        got = scrape(port)
        assert value(got, "trisa_requests_total", service="directory", method="Lookup",
                     code="NOT_FOUND") == 1
        assert value(got, "trisa_requests_total", service="directory", method="Status",
                     code="OK") == 1
        assert fetch(port, "/readyz") == (200, "ready\n")
        db.unlink()
        assert fetch(port, "/readyz")[0] == 503
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    lines = [json.loads(line) for line in err.splitlines()]
    methods = [d["method"] for d in lines if d.get("event") == "request"]
    assert methods == ["Status", "Lookup"]
    assert all(d["zone"] == "UTC" for d in lines)


@pytest.mark.slow
def test_serve_workers_one_scrape_sees_every_worker(tmp_path: Path) -> None:
    shared = set(Path(tempfile.gettempdir()).glob("trisa-metrics-*"))
    bob = BobProcess(tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0")
    try:
        assert set(Path(tempfile.gettempdir()).glob("trisa-metrics-*")) - shared
        port = bob.metrics_port
        assert port
        assert value(scrape(port), "trisa_workers") == 2  # both processes count
        for _ in range(4):  # new connections: the kernel spreads them over the workers
            assert bob.alice().send("bob.vasp.test", payload()).state == "accepted"
            bob.forget_alice()
        got = scrape(port)
        assert value(got, "trisa_transfers_total", direction="incoming", state="accepted") == 4
        assert value(got, "trisa_transfer_seconds_count", direction="incoming") == 4
        assert value(got, "trisa_ready") == 1
    finally:
        close_quietly(bob)
    # the supervisor's multiprocess directory is gone with it
    assert set(Path(tempfile.gettempdir()).glob("trisa-metrics-*")) <= shared


@pytest.mark.slow
def test_single_process_counts_one_worker(tmp_path: Path) -> None:
    bob = BobProcess(tmp_path, "--metrics-listen", "127.0.0.1:0")  # the twin of the above
    try:
        assert value(scrape(bob.metrics_port), "trisa_workers") == 1
    finally:
        close_quietly(bob)
