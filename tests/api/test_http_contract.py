"""The HTTP contract around every route: idempotency, problem+json errors, limits, the
database being down (503), health, metrics and the OpenAPI document."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from merchant_api import idempotency, schema
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.cli import api_engine
from merchant_api.context import ApiContext
from merchant_api.services import onboarding
from merchant_api.wib import now_us
from tests.api.conftest import Caller, make_context, make_key

MERCHANT = {
    "kind": "merchant",
    "name": "Apotek Sehat",
    "mcc": "5912",
    "kota": "Jakarta Pusat",
    "kecamatan": "Menteng",
    "mdr_bps": 100,
}


def raw_post(caller: Caller, path: str, body: bytes, key: str) -> Any:
    headers = {**caller.headers(key), "Content-Type": "application/json"}
    return caller.http.post(path, content=body, headers=headers)


def merchants(ctx: ApiContext) -> int:
    with ctx.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(schema.merchants)).scalar_one()
        )


def test_a_retry_replays_the_first_answer_and_acts_once(issuer: Caller, ctx: ApiContext) -> None:
    body = json.dumps(MERCHANT).encode()
    first = raw_post(issuer, "/v1/merchants", body, "onboard-apotek")
    again = raw_post(issuer, "/v1/merchants", body, "onboard-apotek")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert merchants(ctx) == 1
    changed = raw_post(
        issuer, "/v1/merchants", json.dumps({**MERCHANT, "mdr_bps": 1}).encode(), "onboard-apotek"
    )
    assert (changed.status_code, changed.json()["code"]) == (422, "idempotency_key_reused")
    other_key = Caller(issuer.http, make_key(ctx.engine, Scope.ISSUER_ADMIN))
    assert raw_post(other_key, "/v1/merchants", body, "onboard-apotek").status_code == 201
    assert merchants(ctx) == 2  # keys are scoped per API key


def test_a_duplicate_while_the_first_is_in_flight_is_409_until_the_lease_ends(
    issuer: Caller, ctx: ApiContext
) -> None:
    body = json.dumps(MERCHANT).encode()
    api_key_id = onboarding_key_id(ctx, issuer)
    digest = idempotency.request_digest("POST", "/v1/merchants", b"", body)
    stored = idempotency.stored_key("slow-one")  # the database keeps the key's digest
    claimed = idempotency.claim(ctx.engine, api_key_id, stored, digest, lease_s=60)
    assert isinstance(claimed, idempotency.Proceed)
    busy = raw_post(issuer, "/v1/merchants", body, "slow-one")
    assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_request_in_flight")
    assert busy.headers["Retry-After"] == "1"
    # The first request's server died: once its lease is over, a retry takes the key over.
    with ctx.engine.begin() as conn:
        conn.execute(sa.update(schema.idempotency_keys).values(locked_until_us=now_us() - 1))
    assert raw_post(issuer, "/v1/merchants", body, "slow-one").status_code == 201
    assert merchants(ctx) == 1


def onboarding_key_id(ctx: ApiContext, caller: Caller) -> uuid.UUID:
    prefix = caller.key.split("_")[1]
    with ctx.engine.connect() as conn:
        return uuid.UUID(
            str(
                conn.execute(
                    sa.select(schema.api_keys.c.id).where(schema.api_keys.c.prefix == prefix)
                ).scalar_one()
            )
        )


def test_a_server_error_is_not_stored_and_the_retry_runs(
    issuer: Caller, ctx: ApiContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onboarding.create_merchant

    def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(onboarding, "create_merchant", database_gone)
    down = issuer.post("/v1/merchants", MERCHANT, key="flaky")
    assert (down.status_code, down.json()["code"]) == (503, "database_unavailable")
    assert down.headers["Retry-After"] == "2"
    monkeypatch.setattr(onboarding, "create_merchant", real)
    assert issuer.post("/v1/merchants", MERCHANT, key="flaky").status_code == 201


def test_posts_need_a_valid_idempotency_key(issuer: Caller) -> None:
    headers = issuer.headers()
    missing = issuer.http.post("/v1/merchants", json=MERCHANT, headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_missing")
    bad = issuer.http.post(
        "/v1/merchants", json=MERCHANT, headers={**headers, "Idempotency-Key": "a b"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "idempotency_key_invalid")


def test_errors_are_problem_details_with_stable_codes(issuer: Caller) -> None:
    answer = issuer.post("/v1/merchants", {**MERCHANT, "mcc": "12"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    problem = answer.json()
    assert {"type", "title", "status", "detail", "code", "instance", "request_id"} <= set(problem)
    assert problem["type"] == "urn:jakartaone:problem:request_invalid"
    assert problem["instance"] == "/v1/merchants" and problem["errors"]
    not_json = raw_post(issuer, "/v1/merchants", b"{not json", "x1")
    assert (not_json.status_code, not_json.json()["code"]) == (400, "request_invalid")
    nowhere = issuer.get("/v1/nowhere")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")
    wrong_method = issuer.http.delete("/v1/merchants", headers=issuer.headers())
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    huge = issuer.post("/v1/merchants", {**MERCHANT, "name": "x" * 2 * 10**6})
    assert (huge.status_code, huge.json()["code"]) == (413, "request_too_large")
    deep = raw_post(issuer, "/v1/merchants", b"[" * 100_000 + b"]" * 100_000, "x2")
    assert deep.status_code in (400, 413)
    big_int = issuer.post("/v1/merchants", {**MERCHANT, "mdr_bps": 10**40})
    assert big_int.status_code == 400


def test_the_database_being_down_is_503_with_retry_after(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "db.sqlite3"
    engines = [
        api_engine(f"sqlite:///{missing}"),
        api_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing"),
    ]
    for engine in engines:
        ctx = ApiContext(engine=engine, ledger=None, secrets=None, card_keys=None)  # type: ignore[arg-type]
        with TestClient(app=create_app(ctx)) as client:
            answer = client.get(
                "/v1/merchants", headers={"Authorization": f"Bearer jo_{'0' * 16}_{'x' * 43}"}
            )
            assert (answer.status_code, answer.json()["code"]) == (503, "database_unavailable")
            assert answer.headers["Retry-After"] == "2"
            assert client.get("/ready").status_code == 503
            assert client.get("/health").status_code == 200


def test_health_readiness_and_metrics(client: TestClient[Any], issuer: Caller) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["schema_revision"] >= "0002"
    issuer.get("/v1/merchants")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert re.search(
        r'jakartaone_http_requests_total\{method="GET",route="/v1/merchants",status="200"\} [1-9]',
        metrics.text,
    )


def test_the_openapi_document_and_its_ui_work_offline(client: TestClient[Any]) -> None:
    document = client.get("/schema/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    operations = [op for path in document["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids)
    assert len(ids) >= 40
    page = client.get("/schema")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(src.startswith("/schema/") for src in sources), sources
    for src in sources:
        assert client.get(src).status_code == 200, src
    assert "https://" not in page.text


def test_a_route_without_scopes_refuses_to_start(ctx: ApiContext) -> None:
    from litestar import get

    from merchant_api import app as app_module

    @get("/v1/leaky", sync_to_thread=False)
    def leaky() -> str:
        return "secret"

    with pytest.raises(RuntimeError, match="names no scopes"):
        app_module._check_every_route_is_guarded(
            __import__("litestar").Litestar(route_handlers=[leaky])
        )
    assert make_context(ctx.engine).limits.max_body_bytes == 1_048_576
