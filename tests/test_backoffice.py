"""Issue 15 "Done when": a node connected to a back office, end to end, all real.

One real ``trisa-peer serve`` process (Bob) runs with ``--webhook`` (a local HTTP back
office on 127.0.0.1 that verifies the HMAC with the standard library, independently of
the node's code, and decides by the transfer's amount: accept, reject or pending),
``--api-listen`` (bearer token from a 0600 file), ``--metrics-listen`` and
``--log-format json``. Alice, an in-process node listening on her registered endpoint,
sends three transfers; the pending one is resolved through Bob's HTTP API and Bob's
pending loop delivers the decision to Alice. Then ``/metrics`` is scraped (transfers by
state, webhook calls) and Bob's stderr is parsed (every line JSON, one transfer line per
transfer, no payload contents).

Twins in the same run: a wrong API token gets 401 where the right one gets 200; a
request signed with another secret gets 401 from the back office, so the three calls it
answered were verified; a transfer the back office did not decide (pending) is not
``accepted`` for Alice until the API resolves it.

Not checked here (their own tests): TLS/mTLS webhooks, timeouts and retries
(test_webhook.py), every API route and refusal (test_api.py), every metric
(test_metrics.py), ``--workers`` (test_workers.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import PKI
from pki import identity, pool
from prometheus_client.parser import text_string_to_metric_families

from trisa_peer._pb.trisa.api.v1beta1 import errors_pb2
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.envelope import format_timestamp
from trisa_peer.network.handler import Accept, Reject
from trisa_peer.network.node import TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import free_port
from trisa_peer.testing.policies import originator_payload
from trisa_peer.transport.identity import Material
from trisa_peer.transport.material import StaticMaterial

Code = errors_pb2.Error
SECRET = "s3cr3t-" + "x" * 40
API_TOKEN = "t0ken-" + "y" * 30
WRONG_TOKEN = "t0ken-" + "z" * 30
#: the back office's rule: the transaction's amount decides
AMOUNTS = {1.0: "accept", 2.0: "reject", 3.0: "pending"}


class BackOffice:
    """A compliance system in miniature: verifies ``v1=HMAC_SHA256(secret, ts "." body)``
    (401 on a wrong key id, signature or a timestamp off by more than 300 s), then
    answers by the amount of the transaction it was sent."""

    def __init__(self) -> None:
        self.decided: list[tuple[str, str]] = []  # (envelope id, decision)
        self.refused = 0
        office = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers.get("Trisa-Webhook-Timestamp", "")
                want = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
                got = self.headers.get("Trisa-Webhook-Signature", "")
                if (self.headers.get("Trisa-Webhook-Key-Id") != "k1" or not ts.isdigit()
                        or abs(time.time() - int(ts)) > 300
                        or not hmac.compare_digest(want, got)):
                    office.refused += 1
                    self._answer(401, b"{}")
                    return
                doc = json.loads(body)
                decision = AMOUNTS[float(doc["payload"]["transaction"]["amount"])]
                office.decided.append((doc["envelope_id"], decision))
                answer: dict[str, Any] = {"decision": decision}
                if decision == "reject":
                    answer.update(code="HIGH_RISK", message="declined on review")
                if decision == "pending":
                    answer["deadline"] = format_timestamp(datetime.now(UTC) + timedelta(hours=1))
                self._answer(200, json.dumps(answer).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/trisa"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _http(url: str, *, token: str | None = None, body: Any = None) -> tuple[int, bytes]:
    """(status, body) of a real HTTP request (a GET, or a POST of ``body`` as JSON)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if body is None:
        answer = httpx.get(url, headers=headers, timeout=30)
    else:
        answer = httpx.post(url, headers=headers, json=body, timeout=30)
    return answer.status_code, answer.content


def _until(predicate: Callable[[], bool], bound: float = 60.0) -> bool:
    """Poll until true (a hang guard, not a speed check)."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _value(text: str, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly these labels (KeyError when none)."""
    [value] = [s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name and s.labels == labels]
    return value


def _counts(text: str, name: str, *labels: str) -> dict[Any, float]:
    """The non-zero samples of counter ``name`` by the values of ``labels``."""
    out: dict[Any, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.value:  # (a counter not yet moved: 0)
                key = tuple(sample.labels[label] for label in labels)
                out[key[0] if len(key) == 1 else key] = sample.value
    return out


@pytest.mark.slow
def test_a_node_with_webhook_api_metrics_and_json_logs(tmp_path: Path) -> None:
    office = BackOffice()
    gds = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    gds.start()
    bob_port, alice_port = free_port(), free_port()
    for name, port in (("bob", bob_port), ("alice", alice_port)):
        ident = identity(name)
        gds.directory.add(common_name=ident.common_name, endpoint=f"{ident.common_name}:{port}",
                          certificates=[ident.leaf, *ident.chain])
    keys = _private(tmp_path / "webhook.keys", f"k1 {SECRET}\n")
    tokens = _private(tmp_path / "api-tokens", f"{API_TOKEN}\n")
    bob = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "serve", "--listen", f"127.0.0.1:{bob_port}",
         "--db", str(tmp_path / "bob.db"), "--cert", str(PKI / "bob.pem"),
         "--key", str(PKI / "bob.key"), "--trust", str(PKI / "trust.pem"),
         "--directory", gds.endpoint, "--directory-insecure",
         "--resolve", f"alice.vasp.test:{alice_port}:127.0.0.1",
         "--webhook", office.url, "--webhook-secret-file", str(keys),
         "--api-listen", "127.0.0.1:0", "--api-token-file", str(tokens),
         "--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    directory = DirectoryClient(gds.endpoint, insecure=True, timeout=5)
    alice = TrisaNode(
        StaticMaterial(Material(identity("alice"), pool(), None, 1)), directory,
        store=TransferStore(tmp_path / "alice.db"), handler=lambda incoming: Accept(),
        listen=f"127.0.0.1:{alice_port}",
        resolve={f"bob.vasp.test:{bob_port}": f"127.0.0.1:{bob_port}"})
    err = ""
    try:
        assert bob.stdout is not None
        started = ""
        while "serving on port" not in started:  # metrics, node, API, then this line
            line = bob.stdout.readline()
            assert line, bob.communicate(timeout=30)[1]
            started += line
        [api] = re.findall(r"API on (http://127\.0\.0\.1:\d+)", started)
        [metrics] = re.findall(r"metrics and probes on (http://127\.0\.0\.1:\d+)/", started)
        alice.start()
        before = _http(f"{metrics}/metrics")[1].decode()
        assert _counts(before, "trisa_webhook_calls_total", "outcome") == {}
        assert _counts(before, "trisa_transfers_total", "direction", "state") == {}

        # -- three transfers; the back office decides each by its amount
        wallets = BOOK.wallets_of("alice.vasp.test")[1], BOOK.wallets_of("bob.vasp.test")[0]
        sent = {}
        for amount, decision in AMOUNTS.items():
            payload = originator_payload(*wallets, amount=amount, sent_at=datetime.now(UTC))
            assert not isinstance(payload, Reject)  # Alice's wallet sends full payloads
            sent[decision] = alice.send("bob.vasp.test", payload)
        assert {d: r.state for d, r in sent.items()} == {
            "accept": "accepted", "reject": "rejected", "pending": "pending"}
        assert sent["reject"].error is not None and sent["reject"].error.code == Code.HIGH_RISK
        assert office.decided == [(sent[d].envelope_id, d) for d in AMOUNTS.values()]
        # twin of the back office's check: another secret is refused (and so were none
        # of the node's three calls)
        forged = httpx.post(office.url, content=b"{}", timeout=30, headers={
            "Trisa-Webhook-Timestamp": str(int(time.time())), "Trisa-Webhook-Key-Id": "k1",
            "Trisa-Webhook-Signature": "v1=" + hmac.new(b"another secret", b"x",
                                                        hashlib.sha256).hexdigest()})
        assert forged.status_code == 401 and office.refused == 1

        # -- the API: the right token reads, a wrong one gets 401
        assert _http(f"{api}/status", token=API_TOKEN)[0] == 200
        assert _http(f"{api}/status", token=WRONG_TOKEN)[0] == 401
        assert _http(f"{api}/status")[0] == 401
        status, body = _http(f"{api}/transfers", token=API_TOKEN)
        assert status == 200
        listed = {t["envelope_id"]: t["state"] for t in json.loads(body)["transfers"]}
        assert listed == {sent["accept"].envelope_id: "accepted",
                          sent["reject"].envelope_id: "rejected",
                          sent["pending"].envelope_id: "pending"}

        def alice_state(envelope_id: str) -> str | None:
            row = alice.store.initiated(envelope_id)
            return None if row is None else row.state

        # -- the pending one: resolved through the API, delivered to Alice by Bob's node
        pending = sent["pending"].envelope_id
        assert alice_state(pending) == "pending"
        waiting = _http(f"{metrics}/metrics")[1].decode()
        assert _value(waiting, "trisa_pending_transfers", direction="incoming") == 1
        resolve = f"{api}/transfers/{pending}/resolve"
        assert _http(resolve, token=WRONG_TOKEN, body={"decision": "accept"})[0] == 401
        assert alice_state(pending) == "pending"  # a 401 decides nothing
        status, body = _http(resolve, token=API_TOKEN, body={"decision": "accept"})
        assert status == 200, body
        assert _until(lambda: alice_state(pending) == "accepted")
        assert _http(resolve, token=API_TOKEN, body={"decision": "accept"})[0] == 409
        assert len(office.decided) == 3  # resolving does not ask the back office again

        # -- metrics and probes
        assert _http(f"{metrics}/readyz") == (200, b"ready\n")
        # Alice may see the decision before Bob has recorded her answer to it
        def scrape() -> str:
            return _http(f"{metrics}/metrics")[1].decode()

        assert _until(lambda: _counts(scrape(), "trisa_transfers_total", "direction",
                                      "state").get(("outgoing", "completed")) == 1)
        text = scrape()
        assert _counts(text, "trisa_webhook_calls_total", "outcome") == {
            "accept": 1, "reject": 1, "pending": 1}
        assert _counts(text, "trisa_transfers_total", "direction", "state") == {
            ("incoming", "accepted"): 1, ("incoming", "rejected"): 1,
            ("incoming", "pending"): 1,
            ("outgoing", "completed"): 1}  # the resolved decision, delivered to Alice
        assert _counts(text, "trisa_envelope_errors_total", "direction", "code") == {
            ("incoming", "HIGH_RISK"): 1}
        assert _value(text, "trisa_pending_transfers", direction="incoming") == 0
        assert _value(text, "trisa_webhook_seconds_count") == 3
    finally:
        alice.close()
        directory.close()
        if bob.poll() is None:
            bob.terminate()
        err = bob.communicate(timeout=30)[1]
        gds.stop()
        office.close()

    # -- the node's log: every line one JSON object, a line per transfer, no contents
    lines = [json.loads(line) for line in err.splitlines()]  # raises on any other line
    assert lines and all(doc["zone"] == "UTC" and "request_id" in doc for doc in lines)
    ids = {d: sent[d].envelope_id for d in AMOUNTS.values()}
    assert [(d["direction"], d["envelope_id"], d["state"], d["code"])
            for d in lines if d.get("event") == "transfer"] == [
        ("incoming", ids["accept"], "accepted", 0),
        ("incoming", ids["reject"], "rejected", Code.HIGH_RISK),
        ("incoming", ids["pending"], "pending", 0),
        ("outgoing", ids["pending"], "completed", 0)]  # the delivered decision
    for decision, envelope_id in ids.items():  # the webhook's line and its transfer's
        [hook] = [d for d in lines if d["logger"] == "trisa_peer.webhook"
                  and f"envelope={envelope_id} " in d["message"]]
        assert f"decision={decision}" in hook["message"]
        [transfer] = [d for d in lines if d.get("event") == "transfer"
                      and d["envelope_id"] == envelope_id and d["direction"] == "incoming"]
        assert hook["request_id"] and hook["request_id"] == transfer["request_id"]
    secrets = [SECRET, API_TOKEN, "declined on review",  # keys, tokens, back-office text
               *(w.address for w in wallets), *(w.last_name for w in wallets)]  # payload
    assert [s for s in secrets if s in err] == []
