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
from tests.api.cards import TEST_CARD_KEYS, SimulatedCard

TEST_ROOT_KEY = bytes(range(32)).hex()


def make_context(engine: Engine, **limits: Any) -> ApiContext:
    ledger = Ledger(engine)
    ensure_issuer_accounts(ledger)
    return ApiContext(
        engine=engine,
        ledger=ledger,
        secrets=ApiSecrets.from_hex(TEST_ROOT_KEY),
        card_keys=TEST_CARD_KEYS,
        limits=Limits(**limits),
        run_background=False,
        # The tests' webhook receivers listen on 127.0.0.1 (production refuses it).
        webhook_allow_private_networks=True,
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


@dataclass
class World:
    """A small JakartaOne: a merchant and an operator with a terminal each, and their keys."""

    issuer: Caller
    merchant: Caller
    operator: Caller
    merchant_id: str
    operator_id: str
    pos: str = "POS-1"
    gate: str = "GATE-1"

    def issue_card(self, registered: bool = False) -> tuple[str, SimulatedCard]:
        card = SimulatedCard()
        body: dict[str, Any] = {"serial": card.serial_hex, "registered": registered}
        if registered:
            body["holder_reference"] = f"kyc-{card.serial_hex[:6]}"
        made = self.issuer.ok(self.issuer.post("/v1/cards", body), 201)
        return made["id"], card

    def stranger(self) -> Caller:
        """A merchant key of another merchant, who owns nothing of this world's."""
        other = self.issuer.ok(
            self.issuer.post(
                "/v1/merchants",
                {
                    "kind": "merchant",
                    "name": "Toko Lain",
                    "mcc": "5411",
                    "kota": "Jakarta Barat",
                    "kecamatan": "Grogol Petamburan",
                    "mdr_bps": 50,
                },
            ),
            201,
        )
        made = self.issuer.post("/v1/api-keys", {"scope": "merchant", "merchant_id": other["id"]})
        return Caller(self.issuer.http, self.issuer.ok(made, 201)["key"])

    def load(
        self, card_id: str, card: SimulatedCard, amount: int, terminal: str | None = None
    ) -> dict[str, Any]:
        """A bank-transfer load, confirmed by the card's credit certificate."""
        load = self.issuer.ok(
            self.issuer.post(
                "/v1/loads",
                {
                    "card_id": card_id,
                    "amount": amount,
                    "channel": "bank_transfer",
                    "card_counter": card.counter,
                },
            ),
            201,
        )
        cert = card.credit(amount, bytes.fromhex(load["cryptogram"]), terminal or self.pos)
        return self.issuer.ok(
            self.issuer.post(f"/v1/loads/{load['id']}/confirm", {"certificate": cert.to_json()}),
            200,
        )


def onboard(issuer: Caller) -> World:
    merchant = issuer.ok(
        issuer.post(
            "/v1/merchants",
            {
                "kind": "merchant",
                "name": "Warung Sate Pak Budi",
                "mcc": "5812",
                "kota": "Jakarta Selatan",
                "kecamatan": "Kebayoran Baru",
                "mdr_bps": 70,
                "payout_bank_account": "0123456789",
            },
        ),
        201,
    )
    operator = issuer.ok(
        issuer.post(
            "/v1/merchants",
            {
                "kind": "operator",
                "name": "TransJakarta",
                "mcc": "4131",
                "kota": "Jakarta Timur",
                "kecamatan": "Cakung",
                "mdr_bps": 50,
                "payout_bank_account": "9876543210",
            },
        ),
        201,
    )
    issuer.ok(
        issuer.post(
            "/v1/terminals",
            {"terminal_code": "POS-1", "merchant_id": merchant["id"], "kind": "pos"},
        ),
        201,
    )
    issuer.ok(
        issuer.post(
            "/v1/terminals",
            {
                "terminal_code": "GATE-1",
                "merchant_id": operator["id"],
                "kind": "gate",
                "line": "Koridor 1",
                "station": "Bundaran HI",
            },
        ),
        201,
    )
    merchant_key = issuer.ok(
        issuer.post("/v1/api-keys", {"scope": "merchant", "merchant_id": merchant["id"]}), 201
    )["key"]
    operator_key = issuer.ok(
        issuer.post("/v1/api-keys", {"scope": "gate-operator", "merchant_id": operator["id"]}), 201
    )["key"]
    return World(
        issuer=issuer,
        merchant=Caller(issuer.http, merchant_key),
        operator=Caller(issuer.http, operator_key),
        merchant_id=merchant["id"],
        operator_id=operator["id"],
    )


@pytest.fixture
def world(issuer: Caller) -> World:
    return onboard(issuer)
