"""``serve --workers N`` and ``gds serve --workers N`` (issue 13 section 3): real
processes on loopback, a real directory, real mTLS and one SQLite store shared by the
workers. The supervisor's restart and signal rules are also checked on a tiny worker
(``supervise()`` in a subprocess), where a crash can be provoked on demand."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI
from pki import identity, pool
from test_exchange import _start_when_port_free, payload_for

from trisa_peer.directory.client import DirectoryClient
from trisa_peer.directory.server import DirectoryServer
from trisa_peer.directory.store import SQLiteStore
from trisa_peer.envelope import seal
from trisa_peer.errors import TrisaPeerError
from trisa_peer.network.handler import Accept, Pending
from trisa_peer.network.node import CALLBACK_MARK, TrisaNode
from trisa_peer.network.store import TransferStore
from trisa_peer.testing.network import free_port
from trisa_peer.transport.identity import Material
from trisa_peer.transport.server import StaticMaterial

BOB = "bob.vasp.test"
ENV = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}


def _wait(predicate: Callable[[], Any], timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


class Proc:
    """A process whose stdout and stderr lines are collected as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**ENV, "PYTHONUNBUFFERED": "1"})
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.out),
                                          (self.proc.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, pattern: str, *, stream: str = "out", timeout: float = 60) -> str:
        lines = self.out if stream == "out" else self.err
        regex = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in list(lines) if regex.search(line)]
            return bool(found) or self.proc.poll() is not None

        _wait(seen, timeout)
        assert found, f"no {pattern!r} in {stream}:\n{''.join(self.out)}{''.join(self.err)}"
        return found[-1]

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish()

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def _worker_pids(proc: Proc) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the supervisor's lines."""
    pids: dict[int, int] = {}
    for line in list(proc.err):
        match = re.search(r"worker (\d+) \(pid (\d+)\) serving on port", line)
        if match:
            pids[int(match[1])] = int(match[2])
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Site:
    """A directory with Bob and Alice registered; Bob runs as ``serve`` processes,
    Alice is an in-process node that only sends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gds = DirectoryServer(SQLiteStore(tmp / "gds.db"), listen="127.0.0.1:0")
        self.gds.start()
        self.port, self.alice_port = free_port(), free_port()
        for name, port in (("bob", self.port), ("alice", self.alice_port)):
            ident = identity(name)
            self.gds.directory.add(common_name=ident.common_name,
                                   endpoint=f"{ident.common_name}:{port}",
                                   certificates=[ident.leaf, *ident.chain])
        self.procs: list[Proc] = []
        self.directory = DirectoryClient(self.gds.endpoint, insecure=True, timeout=5)
        self.alice = TrisaNode(
            StaticMaterial(Material(identity("alice"), pool(), None, 1)), self.directory,
            store=TransferStore(tmp / "alice.db"), handler=lambda _i: Accept(),
            listen=f"127.0.0.1:{self.alice_port}",
            resolve={f"{BOB}:{self.port}": f"127.0.0.1:{self.port}"}, timeout=10)

    def bob_args(self, *extra: str, cert: str = "bob", policy: str = "accept") -> list[str]:
        return [sys.executable, "-m", "trisa_peer", "serve",
                "--listen", f"127.0.0.1:{self.port}", "--policy", policy,
                "--resolve", f"alice.vasp.test:{self.alice_port}:127.0.0.1",
                "--cert", str(PKI / f"{cert}.pem"), "--key", str(PKI / "bob.key"),
                "--trust", str(PKI / "trust.pem"), "--directory", self.gds.endpoint,
                "--directory-insecure", *extra]

    def serve(self, *extra: str, ready: str = r"2 workers serving on",
              policy: str = "accept") -> Proc:
        proc = Proc(self.bob_args(*extra, policy=policy))
        self.procs.append(proc)
        proc.wait_for(ready)
        return proc

    def send(self, *, attempts: int = 40) -> str:
        """One transfer over a new connection; retried (as a sender does) while a
        worker is down. Returns the state of the answer."""
        last: Exception | None = None
        for _ in range(attempts):
            self.alice.connector.forget(BOB)  # a new connection every time
            try:
                return self.alice.send(BOB, payload_for("alice.vasp.test", BOB)).state
            except TrisaPeerError as exc:
                last = exc
                time.sleep(0.1)
        raise AssertionError(f"no transfer got through: {last}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.finish()
        self.alice.close()
        self.directory.close()
        self.gds.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def _answered_by(proc: Proc) -> set[str]:
    """The workers that logged a decision on Alice (each has its own decision cache)."""
    return set(re.findall(r"\[worker (\d+) pid \d+\][^\n]*peer=alice\.vasp\.test[^\n]*"
                          r"outcome=accept", proc.stderr))


@pytest.mark.slow
def test_two_workers_share_one_port_and_one_store_and_stop_on_sigterm(site: Site) -> None:
    db = site.tmp / "bob.db"
    bob = site.serve("--workers", "2", "--db", str(db))
    pids = _worker_pids(bob)
    assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2
    states = [site.send() for _ in range(24)]  # 24 new connections
    assert states == ["accepted"] * 24
    # the kernel spread the connections: both workers verified Alice and answered
    assert _answered_by(bob) == {"0", "1"}
    store = TransferStore(db)
    try:  # one shared store holds every transfer, once: request and reply
        summaries = store.summaries(limit=1000)
        assert len(summaries) == 24 and {s.messages for s in summaries} == {2}
    finally:
        store.close()
    # SIGHUP without a deny-list: passed on, and ignored by the workers (no restart)
    bob.proc.send_signal(signal.SIGHUP)
    bob.wait_for(r"SIGHUP passed to 2 worker", stream="err")
    assert site.send() == "accepted"
    assert _worker_pids(bob) == pids and "exited unexpectedly" not in bob.stderr
    assert bob.stop() == 0
    assert "SIGTERM: stopping 2 worker(s)" in bob.stderr
    for index, pid in pids.items():  # one line per worker exit
        assert f"worker {index} (pid {pid}) stopped (exit status 0)" in bob.stderr
    assert all(_gone(pid) for pid in pids.values())
    assert "Traceback" not in bob.stderr


@pytest.mark.slow
def test_one_worker_is_the_default_and_answers_alone(site: Site) -> None:
    """The twin of the test above: without --workers one process answers everything."""
    bob = site.serve("--db", str(site.tmp / "bob.db"), ready=r"serving on port")
    assert [site.send() for _ in range(6)] == ["accepted"] * 6
    assert bob.stop() == 0
    assert "[worker" not in bob.stderr and "workers serving" not in "".join(bob.out)


@pytest.mark.slow
def test_an_operators_decision_is_delivered_by_worker_0_alone(
        site: Site, trisa_peer_cli: Callable[..., Any]) -> None:
    """The pending loop runs in worker 0 only; a decision recorded with ``transfers
    resolve`` is delivered at its next pass (an operator's decision is not held)."""
    site.alice.start()
    db = site.tmp / "bob.db"
    bob = site.serve("--workers", "2", "--db", str(db), policy="review")
    assert site.send() == "pending"
    eid = site.alice.store.summaries(limit=1)[0].envelope_id
    resolved = trisa_peer_cli("transfers", "resolve", eid, "--db", str(db), "--accept")
    assert resolved.returncode == 0, resolved.stderr
    assert _wait(lambda: site.alice.store.initiated(eid).state == "accepted")
    # the log line is read from the pipe by a thread: wait for it, not just the state
    assert _wait(lambda: any("callback delivered" in line for line in list(bob.err)))
    delivered = [line for line in list(bob.err) if "callback delivered" in line]
    assert len(delivered) == 1 and "[worker 0 pid" in delivered[0]
    assert bob.stop() == 0


@pytest.mark.slow
def test_simultaneous_copies_of_one_envelope_at_two_workers_run_the_handler_once(
        site: Site) -> None:
    """Copies of one sealed envelope sent at the same moment over six connections, 30
    times: each message is stored once with one reply, and every copy gets that reply.
    Before the exchange held (peer, envelope id) in the store, 8 rounds in 30 ran the
    handler twice and stored two replies; the store's own twins (a live holder is
    waited for, a dead one's claim taken over) are in test_transfer_store.py."""
    db = site.tmp / "bob.db"
    bob = site.serve("--workers", "2", "--db", str(db))
    assert site.send() == "accepted"  # keys exchanged
    key = site.alice.peer_keys.get(BOB)
    ids = []
    for _ in range(30):
        envelope = seal(payload_for("alice.vasp.test", BOB), key, envelope_id=str(uuid.uuid4()))
        channels = []
        for _ in range(6):
            site.alice.connector.forget(BOB)
            channels.append(site.alice.connect(BOB))
        barrier = threading.Barrier(len(channels))
        replies: list[bytes] = []

        def transfer(channel: Any, envelope: Any = envelope, replies: list[bytes] = replies,
                     barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            reply = channel.network.Transfer(envelope, timeout=30)
            replies.append(reply.SerializeToString())

        threads = [threading.Thread(target=transfer, args=(c,)) for c in channels]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(replies) == 6 and len(set(replies)) == 1  # one answer, byte for byte
        ids.append(envelope.id)
    assert bob.stop() == 0
    store = TransferStore(db)
    try:
        for eid in ids:
            rows = store.exchange(eid)
            assert len([r for r in rows if r.kind == "request"]) == 1
            assert len([r for r in rows if r.kind == "reply"]) == 1
    finally:
        store.close()
    assert "unfinished claim runs again" not in bob.stderr


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_transfers_keep_succeeding(site: Site) -> None:
    bob = site.serve("--workers", "2", "--db", str(site.tmp / "bob.db"))
    before = _worker_pids(bob)
    os.kill(before[1], signal.SIGKILL)
    sent = [site.send() for _ in range(10)]  # the sender retries while a worker is down
    bob.wait_for(r"worker 1 \(pid \d+\) exited unexpectedly \(killed by SIGKILL\); "
                 r"restarting in", stream="err")
    assert _wait(lambda: _worker_pids(bob)[1] != before[1])
    sent += [site.send() for _ in range(10)]
    assert sent == ["accepted"] * 20
    after = _worker_pids(bob)
    assert after[0] == before[0] and not _gone(after[1])
    assert bob.stop() == 0


@pytest.mark.slow
def test_an_unrelated_serve_on_the_workers_port_fails(site: Site) -> None:
    bob = site.serve("--workers", "2", "--db", str(site.tmp / "bob.db"))
    for extra in ([], ["--workers", "2"]):  # a plain serve, and a second supervisor
        other = subprocess.run(site.bob_args("--db", str(site.tmp / "other.db"), *extra),
                               capture_output=True, text=True, timeout=60, env=ENV)
        assert other.returncode == 1, other.stderr
        assert other.stderr.count("\n") == 1, other.stderr
        assert "address already in use" in other.stderr
        assert not (site.tmp / "other.db").exists()
    assert site.send() == "accepted"  # the workers kept the port and all its traffic
    assert bob.stop() == 0
    # the twin: the same plain serve on the port, once the supervisor has gone, starts
    alone = site.serve("--db", str(site.tmp / "other.db"), ready=r"serving on port")
    assert alone.stop() == 0


@pytest.mark.slow
def test_workers_that_cannot_start_fail_in_one_line(site: Site) -> None:
    db = site.tmp / "bob.db"
    bad = subprocess.run(site.bob_args("--workers", "2", "--db", str(db), cert="alice"),
                         capture_output=True, text=True, timeout=60, env=ENV)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert "worker 0 could not start" in bad.stderr and "Traceback" not in bad.stderr
    assert not db.exists()  # nothing half-written
    nodb = subprocess.run(site.bob_args("--workers", "2"), capture_output=True, text=True,
                          timeout=60, env=ENV)
    assert nodb.returncode == 2 and "--workers needs --db" in nodb.stderr


@pytest.mark.slow
def test_gds_serve_with_two_workers(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "trisa_peer", "gds", "serve", "--db",
            str(tmp_path / "gds.db"), "--insecure", "--listen", f"127.0.0.1:{port}"]
    gds = Proc([*argv, "--workers", "2"])
    try:
        gds.wait_for(r"2 workers serving on 127\.0\.0\.1:")
        ident = identity("bob")
        add = subprocess.run(
            [sys.executable, "-m", "trisa_peer", "gds", "add", "--db", str(tmp_path / "gds.db"),
             "--common-name", ident.common_name, "--endpoint", f"{ident.common_name}:443",
             "--cert", str(PKI / "bob.pem")], capture_output=True, text=True, env=ENV)
        assert add.returncode == 0, add.stderr
        for _ in range(8):  # new connections, both workers, one shared store
            client = DirectoryClient(f"127.0.0.1:{port}", insecure=True, timeout=5)
            try:
                assert client.lookup(common_name=ident.common_name).common_name == ident.common_name
            finally:
                client.close()
        other = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
        assert other.returncode == 1 and "address already in use" in other.stderr
        assert gds.stop() == 0
    finally:
        if gds.proc.poll() is None:
            gds.proc.kill()
            gds.finish()


def test_worker_counts_are_checked(trisa_peer_cli: Callable[..., Any], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before anything forks or binds: 0, too many, not a number."""
    base = ["serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "bob.db"),
            "--cert", str(PKI / "bob.pem"), "--key", str(PKI / "bob.key"),
            "--trust", str(PKI / "trust.pem"), "--directory", "127.0.0.1:1",
            "--directory-insecure"]
    zero = trisa_peer_cli(*base, "--workers", "0")
    assert zero.returncode == 2 and "must be positive: '0'" in zero.stderr
    many = trisa_peer_cli(*base, "--workers", "65")
    assert many.returncode == 1 and "--workers must be 1 to 64, not 65" in many.stderr
    assert many.stderr.count("\n") == 1
    monkeypatch.setenv("TRISA_PEER_WORKERS", "two")
    named = trisa_peer_cli(*base)
    assert named.returncode == 1 and "TRISA_PEER_WORKERS" in named.stderr
    assert not (tmp_path / "bob.db").exists()


_SHARING = textwrap.dedent("""
    from trisa_peer import limits
    from trisa_peer.netutil import bind_problem
    from trisa_peer.supervisor import reserve_port

    reservation, listen = reserve_port("127.0.0.1:0")
    print(dict(limits.server_options())["grpc.so_reuseport"], bind_problem(listen))
    limits.share_port_with_siblings()  # what a forked worker does, and nothing else
    print(dict(limits.server_options())["grpc.so_reuseport"], bind_problem(listen))
    reservation.close()
""")


def test_only_a_worker_binds_with_so_reuseport_into_the_reservation() -> None:
    """In a fresh process (the switch is process-wide): a reserved port refuses a
    plain bind probe, and admits the same probe once the process is a worker."""
    out = subprocess.run([sys.executable, "-c", _SHARING], capture_output=True, text=True,
                         check=True, env=ENV).stdout.splitlines()
    assert out == ["0 address already in use", "1 None"]


# --------------------------------------------- the supervisor on a tiny worker

_TINY = textwrap.dedent("""
    import os, signal, sys, threading
    from pathlib import Path
    from trisa_peer.errors import TrisaPeerError
    from trisa_peer.supervisor import supervise

    flag, hups = Path(sys.argv[1]), Path(sys.argv[2])

    def run(worker):
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if worker.index == 1 and flag.exists():
            os._exit(3)  # a worker that crashes as soon as it starts
        if sys.argv[3] == "reload":
            signal.signal(signal.SIGHUP, lambda *_: hups.open("a").write(f"{worker.index}\\n"))
        worker.ready(0)
        stop.wait()
        return 0

    try:
        sys.exit(supervise(workers=2, listen="127.0.0.1:0", run=run, backoff=0.05,
                           max_quick_crashes=3))
    except TrisaPeerError as exc:  # as the CLI's runner reports it
        sys.exit(f"trisa-peer: error: {exc}")
""")


def _tiny(tmp_path: Path, mode: str) -> Proc:
    proc = Proc([sys.executable, "-c", _TINY, str(tmp_path / "crash"), str(tmp_path / "hups"),
                 mode])
    proc.wait_for(r"2 workers serving on 127\.0\.0\.1:\d+")
    return proc


@pytest.mark.slow
def test_a_worker_that_keeps_crashing_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    sup = _tiny(tmp_path, "plain")
    (tmp_path / "crash").touch()
    pids = _worker_pids(sup)
    os.kill(pids[1], signal.SIGKILL)
    assert sup.finish() == 1
    assert re.search(r"trisa-peer: error: worker 1 crashed 3 times in a row within 10 s of "
                     r"starting \(exit status 3\); giving up\n$", sup.stderr), sup.stderr
    assert _gone(pids[0])  # the healthy worker was stopped too


@pytest.mark.slow
def test_a_restarted_worker_that_serves_again_keeps_the_supervisor_running(
        tmp_path: Path) -> None:
    """The twin: the same kill without the crash flag is one restart, then serving."""
    sup = _tiny(tmp_path, "plain")
    pids = _worker_pids(sup)
    os.kill(pids[1], signal.SIGKILL)
    assert _wait(lambda: _worker_pids(sup)[1] != pids[1])
    assert sup.proc.poll() is None
    assert sup.stop() == 0


@pytest.mark.slow
def test_sighup_reaches_every_worker_and_sigint_stops_them(tmp_path: Path) -> None:
    sup = _tiny(tmp_path, "reload")
    hups = tmp_path / "hups"
    sup.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: hups.exists() and sorted(hups.read_text().split()) == ["0", "1"])
    pids = _worker_pids(sup)
    sup.proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop of every worker too
    assert sup.finish() == 0
    assert "SIGINT: stopping 2 worker(s)" in sup.stderr
    assert all(_gone(pid) for pid in pids.values())


def test_the_supervisor_refuses_to_fork_a_process_with_threads() -> None:
    """The twin of every tiny-worker test above, which fork from a single thread."""
    code = textwrap.dedent("""
        import threading
        from trisa_peer.errors import ConfigurationError
        from trisa_peer.supervisor import supervise

        threading.Thread(target=threading.Event().wait, args=(5,), daemon=True).start()
        try:
            supervise(workers=2, listen="127.0.0.1:0", run=lambda worker: 0)
        except ConfigurationError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=ENV)
    assert out.stdout == "--workers: the supervisor must fork before any thread starts\n"


@pytest.mark.slow
def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    sup = _tiny(tmp_path, "plain")
    pids = _worker_pids(sup)
    sup.proc.kill()  # the supervisor dies without a word: the kernel stops its workers
    sup.finish()
    assert _wait(lambda: all(_gone(pid) for pid in pids.values()))


# --------------------------------------------- the pending loop in one worker


def test_pending_loop_leaves_a_fresh_callback_decision_to_its_recorder(
        net: Any, tmp_path: Any) -> None:
    """A worker that does not run the loop starts none. The loop's worker leaves a
    decision that a callback recorded moments ago (another worker's, delivering it)
    alone while ``decision_hold`` lasts, and delivers it once the hold is over; an
    operator's decision (``transfers resolve``) is delivered at once."""
    sim = net.nodes["bob"]
    sim.node.stop()
    node = TrisaNode(sim.node.material, net.directory_client(),
                     store=TransferStore(tmp_path / "w.db"),
                     handler=lambda _i: Pending(), listen=f"127.0.0.1:{sim.port}",
                     resolve=net.resolve, pending_loop=False, decision_hold=30.0)
    try:
        _start_when_port_free(node)
        assert node._pending_thread is None  # this worker runs no pending loop
        net.alice.node.connector.forget(BOB)
        rows = []
        for decision in (CALLBACK_MARK + "accept", "accept"):
            result = net.alice.send(BOB, payload_for("alice.vasp.test", BOB))
            assert result.state == "pending"
            row = node.store.latest_request(net.alice.common_name, result.envelope_id)
            assert node.store.set_resolution(row.seq, decision)
            rows.append((row.seq, result.envelope_id))
        (held, held_id), (operator, operator_id) = rows
        node.pending_tick()
        assert node.store.get(held).state == "pending"  # held: recorded just now
        assert net.alice.node.store.initiated(held_id).state == "pending"
        assert node.store.get(operator).state == "accepted"  # the twin: not held
        assert net.alice.node.store.initiated(operator_id).state == "accepted"
        node.decision_hold = 0.0  # the hold is over
        node.pending_tick()
        assert node.store.get(held).state == "accepted"
        assert net.alice.node.store.initiated(held_id).state == "accepted"
    finally:
        node.close()
        fresh = TrisaNode(sim.node.material, net.directory_client(), store=sim.node.store,
                          handler=net.handler_factory(sim.common_name),
                          listen=f"127.0.0.1:{sim.port}", resolve=net.resolve)
        _start_when_port_free(fresh)
        sim.node = fresh
        net.alice.node.connector.forget(BOB)
