"""Certificate expiry in the directory: ``gds certs --expiring`` and reissue reminders
(directory/reminders.py): thresholds 30/7/1 days, once per threshold per certificate,
surviving restarts, once across replicas sharing one database, and ``gds serve``'s
start-up pass. Real SQLite files and PostgreSQL (the replica and restart cases run on
both backends: conftest's ``db_location``), a real local CA; time is moved with the directory's
injectable clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trisa_peer.ca import CertificateAuthority
from trisa_peer.certs import Identity, certs_to_pem
from trisa_peer.cli.main import main
from trisa_peer.directory import Directory, SQLiteStore, SQLStore
from trisa_peer.directory.reminders import (
    SUBJECT_REMINDER,
    ReminderLoop,
    due_threshold,
    expiring,
    parse_window,
    reminder_reason,
    send_due,
)
from trisa_peer.directory.store import Changes, Email
from trisa_peer.errors import ConfigurationError

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def soon(ca: CertificateAuthority) -> Identity:
    """Expires in 20 days."""
    return ca.issue("soon.example.com", key_size=2048, not_after=NOW + timedelta(days=20))


@pytest.fixture(scope="module")
def five(ca: CertificateAuthority) -> Identity:
    """Expires in 5 days."""
    return ca.issue("five.example.com", key_size=2048, not_after=NOW + timedelta(days=5))


@pytest.fixture(scope="module")
def later(ca: CertificateAuthority) -> Identity:
    """Expires in 100 days."""
    return ca.issue("later.example.com", key_size=2048, not_after=NOW + timedelta(days=100))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _add(directory: Directory, ident: Identity) -> str:
    return directory.add(common_name=ident.common_name, endpoint=f"{ident.common_name}:443",
                         certificates=[ident.leaf, *ident.chain]).id


def _reminders(store: SQLiteStore) -> list[Email]:
    return [m for m in store.emails() if m.reason.startswith("reminder:")]


def _serial(ident: Identity) -> str:
    from trisa_peer.directory.convert import serial_hex

    return serial_hex(ident.leaf.serial_number)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("7d", 7 * 86400),
                                                ("12h", 12 * 3600), (" 90M ", 5400)])
def test_window_accepted(text: str, seconds: int) -> None:
    assert parse_window(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "0d", "-1d", "30x", "1.5d", "d", "", "30 d"])
def test_window_rejected(text: str) -> None:
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_window(text)


def test_due_threshold_is_the_tightest_reached() -> None:
    assert due_threshold(timedelta(days=31)) is None
    assert due_threshold(timedelta(days=30)) == 30
    assert due_threshold(timedelta(days=20)) == 30
    assert due_threshold(timedelta(days=5)) == 7
    assert due_threshold(timedelta(hours=12)) == 1
    assert due_threshold(timedelta(0)) is None  # expired: no reminder
    assert due_threshold(timedelta(seconds=-1)) is None


# --------------------------------------------------------------------------- listing


def test_expiring_lists_current_certificates_within_the_window(
    tmp_path: Path, soon: Identity, later: Identity, five: Identity
) -> None:
    clock = Clock()
    with Directory(SQLiteStore(tmp_path / "gds.db"), clock=clock) as directory:
        for ident in (soon, later, five):
            _add(directory, ident)
        names = [e.common_name for e in expiring(directory, timedelta(days=30), NOW)]
        assert names == ["five.example.com", "soon.example.com"]  # soonest first
        assert [e.common_name for e in expiring(directory, timedelta(days=7), NOW)] == [
            "five.example.com"]
        assert expiring(directory, timedelta(hours=12), NOW) == []
        # once expired, still listed (negative days left)
        gone = expiring(directory, timedelta(hours=12), NOW + timedelta(days=6))
        assert [e.common_name for e in gone] == ["five.example.com"]
        assert gone[0].days_left < 0


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gds", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_certs_expiring_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            soon: Identity, later: Identity, five: Identity) -> None:
    db = str(tmp_path / "gds.db")
    for ident in (soon, later, five):
        pem = tmp_path / f"{ident.common_name}.pem"
        pem.write_bytes(certs_to_pem([ident.leaf, *ident.chain]))
        assert _cli(capsys, "add", "--db", db, "--common-name", ident.common_name,
                    "--endpoint", f"{ident.common_name}:443", "--cert", str(pem))[0] == 0
    code, out, err = _cli(capsys, "certs", "--expiring", "30d", "--db", db)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert "five.example.com" in lines[0] and f"serial {_serial(five)}" in lines[0]
    assert "days left" in lines[0] and "not_after" in lines[0]
    assert "soon.example.com" in lines[1]
    code, out, _ = _cli(capsys, "certs", "--expiring", "7d", "--db", db)
    assert code == 0 and "five.example.com" in out and "soon.example.com" not in out
    code, out, _ = _cli(capsys, "certs", "--expiring", "12h", "--db", db)
    assert code == 0 and out.strip() == "no certificates expiring"
    code, out, _ = _cli(capsys, "certs", "--expiring", "30d", "--db", db, "--json")
    assert code == 0 and '"days_left"' in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--expiring", "30x"], "not a duration: '30x'"),
    (["--expiring", "0d"], "not a duration: '0d'"),
    (["--expiring", "30d", "--id", "X"], "takes no --id or --out"),
    ([], "give --id ID and --out DIR (or --expiring WINDOW)"),
])
def test_certs_expiring_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], message: str) -> None:
    db = tmp_path / "gds.db"
    SQLiteStore(db).close()
    code, out, err = _cli(capsys, "certs", *argv, "--db", str(db))
    assert code == 2 and out == ""
    lines = err.splitlines()  # the usage line, then one error line (as every usage error)
    assert lines[0].startswith("usage: trisa-peer gds certs")
    assert lines[-1].startswith("trisa-peer gds certs: error: ") and message in lines[-1]
    assert sum("error:" in line for line in lines) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- reminders


def test_reminders_once_per_threshold_surviving_restarts(db_location: str, soon: Identity
                                                         ) -> None:
    path = db_location  # a SQLite file, or a PostgreSQL schema
    clock = Clock()
    with Directory(SQLStore(path), clock=clock) as directory:
        vasp_id = _add(directory, soon)
        sent = send_due(directory, clock())
        assert [m.reason for m in sent] == [reminder_reason(_serial(soon), 30)]
        assert sent[0].subject == SUBJECT_REMINDER and sent[0].vasp_id == vasp_id
        assert send_due(directory, clock()) == []  # same pass again: nothing
    # a restart (new store, new process state): still nothing for 30 days
    clock.now = NOW + timedelta(days=5)
    with Directory(SQLStore(path), clock=clock) as directory:
        assert send_due(directory, clock()) == []
        clock.now = NOW + timedelta(days=14)  # 6 days left: the 7-day reminder
        assert [m.reason for m in send_due(directory, clock())] == [
            reminder_reason(_serial(soon), 7)]
        assert send_due(directory, clock()) == []
        clock.now = NOW + timedelta(days=19, hours=12)  # 12 hours left
        assert [m.reason for m in send_due(directory, clock())] == [
            reminder_reason(_serial(soon), 1)]
        clock.now = NOW + timedelta(days=21)  # expired: nothing more
        assert send_due(directory, clock()) == []
        assert len(_reminders(directory.store)) == 3


def test_first_seen_with_five_days_gets_only_the_seven_day_reminder(
    tmp_path: Path, five: Identity, soon: Identity
) -> None:
    clock = Clock()
    with Directory(SQLiteStore(tmp_path / "gds.db"), clock=clock) as directory:
        _add(directory, five)
        _add(directory, soon)
        reasons = sorted(m.reason for m in send_due(directory, clock()))
        # twin: the 20-day certificate gets its 30-day reminder, the 5-day one only 7
        assert reasons == sorted([reminder_reason(_serial(five), 7),
                                  reminder_reason(_serial(soon), 30)])
        assert reminder_reason(_serial(five), 30) not in {
            m.reason for m in _reminders(directory.store)}


def test_no_reminder_for_a_revoked_or_far_certificate(tmp_path: Path, soon: Identity,
                                                      later: Identity) -> None:
    clock = Clock()
    with Directory(SQLiteStore(tmp_path / "gds.db"), clock=clock) as directory:
        _add(directory, later)
        revoked_id = _add(directory, soon)
        vasp = directory.get(revoked_id)
        vasp.identity_certificate.revoked = True
        directory.commit(Changes(vasp=vasp), what="test revoke")
        assert send_due(directory, clock()) == []
        clock.now = NOW + timedelta(days=71)  # later: 29 days left now
        assert [m.reason for m in send_due(directory, clock())] == [
            reminder_reason(_serial(later), 30)]


class _PausingStore(SQLStore):
    """A real store (SQLite or PostgreSQL) that waits at ``barrier`` after reading a
    record's outbox: both replicas have decided "not sent yet" before either commits."""

    barrier: threading.Barrier

    def emails(self, *, vasp_id: str | None = None) -> list[Email]:
        result = super().emails(vasp_id=vasp_id)
        if vasp_id is not None:
            self.barrier.wait(timeout=60)
        return result


def test_two_replicas_racing_send_one_reminder(db_location: str, soon: Identity) -> None:
    path = db_location  # two replicas on one SQLite file, or on one PostgreSQL schema
    clock = Clock()
    with Directory(SQLStore(path), clock=clock) as directory:
        _add(directory, soon)
    barrier = threading.Barrier(2)
    replicas = []
    for _ in range(2):
        store = _PausingStore(path)
        store.barrier = barrier
        replicas.append(Directory(store, clock=clock))
    results: list[list[Email]] = [[], []]

    def run(i: int) -> None:
        results[i] = send_due(replicas[i], clock())

    # the loser re-reads after its refused commit; its second emails() read must not
    # wait for a partner any more
    barrier_done = threading.Event()
    original_wait = barrier.wait

    def wait_once(timeout: float | None = None) -> int:
        if barrier_done.is_set():
            return 0
        value = original_wait(timeout)
        barrier_done.set()
        return value

    barrier.wait = wait_once  # type: ignore[method-assign]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for replica in replicas:
        replica.close()
    assert sorted(len(r) for r in results) == [0, 1]  # exactly one replica sent it
    with SQLStore(path) as store:
        assert [m.reason for m in _reminders(store)] == [reminder_reason(_serial(soon), 30)]


def test_without_the_record_lock_both_replicas_would_send(db_location: str, soon: Identity
                                                          ) -> None:
    """Twin of the race test: an outbox append that does not carry the record at the
    version read (no optimistic lock) is not refused, so the check-then-write alone
    would duplicate; the lock is what makes the reminder unique."""
    path = db_location
    clock = Clock()
    with Directory(SQLStore(path), clock=clock) as a, Directory(SQLStore(path),
                                                                clock=clock) as b:
        vasp_id = _add(a, soon)
        reason = reminder_reason(_serial(soon), 30)
        stale = a.store.get_vasp(vasp_id)
        assert stale is not None
        mail = a.email(vasp_id, "x@example.com", SUBJECT_REMINDER, "body", reason)
        assert b.store.commit(Changes(emails=[mail]))  # replica B, unlocked
        assert a.store.commit(Changes(emails=[mail]))  # replica A, unlocked: duplicate
        assert len(_reminders(a.store)) == 2
        # with the lock: B's record write bumps the version, A's stale write is refused
        fresh = b.store.get_vasp(vasp_id)
        assert fresh is not None
        assert b.store.commit(Changes(vasp=fresh, emails=[mail]))
        assert not a.store.commit(Changes(vasp=stale, emails=[mail]))
        assert len(_reminders(a.store)) == 3


def test_reminder_loop_runs_at_start_and_stops(tmp_path: Path, five: Identity) -> None:
    clock = Clock()
    with Directory(SQLiteStore(tmp_path / "gds.db"), clock=clock) as directory:
        _add(directory, five)
        loop = ReminderLoop(directory, interval=3600, clock=clock)
        loop.start()  # the first pass runs before start() returns
        try:
            assert loop.passes == 1
            assert len(_reminders(directory.store)) == 1
        finally:
            loop.stop()
        with pytest.raises(ConfigurationError, match="must be positive"):
            ReminderLoop(directory, interval=0)


@pytest.mark.slow
def test_serve_sends_due_reminders_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            five: Identity, later: Identity) -> None:
    db = str(tmp_path / "served.db")
    outbox = tmp_path / "outbox"
    for ident in (five, later):
        pem = tmp_path / f"{ident.common_name}.pem"
        pem.write_bytes(certs_to_pem([ident.leaf, *ident.chain]))
        assert _cli(capsys, "add", "--db", db, "--common-name", ident.common_name,
                    "--endpoint", f"{ident.common_name}:443", "--cert", str(pem))[0] == 0
    for attempt in range(2):  # the second start (a restart) sends nothing new
        proc = subprocess.Popen(
            [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db", db, "--listen",
             "127.0.0.1:0", "--insecure", "--outbox", str(outbox),
             "--reminder-interval", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "directory listening" in line, proc.stderr.read() if proc.stderr else ""
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        with SQLiteStore(db) as store:
            assert [m.reason for m in _reminders(store)] == [
                reminder_reason(_serial(five), 7)], attempt
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 1 and reminder_reason(_serial(five), 7) in files[0].name
    assert os.stat(files[0]).st_mode & 0o777 == 0o600
