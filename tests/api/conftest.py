"""Fixtures for the merchant API: a migrated database, the app under Litestar's test
client, and an issuer-admin key to onboard everything else over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.engine import Engine

from ledger import Ledger, run_write
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.chart import ensure_issuer_accounts
from merchant_api.context import ApiContext, Limits
from merchant_api.crypto import ApiSecrets
from merchant_api.services.onboarding import insert_api_key

TEST_ROOT_KEY = bytes(range(32)).hex()


def make_context(engine: Engine, **limits: Any) -> ApiContext:
    ledger = Ledger(engine)
    ensure_issuer_accounts(ledger)
    return ApiContext(
        engine=engine,
        ledger=ledger,
        secrets=ApiSecrets.from_hex(TEST_ROOT_KEY),
        card_keys=None,
        limits=Limits(**limits),
        run_background=False,
    )


def make_key(engine: Engine, scope: Scope, merchant_id: uuid.UUID | None = None) -> str:
    _, token = run_write(
        engine, lambda conn: insert_api_key(conn, uuid.uuid4(), scope, merchant_id, "test", None)
    )
    return str(token)


@dataclass
class Caller:
    """One API key talking to the app: adds the Authorization and Idempotency-Key headers."""

    http: httpx.Client
    key: str
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}", **self.extra}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None, headers=self.headers())

    def post(self, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
        return self.http.post(
            path,
            json=body if body is not None else {},
            headers=self.headers(key or str(uuid.uuid4())),
        )

    def ok(self, response: httpx.Response, status: int | tuple[int, ...] = (200, 201)) -> Any:
        wanted = (status,) if isinstance(status, int) else status
        assert response.status_code in wanted, response.text
        return response.json()


@pytest.fixture
def ctx(engine: Engine) -> ApiContext:
    return make_context(engine)


@pytest.fixture
def client(ctx: ApiContext) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(ctx)) as test_client:
        yield test_client


@pytest.fixture
def issuer(client: TestClient[Any], ctx: ApiContext) -> Caller:
    return Caller(client, make_key(ctx.engine, Scope.ISSUER_ADMIN))
