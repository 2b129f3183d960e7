"""``trisa-peer serve``, ``check`` and ``send``: running and using a verified TRISA node."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..clock import utcnow
from ..controls import DEFAULT_GRACE, DEFAULT_MAX_LOOKUPS
from ..envelope.validate import DEFAULT_TIMESTAMP_WINDOW
from ..errors import ConfigurationError, HandshakeError, TrisaPeerError, UsageError
from ..limits import raise_open_files_limit
from ..network.store import DEFAULT_KEEP_REJECTIONS, DEFAULT_MAX_REJECTIONS
from ..reload import DEFAULT_RELOAD_INTERVAL, expiry_notice
from ..storage.url import parse_url, redact
from .api_args import add_api_args, check_api_args, start_api
from .db import add_db_args
from .observe import add_metrics_args, metrics_for_workers, node_sources, start_metrics
from .options import (
    add_directory_args,
    add_identity_args,
    add_limit_args,
    add_option,
    apply_config,
    count,
    load_material,
    non_negative_float,
    open_directory,
    positive_float,
    positive_int,
    require,
    resolve_map,
    seconds_flag,
)
from .runner import stop_event, wait_until_set
from .webhook_args import add_webhook_args, webhook_handler

__all__ = ["print_pending", "register", "register_transfers"]

_NODE_OPTIONS = [
    "listen", "cert", "key", "password", "password_file", "trust", "crl", "resolve", "directory",
    "directory_insecure", "directory_ca", "directory_timeout", "db", "db_password_file",
    "policy",
]

#: ``serve``-only options that a ``--config`` file and ``TRISA_PEER_*`` may set too, each
#: checked by its flag's own type; argparse leaves them None so the file can fill them
_SERVE_TYPES: dict[str, Any] = {
    "timestamp_window": positive_float, "keep_rejections": positive_float,
    "max_rejections": count, "grace": non_negative_float,
    "max_directory_lookups": positive_int, "peer_rate": non_negative_float,
    "peer_burst": count, "peer_concurrency": count,
    "handshake_timeout": seconds_flag("handshake timeout", allow_zero=False),
    "idle_timeout": seconds_flag("idle timeout", allow_zero=True),
    "reload_interval": positive_float, "workers": positive_int,
    "retention_days": positive_float,
}
_SERVE_DEFAULTS: dict[str, Any] = {
    "timestamp_window": DEFAULT_TIMESTAMP_WINDOW.total_seconds(),
    "keep_rejections": DEFAULT_KEEP_REJECTIONS.days, "max_rejections": DEFAULT_MAX_REJECTIONS,
    "grace": DEFAULT_GRACE, "max_directory_lookups": DEFAULT_MAX_LOOKUPS, "peer_rate": 0.0,
    "peer_burst": 0, "peer_concurrency": 0, "reload_interval": DEFAULT_RELOAD_INTERVAL,
    "workers": 1,
}
_SERVE_OPTIONS = [*_SERVE_TYPES, "deny_list"]

POLICIES = ("review", "rvasp", "accept", "reject")
#: what ``serve`` does without ``--policy``: decide nothing on its own
DEFAULT_POLICY = "review"


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run a TRISA endpoint that enforces all eight handshake steps",
        description="Run a TRISA endpoint: mTLS with a required client certificate, every "
        "caller verified against the TRISA roots and bound to its directory record.",
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    add_identity_args(serve)
    add_directory_args(serve)
    add_db_args(serve, help="transfer store: a file path, sqlite:///PATH or "
                "postgresql://HOST/DB (default in-memory)")
    serve.add_argument("--policy", choices=POLICIES,
                       help="how to answer transfers: review (default: hold each as pending "
                       "until an operator runs 'trisa-peer transfers resolve'), rvasp (the "
                       "demo's robot-VASP wallets; demo names only), accept, reject")
    add_limit_args(serve)
    serve.add_argument("--timestamp-window", metavar="SECONDS", type=positive_float,
                       help="refuse envelopes whose timestamp is further than this from "
                       "now, either way (default 900 = 15 minutes)")
    serve.add_argument("--keep-rejections", metavar="DAYS", type=positive_float,
                       help="keep records of refused envelopes this long (default 30)")
    serve.add_argument("--max-rejections", metavar="N", type=count,
                       help="keep at most N records of refused envelopes (default 10000)")
    serve.add_argument("--reload-interval", metavar="SECONDS", type=positive_float,
                       help="look for new identity files (and a new --password-file) this "
                       f"often; SIGHUP looks at once (default {DEFAULT_RELOAD_INTERVAL:g})")
    serve.add_argument("--workers", metavar="N", type=positive_int,
                       help="run N server processes on the port, sharing --db (default 1; "
                       "see 'Deployment' in the README)")
    serve.add_argument("--retention-days", metavar="DAYS", type=positive_float,
                       help="purge the stored envelopes (customers' personal data) of "
                       "transfers last active more than DAYS days ago, hourly, keeping their "
                       "audit record; pending transfers are kept (default: keep everything; "
                       "see 'transfers purge' and 'transfers export')")
    serve.add_argument("--crl-fetch", action="store_true",
                       help="also check peers' certificates against the CRLs at their CRL "
                       "distribution points (http://), fetched and cached until nextUpdate; "
                       "an unavailable or stale CRL fails closed (see trisa_peer/crlfetch.py)")
    serve.add_argument("--crl-fetch-interval", metavar="SECONDS", type=positive_float,
                       default=3600.0,
                       help="with --crl-fetch: refetch each CRL this often, and at its "
                       "nextUpdate (default %(default)s)")
    _add_control_args(serve)
    add_api_args(serve)
    add_metrics_args(serve)
    add_webhook_args(serve)
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check",
        help="dial a peer and print the eight handshake steps",
        description="Look the peer up in the directory, dial it with its registered "
        "certificate pinned, exchange keys, and print the eight steps. Exit 0 only when "
        "the peer passes all of them.",
    )
    _peer_arg(check, help="the peer's common name", aliases=[])
    add_identity_args(check)
    add_directory_args(check)
    check.set_defaults(func=_check)

    send = sub.add_parser(
        "send",
        help="send a Travel Rule payload to a peer and print the reply",
        description="Seal PAYLOAD (protojson trisa.api.v1beta1.Payload: identity + "
        "transaction) for the peer, transfer it over a verified channel, print the reply.",
    )
    _peer_arg(send, help="the beneficiary VASP's common name", aliases=["--to"])
    send.add_argument("--payload", required=True, metavar="FILE.json")
    add_identity_args(send)
    add_directory_args(send)
    add_db_args(send, help="transfer store: a file path, sqlite:///PATH or "
                "postgresql://HOST/DB (default in-memory)")
    send.set_defaults(func=_send)


def register_transfers(tsub: Any) -> None:
    """``transfers resend`` and ``transfers resolve`` (``list``/``show``: cli/envelope.py)."""
    resend = tsub.add_parser(
        "resend",
        help="send a stored outgoing envelope again (the same bytes, to the same peer)",
        description="Send the stored outgoing envelope ID again, byte for byte, to the peer "
        "it was sent to, after steps 1, 6 and 7 pass again on a fresh directory answer. "
        "Refused if the peer's registered key changed since the envelope was sealed.",
    )
    _envelope_id_arg(resend)
    add_identity_args(resend)
    add_directory_args(resend)
    add_db_args(resend, help="the node's transfer store (path or URL)")
    resend.set_defaults(func=_resend)
    resolve = tsub.add_parser(
        "resolve",
        help="decide a pending incoming transfer (the node delivers the decision)",
        description="Record the decision on pending incoming transfer ID in the store; the "
        "running node (or the next one started on this store) delivers it to the "
        "originator, with retries until the reply window closes.",
    )
    _envelope_id_arg(resolve)
    add_db_args(resolve, required=True)
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept", action="store_true", help="accept the transfer")
    how.add_argument("--reject", metavar="CODE",
                     help="reject with a TRISA error code (name, e.g. COMPLIANCE_CHECK_FAIL, "
                     "or number)")
    resolve.add_argument("--message", default="the transfer was rejected on review",
                         help="message of a rejection")
    resolve.set_defaults(func=_resolve)


def _peer_arg(parser: Any, *, help: str, aliases: list[str]) -> None:
    """``--peer COMMON_NAME`` (old spellings: ``check NAME``, ``send --to NAME``)."""
    positional = "COMMON_NAME" if not aliases else None
    add_option(parser, "--peer", aliases=aliases, positional=positional, required=True,
               metavar="COMMON_NAME", help=help)


def _envelope_id_arg(parser: Any) -> None:
    """``--id ID`` of a stored transfer (old spelling: a positional ID)."""
    add_option(parser, "--id", dest="envelope_id", positional="ID", required=True,
               metavar="ID", help="envelope id of the transfer")


def _error_code(text: str) -> int:
    from ..network.decide import error_code

    try:
        return error_code(text)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _age(created_at: str, now: Any) -> str:
    from datetime import UTC, datetime

    start = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    seconds = int((now - start).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def print_pending(store: Any) -> None:
    """The pending transfers of a store with their age and deadline (``transfers list``)."""
    from ..clock import utcnow
    from ..network.node import shown_resolution

    rows = store.pending()
    if not rows:
        return
    now = utcnow()
    print(f"\npending: {len(rows)}")
    print(f"{'ENVELOPE ID':36}  {'PEER':24} {'DIR':8} {'AGE':>5}  {'DEADLINE':30} DECISION")
    for row in rows:
        shown = (shown_resolution(row.resolution) if row.resolution
                 else f"resolver {row.resolver}" if row.resolver else "-")
        print(f"{row.envelope_id:36}  {row.peer:24} {row.direction:8} "
              f"{_age(row.created_at, now):>5}  {row.deadline or '-':30} {shown}")


def _resolve(args: argparse.Namespace) -> int:
    from ..network.decide import record_decision
    from ..network.store import open_store

    code = _error_code(args.reject) if args.reject else 0
    store = open_store(args.db, password_file=args.db_password_file, existing=True)
    try:
        row = record_decision(store, args.envelope_id, code=code, message=args.message)
    finally:
        store.close()
    what = "accept" if args.accept else f"reject {code}"
    print(f"{row.envelope_id}: {what} recorded; the node delivers it to {row.peer} "
          f"(retried until {row.deadline or 'delivered'})")
    return 0


def _resend(args: argparse.Namespace) -> int:
    from ..network.node import TransferError

    apply_config(args, _NODE_OPTIONS)
    require(args, "db")
    from ..network.store import open_store

    open_store(args.db, password_file=args.db_password_file, existing=True).close()
    node = _node(args, listen="127.0.0.1:0", policy="reject")
    try:
        result = node.resend(args.envelope_id)
    except TransferError as exc:
        raise ConfigurationError(str(exc)) from exc
    finally:
        node.close()
    return _print_result(result)


def _add_control_args(serve: Any) -> None:
    group = serve.add_argument_group("peer controls")
    group.add_argument("--grace", type=non_negative_float, metavar="SECONDS",
                       help="while the directory is unreachable, keep trusting a known peer "
                       "this long after the decision TTL (300 s) of its last positive answer "
                       f"(default {DEFAULT_GRACE:g}; 0: none)")
    group.add_argument("--max-directory-lookups", type=positive_int, metavar="N",
                       help="concurrent directory look-ups for undecided callers; more are "
                       f"refused at once with UNAVAILABLE (default {DEFAULT_MAX_LOOKUPS})")
    group.add_argument("--peer-rate", type=non_negative_float, metavar="RPS",
                       help="requests per second per verified peer (default 0: unlimited)")
    group.add_argument("--peer-burst", type=count, metavar="N",
                       help="burst above --peer-rate (default: the rate, at least 1)")
    group.add_argument("--peer-concurrency", type=count, metavar="N",
                       help="requests in flight per verified peer (default 0: unlimited)")
    group.add_argument("--deny-list", metavar="FILE",
                       help="common names and SHA-256 fingerprints refused whatever the "
                       "directory says; re-read when it changes and on SIGHUP")


def _controls(args: argparse.Namespace) -> Any:
    from ..controls import PeerControls

    return PeerControls(
        grace=args.grace, max_lookups=args.max_directory_lookups, rate=args.peer_rate,
        burst=args.peer_burst, concurrent=args.peer_concurrency,
        deny_list=Path(args.deny_list) if args.deny_list else None,
    )


def _node(args: argparse.Namespace, *, listen: str, policy: str, controls: Any = None,
          **node_kw: Any) -> Any:
    from ..network.node import TrisaNode
    from ..network.store import open_store

    material = load_material(args)
    directory = open_directory(args)
    retention: dict[str, Any] = {}
    window: dict[str, Any] = {}
    if getattr(args, "keep_rejections", None) is not None:  # serve only
        retention = {"keep_rejections": timedelta(days=args.keep_rejections),
                     "max_rejections": args.max_rejections}
        window = {"timestamp_window": timedelta(seconds=args.timestamp_window)}
    store = open_store(getattr(args, "db", None) or ":memory:",
                       password_file=getattr(args, "db_password_file", None), **retention)
    common_name = material.current().identity.common_name
    return TrisaNode(
        material,
        directory,
        store=store,
        handler=getattr(args, "webhook_handler", None) or _handler(policy, common_name),
        listen=listen,
        resolve=resolve_map(args.resolve),
        handshake_timeout=getattr(args, "handshake_timeout", None),
        idle_timeout=getattr(args, "idle_timeout", None),
        **window,
        controls=controls,
        **({"reload_interval": args.reload_interval}
           if getattr(args, "reload_interval", None) else {}),
        **node_kw,
    )


def _warn_if_directory_unreachable(directory: Any, endpoint: str) -> None:
    """One line on stderr when the directory does not answer at start: the node serves,
    but refuses every peer it has not decided yet until the directory answers."""
    status = getattr(directory, "status", None)
    if status is None:  # not a DirectoryClient: nothing to probe
        return
    try:
        status()
    except TrisaPeerError as exc:
        print(f"trisa-peer: warning: the directory {endpoint} does not answer ({exc}); "
              "peers are refused until it does", file=sys.stderr, flush=True)


def _handler(policy: str, common_name: str) -> Any:
    from ..network.handler import Accept, Pending, Reject

    if policy == "review":
        return lambda incoming: Pending(message="held for review by the beneficiary")
    if policy == "accept":
        return lambda incoming: Accept()
    if policy == "reject":
        return lambda incoming: Reject(50, "this node rejects every transfer")
    # The demo's robot-VASP rules are test material: imported only when asked for.
    from ..testing.policies import rvasp_handler

    return rvasp_handler(common_name)


def _fresh_sqlite_file(location: str | None) -> str:
    """The SQLite file ``--db`` names if it does not exist yet (a failed start removes
    it again); "" otherwise (PostgreSQL, in-memory, an existing file)."""
    if not location:
        return ""
    url = parse_url(location)
    if url.backend != "sqlite" or url.in_memory or Path(url.path).exists():
        return ""
    return url.path


def _serve(args: argparse.Namespace) -> int:
    apply_config(args, [*_NODE_OPTIONS, *_SERVE_OPTIONS], types=_SERVE_TYPES,
                 defaults=_SERVE_DEFAULTS)
    require(args, "listen")
    check_api_args(args)
    args.webhook_handler = webhook_handler(args)  # checked before anything starts
    # One line per accept/reject decision is part of what an operator runs this for.
    logging.getLogger("trisa_peer").setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    files = raise_open_files_limit()  # what an attacker's idle connections would exhaust
    if args.workers > 1:
        with metrics_for_workers(args):  # --metrics-listen: one scrape sees every worker
            return _supervise(args, files)
    return _serve_one(args, files)


def _supervise(args: argparse.Namespace, files: str) -> int:
    """``--workers N``: N forked workers on one port and one store (supervisor.py)."""
    from ..network.node import WORKER_DECISION_HOLD
    from ..supervisor import WorkerContext, supervise

    if not args.db:
        raise UsageError("--workers needs --db: the workers share one transfer store")
    fresh_db = _fresh_sqlite_file(args.db)

    def run(worker: WorkerContext) -> int:
        return _serve_one(args, files, worker=worker, pending_loop=worker.runs_pending,
                          decision_hold=WORKER_DECISION_HOLD)

    def start_failed() -> None:  # leave nothing behind from a start that failed
        if fresh_db:
            for suffix in ("", "-wal", "-shm", "-holders"):
                Path(f"{fresh_db}{suffix}").unlink(missing_ok=True)

    return supervise(workers=args.workers, listen=args.listen, run=run,
                     start_failed=start_failed)


def _serve_one(args: argparse.Namespace, files: str, *, worker: Any = None,
               **node_kw: Any) -> int:
    listen = worker.listen if worker is not None else args.listen
    fresh_db = _fresh_sqlite_file(args.db)
    policy = args.policy or ("webhook" if args.webhook else DEFAULT_POLICY)
    node = _node(args, listen=listen, policy=policy,
                 controls=_controls(args), **node_kw)
    stop_metrics: Callable[[], None] = lambda: None  # noqa: E731
    try:
        stop_metrics = start_metrics(args, **node_sources(node), worker=worker)
        port = node.start()
        api = start_api(args, node)
    except TrisaPeerError:
        stop_metrics()
        node.close()
        if fresh_db:  # leave nothing behind from a start that failed
            for suffix in ("", "-wal", "-shm", "-holders"):
                Path(f"{fresh_db}{suffix}").unlink(missing_ok=True)
        raise
    deny = node.server.authenticator.deny

    def hangup(*_: Any) -> None:  # SIGHUP: re-read the identity files and deny-list now
        node.reload()
        if deny is not None:
            deny.reload()

    signal.signal(signal.SIGHUP, hangup)
    logging.getLogger("trisa_peer.limits").info("%s", files)
    print(f"trisa-peer: {node.common_name} serving on port {port} "
          f"(policy {policy})", flush=True)
    if policy == "review":
        logging.getLogger("trisa_peer.network").warning(
            "no decision hook configured (--policy): every incoming transfer is held as "
            "pending for review; decide with 'trisa-peer transfers resolve --id ID --db %s'",
            redact(args.db) if args.db else "FILE")
    stop = stop_event()
    _warn_if_directory_unreachable(node.directory, args.directory)
    purger = _retention(args, node, worker)
    if worker is not None:
        worker.ready(port)
    wait_until_set(stop)
    if api is not None:
        api.stop()
    if purger is not None:
        purger.stop()
    node.stop(grace=5.0)
    node.close()
    stop_metrics()
    return 0


def _retention(args: argparse.Namespace, node: Any, worker: Any) -> Any:
    """``--retention-days``: the periodic purge, in one process only (worker 0)."""
    if not getattr(args, "retention_days", None):
        return None
    if worker is not None and not worker.runs_pending:
        return None
    from ..network.retention import RetentionPurger

    purger = RetentionPurger(node.store, older_than=timedelta(days=args.retention_days))
    purger.start()
    return purger


def _check(args: argparse.Namespace) -> int:
    from ..handshake import HandshakeTrace
    from ..steps import HandshakeStep

    apply_config(args, _NODE_OPTIONS)
    node = _node(args, listen="127.0.0.1:0", policy="reject")
    trace = HandshakeTrace()
    print(f"checking {args.peer} against directory {args.directory}")
    notice = expiry_notice(node.material.current().identity.leaf, utcnow())
    if notice is not None:  # within 30 days of expiry (an expired one does not load)
        print(f"warning: {notice}")
    ok = False
    try:
        with trace.step(HandshakeStep.EXCHANGE) as note:
            node.connect(args.peer, trace=trace)
            node.exchange_keys(args.peer)
            note[0] = "KeyExchange over the verified channel succeeded"
        ok = True
    except HandshakeError:
        pass
    finally:
        node.close()
    print(trace.render())
    failed = trace.failed()
    if ok and trace.ok:
        bound = next((r.detail for r in trace.records
                      if r.step == HandshakeStep.BIND_CLIENT_RECORD), "")
        if bound.startswith("claimed by the peer: our certificate"):
            print(f"{args.peer}: all eight steps passed "
                  "(steps 3 and 4 as the peer claims them)")
        else:
            print(f"{args.peer}: every step this node can observe passed; steps 3 "
                  "and 4 are the peer's and it claims nothing about them")
        return 0
    reason = failed.detail if failed else "not every step was completed"
    print(f"{args.peer}: REFUSED: {reason}", file=sys.stderr)
    return 1


def _send(args: argparse.Namespace) -> int:
    from ..network.node import TransferError

    apply_config(args, _NODE_OPTIONS)
    payload = _read_payload(Path(args.payload))
    node = _node(args, listen="127.0.0.1:0", policy="reject")
    try:
        result = node.send(args.peer, payload)
    except TransferError as exc:
        raise ConfigurationError(str(exc)) from exc
    finally:
        node.close()
    return _print_result(result)


def _print_result(result: Any) -> int:
    from google.protobuf import json_format

    from .._pb.trisa.api.v1beta1 import api_pb2

    out: dict[str, Any] = {
        "envelope_id": result.envelope_id,
        "peer": result.peer,
        "state": result.state,
        "transfer_state": api_pb2.TransferState.Name(result.transfer_state),
    }
    if result.error is not None:
        out["error"] = json_format.MessageToDict(result.error, preserving_proto_field_name=True)
    if result.payload is not None:
        out["payload"] = json_format.MessageToDict(result.payload,
                                                   preserving_proto_field_name=True)
    import json

    print(json.dumps(out, indent=2))
    return 0 if result.error is None else 3


def _read_payload(path: Path) -> Any:
    from .._pb.trisa.api.v1beta1 import api_pb2
    from .envelope import parse_protojson

    return parse_protojson(path, api_pb2.Payload(), "Payload")
