"""``trisa-peer envelope seal|open`` (debugging) and ``trisa-peer transfers list|show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from ..errors import ConfigurationError, EnvelopeRejection, TrisaPeerError
from ..storage.url import redact
from .options import add_option

__all__ = ["register"]


def register(sub: Any) -> None:
    env = sub.add_parser("envelope", help="seal or open a secure envelope (debugging)")
    esub = env.add_subparsers(dest="envelope_command", metavar="COMMAND")
    esub.required = True
    seal = esub.add_parser(
        "seal", help="seal a protojson Payload for a recipient; print the envelope as protojson"
    )
    seal.add_argument("--cert", required=True, metavar="RECIPIENT.pem",
                      help="recipient's certificate or public key (PEM or DER)")
    add_option(seal, "--payload", positional="PAYLOAD.json", required=True,
               metavar="FILE.json", help="protojson trisa.api.v1beta1.Payload")
    seal.set_defaults(func=_seal, command_parser=seal)
    opn = esub.add_parser("open", help="open a protojson envelope; print the payload as protojson")
    opn.add_argument("--key", required=True, metavar="KEY.pem", help="recipient's private key")
    opn.add_argument("--password", metavar="TEXT", help="password of an encrypted key")
    add_option(opn, "--envelope", positional="ENVELOPE.json", required=True,
               metavar="FILE.json", help="protojson trisa.api.v1beta1.SecureEnvelope")
    opn.set_defaults(func=_open, command_parser=opn)

    tr = sub.add_parser("transfers", help="inspect a node's stored transfers")
    tsub = tr.add_subparsers(dest="transfers_command", metavar="COMMAND")
    tsub.required = True
    from .db import add_db_args

    lst = tsub.add_parser("list", help="one line per exchange, newest first")
    add_db_args(lst, required=True)
    lst.add_argument("--peer", metavar="COMMON_NAME")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--before", type=int, metavar="KEY",
                     help="the page after the one that ended with KEY (printed at its end)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)
    show = tsub.add_parser(
        "show", help="every envelope of one exchange, opened with the node's key"
    )
    add_option(show, "--id", dest="envelope_id", positional="ID", required=True,
               metavar="ID", help="envelope id of the transfer")
    show.set_defaults(command_parser=show)
    add_db_args(show, required=True)
    show.add_argument("--key", metavar="KEY.pem",
                      help="node's private key (or a cert+key PEM); without it nothing is opened")
    show.add_argument("--password", metavar="TEXT")
    show.set_defaults(func=_show)
    from .node import register_transfers
    from .retention import register_retention

    register_transfers(tsub)
    register_retention(tsub)


def import_payload_types() -> None:
    # Any fields resolve only once the message modules are imported.
    from .._pb.ivms101 import identity_pb2  # noqa: F401
    from .._pb.trisa.data.generic.v1beta1 import transaction_pb2  # noqa: F401


def to_json(message: Any) -> str:
    """protojson as Go writes the fixtures: proto field names, unpopulated fields too."""
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def parse_protojson(path: Path, message: Any, what: str) -> Any:
    """Read ``path`` as protojson into ``message``; one-line errors naming the file."""
    import_payload_types()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: {exc.strerror}") from exc
    try:
        return json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise ConfigurationError(f"{path}: not a protojson {what}: {exc}") from exc


def _public_key(path: Path) -> Any:
    from ..certs import load_public_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: {exc.strerror}") from exc
    return load_public_key(data, source=str(path))


def _seal(args: argparse.Namespace) -> int:
    from .._pb.trisa.api.v1beta1 import api_pb2
    from ..envelope import seal

    payload = parse_protojson(Path(args.payload), api_pb2.Payload(), "Payload")
    key = _public_key(Path(args.cert))
    try:
        envelope = seal(payload, key)
    except EnvelopeRejection as exc:
        raise ConfigurationError(f"{args.payload}: cannot seal: {exc}") from exc
    print(to_json(envelope))
    return 0


def _private_key(path: str, password: str | None) -> Any:
    from ..certs import load_private_key

    return load_private_key(Path(path), password=password)


def _open(args: argparse.Namespace) -> int:
    from .._pb.trisa.api.v1beta1 import api_pb2, errors_pb2
    from ..envelope import envelope_error, open_envelope

    envelope = parse_protojson(Path(args.envelope), api_pb2.SecureEnvelope(), "SecureEnvelope")
    error = envelope_error(envelope)
    if error is not None and not envelope.payload:
        name = errors_pb2.Error.Code.Name(error.code)
        print(to_json(error))
        print(f"trisa-peer: envelope carries a rejection: {name} ({error.code})",
              file=sys.stderr)
        return 1
    key = _private_key(args.key, args.password)
    try:
        payload = open_envelope(envelope, key)
    except EnvelopeRejection as exc:
        name = errors_pb2.Error.Code.Name(errors_pb2.Error.Code.ValueType(exc.code))
        message = f"cannot open {args.envelope}: {name} ({exc.code}): {exc}"
        raise ConfigurationError(message) from exc
    print(to_json(payload))
    return 0


def _store(args: argparse.Namespace) -> Any:
    from ..network.store import open_store

    return open_store(args.db, password_file=args.db_password_file, existing=True)


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store.summaries(peer=args.peer, limit=args.limit, before=args.before)
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return 0
    if not rows:
        print("no transfers")
        return 0
    print(f"{'ENVELOPE ID':36}  {'PEER':24} {'DIR':8} {'STATE':11} {'MSGS':>4}  LAST")
    for row in rows:
        print(f"{row.envelope_id:36}  {row.peer:24} {row.direction:8} {row.state or '-':11} "
              f"{row.messages:>4}  {row.last_at}")
    if len(rows) == args.limit:
        print(f"more: --before {rows[-1].key}")
    from .node import print_pending

    print_pending(store)
    return 0


def _show(args: argparse.Namespace) -> int:
    from .._pb.trisa.api.v1beta1 import api_pb2
    from ..envelope import envelope_error, open_envelope

    import_payload_types()
    rows = _store(args).exchange(args.envelope_id)
    if not rows:
        raise ConfigurationError(
            f"no transfer with envelope id {args.envelope_id} in {redact(args.db)}")
    key = _private_key(args.key, args.password) if args.key else None
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "seq": row.seq, "direction": row.direction, "kind": row.kind, "peer": row.peer,
            "state": row.state, "error_code": row.error_code, "at": row.created_at,
        }
        if not row.envelope:
            item["envelope"] = None  # rejected input: only the record of the rejection is kept
        else:
            env = api_pb2.SecureEnvelope.FromString(row.envelope)
            error = envelope_error(env)
            if error is not None and not env.payload:
                item["error"] = json_format.MessageToDict(error, preserving_proto_field_name=True)
            elif row.direction == "outgoing":
                item["payload"] = "(sealed to the peer's key)"
            elif key is None:
                item["payload"] = "(sealed; pass --key to open)"
            else:
                try:
                    payload = open_envelope(env, key)
                    item["payload"] = json_format.MessageToDict(
                        payload, preserving_proto_field_name=True)
                except TrisaPeerError as exc:
                    item["payload"] = f"(cannot open: {exc})"
        out.append(item)
    print(json.dumps(out, indent=2))
    return 0
