"""The API against its published OpenAPI document (``docs/openapi.json``).

The file must equal what the app serves and what :mod:`trisa_peer.api.openapi`
generates, and list exactly the app's routes. Then schemathesis generates requests from
the file, valid ones and invalid ones, sends them over real HTTP to an API server over
Alice's node in the simulated network, and checks every answer against the document
(status codes, content type, response schemas, no 5xx, invalid input refused)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.generation import GenerationMode

from trisa_peer.api.app import build_app
from trisa_peer.api.auth import TokenFile
from trisa_peer.api.openapi import document, render
from trisa_peer.api.server import ApiServer

DOC = ROOT / "docs" / "openapi.json"
TOKEN = "schema-test-token-000000001"
SCHEMA = schemathesis.openapi.from_path(DOC)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
#: routes whose input rules go beyond what OpenAPI can say (see trisa_peer/api/openapi.py):
#: a schema-valid request may still be refused there with 400, so schemathesis's
#: positive_data_acceptance does not apply; every other check does
BEYOND_THE_DOCUMENT = {"POST /transfers", "GET /vasps"}


def only_upstream_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """As schemathesis's ``not_a_server_error``, except for 502: a peer or the directory
    that failed is the documented 502 (status_code_conformance checks it is documented
    for that route), never a 500 or any other 5xx."""
    if response.status_code >= 500 and response.status_code != 502:
        raise AssertionError(f"server error {response.status_code}: {response.text[:200]}")
    return None


@pytest.fixture(scope="module")
def api(trisa_network: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("api-schema") / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    server = ApiServer(build_app(trisa_network.alice.node, TokenFile(tokens)), "127.0.0.1:0")
    port = server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_the_published_document_is_the_generated_one(api: str) -> None:
    assert DOC.read_text() == render(), "run: python -m trisa_peer.api.openapi > " \
        "docs/openapi.json"
    served = httpx.get(f"{api}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.json() == json.loads(DOC.read_text())
    # the twin: a changed document is told apart
    changed = document()
    changed["paths"].pop("/status")
    assert json.dumps(changed, indent=2, sort_keys=True) + "\n" != DOC.read_text()


def test_the_document_lists_exactly_the_apps_routes(trisa_network: Any,
                                                   tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    app = build_app(trisa_network.alice.node, TokenFile(tokens))
    routes = {(method.lower(), route.path) for route in app.app.routes  # type: ignore[attr-defined]
              for method in route.methods if method != "HEAD"}
    documented = {(method, path) for path, item in document()["paths"].items()
                  for method in item}
    assert routes == documented
    assert {(op.method, op.path) for op in OPERATIONS} == documented


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_api_conforms_to_its_document(api: str, operation: Any, mode: GenerationMode) -> None:
    excluded = [not_a_server_error]
    if operation.label in BEYOND_THE_DOCUMENT:
        excluded.append(positive_data_acceptance)

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        # the real token replaces the generated one, unless the (negative) case removed
        # the header: putting it back would turn an invalid request into a valid one
        present = any(k.lower() == "authorization" for k in (case.headers or {}))
        auth = {"Authorization": f"Bearer {TOKEN}"} if present else None
        case.call_and_validate(base_url=api, headers=auth,
                               excluded_checks=excluded,
                               additional_checks=[only_upstream_errors])

    check()


@pytest.mark.slow
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(token=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                   max_size=40)
       .filter(lambda t: t != TOKEN))
def test_any_other_token_is_refused_everywhere(api: str, token: str) -> None:
    for op in OPERATIONS:
        path = op.path.replace("{envelope_id}", "x")
        answer = httpx.request(op.method.upper(), f"{api}{path}",
                               headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (op.label, token)
