"""Connection and process limits of the servers (``serve`` and ``gds serve``).

What gRPC Python 1.85 honours, measured on loopback (a bare server, 10 raw TCP
connections, 5 TLS-only connections, 5 idle channels):

* ``grpc.server_handshake_timeout_ms`` closes a connection that has not finished its
  handshake in time: a TCP connection that never starts TLS (10/10 closed; 0/10
  without the option), a TLS connection that never sends the HTTP/2 preface (5/5), and
  on a plaintext server a connection that never sends the preface (10/10).
* ``grpc.max_connection_idle_ms`` closes (HTTP/2 GOAWAY "connection idle") an
  established connection with no call open for that long (5/5 idle channels closed;
  a channel reconnects by itself on its next call). An open call, e.g. a
  ``TransferStream``, keeps a connection busy, not idle.
* ``grpc.max_allowed_incoming_connections`` caps connections, but then refuses new
  peers while an attacker holds the cap: not used.

Defaults: :data:`DEFAULT_HANDSHAKE_TIMEOUT` (5 s) and :data:`DEFAULT_IDLE_TIMEOUT`
(300 s); ``$TRISA_PEER_HANDSHAKE_TIMEOUT`` / ``$TRISA_PEER_IDLE_TIMEOUT`` (seconds)
override them for every server in the process, an explicit argument overrides both.
``idle_timeout=0`` disables the idle limit; the handshake timeout cannot be disabled.

:func:`raise_open_files_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at
the start of a server: the default soft limit (often 1,024) is what an attacker's idle
connections would exhaust first.

Port sharing: every server sets ``grpc.so_reuseport`` to 0, so a second server started
by mistake on a port in use fails to bind instead of silently taking part of the
traffic. The one exception is a worker of ``--workers N``
(:mod:`trisa_peer.supervisor`): the supervisor reserves the port first and calls
:func:`share_port_with_siblings` in each forked worker only, never in its own process
and never from the environment, so no setting can turn sharing on in an unrelated
process (see the supervisor's docstring for why an outsider cannot join).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "ENV_HANDSHAKE_TIMEOUT",
    "ENV_IDLE_TIMEOUT",
    "check_seconds",
    "handshake_timeout",
    "idle_timeout",
    "port_shared",
    "raise_open_files_limit",
    "server_options",
    "share_port_with_siblings",
]

#: Seconds a new connection has to finish TCP → TLS → HTTP/2 preface.
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
#: Seconds an established connection may stay open with no call.
DEFAULT_IDLE_TIMEOUT = 300.0
ENV_HANDSHAKE_TIMEOUT = "TRISA_PEER_HANDSHAKE_TIMEOUT"
ENV_IDLE_TIMEOUT = "TRISA_PEER_IDLE_TIMEOUT"

_MIN_HANDSHAKE = 0.1
_MAX_SECONDS = 86_400.0

#: True only in a worker forked by :mod:`trisa_peer.supervisor` (never from a setting)
_port_shared = False


def share_port_with_siblings() -> None:
    """Let this process's servers bind with ``SO_REUSEPORT``: called by the supervisor
    in a forked worker only, after it reserved the port for its own workers."""
    global _port_shared
    _port_shared = True


def port_shared() -> bool:
    """Whether this process is a supervised worker that shares its port (see above)."""
    return _port_shared


def check_seconds(value: float | str, what: str, *, allow_zero: bool) -> float:
    """``value`` as seconds within the limits' range, or ConfigurationError naming
    ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}") from None
    if number != number or number > _MAX_SECONDS:  # NaN or absurd
        raise ConfigurationError(f"{what} must be at most {_MAX_SECONDS:g} seconds")
    if allow_zero and number == 0:
        return 0.0
    if number < _MIN_HANDSHAKE:
        floor = "0 (off) or " if allow_zero else ""
        raise ConfigurationError(f"{what} must be {floor}at least {_MIN_HANDSHAKE:g} seconds")
    return number


def _setting(value: float | None, env_name: str, what: str, default: float,
             *, allow_zero: bool) -> float:
    """``value``, else ``$env_name``, else ``default``; checked."""
    if value is not None:
        return check_seconds(value, what, allow_zero=allow_zero)
    env = os.environ.get(env_name)
    if env is not None:
        return check_seconds(env, f"${env_name}", allow_zero=allow_zero)
    return default


def handshake_timeout(value: float | None = None) -> float:
    """``value``, else ``$TRISA_PEER_HANDSHAKE_TIMEOUT``, else 5 s; checked (≥ 0.1 s)."""
    return _setting(value, ENV_HANDSHAKE_TIMEOUT, "handshake timeout",
                    DEFAULT_HANDSHAKE_TIMEOUT, allow_zero=False)


def idle_timeout(value: float | None = None) -> float:
    """``value``, else ``$TRISA_PEER_IDLE_TIMEOUT``, else 300 s; 0 means no limit."""
    return _setting(value, ENV_IDLE_TIMEOUT, "idle timeout", DEFAULT_IDLE_TIMEOUT,
                    allow_zero=True)


def server_options(
    *, handshake: float | None = None, idle: float | None = None
) -> list[tuple[str, int]]:
    """The gRPC server options every trisa-peer server uses.

    ``grpc.so_reuseport`` is off (gRPC sets it by default on Linux: a second server on
    a port already in use would start and silently share the traffic), except in a
    supervised worker (:func:`port_shared`); the handshake and idle limits are those
    of :func:`handshake_timeout` and :func:`idle_timeout`.
    """
    options = [
        ("grpc.so_reuseport", 1 if _port_shared else 0),
        ("grpc.server_handshake_timeout_ms", round(handshake_timeout(handshake) * 1000)),
    ]
    idle_s = idle_timeout(idle)
    if idle_s:
        options.append(("grpc.max_connection_idle_ms", round(idle_s * 1000)))
    return options


def _nr_open() -> int | None:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text().strip())
    except (OSError, ValueError):
        return None


def raise_open_files_limit() -> str:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns one line saying what
    the limit is now, for the caller to log once the server has started. Never raises:
    a platform without the ``resource`` module, or a refusal, keeps the limit and the
    line says so."""
    try:
        import resource
    except ImportError:  # not POSIX
        return "open files limit unknown (no resource module)"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:  # Linux refuses more than fs.nr_open
        target = _nr_open() or soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            return f"open files limit stays at {soft} (hard {hard}): cannot raise it: {exc}"
        return f"open files limit raised from {soft} to the hard limit {target}"
    return f"open files limit {soft} (the hard limit)"
