"""``--log-format json`` (issue 15, section 4): a real ``serve`` process, real transfers.

Every stderr line parses as one JSON object with a UTC timestamp and zone; decisions and
transfers have their own lines (envelope id, peer, state, TRISA code, latency); the lines
of one call share a request id; no key, password, token or payload content appears.
The directory and the Sectigo service log each request the same way.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI
from serve_proc import BobProcess, close_quietly

from trisa_peer import events
from trisa_peer._pb.trisa.api.v1beta1 import api_pb2
from trisa_peer.cli.observe import add_log_format_arg
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.errors import DirectoryNotFoundError
from trisa_peer.logsetup import JsonFormatter, use_format
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.policies import originator_payload


def parse_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines()]
    for doc in lines:
        assert doc["zone"] == "UTC"
        when = datetime.fromisoformat(doc["time"])
        assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0
        assert {"level", "logger", "message", "request_id"} <= set(doc)
    return lines


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[BobProcess]:
    proc = BobProcess(tmp_path, "--log-format", "json")
    yield proc
    close_quietly(proc)


@pytest.mark.slow
def test_serve_writes_one_json_object_per_line(bob: BobProcess) -> None:
    alice = bob.alice()
    wallets = BOOK.wallets_of("alice.vasp.test")[1], BOOK.wallets_of("bob.vasp.test")[0]
    sent = alice.send("bob.vasp.test", originator_payload(*wallets, sent_at=datetime.now(UTC)))
    assert sent.state == "accepted"
    # a second call whose envelope Bob refuses: its refusal and transfer lines share an id
    stub = alice.connect("bob.vasp.test").network
    refused = stub.Transfer(api_pb2.SecureEnvelope(id="not-a-uuid\nforged line"), timeout=10)
    assert refused.error.code
    err = bob.stop()

    lines = parse_lines(err)  # every line: json.loads raises on any other
    decisions = [d for d in lines if d["logger"] == "trisa_peer.handshake"
                 and "outcome=accept" in d["message"]]
    assert decisions and "peer=alice.vasp.test" in decisions[0]["message"]
    assert decisions[0]["request_id"]
    transfers = [d for d in lines if d.get("event") == "transfer"]
    accepted = [d for d in transfers if d["envelope_id"] == sent.envelope_id]
    assert len(accepted) == 1
    line = accepted[0]
    assert (line["direction"], line["peer"], line["state"], line["code"]) == (
        "incoming", "alice.vasp.test", "accepted", 0)
    assert isinstance(line["latency"], float) and line["latency"] >= 0
    assert len(line["request_id"]) == 16
    rejected = [d for d in transfers if d["code"] != 0]
    assert len(rejected) == 1 and rejected[0]["state"] == "repair"  # BAD_REQUEST, retry
    hostile = rejected[0]["envelope_id"]  # escaped (peer_text): no line break of its own
    assert hostile.startswith("not-a-uuid\\") and "\n" not in hostile
    same_call = [d for d in lines if d["request_id"] == rejected[0]["request_id"]]
    assert len(same_call) >= 2  # the refusal line and the transfer line
    assert line["request_id"] != rejected[0]["request_id"]  # another call, another id

    # no secrets and no payload contents
    assert "PRIVATE KEY" not in err and "BEGIN CERTIFICATE" not in err
    key_text = (PKI / "bob.key").read_text()
    assert all(chunk not in err for chunk in key_text.splitlines()[1:-1])
    originator = wallets[0]
    for content in (originator.last_name, originator.address, originator.customer.id_number,
                    originator.customer.home.street_name, originator.email):
        assert content not in err  # payload contents


@pytest.mark.slow
def test_text_format_stays_the_default(tmp_path: Path) -> None:
    bob = BobProcess(tmp_path)  # the twin: without --log-format json
    try:
        err = bob.stop()
    finally:
        close_quietly(bob)
    assert err.strip()
    for line in err.splitlines():
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


@pytest.mark.slow
def test_directory_logs_each_request_with_its_own_id(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    requests_log = logging.getLogger("trisa_peer.requests")
    requests_log.addHandler(handler)
    old = requests_log.level
    requests_log.setLevel(logging.INFO)
    server = DirectoryServer(SQLiteStore(tmp_path / "gds.db"), listen="127.0.0.1:0")
    server.start()
    client = DirectoryClient(server.endpoint, insecure=True, timeout=5, cache_ttl=0)
    try:
        client.status()
        with pytest.raises(DirectoryNotFoundError, match="no verified VASP"):
            client.lookup(common_name="nobody.vasp.test")
    finally:
        client.close()
        server.stop()
        requests_log.removeHandler(handler)
        requests_log.setLevel(old)
    lines = parse_lines(stream.getvalue())
    assert [(d["service"], d["method"], d["status"]) for d in lines] == [
        ("directory", "Status", "OK"), ("directory", "Lookup", "NOT_FOUND")]
    assert lines[0]["request_id"] != lines[1]["request_id"]
    assert "nobody" not in stream.getvalue()  # what was asked is not logged


def test_json_formatter_keeps_one_line_and_drops_tracebacks() -> None:
    record = logging.LogRecord("trisa_peer.x", logging.ERROR, __file__, 1,
                               "peer said %s", ("a\nb\u2028c",), None)
    try:
        raise ValueError("first line\nsecond line with detail")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    events.begin_call()
    text = JsonFormatter().format(record)
    assert "\n" not in text and "\u2028" not in text
    doc = json.loads(text)
    assert doc["message"] == "peer said a\nb\u2028c"
    assert doc["error"] == "ValueError: first line"
    assert doc["request_id"] == events.request_id()
    assert "Traceback" not in text


def test_log_format_choice_is_checked() -> None:
    import argparse

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_log_format_arg(parser)
    assert parser.parse_args(["--log-format", "json"]).log_format == "json"
    assert parser.parse_args([]).log_format == "text"
    with pytest.raises(argparse.ArgumentError):  # the twin: an unknown format
        parser.parse_args(["--log-format", "yaml"])
    with pytest.raises(ValueError, match="unknown log format"):
        use_format("yaml")


@pytest.mark.slow
def test_workers_keep_json_lines_with_their_index(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trisa_peer", "serve", "--workers", "2",
         "--listen", "127.0.0.1:0", "--db", str(tmp_path / "w.db"),
         "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
         "--trust", str(PKI / "trust.pem"), "--directory", "127.0.0.1:9",
         "--directory-insecure", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "workers serving on" in line:
                break
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    logged = [line for line in err.splitlines() if not line.startswith("trisa-peer: ")]
    docs = parse_lines("\n".join(logged))  # the supervisor's own status lines stay text
    assert {d.get("worker") for d in docs} == {0, 1}
    assert all(isinstance(d["pid"], int) for d in docs)
