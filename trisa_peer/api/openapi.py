"""The HTTP API's OpenAPI 3.1 document, the one description of its routes.

``docs/openapi.json`` is this document written out (``python -m trisa_peer.api.openapi
> docs/openapi.json``); a test fails when the file, this document and the app's routes
disagree. Plain data: no web framework is imported here. What the document cannot say (checked
by the app, answered 400): that ``payload`` parses as protojson
``trisa.api.v1beta1.Payload``, and that ``GET /vasps`` takes exactly one of its two
parameters.
"""

from __future__ import annotations

import json
from typing import Any

from .._pb.trisa.api.v1beta1 import errors_pb2

__all__ = ["API_VERSION", "document", "render"]

API_VERSION = "1.0.0"

_ERROR = {"$ref": "#/components/schemas/Error"}

#: the TRISA error codes a rejection may carry (``trisa.api.v1beta1.Error.Code``)
_CODES = errors_pb2.Error.Code
_CODE_NAMES = sorted(name for name in _CODES.keys() if name != "UNHANDLED")
_CODE_NUMBERS = sorted({int(number) for number in _CODES.values() if number != 0})


def _reply(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    out["content"] = {"application/json": {"schema": schema or _ERROR}}
    return out


_UNAUTHORIZED = _reply("no, a malformed or an unknown bearer token, or a token in the "
                       "query string")
_BAD_REQUEST = _reply("the request is malformed (one line says why)")
_STORE_DOWN = _reply("the transfer store is unavailable (retry later)")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string", "description": "one line"}},
    },
    "Status": {
        "type": "object", "additionalProperties": False,
        "required": ["common_name", "serial", "fingerprint", "not_after", "days_left",
                     "certificate_problem", "expiry_warning", "directory"],
        "properties": {
            "common_name": {"type": "string"},
            "serial": {"type": "string", "description": "hexadecimal, 0x-prefixed"},
            "fingerprint": {"type": "string", "description": "SHA-256 of the leaf"},
            "not_after": {"type": "string", "format": "date-time"},
            "days_left": {"type": "integer"},
            "certificate_problem": {"type": ["string", "null"],
                                    "description": "why the certificate is not usable"},
            "expiry_warning": {"type": ["string", "null"]},
            "directory": {
                "type": "object", "additionalProperties": False,
                "required": ["reachable", "error"],
                "properties": {"reachable": {"type": "boolean"},
                               "error": {"type": ["string", "null"]}},
            },
        },
    },
    "TransferSummary": {
        "type": "object", "additionalProperties": False,
        "required": ["envelope_id", "peer", "direction", "state", "messages", "first_at",
                     "last_at", "key"],
        "properties": {
            "envelope_id": {"type": "string"}, "peer": {"type": "string"},
            "direction": {"type": "string", "enum": ["incoming", "outgoing"]},
            "state": {"type": "string"}, "messages": {"type": "integer"},
            "first_at": {"type": "string"}, "last_at": {"type": "string"},
            "key": {"type": "integer", "description": "pass as ?before= for the next page"},
        },
    },
    "TransferList": {
        "type": "object", "additionalProperties": False, "required": ["transfers", "next"],
        "properties": {
            "transfers": {"type": "array",
                          "items": {"$ref": "#/components/schemas/TransferSummary"}},
            "next": {"type": ["integer", "null"],
                     "description": "?before= of the next page; null on the last page"},
        },
    },
    "Message": {
        "type": "object", "additionalProperties": False,
        "required": ["seq", "peer", "direction", "kind", "state", "error_code", "attempt",
                     "created_at", "updated_at", "deadline", "decision"],
        "properties": {
            "seq": {"type": "integer"}, "peer": {"type": "string"},
            "direction": {"type": "string", "enum": ["incoming", "outgoing"]},
            "kind": {"type": "string"}, "state": {"type": "string"},
            "error_code": {"type": "integer"}, "attempt": {"type": "integer"},
            "created_at": {"type": "string"}, "updated_at": {"type": "string"},
            "deadline": {"type": ["string", "null"]},
            "decision": {"type": ["string", "null"],
                         "description": "a recorded decision: accept or reject:CODE"},
        },
    },
    "Transfer": {
        "type": "object", "additionalProperties": False,
        "required": ["envelope_id", "messages"],
        "properties": {
            "envelope_id": {"type": "string"},
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
        },
    },
    "SendRequest": {
        "type": "object", "additionalProperties": False, "required": ["peer", "payload"],
        "properties": {
            "peer": {"type": "string", "minLength": 1, "maxLength": 253,
                     "description": "the beneficiary VASP's common name"},
            "payload": {"type": "object",
                        "description": "trisa.api.v1beta1.Payload as protojson "
                        "(identity and transaction)"},
            "envelope_id": {"type": "string", "minLength": 1, "maxLength": 128},
        },
    },
    "SendResult": {
        "type": "object", "additionalProperties": False,
        "required": ["envelope_id", "peer", "state", "transfer_state"],
        "properties": {
            "envelope_id": {"type": "string"}, "peer": {"type": "string"},
            "state": {"type": "string",
                      "enum": ["accepted", "pending", "completed", "repair", "rejected"]},
            "transfer_state": {"type": "string"},
            "error": {"type": "object", "description": "trisa.api.v1beta1.Error"},
            "payload": {"type": "object", "description": "the opened reply payload"},
        },
    },
    "Decision": {
        "oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["decision"],
             "properties": {"decision": {"const": "accept"}}},
            {"type": "object", "additionalProperties": False, "required": ["decision", "code"],
             "properties": {
                 "decision": {"const": "reject"},
                 "code": {"description": "TRISA error code: name or number (not UNHANDLED)",
                          "oneOf": [{"type": "string", "enum": _CODE_NAMES},
                                    {"type": "integer", "enum": _CODE_NUMBERS}]},
                 "message": {"type": "string", "minLength": 1, "maxLength": 1000,
                             "description": "message of the rejection"},
             }},
        ],
    },
    "Decided": {
        "type": "object", "additionalProperties": False,
        "required": ["envelope_id", "peer", "decision", "deadline"],
        "properties": {
            "envelope_id": {"type": "string"}, "peer": {"type": "string"},
            "decision": {"type": "string"},
            "deadline": {"type": ["string", "null"]},
        },
    },
    "Vasp": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "common_name", "endpoint", "registered_directory", "name",
                     "country", "verified_on", "identity_fingerprint", "identity_revoked",
                     "identity_not_after", "has_signing_certificate"],
        "properties": {
            "id": {"type": "string"}, "common_name": {"type": "string"},
            "endpoint": {"type": "string"}, "registered_directory": {"type": "string"},
            "name": {"type": "string"}, "country": {"type": "string"},
            "verified_on": {"type": "string"},
            "identity_fingerprint": {"type": ["string", "null"]},
            "identity_revoked": {"type": "boolean"},
            "identity_not_after": {"type": ["string", "null"]},
            "has_signing_certificate": {"type": "boolean"},
        },
    },
}

_ENVELOPE_ID = {"name": "envelope_id", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128}}

_PATHS: dict[str, Any] = {
    "/status": {"get": {
        "operationId": "status", "summary": "the node's identity, certificate expiry and "
        "directory reachability",
        "responses": {"200": _reply("the node's status", {"$ref": "#/components/schemas/Status"}),
                      "401": _UNAUTHORIZED},
    }},
    "/transfers": {
        "get": {
            "operationId": "listTransfers", "summary": "transfers, newest first, paged by key",
            "parameters": [
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
                {"name": "before", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
                {"name": "peer", "in": "query", "required": False,
                 "schema": {"type": "string", "maxLength": 253}},
            ],
            "responses": {
                "200": _reply("one page", {"$ref": "#/components/schemas/TransferList"}),
                "400": _BAD_REQUEST, "401": _UNAUTHORIZED, "503": _STORE_DOWN,
            },
        },
        "post": {
            "operationId": "sendTransfer",
            "summary": "seal a payload for a peer, transfer it and return the reply",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SendRequest"}}}},
            "responses": {
                "200": _reply("the beneficiary's answer (a rejection too)",
                              {"$ref": "#/components/schemas/SendResult"}),
                "400": _BAD_REQUEST, "401": _UNAUTHORIZED,
                "413": _reply("the body is larger than the API accepts"),
                "502": _reply("the peer could not be reached or verified"),
                "503": _STORE_DOWN,
            },
        },
    },
    "/transfers/{envelope_id}": {"get": {
        "operationId": "showTransfer", "summary": "every stored message of one transfer "
        "(metadata only: no payloads)",
        "parameters": [_ENVELOPE_ID],
        "responses": {
            "200": _reply("the transfer", {"$ref": "#/components/schemas/Transfer"}),
            "401": _UNAUTHORIZED, "404": _reply("no such transfer"), "503": _STORE_DOWN,
        },
    }},
    "/transfers/{envelope_id}/resolve": {"post": {
        "operationId": "resolveTransfer",
        "summary": "decide a pending incoming transfer; the node delivers the decision",
        "parameters": [_ENVELOPE_ID],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Decision"}}}},
        "responses": {
            "200": _reply("recorded", {"$ref": "#/components/schemas/Decided"}),
            "400": _BAD_REQUEST, "401": _UNAUTHORIZED,
            "404": _reply("no such transfer"),
            "409": _reply("not pending, already decided or past its reply window"),
            "503": _STORE_DOWN,
            "413": _reply("the body is larger than the API accepts"),
        },
    }},
    "/vasps": {"get": {
        "operationId": "lookupVasp",
        "summary": "look a VASP up through the node's directory client",
        "parameters": [
            {"name": "common_name", "in": "query", "required": False,
             "schema": {"type": "string", "maxLength": 253}},
            {"name": "vasp_id", "in": "query", "required": False,
             "schema": {"type": "string", "maxLength": 128}},
        ],
        "responses": {
            "200": _reply("the VERIFIED record", {"$ref": "#/components/schemas/Vasp"}),
            "400": _BAD_REQUEST, "401": _UNAUTHORIZED,
            "404": _reply("the directory has no verified record"),
            "502": _reply("the directory failed"),
        },
    }},
    "/openapi.json": {"get": {
        "operationId": "openapi", "summary": "this document",
        "responses": {"200": {"description": "the OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "401": _UNAUTHORIZED},
    }},
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    out: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "trisa-peer back-office API", "version": API_VERSION,
            "description": "The node's JSON API (serve --api-listen). Every route needs "
            "Authorization: Bearer TOKEN; off loopback also a client certificate.",
        },
        "security": [{"bearer": []}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]


def render() -> str:
    """The document as ``docs/openapi.json`` holds it."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
