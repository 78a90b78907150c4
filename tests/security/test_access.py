"""Authorization and keys under attack, with the routes read from the OpenAPI document so
that a route added later is covered without editing this file: broken object-level
authorization (another owner's ids in paths, bodies and filters), scope escalation with
a narrower key, revoked and expired keys on every route, constant-time comparison of
secrets, and brute force on keys (per key and per client address)."""

from __future__ import annotations

import ast
import hmac
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from card_reader import certificate as card_certificate
from card_reader.certificate import Certificate
from merchant_api import crypto, schema
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.context import ApiContext
from merchant_api.wib import now_us
from tests.api.cards import TEST_CARD_KEYS, SimulatedCard
from tests.api.conftest import Caller, World, make_context, make_key
from tests.api.test_access import objects_of
from tests.security.api import Operation, assert_problem, operations, snapshot, valid_bodies

ROOT = Path(__file__).resolve().parents[2]


def call(caller: Caller, op: Operation, url: str, body: Any = None) -> Any:
    if op.method == "GET":
        return caller.get(url)
    return caller.post(url, body if body is not None else {})


def admitted(op: Operation, scope: Scope, client: TestClient[Any]) -> bool:
    """Whether the route admits the scope (from the handler's own declaration)."""
    route = next(
        handler
        for r in client.app.routes
        if r.path.replace(":uuid", "") == op.path
        for handler in getattr(r, "route_handlers", [])
        if op.method in handler.http_methods
    )
    return scope in route.opt["scopes"]


def test_no_object_route_serves_another_owners_object(
    world: World, ctx: ApiContext, client: TestClient[Any]
) -> None:
    """Promise: on every route the OpenAPI document lists with an object id in its path, a
    merchant or gate-operator key naming another owner's object gets 404 not_found (as if
    it did not exist) or 403 where its scope is not admitted, even with a body that would
    succeed for the owner; nothing changes."""
    ids = objects_of(world, ctx)
    bodies = valid_bodies(world, ids)
    strangers = {Scope.MERCHANT: world.stranger(), Scope.GATE_OPERATOR: world.operator}
    before = snapshot(ctx.engine)
    object_routes = [op for op in operations(client) if op.params]
    assert len(object_routes) >= 20
    unguarded = []
    for op in object_routes:
        assert set(op.params) <= ids.keys(), f"no test object for {op.path}: add it"
        for scope, caller in strangers.items():
            answer = call(caller, op, op.url(ids), bodies.get(op.path))
            expected = 404 if admitted(op, scope, client) else 403
            if answer.status_code != expected:
                unguarded.append((op.method, op.path, scope.value, answer.status_code))
            else:
                assert_problem(answer, expected)
    assert not unguarded, unguarded
    assert snapshot(ctx.engine) == before


# Lists every caller reads whole by design, with why.
SHARED_LISTS = {
    # The terminals' action list: any card may tap at any merchant's terminal, which must
    # then load the card's pending credit; it holds no merchant's own data.
    "/v1/card-credits",
}


def test_filters_and_bodies_naming_another_owners_objects_reveal_nothing(
    world: World, ctx: ApiContext, client: TestClient[Any]
) -> None:
    """Promise: lists filtered by another owner's ids come back empty (never their rows),
    and a POST naming another owner's object in its body (a refund of their sale, a
    webhook for their account, a load through another agent) is refused and changes
    nothing."""
    ids = objects_of(world, ctx)
    other = world.stranger()
    for op in operations(client):
        if op.method != "GET" or op.params or op.path in SHARED_LISTS:
            continue
        for parameter in op.spec.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] in ids:
                answer = other.get(op.path, **{parameter["name"]: ids[parameter["name"]]})
                if answer.status_code == 200:
                    assert answer.json()["data"] == [], (op.path, parameter["name"])
                else:
                    assert_problem(answer)
    before = snapshot(ctx.engine)
    attempts = [
        ("/v1/refunds", {"card_transaction_id": ids["transaction_id"], "amount": 1}),
        (
            "/v1/webhook-endpoints",
            {"url": "http://127.0.0.1:9/x", "events": ["*"], "merchant_id": world.merchant_id},
        ),
        (
            "/v1/loads",
            {
                "card_id": ids["card_id"],
                "amount": 1_000,
                "channel": "agent_cash",
                "card_counter": 0,
                "agent_merchant_id": world.merchant_id,
            },
        ),
    ]
    for path, body in attempts:
        answer = other.post(path, body)
        assert 400 <= answer.status_code < 500, (path, answer.text)
        assert_problem(answer)
    assert snapshot(ctx.engine) == before


def test_a_narrower_key_cannot_widen_itself(
    world: World, ctx: ApiContext, client: TestClient[Any]
) -> None:
    """Promise: merchant, gate-operator and analyst keys cannot make keys, change
    merchants, onboard terminals, issue or block cards or settle (403 scope_insufficient
    on every issuer-only route the OpenAPI document lists), and an analyst writes
    nothing at all."""
    ids = objects_of(world, ctx)
    bodies = valid_bodies(world, ids)
    narrow = {
        Scope.MERCHANT: world.merchant,
        Scope.GATE_OPERATOR: world.operator,
        Scope.ANALYST: Caller(client, make_key(ctx.engine, Scope.ANALYST)),
    }
    before = snapshot(ctx.engine)
    escalations = [
        {**bodies["/v1/api-keys"], "scope": "issuer-admin"},
        {"scope": "merchant", "merchant_id": world.operator_id},
    ]
    for scope, caller in narrow.items():
        for body in escalations:
            assert_problem(caller.post("/v1/api-keys", body), 403, "scope_insufficient")
        for op in operations(client):
            if admitted(op, scope, client):
                assert scope is not Scope.ANALYST or op.method == "GET", op.path
                continue
            answer = call(caller, op, op.url(ids), bodies.get(op.path))
            assert_problem(answer, 403, "scope_insufficient")
    assert snapshot(ctx.engine) == before


def test_revoked_and_expired_keys_are_refused_on_every_route(
    world: World, ctx: ApiContext, client: TestClient[Any]
) -> None:
    """Promise: a revoked key is 401 api_key_revoked and an expired key 401
    api_key_expired on every route, before any work; another server process (a fresh
    app on the same database) stops honouring a revoked key within its key cache time."""
    ids = objects_of(world, ctx)
    bodies = valid_bodies(world, ids)
    # Two server processes; every refusal below is a failed authentication, so the
    # per-address limit is raised out of the way (it has its own test).
    this_process, other_process = (
        TestClient(app=create_app(make_context(ctx.engine, auth_failures_per_minute=10**6)))
        for _ in range(2)
    )
    revoked = world.issuer.ok(world.issuer.post("/v1/api-keys", {"scope": "issuer-admin"}), 201)
    expired = world.issuer.ok(world.issuer.post("/v1/api-keys", {"scope": "issuer-admin"}), 201)
    assert Caller(other_process, revoked["key"]).get("/v1/merchants").status_code == 200
    world.issuer.ok(world.issuer.post(f"/v1/api-keys/{revoked['id']}/revoke"))
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.update(schema.api_keys)
            .where(schema.api_keys.c.id == uuid.UUID(expired["id"]))
            .values(expires_us=now_us() - 1)
        )
    time.sleep(ctx.limits.api_key_cache_s + 0.1)
    before = snapshot(ctx.engine)
    for op in operations(client):
        for key, code in ((revoked["key"], "api_key_revoked"), (expired["key"], "api_key_expired")):
            for http in (this_process, other_process):
                answer = call(Caller(http, key), op, op.url(ids), bodies.get(op.path))
                assert_problem(answer, 401, code)
    assert snapshot(ctx.engine) == before


def test_secrets_are_compared_in_constant_time() -> None:
    """Promise: API key secrets, certificate MACs and load cryptograms are compared with
    hmac.compare_digest (checked on the code path itself), and no source file compares a
    MAC, secret, cryptogram, signature or token with == or !=."""
    # Each module's own `hmac` is wrapped, so other threads' comparisons are not counted.
    with (
        mock.patch.object(crypto, "hmac", wraps=hmac) as api_hmac,
        mock.patch.object(card_certificate, "hmac", wraps=hmac) as card_hmac,
    ):
        token = crypto.new_api_key()
        _, secret = crypto.split_api_key(token.token) or ("", "")
        assert crypto.secret_matches(secret, token.secret_hash)
        # The last character changed (a random secret may already end in "A").
        wrong = secret[:-1] + ("B" if secret.endswith("A") else "A")
        assert not crypto.secret_matches(wrong, token.secret_hash)
        assert api_hmac.compare_digest.call_count == 2
        card = SimulatedCard(balance=100)
        cert = card.debit(10, "POS-1")
        assert card_certificate.verify_certificate(cert, TEST_CARD_KEYS)
        assert not card_certificate.verify_certificate(
            Certificate.from_json({**cert.to_json(), "amount": 9}), TEST_CARD_KEYS
        )
        assert card_hmac.compare_digest.call_count == 2
    assert plain_comparisons("if expected == cert.mac: pass\nok = len(mac) == 16") == [1]
    assert plain_comparisons("if certificate_mac(k, b) != given: pass") == [1]
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("merchant_api", "card_reader", "ledger", "jakartaone")
        for path in (ROOT / package).rglob("*.py")
        for line in plain_comparisons(path.read_text())
    ]
    assert not found, f"secrets compared with ==: {found}"


SECRET_WORDS = ("mac", "secret", "cryptogram", "signature", "token", "password")


def plain_comparisons(source: str) -> list[int]:
    """Lines where something named like a secret is compared with == or != (a length,
    a type or a constant on either side is not a secret's content)."""

    def name(node: ast.expr) -> str:
        if isinstance(node, ast.Call):
            return name(node.func)
        if isinstance(node, ast.Name):
            return node.id
        return node.attr if isinstance(node, ast.Attribute) else ""

    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        if any(isinstance(s, ast.Constant) or name(s) in ("len", "type") for s in sides):
            continue
        if any(word in name(side).lower() for side in sides for word in SECRET_WORDS):
            lines.append(node.lineno)
    return lines


def test_guessing_keys_is_stopped_per_client_address(ctx: ApiContext) -> None:
    """Promise: a client address that fails authentication 30 times in a minute is 429
    rate_limited for every further request, whatever prefixes or secrets it tries, even
    with a valid key, and whatever X-Forwarded-For it claims (the limit is on the
    connection's address, not on a header the client writes)."""
    app = create_app(make_context(ctx.engine, auth_failures_per_minute=30))
    good = make_key(ctx.engine, Scope.ANALYST)
    prefix = crypto.split_api_key(good)
    assert prefix is not None
    attacker = TestClient(app=app)
    statuses = []
    for attempt in range(60):
        guess = (
            f"jo_{prefix[0]}_{uuid.uuid4().hex}"  # the real prefix, a guessed secret
            if attempt % 2
            else f"jo_{uuid.uuid4().hex[:16]}_{uuid.uuid4().hex}"  # any prefix
        )
        answer = attacker.get(
            "/v1/merchants",
            headers={"Authorization": f"Bearer {guess}", "X-Forwarded-For": f"10.0.0.{attempt}"},
        )
        statuses.append(answer.status_code)
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {429}
    blocked = attacker.get("/v1/merchants", headers={"Authorization": f"Bearer {good}"})
    assert_problem(blocked, 429, "rate_limited")
    assert int(blocked.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("burst", [5])
def test_a_key_hammering_the_api_is_rate_limited(ctx: ApiContext, burst: int) -> None:
    """Promise: one key's requests beyond its bucket are 429 rate_limited with
    Retry-After and RateLimit-* headers, before any work, while another key is served."""
    app = create_app(make_context(ctx.engine, rate_per_second=0.01, rate_burst=burst))
    with TestClient(app=app) as client:
        hammer = Caller(client, make_key(ctx.engine, Scope.ANALYST))
        statuses = [hammer.get("/v1/merchants").status_code for _ in range(burst + 20)]
        assert statuses[:burst] == [200] * burst and set(statuses[burst:]) == {429}
        refused = hammer.get("/v1/merchants")
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert int(refused.headers["Retry-After"]) >= 1
        assert Caller(client, make_key(ctx.engine, Scope.ANALYST)).get("/v1/merchants")
