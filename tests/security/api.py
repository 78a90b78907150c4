"""What the security tests share about the API: its routes read from the OpenAPI
document (so a new route is covered without editing a list), a valid body for every POST
route, and a snapshot of every table to prove that a refused request changed nothing."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ledger import schema as ledger_schema
from merchant_api import schema
from tests.api.cards import SimulatedCard
from tests.api.conftest import World

PARAM = re.compile(r"\{(\w+)\}")
PROBLEM = "application/problem+json"
CODE = re.compile(r"[a-z][a-z0-9_]*")
# Tables a refused request may still write: the Idempotency-Key record of its answer, and
# the quarantine that keeps every refused certificate for the nightly job.
BOOKKEEPING = {"idempotency_keys", "quarantine"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the OpenAPI template, e.g. /v1/loads/{load_id}/confirm
    spec: dict[str, Any]

    @property
    def params(self) -> list[str]:
        return PARAM.findall(self.path)

    def url(self, ids: dict[str, str]) -> str:
        return PARAM.sub(lambda m: ids[m.group(1)], self.path)


def operations(http: httpx.Client) -> list[Operation]:
    """Every /v1 operation the API documents."""
    document = http.get("/schema/openapi.json").json()
    return [
        Operation(method.upper(), path, spec)
        for path, item in document["paths"].items()
        if path.startswith("/v1")
        for method, spec in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def snapshot(engine: Engine, skip: set[str] = BOOKKEEPING) -> dict[str, Any]:
    """Every row of every table of ours and of the ledger (on PostgreSQL a digest of each
    table's rows, in one round trip)."""
    tables = [t for t in schema.metadata.sorted_tables if t.name not in skip]
    tables += [t for t in ledger_schema.metadata.sorted_tables if t.name not in skip]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            digests = " UNION ALL ".join(
                f"SELECT '{t.name}', (SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY"
                f" r::text), '')) FROM {t.name} r)"
                for t in tables
            )
            return dict(conn.exec_driver_sql(digests).all())
        return {t.name: sorted(map(str, conn.execute(sa.select(t)).all())) for t in tables}


def assert_problem(
    answer: httpx.Response, status: int | None = None, code: str | None = None
) -> None:
    """A refusal: 4xx problem+json with a stable snake_case code."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    body = answer.json()
    assert CODE.fullmatch(body["code"]), body
    assert body["status"] == answer.status_code
    if status is not None:
        assert answer.status_code == status, answer.text[:500]
    if code is not None:
        assert body["code"] == code, body


def valid_bodies(world: World, ids: dict[str, str]) -> dict[str, Any]:
    """A body each POST route would accept (by its OpenAPI path), for the world's objects."""
    card = SimulatedCard(balance=10_000)
    certificate = card.debit(1_000, "POS-1").to_json()
    return {
        "/v1/merchants": {
            "kind": "merchant",
            "name": "Toko Sejahtera",
            "mcc": "5411",
            "kota": "Jakarta Pusat",
            "kecamatan": "Menteng",
            "mdr_bps": 50,
            "payout_bank_account": "0011223344",
        },
        "/v1/merchants/{merchant_id}": {"name": "Warung Baru"},
        "/v1/terminals": {
            "terminal_code": "POS-NEW",
            "merchant_id": world.merchant_id,
            "kind": "pos",
        },
        "/v1/terminals/{terminal_id}/retire": {},
        "/v1/api-keys": {"scope": "analyst", "name": "dashboards"},
        "/v1/api-keys/{api_key_id}/revoke": {},
        "/v1/cards": {"serial": SimulatedCard().serial_hex, "registered": False},
        "/v1/card-batches": {
            "cards": [{"serial": SimulatedCard().serial_hex, "first_load": 10_000}]
        },
        "/v1/cards/{card_id}/register": {"holder_reference": "kyc-0001"},
        "/v1/cards/{card_id}/block": {"reason": "lost"},
        "/v1/cards/{card_id}/unblock": {},
        "/v1/cards/{card_id}/replace": {"serial": SimulatedCard().serial_hex},
        "/v1/card-transactions": certificate,
        "/v1/gate-batches": {
            "batch_id": str(uuid.uuid4()),
            "terminal_id": "POS-1",
            "first_terminal_seq": 1,
            "last_terminal_seq": 1,
            "certificates": [certificate],
        },
        "/v1/loads": {
            "card_id": ids["card_id"],
            "amount": 1_000,
            "channel": "bank_transfer",
            "card_counter": 0,
        },
        "/v1/loads/{load_id}/confirm": {"certificate": certificate},
        "/v1/refunds": {"card_transaction_id": ids["transaction_id"], "amount": 1},
        "/v1/settlements": {"merchant_id": world.merchant_id, "business_date": "2020-01-01"},
        "/v1/payouts/{payout_id}/mark-paid": {"bank_reference": "BCA-0001"},
        "/v1/webhook-endpoints": {
            "url": "http://127.0.0.1:9/hooks",
            "events": ["*"],
            "merchant_id": world.merchant_id,
        },
        "/v1/webhook-endpoints/{endpoint_id}": {"status": "disabled"},
        "/v1/webhook-endpoints/{endpoint_id}/rotate-secret": {"previous_valid_for_s": 60},
    }
