"""Who may do what: every route checks its scopes, every object route hides other owners'
objects (404, exactly as for a missing one) and changes nothing for them; API keys are
hashed, revocable, expiring, and guessing them is rate limited."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from ledger import schema as ledger_schema
from merchant_api import schema
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.context import ApiContext
from merchant_api.crypto import hash_secret, split_api_key
from merchant_api.wib import business_date, now_us
from tests.api.conftest import Caller, World, make_context, make_key

PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def routes(client: TestClient[Any]) -> list[tuple[str, str, frozenset[Scope]]]:
    """(method, path template, scopes) of every /v1 route."""
    found = []
    for route in client.app.routes:
        if not route.path.startswith("/v1"):
            continue
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(set(handler.http_methods) - {"OPTIONS", "HEAD"}):
                found.append((method, route.path, handler.opt["scopes"]))
    return found


def call(caller: Caller, method: str, path: str, body: Any = None) -> Any:
    if method == "GET":
        return caller.get(path)
    return caller.post(path, body if body is not None else {})


def snapshot(ctx: ApiContext) -> dict[str, Any]:
    """Every business table's rows, and the ledger's (idempotency records aside)."""
    tables = [t for t in schema.metadata.sorted_tables if t.name != "idempotency_keys"]
    tables += list(ledger_schema.metadata.sorted_tables)
    with ctx.engine.connect() as conn:
        return {t.name: sorted(map(str, conn.execute(sa.select(t)).all())) for t in tables}


def test_every_route_refuses_the_scopes_it_does_not_admit(
    client: TestClient[Any], ctx: ApiContext
) -> None:
    world_keys = {
        scope: Caller(client, make_key(ctx.engine, scope))
        for scope in (Scope.ISSUER_ADMIN, Scope.ANALYST)
    }
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.merchants).values(
                id=uuid.uuid4(),
                kind="merchant",
                name="m",
                mcc="5411",
                kota="k",
                kecamatan="k",
                mdr_bps=0,
                payable_account_id=uuid.uuid4(),
                created_us=0,
                updated_us=0,
            )
        )
        operator_id = uuid.uuid4()
        conn.execute(
            sa.insert(schema.merchants).values(
                id=operator_id,
                kind="operator",
                name="o",
                mcc="4111",
                kota="k",
                kecamatan="k",
                mdr_bps=0,
                payable_account_id=uuid.uuid4(),
                created_us=0,
                updated_us=0,
            )
        )
        merchant_id = conn.execute(
            sa.select(schema.merchants.c.id).where(schema.merchants.c.kind == "merchant")
        ).scalar_one()
    world_keys[Scope.MERCHANT] = Caller(client, make_key(ctx.engine, Scope.MERCHANT, merchant_id))
    world_keys[Scope.GATE_OPERATOR] = Caller(
        client, make_key(ctx.engine, Scope.GATE_OPERATOR, operator_id)
    )
    checked = 0
    for method, path, allowed in routes(client):
        url = PARAM.sub(lambda _: str(uuid.uuid4()), path)
        for scope, caller in world_keys.items():
            answer = call(caller, method, url)
            if scope in allowed:
                assert answer.status_code != 403 or answer.json()["code"] != "scope_insufficient", (
                    method,
                    path,
                    scope,
                )
            else:
                assert answer.status_code == 403, (method, path, scope, answer.text)
                assert answer.json()["code"] == "scope_insufficient"
                checked += 1
    assert checked > 40


def objects_of(world: World, ctx: ApiContext) -> dict[str, str]:
    """One object of each kind belonging to the world's merchant."""
    world.issuer.ok(
        world.issuer.post(f"/v1/merchants/{world.merchant_id}", {"load_agent": True}), 200
    )
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(9_000, "POS-1").to_json()), 201
    )
    refund = world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 1_000}),
        201,
    )
    load = world.merchant.ok(
        world.merchant.post(
            "/v1/loads",
            {
                "card_id": card_id,
                "amount": 1_000,
                "channel": "agent_cash",
                "card_counter": card.counter,
            },
        ),
        201,
    )
    endpoint = world.merchant.ok(
        world.merchant.post(
            "/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/h", "events": ["*"]}
        ),
        201,
    )
    event = world.merchant.ok(world.merchant.get("/v1/events"))["data"][0]
    terminal = world.merchant.ok(world.merchant.get("/v1/terminals"))["data"][0]
    yesterday = (datetime.fromisoformat(business_date(now_us())) - timedelta(days=1)).date()
    with ctx.engine.begin() as conn:
        for table in (schema.card_transactions, schema.refunds):
            conn.execute(sa.update(table).values(business_date=yesterday.isoformat()))
    settlement = world.issuer.ok(
        world.issuer.post(
            "/v1/settlements",
            {"merchant_id": world.merchant_id, "business_date": yesterday.isoformat()},
        ),
        201,
    )
    key = world.issuer.ok(world.issuer.get("/v1/api-keys", merchant_id=world.merchant_id))["data"][
        0
    ]
    return {
        "merchant_id": world.merchant_id,
        "terminal_id": terminal["id"],
        "card_id": card_id,
        "transaction_id": sale["id"],
        "refund_id": refund["id"],
        "load_id": load["id"],
        "settlement_id": settlement["id"],
        "payout_id": settlement["payout_id"],
        "endpoint_id": endpoint["id"],
        "event_id": event["id"],
        "api_key_id": key["id"],
    }


BODIES = {
    "/v1/loads/{load_id:uuid}/confirm": {"certificate": {"version": 1}},
    "/v1/webhook-endpoints/{endpoint_id:uuid}": {"status": "disabled"},
    "/v1/webhook-endpoints/{endpoint_id:uuid}/rotate-secret": {},
}


def test_another_owners_objects_answer_404_and_nothing_changes(
    world: World, ctx: ApiContext
) -> None:
    ids = objects_of(world, ctx)
    strangers = [world.operator, world.stranger()]
    before = snapshot(ctx)
    object_routes = [(m, p, s) for m, p, s in routes(world.issuer.http) if PARAM.search(p)]
    covered = set()
    for method, path, allowed in object_routes:
        names = PARAM.findall(path)
        url = PARAM.sub(lambda match: ids[match.group(1)], path)
        for stranger in strangers:
            answer = call(stranger, method, url, BODIES.get(path))
            scope = Scope.GATE_OPERATOR if stranger is world.operator else Scope.MERCHANT
            expected = 404 if scope in allowed else 403
            assert answer.status_code == expected, (method, path, answer.text)
            if expected == 404:
                assert answer.json()["code"] == "not_found"
                covered.add((method, path))
        # Its owner (or the issuer, for issuer routes) does see it.
        owner = world.merchant if Scope.MERCHANT in allowed else world.issuer
        if method == "GET":
            assert owner.get(url).status_code == 200, (path, names)
    assert snapshot(ctx) == before
    owner_routes = {
        (m, p) for m, p, allowed in object_routes if allowed & {Scope.MERCHANT, Scope.GATE_OPERATOR}
    }
    assert covered == owner_routes and len(covered) == 13


def test_api_keys_are_hashed_shown_once_revocable_and_expire(world: World, ctx: ApiContext) -> None:
    made = world.issuer.ok(
        world.issuer.post("/v1/api-keys", {"scope": "analyst", "name": "dashboards"}), 201
    )
    token = made["key"]
    prefix, secret = split_api_key(token) or ("", "")
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.select(schema.api_keys).where(schema.api_keys.c.id == uuid.UUID(made["id"]))
        ).one()
        stored = conn.execute(sa.select(schema.idempotency_keys.c.response_body)).scalars().all()
    assert bytes(row.secret_hash) == hash_secret(secret) and row.prefix == prefix
    assert not any(token.encode() in bytes(body) for body in stored)
    analyst = Caller(world.issuer.http, token)
    assert analyst.get("/v1/merchants").status_code == 200
    assert world.issuer.ok(world.issuer.get(f"/v1/api-keys/{made['id']}"))["key"] is None
    world.issuer.ok(world.issuer.post(f"/v1/api-keys/{made['id']}/revoke"), 200)
    revoked = analyst.get("/v1/merchants")
    assert (revoked.status_code, revoked.json()["code"]) == (401, "api_key_revoked")

    soon = datetime.now(UTC) + timedelta(seconds=1)
    expiring = world.issuer.ok(
        world.issuer.post("/v1/api-keys", {"scope": "analyst", "expires_at": soon.isoformat()}), 201
    )
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.update(schema.api_keys)
            .where(schema.api_keys.c.id == uuid.UUID(expiring["id"]))
            .values(expires_us=now_us() - 1)
        )
    fresh_process = TestClient(app=create_app(make_context(ctx.engine)))
    expired = Caller(fresh_process, expiring["key"]).get("/v1/merchants")
    assert (expired.status_code, expired.json()["code"]) == (401, "api_key_expired")


def test_missing_and_wrong_keys_are_401_and_guessing_is_rate_limited(ctx: ApiContext) -> None:
    limited = make_context(ctx.engine, auth_failures_per_minute=5)
    with TestClient(app=create_app(limited)) as client:
        assert client.get("/v1/merchants").json()["code"] == "api_key_missing"
        codes = [
            client.get(
                "/v1/merchants", headers={"Authorization": f"Bearer jo_{'0' * 16}_{'x' * 43}"}
            ).json()["code"]
            for _ in range(5)
        ]
        assert codes == ["api_key_invalid"] * 5
        blocked = client.get("/v1/merchants", headers={"Authorization": "Bearer whatever"})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        good = make_key(ctx.engine, Scope.ANALYST)
        still_blocked = client.get("/v1/merchants", headers={"Authorization": f"Bearer {good}"})
        assert still_blocked.status_code == 429  # from that address, until the minute passes


def test_each_key_is_rate_limited_with_headers(ctx: ApiContext) -> None:
    limited = make_context(ctx.engine, rate_per_second=0.001, rate_burst=3)
    with TestClient(app=create_app(limited)) as client:
        caller = Caller(client, make_key(ctx.engine, Scope.ANALYST))
        statuses = [caller.get("/v1/merchants").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = caller.get("/v1/merchants")
        assert refused.json()["code"] == "rate_limited"
        assert (
            refused.headers["RateLimit-Limit"] == "3"
            and refused.headers["RateLimit-Remaining"] == "0"
        )
        assert int(refused.headers["Retry-After"]) >= 1
        other = Caller(client, make_key(ctx.engine, Scope.ANALYST))
        assert other.get("/v1/merchants").status_code == 200


def test_key_scopes_match_their_owners(world: World) -> None:
    wrong = world.issuer.post(
        "/v1/api-keys", {"scope": "gate-operator", "merchant_id": world.merchant_id}
    )
    assert (wrong.status_code, wrong.json()["code"]) == (422, "merchant_kind_mismatch")
    ownerless = world.issuer.post("/v1/api-keys", {"scope": "merchant"})
    assert ownerless.json()["code"] == "merchant_kind_mismatch"


@pytest.mark.parametrize(
    "header", ["Basic abc", "Bearer", "Bearer jo_short_x", "Bearer " + "a" * 5000]
)
def test_malformed_authorization_is_invalid(client: TestClient[Any], header: str) -> None:
    answer = client.get("/v1/merchants", headers={"Authorization": header})
    assert (answer.status_code, answer.json()["code"]) == (401, "api_key_invalid")
