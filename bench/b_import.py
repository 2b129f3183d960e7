"""Directory import cost against size (issue 13, section 5): ``bench/b_import.py``.

Imports generated VERIFIED records through ``Directory.add`` (what ``trisa-peer gds
add`` runs) into an empty directory, once with 10,000 and once with 100,000 records,
on SQLite and on PostgreSQL, and prints the time of each import and the ratio
T(100,000) / T(10,000). Target: <= 12 (the work per record must not grow with the
directory; 10x the records at constant cost per record is a ratio of 10).

Method: the EC P-256 leaves (one per record, distinct common names, SAN = CN) are
minted once before any timing (``pki.BenchPKI``) and kept as DER; only the
``Directory.add`` calls are timed (``time.perf_counter`` around each). Each import
starts on a fresh database: a new SQLite file in a temporary folder, or a new
PostgreSQL database ``trisa_peer_bench_import_<pid>`` (dropped at the end). Durable
commits on both by default (the stores' default: one fsync per record, whose latency
on a shared disk is noisy but does not grow with size); ``--no-durable`` (SQLite
``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``) isolates the work that
could grow. Each imported directory is then copied with ``db copy`` (``copy_store``) to
a fresh database of the other backend and that time is reported too, with its ratio
(same target; ``--no-copy`` skips it).

Besides wall time, the CPU time of the importing thread is reported (``thread_time``):
on a shared, loaded machine it is the steadier figure for SQLite, where all the
database work runs in that thread; for PostgreSQL it leaves out the server's work.

Bounded: ``--max-seconds`` (default 900) per import; an import that reaches it stops
and its time is extrapolated linearly from the records done (flagged ``partial``).

    .venv/bin/python bench/b_import.py [--sizes 10000,100000] [--backends sqlite,postgresql]
        [--pg postgresql://root@127.0.0.1:5432/postgres] [--max-seconds 900] [--no-durable]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pki import BenchPKI  # noqa: E402

from trisa_peer.directory.service import Directory  # noqa: E402
from trisa_peer.directory.store import SQLStore  # noqa: E402

TARGET_RATIO = 12.0


def common_name(n: int) -> str:
    return f"vasp{n:06d}.bench.example"


def mint(count: int) -> tuple[list[bytes], x509.Certificate]:
    """``count`` DER leaves (one shared key: the key plays no part in an import)."""
    pki = BenchPKI()
    key = ec.generate_private_key(ec.SECP256R1())
    ders = [pki.leaf(common_name(n), key).public_bytes(serialization.Encoding.DER)
            for n in range(count)]
    return ders, pki.issuing


@contextmanager
def fresh_location(backend: str, admin_url: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="trisa-bench-import-") as folder:
            yield str(Path(folder) / "gds.db")
        return
    import psycopg

    name = f"trisa_peer_bench_import_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_import(location: str, ders: list[bytes], issuing: x509.Certificate, size: int,
               max_seconds: float, durable: bool) -> dict[str, Any]:
    """Import ``size`` records; the time of the ``Directory.add`` calls only."""
    spent = cpu = 0.0
    last_tenth = 0.0
    done = 0
    with SQLStore(location, durable=durable) as store:
        directory = Directory(store, directory_id="bench.local")
        for n in range(size):
            leaf = x509.load_der_x509_certificate(ders[n])
            cn = common_name(n)
            start, start_cpu = time.perf_counter(), time.thread_time()
            directory.add(common_name=cn, endpoint=f"{cn}:443", certificates=[leaf, issuing],
                          name=f"Bench VASP {n} Ltd", country="DE",
                          website=f"https://{cn}/")
            took = time.perf_counter() - start
            cpu += time.thread_time() - start_cpu
            spent += took
            if n >= size - size // 10:
                last_tenth += took
            done += 1
            if spent > max_seconds:
                break
    partial = done < size
    total = spent * size / done if partial else spent
    return {
        "records": size,
        "imported": done,
        "partial": partial,
        "seconds": round(total, 2),
        "cpu_seconds": round(cpu * size / done, 2),
        "ms_per_record": round(1000 * spent / done, 3),
        "ms_per_record_last_tenth": (None if partial
                                     else round(1000 * last_tenth / (size // 10), 3)),
    }


def time_copy(source_location: str, target_location: str) -> float:
    """Seconds of ``db copy`` (copy_store: every table, then counts and digests)."""
    from trisa_peer.storage import open_database
    from trisa_peer.storage.copy import copy_store

    with open_database(source_location, purpose="source") as source, \
            open_database(target_location, purpose="target") as target:
        start = time.perf_counter()
        copy_store(source, target)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default=os.environ.get(
        "TRISA_PEER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres"),
        help="an administrative URL of the PostgreSQL server (a database is created)")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--no-durable", dest="durable", action="store_false",
                        help="commits without fsync (see above)")
    parser.add_argument("--json", "--out", dest="json",
                        help="also write the results to this file")
    parser.add_argument("--no-copy", dest="copy", action="store_false",
                        help="do not time `db copy` of each imported directory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"minting {max(sizes):,} EC leaves (not timed) ...", flush=True)
    ders, issuing = mint(max(sizes))
    results: dict[str, Any] = {"durable": args.durable}
    print(f"commits: {'durable' if args.durable else 'not durable (--no-durable)'}")
    for backend in backends:
        rows = []
        for size in sizes:
            with fresh_location(backend, args.pg) as location:
                row = run_import(location, ders, issuing, size, args.max_seconds,
                                 args.durable)
                if args.copy and not row["partial"]:
                    other = "postgresql" if backend == "sqlite" else "sqlite"
                    with fresh_location(other, args.pg) as target:
                        row["copy_to"] = other
                        row["copy_seconds"] = round(time_copy(location, target), 2)
            rows.append(row)
            print(f"{backend:<10} {size:>8,} records: {row['seconds']:>8.1f} s "
                  f"(this thread's CPU {row['cpu_seconds']:.1f} s)  "
                  f"{row['ms_per_record']:.3f} ms/record  last tenth "
                  f"{row['ms_per_record_last_tenth']} ms/record"
                  f"{'  (partial, extrapolated)' if row['partial'] else ''}", flush=True)
        entry: dict[str, Any] = {"imports": rows}
        if len(rows) >= 2:
            ratio = rows[-1]["seconds"] / rows[0]["seconds"]
            entry["ratio"] = round(ratio, 2)
            entry["cpu_ratio"] = round(rows[-1]["cpu_seconds"] / rows[0]["cpu_seconds"], 2)
            entry["target"] = f"<= {TARGET_RATIO:g} x for {sizes[-1] // sizes[0]} x records"
            entry["met"] = ratio <= TARGET_RATIO * sizes[-1] / sizes[0] / 10
            if all("copy_seconds" in r for r in (rows[0], rows[-1])):
                entry["copy_ratio"] = round(rows[-1]["copy_seconds"] / rows[0]["copy_seconds"], 2)
                print(f"{backend:<10} db copy to {rows[-1]['copy_to']}: "
                      f"{rows[0]['copy_seconds']} s -> {rows[-1]['copy_seconds']} s, ratio "
                      f"{entry['copy_ratio']}", flush=True)
            print(f"{backend:<10} T({sizes[-1]:,}) / T({sizes[0]:,}) = {ratio:.2f} "
                  f"(CPU of this thread: {entry['cpu_ratio']:.2f}) "
                  f"(target {entry['target']}: {'met' if entry['met'] else 'NOT met'})",
                  flush=True)
        results[backend] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
