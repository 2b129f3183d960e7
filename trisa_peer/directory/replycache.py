"""The directory server's Lookup reply cache (issue 16, B4).

A Lookup is an indexed read of a record that rarely changes. The cache keeps, per
request body (the serialised ``LookupRequest``: id or common name), the *serialised*
``LookupReply`` the store holds, its trisa-peer response headers (the reissue grace,
:mod:`.grace`) and the end of that grace, so a hit is served with no database read,
no protobuf parse and no serialise (:class:`~.server.DirectoryServer` registers
Lookup with an identity response serializer). The wire is unchanged: the bytes are
those the uncached path would send.

Freshness (issue 11's rule): a Lookup that begins after a write has committed returns
that write, whichever process or replica wrote it. Every commit appends the ids whose
Lookup it may change to the store's ``changes`` log in its own transaction
(:meth:`~.store.SQLStore.commit`); :meth:`LookupCache.check` runs at the start of
every Lookup and drops the entries of every id logged since the last check (all
entries for a ``*`` row, or when the log no longer reaches back that far):

* SQLite: the WAL-index header (the first 48 bytes of the ``-shm`` file, mapped
  read-only; every commit of every connection -- other processes, other replicas,
  this process's store -- rewrites it before the commit is visible) is compared with
  the header seen at the latest check: a memory compare, no system call, the GIL kept.
  Only when it moved is the log read. Where the file cannot be mapped: ``PRAGMA
  data_version`` of a watcher connection per thread (opened by the cache, it never
  touches a table, so its value moves with every commit of any other connection).
  An in-memory database: the store's commit counter.
* PostgreSQL: ``MAX(seq)`` of the log (one indexed read) on every Lookup.

What it relies on: every write goes through :meth:`~.store.SQLStore.commit` (the CLI,
every replica, imports -- all of trisa-peer's writers; a process of an older version
cannot open a schema-3 database). A row changed by hand with ``sqlite3``/``psql`` is
not in the log and stays cached until its record changes or the server restarts.
Memory: the replies are kept once per record (the id and name keys share them):
about 29 MB for 10,000 records (20,000 entries, the default cap).

An entry filled from data read before a commit is stored only if no change of its
record was applied since its own check began (nor a clear); otherwise the next check,
which must come before any Lookup that begins after that commit, drops it.
:meth:`LookupCache.warm` fills it at server start (in the background) with every
VERIFIED record, so a restarted directory does not serve its first 10,000 Lookups from
the store. An entry
with grace headers is not served at or after the grace's end (``Directory.utcnow``).
Only successful Lookups by id or by exact common name are cached (a name resolved
through the names index, or an error, takes the uncached path every time), and only
bodies of at most :data:`MAX_KEY_BYTES` (a caller's padding cannot grow the cache).
"""

from __future__ import annotations

import contextlib
import mmap
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..storage.database import SQLiteDatabase
from .store import ALL_RECORDS, NO_RECORD, SQLStore

if TYPE_CHECKING:
    from .service import Directory

__all__ = ["DEFAULT_MAX_ENTRIES", "MAX_KEY_BYTES", "Entry", "LookupCache"]

#: Requests whose body is longer are not cached (a Lookup request is an id or a name).
MAX_KEY_BYTES = 512
#: Entries kept (a reply is one to a few KiB: about 29 MB when full); the oldest go first.
DEFAULT_MAX_ENTRIES = 20_000

#: The first copy of SQLite's WAL-index header at the start of the ``-shm`` file
#: (https://sqlite.org/walformat.html, "WAL-Index Header Format"): its ``iChange``
#: counter is incremented by every commit, and ``mxFrame`` / the salts move with it.
_WAL_HEADER = 48
_WAL_VERSION = (3007000).to_bytes(4, sys.byteorder)  # iVersion, native byte order

#: (reply bytes, response headers, end of the grace the headers announce or None)
Entry = tuple[bytes, tuple[tuple[str, str | bytes], ...], datetime | None]


class LookupCache:
    """Serialised Lookup replies of ``store``, checked against its change log.

    ``validate=False`` turns the per-request check off (the cache then serves what it
    holds until it fills: only for tests showing what the check is for).
    """

    def __init__(self, store: SQLStore, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 validate: bool = True) -> None:
        self.store = store
        self.max_entries = max_entries
        self.validate = validate
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[str, Entry]] = {}
        self._keys: dict[str, set[bytes]] = {}  # vasp id -> its entries' keys
        self._local = threading.local()  # .version: this thread's last data_version
        db = store.database
        self._sqlite = db.backend == "sqlite"
        #: the SQLite file whose commits the per-thread watcher connections see
        self._path: str | None = None
        if isinstance(db, SQLiteDatabase) and not db.url.in_memory:
            self._path = db.path
        self._watchers: list[sqlite3.Connection] = []
        self._header = b"-"  # the WAL-index header seen at the latest applied check
        self._shm: mmap.mmap | None = None
        if self._path is not None:
            self._shm = self._map_wal_index(self._path)
        self._seq = store.change_seq()  # the change-log position applied
        self._writes = store.writes
        self._changed: dict[str, int] = {}  # vasp id -> seq of its latest applied change
        self._cleared = self._seq  # seq at the latest clear
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self) -> int:
        """Apply the changes committed since the last check; returns the position to
        pass to :meth:`put` for a reply read from the store after this call."""
        if not self.validate:
            return self._seq
        header = b""
        shm = self._shm
        if shm is not None:
            header = shm[:_WAL_HEADER]
            if header == self._header and self.store.writes == self._writes:
                return self._seq
        elif self._path is not None:
            local = self._local
            try:
                conn, last = local.conn, local.version
            except AttributeError:  # this thread's first check
                conn, last = getattr(local, "conn", None) or self._watcher(), None
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == last and self.store.writes == self._writes:
                return self._seq
            local.version = version
        elif self._sqlite:  # in memory: only this store can write
            if self.store.writes == self._writes:
                return self._seq
        elif self.store.change_seq() == self._seq:
            return self._seq
        with self._lock:
            self._writes = self.store.writes  # before the read: a later commit is seen
            latest = self.store.change_seq()
            if latest == self._seq:
                self._header = header
                return self._seq
            rows = self.store.changes_since(self._seq) if latest > self._seq else []
            seq = max(latest, rows[-1][0] if rows else latest)
            if latest < self._seq or not rows or rows[0][0] != self._seq + 1 \
                    or any(vasp_id == ALL_RECORDS for _, vasp_id in rows) \
                    or len(self._changed) > 4 * self.max_entries:
                self._clear(seq)  # a replaced database, a log that lost rows, or "all"
            else:
                for at, vasp_id in rows:
                    if vasp_id != NO_RECORD:
                        self._drop(vasp_id)
                        self._changed[vasp_id] = at
            self._seq = seq
            self._header = header  # only now: a check that sees it needs nothing more
            return self._seq

    def _map_wal_index(self, path: str) -> mmap.mmap | None:
        """The WAL-index header of ``path`` (its ``-shm`` file) mapped read-only, or
        None (then the watcher connections' ``PRAGMA data_version`` is used)."""
        self._watcher().execute("PRAGMA data_version")  # the -shm file exists from now
        try:
            with open(f"{path}-shm", "rb") as file:
                shm = mmap.mmap(file.fileno(), _WAL_HEADER, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        if shm[:4] != _WAL_VERSION:
            shm.close()
            return None
        return shm

    def _watcher(self) -> sqlite3.Connection:
        """This thread's watcher: a connection of its own that never reads or writes
        a table, so its ``PRAGMA data_version`` moves with every commit of any other
        connection -- other processes and this process's store alike."""
        assert self._path is not None
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._watchers.append(conn)
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close the watcher connections (the cache is unusable afterwards)."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
            self._clear(self._seq)
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()  # before the watchers: while one is open, no connection may
            # take SQLite's exclusive DMS lock and truncate the -shm file under the map
        for conn in watchers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def get(self, key: bytes, clock: Callable[[], datetime]) -> Entry | None:
        """The entry for ``key`` (None: a miss, or the grace its headers announce has
        ended by ``clock()``, asked only then)."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        entry = found[1]
        if entry[2] is not None and clock() >= entry[2]:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: bytes, vasp_id: str, entry: Entry, seq: int) -> None:
        """Keep ``entry`` (read after the :meth:`check` that returned ``seq``) unless a
        change was applied since."""
        if len(key) > MAX_KEY_BYTES:
            return
        with self._lock:
            if seq != self._seq and (self._cleared > seq
                                     or self._changed.get(vasp_id, 0) > seq):
                return  # read before a change of this record that is applied now
            if key in self._entries:
                self._forget(key)
            while len(self._entries) >= self.max_entries:
                self._forget(next(iter(self._entries)))
            self._entries[key] = (vasp_id, entry)
            self._keys.setdefault(vasp_id, set()).add(key)

    def clear(self) -> None:
        with self._lock:
            self._clear(self._seq)

    def warm(self, directory: Directory, *, batch: int = 500) -> int:
        """Fill the cache with the Lookup replies of VERIFIED records, by id and by
        common name (the two requests clients send), up to ``max_entries``; returns how
        many records it filled. Entries are checked like any fill (:meth:`put`)."""
        from .._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
        from .grace import lookup_grace

        done, after = 0, ""
        while len(self._entries) + 2 <= self.max_entries:
            seq = self.check()
            rows = self.store.verified_lookups(after=after, limit=batch)
            if not rows:
                break
            graced = self.store.graced_ids()
            for vasp_id, name, body in rows:
                if len(self._entries) + 2 > self.max_entries:
                    break
                headers: tuple[tuple[str, str | bytes], ...] = ()
                until = None
                if vasp_id in graced:
                    reply = gds_pb2.LookupReply.FromString(body)
                    headers, until = lookup_grace(directory, vasp_id,
                                                  reply.identity_certificate)
                entry: Entry = (body, headers, until)
                for key in (gds_pb2.LookupRequest(id=vasp_id),
                            gds_pb2.LookupRequest(common_name=name)):
                    self.put(key.SerializeToString(), vasp_id, entry, seq)
                done += 1
            after = rows[-1][0]
        return done

    # callers hold _lock

    def _clear(self, seq: int) -> None:
        self._entries.clear()
        self._keys.clear()
        self._changed.clear()
        self._cleared = seq

    def _drop(self, vasp_id: str) -> None:
        for key in self._keys.pop(vasp_id, ()):
            self._entries.pop(key, None)

    def _forget(self, key: bytes) -> None:
        vasp_id, _ = self._entries.pop(key)
        keys = self._keys.get(vasp_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[vasp_id]
