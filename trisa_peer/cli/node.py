"""``trisa-peer serve``, ``check`` and ``send``: running and using a verified TRISA node."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from ..errors import ConfigurationError, HandshakeError, TrisaPeerError
from ..limits import add_limit_args, raise_open_files_limit
from .options import (
    add_directory_args,
    add_identity_args,
    apply_config,
    load_material,
    open_directory,
    require,
    resolve_map,
)

__all__ = ["register"]

_NODE_OPTIONS = [
    "listen", "cert", "key", "password", "trust", "crl", "resolve", "directory",
    "directory_insecure", "directory_ca", "directory_timeout", "db", "policy",
]

POLICIES = ("rvasp", "accept", "reject")


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
    serve.add_argument("--db", metavar="FILE", help="transfer store (SQLite; default in-memory)")
    serve.add_argument("--policy", choices=POLICIES,
                       help="how to answer transfers: rvasp (TestNet robot wallets, default), "
                       "accept, reject")
    add_limit_args(serve)
    serve.add_argument("--timestamp-window", metavar="SECONDS", type=_positive, default=900.0,
                       help="refuse envelopes whose timestamp is further than this from "
                       "now, either way (default 900 = 15 minutes)")
    serve.add_argument("--keep-rejections", metavar="DAYS", type=_positive, default=30.0,
                       help="keep records of refused envelopes this long (default 30)")
    serve.add_argument("--max-rejections", metavar="N", type=_count, default=10_000,
                       help="keep at most N records of refused envelopes (default 10000)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check",
        help="dial a peer and print the eight handshake steps",
        description="Look COMMON_NAME up in the directory, dial it with its registered "
        "certificate pinned, exchange keys, and print the eight steps. Exit 0 only when "
        "the peer passes all of them.",
    )
    check.add_argument("common_name", metavar="COMMON_NAME")
    add_identity_args(check)
    add_directory_args(check)
    check.set_defaults(func=_check)

    send = sub.add_parser(
        "send",
        help="send a Travel Rule payload to a peer and print the reply",
        description="Seal PAYLOAD (protojson trisa.api.v1beta1.Payload: identity + "
        "transaction) for the peer, transfer it over a verified channel, print the reply.",
    )
    send.add_argument("--to", required=True, metavar="COMMON_NAME")
    send.add_argument("--payload", required=True, metavar="FILE.json")
    add_identity_args(send)
    add_directory_args(send)
    send.add_argument("--db", metavar="FILE", help="transfer store (SQLite; default in-memory)")
    send.set_defaults(func=_send)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _node(args: argparse.Namespace, *, listen: str, policy: str) -> Any:
    from ..network.node import TrisaNode
    from ..network.store import TransferStore

    material = load_material(args)
    directory = open_directory(args)
    retention: dict[str, Any] = {}
    window: dict[str, Any] = {}
    if getattr(args, "keep_rejections", None) is not None:  # serve only
        retention = {"keep_rejections": timedelta(days=args.keep_rejections),
                     "max_rejections": args.max_rejections}
        window = {"timestamp_window": timedelta(seconds=args.timestamp_window)}
    store = TransferStore(getattr(args, "db", None) or ":memory:", **retention)
    common_name = material.current().identity.common_name
    return TrisaNode(
        material,
        directory,
        store=store,
        handler=_handler(policy, common_name),
        listen=listen,
        resolve=resolve_map(args.resolve),
        handshake_timeout=getattr(args, "handshake_timeout", None),
        idle_timeout=getattr(args, "idle_timeout", None),
        **window,
    )


def _handler(policy: str, common_name: str) -> Any:
    from ..network.handler import Accept, Reject

    if policy == "accept":
        return lambda incoming: Accept()
    if policy == "reject":
        return lambda incoming: Reject(50, "this node rejects every transfer")
    from ..network.cast import BOOK
    from ..network.policies import beneficiary_handler

    return beneficiary_handler(BOOK, common_name)


def _serve(args: argparse.Namespace) -> int:
    apply_config(args, _NODE_OPTIONS)
    require(args, "listen")
    # One line per accept/reject decision is part of what an operator runs this for.
    logging.getLogger("trisa_peer").setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    files = raise_open_files_limit()  # what an attacker's idle connections would exhaust
    fresh_db = bool(args.db) and not Path(args.db).exists()
    node = _node(args, listen=args.listen, policy=args.policy or "rvasp")
    try:
        port = node.start()
    except TrisaPeerError:
        node.close()
        if fresh_db:  # leave nothing behind from a start that failed
            for suffix in ("", "-wal", "-shm"):
                Path(f"{args.db}{suffix}").unlink(missing_ok=True)
        raise
    logging.getLogger("trisa_peer.limits").info("%s", files)
    print(f"trisa-peer: {node.common_name} serving on port {port} "
          f"(policy {args.policy or 'rvasp'})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    node.stop(grace=5.0)
    node.close()
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..handshake import HandshakeTrace
    from ..steps import HandshakeStep

    apply_config(args, _NODE_OPTIONS)
    node = _node(args, listen="127.0.0.1:0", policy="reject")
    trace = HandshakeTrace()
    print(f"checking {args.common_name} against directory {args.directory}")
    ok = False
    try:
        with trace.step(HandshakeStep.EXCHANGE) as note:
            node.connect(args.common_name, trace=trace)
            node.exchange_keys(args.common_name)
            note[0] = "KeyExchange over the verified channel succeeded"
        ok = True
    except HandshakeError:
        pass
    finally:
        node.close()
    print(trace.render())
    failed = trace.failed()
    if ok and trace.ok:
        print(f"{args.common_name}: all eight steps passed")
        return 0
    reason = failed.detail if failed else "not every step was completed"
    print(f"{args.common_name}: REFUSED: {reason}", file=sys.stderr)
    return 1


def _send(args: argparse.Namespace) -> int:
    from .._pb.trisa.api.v1beta1 import api_pb2
    from ..network.node import TransferError

    apply_config(args, _NODE_OPTIONS)
    payload = _read_payload(Path(args.payload))
    node = _node(args, listen="127.0.0.1:0", policy="reject")
    try:
        result = node.send(args.to, payload)
    except TransferError as exc:
        raise ConfigurationError(str(exc)) from exc
    finally:
        node.close()
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
