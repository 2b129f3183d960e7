"""The directory server's Lookup reply cache (issue 16, B4; trisa_peer/directory/replycache.py).

* the wire: a cached reply is the uncached server's reply byte for byte, and the
  upstream-generated stub parses it;
* freshness (issue 11's rule), on SQLite and PostgreSQL: a Lookup that begins after a
  write committed by ANOTHER PROCESS (or by this process's own store) returns it; the
  twin: the same cache with its per-request check turned off goes stale;
* the change log names what each commit changed; a reader that fell behind the log,
  or an "all records" row, empties the cache (twin: a normal change drops one record);
* cached replies carry the reissue grace headers, and an entry carrying them is not
  served once the grace has ended (twin: one without a grace is);
* a fill read before a change of its record is not kept (twin: of another record is).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2_grpc as gds_grpc
from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity
from trisa_peer.directory import Directory, DirectoryServer, SQLStore
from trisa_peer.directory.convert import go_serial
from trisa_peer.directory.replycache import DEFAULT_MAX_ENTRIES as DEFAULT_LOOKUP_CACHE
from trisa_peer.directory.replycache import LookupCache
from trisa_peer.directory.store import (
    ALL_RECORDS,
    CHANGE_LOG_KEEP,
    NO_RECORD,
    Changes,
    changed_records,
)

LOOKUP = "/trisa.gds.api.v1beta1.TRISADirectory/Lookup"
CN = "alice.example.com"

#: another process's write: the endpoint of ``cn`` becomes ``endpoint`` (a durable
#: commit through the store, as the operator CLI or another replica makes it)
WRITER = """
import sys
from trisa_peer.directory.store import Changes, SQLStore
location, cn, endpoint = sys.argv[1:4]
with SQLStore(location) as store:
    vasp = store.get_vasp_by_common_name(cn)
    vasp.trisa_endpoint = endpoint
    assert store.commit(Changes(vasp=vasp))
"""


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> Identity:
    return ca.issue(CN, key_size=2048)


@pytest.fixture(scope="module")
def bob(ca: CertificateAuthority) -> Identity:
    return ca.issue("bob.example.com", key_size=2048)


def _write_from_another_process(location: str, endpoint: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, location, CN, endpoint], check=True,
                   timeout=120)


def _write_in_process(directory: Directory, endpoint: str) -> None:
    vasp = directory.store.get_vasp_by_common_name(CN)
    assert vasp is not None
    vasp.trisa_endpoint = endpoint
    assert directory.store.commit(Changes(vasp=vasp))


@pytest.fixture
def served(db_location: str, alice: Identity) -> Iterator[tuple[DirectoryServer, str, str]]:
    """A directory server (with its reply cache) on ``db_location`` holding alice;
    yields the server, the location and alice's id."""
    store = SQLStore(db_location)
    directory = Directory(store)
    vasp = directory.add(common_name=CN, endpoint=f"{CN}:443",
                         certificates=[alice.leaf, *alice.chain], name="Alice VASP")
    with DirectoryServer(directory, listen="127.0.0.1:0") as server:
        yield server, db_location, vasp.id
    store.close()


def _stale_reads(server: DirectoryServer, location: str, vasp_id: str,
                 write: str = "process") -> list[str]:
    """Fill the cache, then three times: a committed write, at once a Lookup by name
    and by id; returns the Lookups that missed the write."""
    stale: list[str] = []
    with grpc.insecure_channel(server.endpoint) as channel:
        stub = gds_grpc.TRISADirectoryStub(channel)
        by_name = gds_pb2.LookupRequest(common_name=CN)
        by_id = gds_pb2.LookupRequest(id=vasp_id)
        for request in (by_name, by_id, by_name, by_id):  # cached from the second on
            stub.Lookup(request, timeout=10)
        assert server.cache is not None and server.cache.hits >= 2
        for i in range(3):
            endpoint = f"{CN}:{1000 + i}"
            if write == "process":
                _write_from_another_process(location, endpoint)
            else:
                _write_in_process(server.directory, endpoint)
            for what, request in (("name", by_name), ("id", by_id)):
                if stub.Lookup(request, timeout=10).endpoint != endpoint:
                    stale.append(f"write {i}: lookup by {what}")
            hits = server.cache.hits
            stub.Lookup(by_name, timeout=10)  # served from the cache again
            assert server.cache.hits == hits + 1
    return stale


def test_a_lookup_after_another_process_commits_returns_the_write(
    served: tuple[DirectoryServer, str, str],
) -> None:
    assert _stale_reads(*served) == []


def test_the_data_version_fallback_sees_another_process_commits_too(
    tmp_path: Path, alice: Identity,
) -> None:
    """Where the -shm file cannot be mapped, each thread's watcher connection's
    ``PRAGMA data_version`` says when to read the log."""
    location = str(tmp_path / "gds.db")
    with SQLStore(location) as store:
        directory = Directory(store)
        vasp = directory.add(common_name=CN, endpoint=f"{CN}:443",
                             certificates=[alice.leaf, *alice.chain], name="Alice VASP")
        with DirectoryServer(directory) as server:
            assert server.cache is not None and server.cache._shm is not None
            server.cache._shm = None
            assert _stale_reads(server, location, vasp.id) == []
            assert len(server.cache._watchers) > 1  # request threads checked through theirs


def test_a_lookup_after_this_process_commits_returns_the_write(
    served: tuple[DirectoryServer, str, str],
) -> None:
    assert _stale_reads(*served, write="in process") == []


def test_twin_without_the_per_request_check_the_cache_goes_stale(
    served: tuple[DirectoryServer, str, str],
) -> None:
    server = served[0]
    assert server.cache is not None
    server.cache.validate = False
    assert _stale_reads(*served) == [f"write {i}: lookup by {what}"
                                     for i in range(3) for what in ("name", "id")]


def _raw_lookup(channel: grpc.Channel, request: gds_pb2.LookupRequest) -> tuple[bytes, object]:
    call = channel.unary_unary(LOOKUP)  # no (de)serializers: bytes both ways
    body, state = call.with_call(request.SerializeToString(), timeout=10)
    return body, sorted((k, v) for k, v in state.initial_metadata() or ())


def test_a_cached_reply_is_the_uncached_reply_byte_for_byte(
    tmp_path: Path, alice: Identity, bob: Identity,
) -> None:
    store = SQLStore(tmp_path / "gds.db")
    directory = Directory(store)
    vasp = directory.add(common_name=CN, endpoint=f"{CN}:443",
                         certificates=[alice.leaf, *alice.chain], name="Alice VASP")
    with store, DirectoryServer(Directory(store)) as cached, \
            DirectoryServer(Directory(store), lookup_cache=0) as plain, \
            grpc.insecure_channel(cached.endpoint) as ch_cached, \
            grpc.insecure_channel(plain.endpoint) as ch_plain:
        assert cached.cache is not None and plain.cache is None
        for request in (gds_pb2.LookupRequest(common_name=CN), gds_pb2.LookupRequest(id=vasp.id)):
            expected = _raw_lookup(ch_plain, request)
            hits = cached.cache.hits
            assert _raw_lookup(ch_cached, request) == expected  # a miss, or the warm-up's
            assert _raw_lookup(ch_cached, request) == expected  # a hit
            assert cached.cache.hits >= hits + 1
            upstream = gds_grpc.TRISADirectoryStub(ch_cached).Lookup(request, timeout=10)
            assert upstream == gds_pb2.LookupReply.FromString(expected[0])
            assert upstream.common_name == CN and upstream.endpoint == f"{CN}:443"
            assert upstream.identity_certificate.data  # the certificate is on the wire
        # twin: a different record's reply differs (the comparison can fail)
        other = directory.add(common_name="bob.example.com", endpoint="bob.example.com:443",
                              certificates=[bob.leaf, *bob.chain], name="Bob VASP")
        assert _raw_lookup(ch_cached, gds_pb2.LookupRequest(id=other.id)) != \
            _raw_lookup(ch_plain, gds_pb2.LookupRequest(id=vasp.id))


def test_an_undecodable_lookup_body_is_refused_and_not_cached(
    served: tuple[DirectoryServer, str, str],
) -> None:
    server = served[0]
    with grpc.insecure_channel(server.endpoint) as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(LOOKUP)(b"\xff\xff\xff", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "LookupRequest" in (err.value.details() or "")
        # twin: a well-formed unknown name gets the directory's own answer
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(LOOKUP)(
                gds_pb2.LookupRequest(common_name="nobody.test").SerializeToString(),
                timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.cache is not None
    assert b"\xff\xff\xff" not in server.cache._entries


# --------------------------------------------------------------------------- the cache alone


def _cache_with_alice(tmp_path: Path, alice: Identity) -> tuple[SQLStore, Directory, str]:
    store = SQLStore(tmp_path / "gds.db")
    directory = Directory(store)
    vasp = directory.add(common_name=CN, endpoint=f"{CN}:443",
                         certificates=[alice.leaf, *alice.chain], name="Alice VASP")
    return store, directory, vasp.id


def test_an_entry_is_not_served_after_the_grace_its_headers_announce(
    tmp_path: Path, alice: Identity,
) -> None:
    store, _, vasp_id = _cache_with_alice(tmp_path, alice)
    with store:
        cache = LookupCache(store)
        until = datetime(2026, 6, 1, 12, tzinfo=UTC)
        headers = (("trisa-peer-superseded-until", until.isoformat()),)
        seq = cache.check()
        cache.put(b"graced", vasp_id, (b"reply", headers, until), seq)
        cache.put(b"plain", vasp_id, (b"reply", (), None), seq)
        before, after = (lambda: until - timedelta(seconds=1)), (lambda: until)
        assert cache.get(b"graced", before) == (b"reply", headers, until)
        assert cache.get(b"graced", after) is None
        # twin: an entry without a grace has no end
        assert cache.get(b"plain", after) == (b"reply", (), None)
        cache.close()


def _alice_and_bob(
    tmp_path: Path, alice: Identity, bob: Identity,
) -> tuple[SQLStore, Directory, str, Any]:
    """A directory with alice (its id) and bob (his record), for the cache unit tests."""
    store, directory, vasp_id = _cache_with_alice(tmp_path, alice)
    other = directory.add(common_name="bob.example.com", endpoint="bob.example.com:443",
                          certificates=[bob.leaf, *bob.chain], name="Bob VASP")
    return store, directory, vasp_id, other


def test_a_fill_read_before_a_change_of_its_record_is_not_kept(
    tmp_path: Path, alice: Identity, bob: Identity,
) -> None:
    store, directory, vasp_id, other = _alice_and_bob(tmp_path, alice, bob)
    with store:
        cache = LookupCache(store)
        seq = cache.check()  # a fill starts here; then alice changes and is applied
        _write_in_process(directory, f"{CN}:2000")
        assert cache.check() == seq + 1
        cache.put(b"alice", vasp_id, (b"old alice", (), None), seq)
        assert cache.get(b"alice", datetime.now) is None
        # twin: a fill of another record from before the change is kept
        cache.put(b"bob", other.id, (b"bob", (), None), seq)
        assert cache.get(b"bob", datetime.now) == (b"bob", (), None)
        cache.close()


def test_a_change_drops_its_record_only(
    tmp_path: Path, alice: Identity, bob: Identity,
) -> None:
    store, _directory, vasp_id, other = _alice_and_bob(tmp_path, alice, bob)
    with store:
        cache = LookupCache(store)
        seq = cache.check()
        cache.put(b"alice", vasp_id, (b"alice", (), None), seq)
        cache.put(b"bob", other.id, (b"bob", (), None), seq)
        _write_from_another_process(str(tmp_path / "gds.db"), f"{CN}:3000")
        cache.check()
        assert cache.get(b"alice", datetime.now) is None
        assert cache.get(b"bob", datetime.now) == (b"bob", (), None)
        cache.close()


def test_a_reader_behind_the_kept_log_starts_afresh(tmp_path: Path, alice: Identity) -> None:
    store, directory, vasp_id = _cache_with_alice(tmp_path, alice)
    with store:
        cache = LookupCache(store)
        seq = cache.check()
        cache.put(b"alice", vasp_id, (b"alice", (), None), seq)
        # the log lost the rows after this reader's position (kept: the latest
        # CHANGE_LOG_KEEP commits), as if it had fallen that far behind
        _write_in_process(directory, f"{CN}:4000")
        _write_in_process(directory, f"{CN}:4001")
        with store.database.transaction() as tx:
            tx.execute("DELETE FROM changes WHERE seq = ?", (seq + 1,))
        cache.put(b"bob", "another-id", (b"bob", (), None), seq)
        cache.check()
        assert len(cache) == 0  # bob's entry went too: the reader cannot tell
        cache.close()
    assert CHANGE_LOG_KEEP >= 1000


def test_changed_records_of_each_kind_of_commit() -> None:
    from trisa_peer._pb.gds.models.v1 import models_pb2 as gds_models_pb2
    from trisa_peer._pb.trisa.gds.models.v1beta1 import models_pb2

    assert changed_records(Changes(vasp=models_pb2.VASP(id="a"))) == {"a"}
    assert changed_records(Changes(certificates=[gds_models_pb2.Certificate(vasp="b")])) == {"b"}
    assert changed_records(Changes(secrets={"c-superseded-grace": b""})) == {"c"}
    assert changed_records(Changes(secrets={"req-1-password": b"x"})) == {NO_RECORD}
    assert changed_records(Changes(emails=[])) == {NO_RECORD}
    # twin: a secret this code does not know may change any reply
    assert changed_records(Changes(secrets={"something-new": b"x"})) == {ALL_RECORDS}


def test_cached_replies_carry_the_grace_headers_until_the_grace_ends(
    tmp_path: Path, alice: Identity, ca: CertificateAuthority,
) -> None:
    """A planned rotation with a grace: the cached reply's headers announce the
    superseded certificate (miss and hit alike) and stop at the grace's end (the twin
    of the first part: the same cached reply, later)."""
    from trisa_peer.directory.grace import GRACE_UNTIL_METADATA, SUPERSEDED_METADATA

    now = [datetime.now(UTC)]
    store = SQLStore(tmp_path / "gds.db")
    directory = Directory(store, clock=lambda: now[0])
    vasp = directory.add(common_name=CN, endpoint=f"{CN}:443",
                         certificates=[alice.leaf, *alice.chain], name="Alice VASP")
    rotated = ca.issue(CN, key_size=2048)
    with store, DirectoryServer(directory) as server, \
            grpc.insecure_channel(server.endpoint) as channel:
        stub = gds_grpc.TRISADirectoryStub(channel)
        request = gds_pb2.LookupRequest(common_name=CN)
        directory.update_certificate(vasp.id, [rotated.leaf, *rotated.chain],
                                     grace=timedelta(hours=1))
        assert server.cache is not None
        hits = server.cache.hits
        for _ in range(2):
            _, call = stub.Lookup.with_call(request, timeout=10)
            headers = dict(call.initial_metadata() or ())
            assert SUPERSEDED_METADATA in headers and GRACE_UNTIL_METADATA in headers
        assert server.cache.hits >= hits + 1
        now[0] += timedelta(hours=1)
        reply, call = stub.Lookup.with_call(request, timeout=10)
        headers = dict(call.initial_metadata() or ())
        assert SUPERSEDED_METADATA not in headers and GRACE_UNTIL_METADATA not in headers
        assert bytes(reply.identity_certificate.serial_number) == \
            go_serial(rotated.leaf.serial_number)


def test_gds_serve_lookup_cache_flag_default_zero_and_refusal(
    trisa_peer_cli: Any,
) -> None:
    """``gds serve --lookup-cache N``: the default is the server's, 0 parses (cache off),
    a negative count is a usage error in one line with nothing started."""
    from trisa_peer.cli.main import build_parser
    parser = build_parser(["gds", "serve"])
    serve = ["gds", "serve", "--db", "x.db", "--insecure"]
    assert parser.parse_args(serve).lookup_cache == DEFAULT_LOOKUP_CACHE
    assert parser.parse_args([*serve, "--lookup-cache", "0"]).lookup_cache == 0
    bad = trisa_peer_cli("gds", "serve", "--insecure", "--db", "x.db", "--lookup-cache", "-1")
    assert bad.returncode == 2 and "--lookup-cache" in bad.stderr and "Traceback" not in bad.stderr


def test_lookup_cache_0_serves_every_lookup_from_the_store(
    db_location: str, alice: Identity,
) -> None:
    """With the cache off (``--lookup-cache 0``) nothing is cached and a write is seen;
    twin: the default server answers the repeated Lookup from its cache."""
    store = SQLStore(db_location)
    directory = Directory(store)
    directory.add(common_name=CN, endpoint=f"{CN}:443",
                  certificates=[alice.leaf, *alice.chain], name="Alice VASP")
    try:
        for size, cached in ((0, False), (DEFAULT_LOOKUP_CACHE, True)):
            with DirectoryServer(directory, listen="127.0.0.1:0",
                                 lookup_cache=size) as server, \
                    grpc.insecure_channel(server.endpoint) as channel:
                stub = gds_grpc.TRISADirectoryStub(channel)
                for _ in range(3):
                    assert stub.Lookup(gds_pb2.LookupRequest(common_name=CN),
                                       timeout=10).common_name == CN
                assert (server.cache is not None and server.cache.hits > 0) is cached
    finally:
        store.close()
