"""Listing cost against history size (issue 13, section 5), on SQLite and PostgreSQL.

Fills a transfer store with N synthetic transfers (generated inside the database in one
statement per table: a request and a reply envelope per transfer, 50 peers, plus the
``transfers`` rows the store keeps; not real envelopes), then times what
``trisa-peer transfers list`` runs:

* the latest 100 transfers;
* one peer's latest 20;
* a page deep in the history (``--before`` the key in the middle);
* at N <= 100,000 also the pre-schema-3 aggregate over every envelope, for comparison.

Each figure is the median of ``--repeat`` calls after one warm-up (milliseconds), through
:meth:`TransferStore.summaries` (connection pool / per-thread connection included).
Target: <= 20 ms for the first two at 1,000,000 transfers on both backends.

Usage::

    .venv/bin/python bench/b_history.py --n 100000 --n 1000000 [--backend sqlite]
        [--pg postgresql://root@127.0.0.1:5432/postgres] [--budget 300]

PostgreSQL: a database ``trisa_peer_h4_bench_<pid>`` is created through ``--pg`` and
dropped at the end. ``--budget`` bounds the run: a size whose fill is predicted (from
the previous size, linearly) to exceed the remaining seconds is skipped and says so.
"""

# ruff: noqa: S608  (SQL built from this file's constants only)
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trisa_peer.network.store import TransferStore

_SERIES = {
    "sqlite": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) ",
    "postgresql": "WITH s(i) AS (SELECT generate_series(1, ?::bigint)) ",
}
_ID = {
    "sqlite": "printf('%08x-0000-4000-8000-%012x', i, i)",
    "postgresql": "lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0')",
}
_PEER = {
    "sqlite": "'peer' || (i % 50) || '.vasp.test'",
    "postgresql": "'peer' || (i % 50)::text || '.vasp.test'",
}
_AT = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%fZ', 1700000000 + i, 'unixepoch')",
    "postgresql": "to_char(to_timestamp(1700000000 + i) AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
}


def fill(store: TransferStore, n: int) -> float:
    """N transfers (2N envelopes) generated in the database; returns seconds."""
    b = store.db.backend
    series, eid, peer, at = _SERIES[b], _ID[b], _PEER[b], _AT[b]
    blob = "{EMPTY_BLOB}"
    start = time.perf_counter()
    with store.db.transaction() as tx:
        tx.execute(
            series + "INSERT INTO envelopes (seq, envelope_id, peer, direction, kind, state, "
            "error_code, digest, reply_to, envelope, created_at, updated_at, payload_digest, "
            f"attempt) SELECT 2 * i - 1, {eid}, {peer}, 'incoming', 'request', 'accepted', 0, "
            f"'d' || i, NULL, {blob}, {at}, {at}, 'p' || i, 1 FROM s", (n,))
        tx.execute(
            series + "INSERT INTO envelopes (seq, envelope_id, peer, direction, kind, state, "
            "error_code, digest, reply_to, envelope, created_at, updated_at, payload_digest, "
            f"attempt) SELECT 2 * i, {eid}, {peer}, 'outgoing', 'reply', 'accepted', 0, "
            f"'r' || i, 2 * i - 1, {blob}, {at}, {at}, '', 0 FROM s", (n,))
        tx.execute(
            series + "INSERT INTO transfers (envelope_id, peer, direction, state, messages, "
            f"first_at, last_at, last_seq) SELECT {eid}, {peer}, 'incoming', 'accepted', 2, "
            f"{at}, {at}, 2 * i FROM s", (n,))
        if b == "postgresql":
            tx.one("SELECT setval(pg_get_serial_sequence('envelopes', 'seq'), ?)", (2 * n,))
    if b == "postgresql":
        with store.db.transaction() as tx:
            tx.execute("ANALYZE envelopes")
            tx.execute("ANALYZE transfers")
    return time.perf_counter() - start


_OLD = (
    "SELECT e.envelope_id, first.peer, first.direction, "
    "(SELECT state FROM envelopes r WHERE r.envelope_id = e.envelope_id "
    " AND r.kind = 'request' ORDER BY r.seq DESC LIMIT 1), "
    "COUNT(*), MIN(e.created_at), MAX(e.updated_at) "
    "FROM envelopes e JOIN envelopes first ON first.seq = "
    "(SELECT MIN(seq) FROM envelopes f WHERE f.envelope_id = e.envelope_id) "
    "GROUP BY e.envelope_id{extra} ORDER BY MAX(e.seq) DESC LIMIT 100"
)


def timed(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def measure(store: TransferStore, n: int, repeat: int) -> dict[str, float]:
    latest = store.summaries(limit=100)
    assert len(latest) == 100 and latest[0].key == 2 * n, "fill or listing is wrong"
    peer = store.summaries(peer="peer7.vasp.test", limit=20)
    assert len(peer) == 20 and all(s.peer == "peer7.vasp.test" for s in peer)
    out = {
        "latest_100_ms": timed(lambda: store.summaries(limit=100), repeat),
        "peer_latest_20_ms": timed(lambda: store.summaries(peer="peer7.vasp.test", limit=20),
                                   repeat),
        "deep_page_100_ms": timed(lambda: store.summaries(limit=100, before=n), repeat),
    }
    if n <= 100_000:
        # the query summaries() ran before schema 3 (PostgreSQL needs the extra GROUP BY)
        old = _OLD.format(extra="" if store.db.backend == "sqlite"
                          else ", first.peer, first.direction")
        out["old_aggregate_100_ms"] = timed(lambda: store.db.read(old), max(1, repeat // 5))
    return out


class _Pg:
    def __init__(self, admin: str) -> None:
        import psycopg

        self.admin = admin
        self.name = f"trisa_peer_h4_bench_{os.getpid()}"
        self._psycopg = psycopg
        self.dbs: list[str] = []

    def fresh(self, n: int) -> str:
        name = f"{self.name}_{n}"
        with self._psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        self.dbs.append(name)
        return f"{self.admin.rpartition('/')[0]}/{name}"

    def drop(self) -> None:
        with self._psycopg.connect(self.admin, autocommit=True) as conn:
            for name in self.dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="history sizes (repeatable)")
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--pg", default=os.environ.get(
        "TRISA_PEER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres"))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the run")
    parser.add_argument("--out", metavar="FILE.json")
    args = parser.parse_args(argv)
    sizes = sorted(args.n or [10_000, 100_000])
    backends = args.backend or ["sqlite", "postgresql"]
    deadline = time.monotonic() + args.budget
    results: list[dict[str, Any]] = []
    pg = _Pg(args.pg) if "postgresql" in backends else None
    try:
        with tempfile.TemporaryDirectory(prefix="b-history-") as work:
            for backend in backends:
                rate = 0.0  # seconds per transfer of the last fill
                for n in sizes:
                    left = deadline - time.monotonic()
                    if rate and rate * n * 1.5 > left:
                        print(f"{backend} n={n}: skipped (fill predicted {rate * n:.0f} s, "
                              f"{left:.0f} s left)", flush=True)
                        continue
                    where = (str(Path(work) / f"h{n}.db") if backend == "sqlite"
                             else pg.fresh(n) if pg else "")
                    store = TransferStore(where)
                    seconds = fill(store, n)
                    rate = seconds / n
                    row = {"backend": backend, "transfers": n, "fill_s": round(seconds, 1),
                           **{k: round(v, 2) for k, v in measure(store, n, args.repeat).items()}}
                    store.close()
                    if backend == "sqlite":
                        for suffix in ("", "-wal", "-shm", "-holders"):
                            Path(f"{where}{suffix}").unlink(missing_ok=True)
                    results.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        if pg is not None:
            pg.drop()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
