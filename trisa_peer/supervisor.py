"""``--workers N``: one supervisor process runs N copies of a server on one port.

Used by ``trisa-peer serve`` and ``trisa-peer gds serve``. The supervisor forks each
worker after the command line and the configuration were checked (and, for ``gds serve
--ca-dir``, after the TLS certificate was issued), so every worker runs the same
settings; the supervisor itself never creates a gRPC object, a thread or a store.
Linux only (``SO_REUSEPORT`` load balancing and ``PR_SET_PDEATHSIG``).

Sharing the port, and why an outsider cannot join
    Single-process servers bind with ``grpc.so_reuseport=0`` (see
    :mod:`trisa_peer.limits`): a second server on a port in use fails. For workers
    the supervisor first *reserves* the port: it binds a plain socket (no
    ``SO_REUSEADDR``, no ``SO_REUSEPORT``), which fails if anything holds the port, so
    the check and the reservation are one atomic step; only then does it set
    ``SO_REUSEPORT`` on that bound socket, which from then on admits sockets that
    also set ``SO_REUSEPORT`` *and* belong to the same user (the kernel's rule). The
    reservation never listens, so it takes no connection; it is held for the
    supervisor's whole life, so the port stays reserved while a worker restarts.
    Each worker calls :func:`~trisa_peer.limits.share_port_with_siblings` after the
    fork (in memory: no environment variable or option can switch it on elsewhere)
    and binds with ``SO_REUSEPORT``; the kernel spreads new connections over the
    workers' listeners. An unrelated ``serve`` (``so_reuseport=0``) or a second
    supervisor (plain reservation bind) on the same port fails with "address already
    in use". Not prevented: a program of the *same user* that sets ``SO_REUSEPORT``
    on purpose; other users cannot join. A connection belongs to one worker for its
    whole life: one peer's calls on one channel reach one worker.

Per process (each worker has its own, nothing is coordinated between workers)
    - the verification decision cache (``decision_ttl``) and directory answers: each
      worker looks a peer up at its first call there;
    - issue 11's per-peer limits (``--peer-rate``, ``--peer-burst``,
      ``--peer-concurrency``), ``--max-directory-lookups`` and the outage grace: with
      N workers a peer can get up to N times the configured rate, spread over
      connections; the deny-list file is read by every worker;
    - the in-process callback timers of ``Pending(callback=...)``, delivered by the
      worker that answered the request;
    - log lines: each worker's lines carry ``[worker I pid P]``;
    - metrics: the package exports none yet; an exporter added later must aggregate
      the workers (one scrape sees all, e.g. prometheus-client's multiprocess mode).

Shared
    - the port (above) and the store (``--db``: SQLite in WAL mode today; nothing
      here is SQLite-specific). ``serve --workers`` refuses to run without ``--db``.
      A retry of an answered envelope is answered from the store by any worker.
      Copies of one envelope reaching two workers (or two replicas) at once run the
      handler once: the exchange holds (peer, envelope id) in the store while it
      works (``Database.hold``: a file lock on SQLite, a session advisory lock on
      PostgreSQL; released when the holder dies), and an unfinished claim whose holder
      is alive is waited for, one whose holder died is taken over;
    - the pending-resolution loop (deliveries of recorded decisions, expiries) runs in
      worker 0 only (``WorkerContext.runs_pending``), and again in its replacement when
      it dies; it leaves a decision that a callback recorded less than
      :data:`~trisa_peer.network.node.WORKER_DECISION_HOLD` seconds ago to the worker
      whose callback is delivering it (see ``TrisaNode.decision_hold``); an operator's
      decision (``transfers resolve``) is delivered at the next pass.

Signals
    SIGTERM and SIGINT: every worker gets SIGTERM (graceful stop); the supervisor waits
    for them (at most ``stop_timeout``, then SIGKILL) and exits 0 when all stopped
    cleanly. SIGHUP is passed to every worker: ``serve`` re-reads its ``--deny-list``,
    a worker without a reload (``gds serve``, ``serve`` without a deny-list) ignores
    it. If the supervisor is killed, its workers get SIGTERM from the kernel.

Restarts
    A worker that exits while the supervisor is not stopping is started again after a
    back-off (0.5 s, doubling up to 10 s). A crash that happens before the worker is
    ready or within ``quick`` seconds of its start is a *quick crash*; after
    ``max_quick_crashes`` quick crashes of one worker in a row the supervisor stops
    every worker and exits 1 with one line. At start the workers start one at a time
    (the first creates a new store alone); if one cannot start (bad certificate,
    unusable store...), the others are stopped and the supervisor exits 1 with that
    worker's one-line error.

What is logged: one line on stderr per worker start (``worker I (pid P) serving on
port N``) and per exit (``exited unexpectedly (killed by SIGKILL); restarting in 0.5 s``
or, when stopping, ``stopped (exit status 0)``), one line on stdout when all workers
serve, one per signal passed on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigurationError, TrisaPeerError
from .limits import share_port_with_siblings
from .logsetup import JsonFormatter
from .netutil import split_host_port

__all__ = ["MAX_WORKERS", "WorkerContext", "reserve_port", "supervise"]

#: More workers than this is a mistake (the machine's cores are the useful number).
MAX_WORKERS = 64

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerContext:
    """What a worker's ``run`` function gets: its index, the address to listen on
    (the reserved port, also when the command line said port 0), and how to say it is
    ready."""

    index: int
    listen: str
    _ready_fd: int = field(repr=False)

    @property
    def runs_pending(self) -> bool:
        """Whether this worker runs the node's pending-resolution loop (worker 0)."""
        return self.index == 0

    def ready(self, port: int) -> None:
        """Tell the supervisor this worker serves (call once, after binding)."""
        _write_line(self._ready_fd, f"R {port}")


def _write_line(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (text.replace("\n", " ")[:2000] + "\n").encode())


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """Bind ``listen`` exclusively, then open it to ``SO_REUSEPORT`` siblings of the
    same user; returns the reservation socket and ``HOST:PORT`` with the bound port.
    Raises :class:`ConfigurationError` (one line) when the port is taken."""
    try:
        host, port = split_host_port(listen, allow_port_zero=True, default_host="127.0.0.1")
    except ValueError as exc:
        raise ConfigurationError(f"cannot listen on {listen}: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {listen}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind(address)  # plain: fails if anything holds the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        sock.close()
        why = ("address already in use" if exc.errno == errno.EADDRINUSE
               else exc.strerror or str(exc))
        raise ConfigurationError(f"cannot listen on {listen}: {why}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"{shown}:{bound}"


@dataclass
class _Worker:
    index: int
    pid: int = 0
    pipe: int = -1
    started: float = 0.0
    ready: bool = False
    alive: bool = False
    quick_crashes: int = 0
    restart_at: float | None = None
    error: str = ""
    buffer: bytes = b""


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class _Supervisor:
    def __init__(self, *, workers: int, listen: str, run: Callable[[WorkerContext], int],
                 prog: str, quick: float, max_quick_crashes: int, start_timeout: float,
                 stop_timeout: float, backoff: float, max_backoff: float,
                 start_failed: Callable[[], None] | None) -> None:
        self.count = workers
        self.start_failed = start_failed
        self.run = run
        self.prog = prog
        self.quick = quick
        self.max_quick_crashes = max_quick_crashes
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.reservation, self.listen = reserve_port(listen)
        self.workers = [_Worker(i) for i in range(workers)]
        self.signals: list[int] = []
        self.pid = os.getpid()
        self.wake: tuple[int, ...] = ()

    # ------------------------------------------------------------ output

    def say(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ workers

    def spawn(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(read_fd)
            _child(worker.index, self.listen, write_fd, self.run, self.reservation,
                   self.pid, [*self.wake, *(w.pipe for w in self.workers if w.pipe >= 0)])
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker.pid, worker.pipe, worker.started = pid, read_fd, time.monotonic()
        worker.ready, worker.alive, worker.restart_at = False, True, None
        worker.error, worker.buffer = "", b""

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.pipe >= 0:
            os.close(worker.pipe)
            worker.pipe = -1

    def read_pipe(self, worker: _Worker) -> None:
        try:
            chunk = os.read(worker.pipe, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe(worker)
            return
        worker.buffer += chunk
        while b"\n" in worker.buffer:
            line, worker.buffer = worker.buffer.split(b"\n", 1)
            text = line.decode(errors="replace")
            if text.startswith("R ") and not worker.ready:
                worker.ready = True
                self.say(f"worker {worker.index} (pid {worker.pid}) serving on "
                         f"port {text[2:].strip()}")
            elif text.startswith("E "):
                worker.error = text[2:]

    def reap(self) -> list[tuple[_Worker, int]]:
        """Workers that exited since the last call, with their wait status."""
        done: list[tuple[_Worker, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return done
            if pid == 0:
                return done
            for worker in self.workers:
                if worker.pid == pid and worker.alive:
                    worker.alive = False
                    if worker.pipe >= 0:  # whatever it wrote last (its error line)
                        self.read_pipe(worker)
                        self._close_pipe(worker)
                    done.append((worker, status))

    def signal_all(self, sig: int) -> int:
        sent = 0
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)
                    sent += 1
        return sent

    def stop_all(self) -> bool:
        """SIGTERM every worker, wait (then SIGKILL); True if all exited with 0."""
        self.signal_all(signal.SIGTERM)
        clean = True
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        while any(w.alive for w in self.workers):
            for worker, status in self.reap():
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    clean = False
                self.say(f"worker {worker.index} (pid {worker.pid}) stopped "
                         f"({_exit_text(status)})")
            if not killed and time.monotonic() > deadline:
                killed = True
                clean = False
                self.say(f"workers still running after {self.stop_timeout:g} s: killing them")
                self.signal_all(signal.SIGKILL)
            time.sleep(0.02)
        for worker in self.workers:
            self._close_pipe(worker)
        return clean

    # ------------------------------------------------------------ main loop

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def main(self) -> int:
        wake_r, wake_w = os.pipe()
        self.wake = (wake_r, wake_w)
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            self.reservation.close()

    def _fail_start(self, worker: _Worker, why: str) -> int:
        self.stop_all()
        if self.start_failed is not None:
            self.start_failed()
        raise ConfigurationError(f"worker {worker.index} could not start: {why}")

    def _loop(self, wake_r: int) -> int:
        starting, started = True, 0
        self.spawn(self.workers[0])
        while True:
            pipes = [w.pipe for w in self.workers if w.pipe >= 0]
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select([wake_r, *pipes], [], [], 0.2)
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            for worker in self.workers:
                if worker.pipe >= 0 and worker.pipe in readable:
                    self.read_pipe(worker)
            now = time.monotonic()
            # signals first: a stop during start-up stops what started
            while self.signals:
                sig = self.signals.pop(0)
                if sig == signal.SIGHUP:
                    sent = self.signal_all(signal.SIGHUP)
                    self.say(f"SIGHUP passed to {sent} worker(s)")
                    continue
                self.say(f"{signal.Signals(sig).name}: stopping {self.count} worker(s)")
                return 0 if self.stop_all() else 1
            for worker, status in self.reap():
                why = worker.error or _exit_text(status)
                if starting:
                    return self._fail_start(worker, why)
                lived = now - worker.started
                if not worker.ready or lived < self.quick:
                    worker.quick_crashes += 1
                else:
                    worker.quick_crashes = 0
                if worker.quick_crashes >= self.max_quick_crashes:
                    self.stop_all()
                    raise ConfigurationError(
                        f"worker {worker.index} crashed {worker.quick_crashes} times in a "
                        f"row within {self.quick:g} s of starting ({why}); giving up")
                delay = min(self.max_backoff,
                            self.backoff * 2 ** max(worker.quick_crashes - 1, 0))
                worker.restart_at = now + delay
                self.say(f"worker {worker.index} (pid {worker.pid}) exited unexpectedly "
                         f"({why}); restarting in {delay:g} s")
            if starting:  # one at a time: the first creates a new store alone
                current = self.workers[started]
                if current.ready:
                    started += 1
                    if started == self.count:
                        starting = False
                        print(f"{self.prog}: {self.count} workers serving on {self.listen} "
                              f"(supervisor pid {self.pid})", flush=True)
                    else:
                        self.spawn(self.workers[started])
                elif now - current.started > self.start_timeout:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(current.pid, signal.SIGKILL)
                    return self._fail_start(
                        current, f"not ready after {self.start_timeout:g} s")
                continue
            for worker in self.workers:
                if worker.restart_at is not None and now >= worker.restart_at:
                    self.spawn(worker)
                elif worker.alive and not worker.ready and \
                        now - worker.started > self.start_timeout:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                    worker.error = f"not ready after {self.start_timeout:g} s"


def _die_with(parent: int) -> None:
    """SIGTERM this process when the supervisor dies (Linux); exit now if it already
    did."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _tag_logs(index: int) -> None:
    """Every log line of this worker names it: ``[worker I pid P]``."""
    tag = f"[worker {index} pid {os.getpid()}]"
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):  # --log-format json: a field
            handler.setFormatter(JsonFormatter(worker=index))
            continue
        fmt = handler.formatter._fmt if handler.formatter is not None else None
        fmt = fmt or "%(levelname)s %(name)s: %(message)s"
        if "%(message)s" in fmt:
            fmt = fmt.replace("%(message)s", f"{tag} %(message)s")
        handler.setFormatter(logging.Formatter(fmt))


def _child(index: int, listen: str, ready_fd: int, run: Callable[[WorkerContext], int],
           reservation: socket.socket, parent: int, inherited: list[int]) -> None:
    """A forked worker: reset what the supervisor set, share the port, run, exit."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a worker with a reload sets its own
        reservation.close()
        for fd in inherited:  # the supervisor's wake-up pipe, the others' ready pipes
            with contextlib.suppress(OSError):
                os.close(fd)
        _die_with(parent)
        share_port_with_siblings()
        _tag_logs(index)
        code = int(run(WorkerContext(index, listen, ready_fd)) or 0)
    except TrisaPeerError as exc:
        _write_line(ready_fd, f"E {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:  # a bug: keep its traceback for the operator
        traceback.print_exc()
        _write_line(ready_fd, f"E unexpected {type(exc).__name__}: {exc}")
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def supervise(
    *,
    workers: int,
    listen: str,
    run: Callable[[WorkerContext], int],
    prog: str = "trisa-peer",
    quick: float = 10.0,
    max_quick_crashes: int = 5,
    start_timeout: float = 60.0,
    stop_timeout: float = 30.0,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    start_failed: Callable[[], None] | None = None,
) -> int:
    """Run ``run(WorkerContext)`` in ``workers`` forked processes sharing ``listen``
    (see the module docstring); returns the exit status (0 after a clean stop).
    ``start_failed()`` runs when the workers could not all start (after they stopped),
    e.g. to remove a store file the attempt created.
    Raises :class:`ConfigurationError` (one line) when the port is taken, a worker
    cannot start, or one keeps crashing."""
    if not sys.platform.startswith("linux"):
        raise ConfigurationError("--workers needs Linux (SO_REUSEPORT, PR_SET_PDEATHSIG)")
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigurationError(f"--workers must be 1 to {MAX_WORKERS}, not {workers}")
    if threading.active_count() > 1:  # a fork copies one thread: locks others hold stay held
        raise ConfigurationError("--workers: the supervisor must fork before any thread starts")
    return _Supervisor(
        workers=workers, listen=listen, run=run, prog=prog, quick=quick,
        max_quick_crashes=max_quick_crashes, start_timeout=start_timeout,
        stop_timeout=stop_timeout, backoff=backoff, max_backoff=max_backoff,
        start_failed=start_failed,
    ).main()
