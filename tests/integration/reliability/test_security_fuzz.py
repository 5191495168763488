"""Schemathesis against the gateway's own OpenAPI schema (served over HTTP by uvicorn, in front of
a real simulator engine): every operation, schema-valid and schema-violating bodies, seeded and
derandomized, a bounded number of examples, with a valid key. Checks: never a 5xx, and every
error response carries one ``x-request-id`` header equal to ``error.request_id`` in its body.

(Schemathesis 4.32's own pytest plugin breaks on pytest 9, so the operations' Hypothesis
strategies are driven directly; the schema is the app's, built without a server at collection.)"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from security_support import KEY, MODEL, Secured, security_settings

from serving.gateway import create_app
from serving.registry import StaticEndpoints

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100  # per operation and mode (~600 requests): well under a minute on the shared 2-core box

SCHEMA = schemathesis.openapi.from_dict(create_app(security_settings(), StaticEndpoints([])).openapi())
OPERATIONS = {r.ok().label: r.ok() for r in SCHEMA.get_all_operations()}


def request_id_on_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx: one x-request-id header, the same id in the OpenAI-shaped body."""
    if response.status_code < 400:
        return None
    ids = response.headers.get("x-request-id") or []
    assert len(ids) == 1, f"{response.status_code} with x-request-id {ids!r}"
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error", {}).get("request_id") == ids[0], body
    return True


def test_schema_covers_every_route():
    assert set(OPERATIONS) == {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
                               "GET /health", "GET /ready", "GET /metrics"}  # fmt: skip
    assert OPERATIONS["POST /v1/chat/completions"].body  # the request schema is in the document


# Operations without parameters or body (the GETs) have no schema-violating form.
CASES = [(label, GenerationMode.POSITIVE) for label in sorted(OPERATIONS)] + [
    (label, GenerationMode.NEGATIVE) for label in sorted(OPERATIONS) if OPERATIONS[label].body
]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{lb}-{m.value}" for lb, m in CASES])
def test_gateway_never_answers_5xx(secured: Secured, label: str, mode: GenerationMode) -> None:
    op = OPERATIONS[label]
    statuses: dict[int, int] = {}

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body["model"] = MODEL  # past the model lookup: valid bodies reach the engine
        headers = {**(case.headers or {}), "authorization": f"Bearer {KEY}"}
        r = case.call_and_validate(base_url=secured.url, headers=headers, timeout=30,
                                   checks=[not_a_server_error, request_id_on_errors])  # fmt: skip
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    run()
    print(label, mode.value, dict(sorted(statuses.items())))
    assert statuses, "no request was sent"
    assert all(s < 500 for s in statuses)
