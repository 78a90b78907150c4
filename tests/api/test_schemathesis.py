"""Property-based tests over the OpenAPI document: for every operation, requests that
schemathesis generates from the schema never cause a server error, and every answer
matches the schema (status, content type, body). tests/security/test_live.py runs the same
at 1,000+ cases against `jakartaone serve`; here a modest number per operation keeps the
suite fast."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from litestar.testing import TestClient
from schemathesis import checks
from sqlalchemy.engine import Engine

from merchant_api.app import create_app
from merchant_api.auth import Scope
from tests.api.conftest import Caller, make_context, make_key, onboard

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 8


def run_every_operation(schema: Any, call: Callable[[Any], None], examples: int) -> int:
    """Generate up to `examples` cases for every operation and `call` each; the number of
    cases run."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    ran = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            nonlocal ran
            ran += 1
            call(case)

        run()
    return ran


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}


def test_generated_requests_never_break_the_server_or_the_schema(engine: Engine) -> None:
    app = create_app(make_context(engine))
    key = make_key(engine, Scope.ISSUER_ADMIN)
    with TestClient(app=app) as client:
        onboard(Caller(client, key))  # objects for the generated requests to meet
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    ran = run_every_operation(
        schema,
        lambda case: case.call_and_validate(headers=headers(key), checks=CHECKS),
        EXAMPLES_PER_OPERATION,
    )
    assert ran >= 100
