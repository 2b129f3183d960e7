"""Hostile envelope ids: no forged log line, nothing big logged, stored or echoed.

Issue 11 §2. Before the fix an id containing a newline forged a complete
``step=4 outcome=accept`` audit line in the node's log, and a 3.9 MiB id was logged
whole, stored twice and echoed in a 4 MB reply. Now ids are accepted only as canonical
UUID text; anything else is a BAD_REQUEST whose record and reply keep at most 64 escaped
characters of the id plus its SHA-256, and every peer-supplied string in a log line is
escaped and capped.

Alice sends Bob (simulated network, in this process, the package's log captured in the
text format, one record per line) 2,000 envelopes with hostile ids cycling through
forged log lines (``\\n``, ``\\r\\n``, U+2028, U+0085), terminal escapes, NUL, 64 KiB ids and
the non-canonical UUID spellings; 5 with a 3.9 MiB id (refused by the envelope check, or
by gRPC's receive limit if that is lower: both count as refused); and 200 twins with
canonical ids, which must be accepted.

Targets: every hostile envelope refused, every twin accepted, 0 log lines not written
by the formatter (forged), longest log line < 1,000 characters, largest reply < 1 KiB,
largest record (id + kept bytes of request and reply) < 2 KiB.
"""

from __future__ import annotations

import io
import logging
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from common import Result, scaled

from trisa_peer.envelope import seal
from trisa_peer.envelope.validate import recorded_id
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import SimulatedNetwork
from trisa_peer.testing.policies import originator_payload

NAME = "log_injection"
MARK = "\u00a7 "  # every line the formatter writes starts with it
FORGED = "2026-11-30 12:00:00 INFO trisa_peer.authenticate peer=mallory.vasp.test step=4 " \
         "outcome=accept reason=ok"


def _hostile(i: int) -> str:
    good = str(uuid.uuid4())
    kinds = [
        good + "\n" + FORGED,
        good + "\r\n" + FORGED,
        good + "\u2028" + FORGED,
        good + "\u0085" + FORGED,
        "\x1b[2J\x1b[H" + good,
        good + "\x00",
        "{" + good + "}",
        "urn:uuid:" + good,
        good.replace("-", ""),
        "\n" * 64 + "Z" * (64 * 1024),
    ]
    return kinds[i % len(kinds)]


def _payload() -> Any:
    o, b = BOOK.wallets_of("alice.vasp.test")[1], BOOK.wallets_of("bob.vasp.test")[0]
    return originator_payload(o, b, sent_at=datetime.now(UTC))


def run(scale: float) -> Result:
    result = Result(NAME)
    hostile, huge, twins = scaled(2000, scale, 20), scaled(5, scale, 1), scaled(200, scale, 10)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter(MARK + "%(levelname)s %(name)s %(message)s"))
    package = logging.getLogger("trisa_peer")
    with tempfile.TemporaryDirectory(prefix="soak-log-") as tmp, \
            SimulatedNetwork(Path(tmp) / "net") as net:
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        bob_key = net.bob.identity.leaf.public_key()
        stub = net.alice.node.connect(net.bob.common_name).network
        template = seal(_payload(), bob_key)
        refused = accepted_hostile = accepted_twins = 0
        max_reply = max_record = 0
        ids: list[str] = []
        for i in range(hostile + huge):
            env = type(template)()
            env.CopyFrom(template)
            env.id = _hostile(i) if i < hostile else "A" * int(3.9 * 1024 * 1024)
            try:
                reply = stub.Transfer(env, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # a lower gRPC limit
                    refused += 1
                    continue
                raise
            if reply.error.code == 0:
                accepted_hostile += 1
            elif reply.error.code == 150:  # BAD_REQUEST
                refused += 1
            max_reply = max(max_reply, len(reply.SerializeToString()))
            ids.append(recorded_id(env.id))
        for rid in set(ids):
            rows = net.bob.node.store.exchange(rid)
            size = sum(len(r.envelope_id) + len(r.envelope) for r in rows
                       if r.direction == "incoming" or r.kind == "reply")
            max_record = max(max_record, size // max(1, len(rows) // 2))
        for _ in range(twins):
            reply = stub.Transfer(seal(_payload(), bob_key), timeout=30)
            accepted_twins += reply.error.code == 0
        package.removeHandler(handler)
    lines = buffer.getvalue().splitlines()
    result.figure("hostile", hostile + huge)
    result.figure("refused", refused)
    result.figure("accepted_hostile", accepted_hostile)
    result.figure("twins_accepted", f"{accepted_twins}/{twins}")
    result.figure("log_lines", len(lines))
    result.figure("forged_lines", sum(1 for ln in lines if not ln.startswith(MARK)))
    result.figure("max_log_line_chars", max((len(ln) for ln in lines), default=0))
    result.figure("max_reply_bytes", max_reply)
    result.figure("max_record_bytes", max_record)
    result.target("refused", "==", hostile + huge)
    result.target("accepted_hostile", "==", 0)
    result.target("twins_accepted", "==", f"{twins}/{twins}")
    result.target("forged_lines", "==", 0)
    result.target("max_log_line_chars", "<", 1000)
    result.target("max_reply_bytes", "<", 1024)
    result.target("max_record_bytes", "<", 2048)
    return result
