"""Bad input to the API gets a clear, specific refusal (4xx problem+json with a stable
code) and changes nothing: hostile bodies on every POST route, oversized bodies and
batches, deep nesting, huge integers, non-UTF-8, Unicode look-alikes in text fields and
identifiers, and SQL text in every string field and query parameter.

These run on PostgreSQL, where a NUL in a text value or an integer past BIGINT is an error
of the database itself; a refused request must never get that far.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from jakartaone.migrate import upgrade
from ledger import make_engine
from merchant_api import schema
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.context import ApiContext
from tests.api.cards import SimulatedCard
from tests.api.conftest import Caller, World, make_context, make_key, onboard
from tests.api.test_access import objects_of
from tests.api.test_gate_batches import upload
from tests.security.api import (
    PARAM,
    assert_problem,
    operations,
    snapshot,
    valid_bodies,
)
from tests.security.strategies import HOSTILE_TEXT, json_values, mutated_json, nested

# One server (one database) for the module: its tests stay in one xdist worker.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("security-bad-input")]


@dataclass
class Env:
    world: World
    ctx: ApiContext
    ids: dict[str, str]


@pytest.fixture(scope="module")
def env(make_postgres_database: Callable[[], str]) -> Iterator[Env]:
    """One PostgreSQL database and world for the module: every test proves that what it
    sends changes nothing, so they can share it."""
    engine = make_engine(make_postgres_database())
    upgrade(engine)
    # Thousands of refusals from one key, faster than the default rate limit allows: these
    # tests are about what a request may contain (tests/api covers the rate limit).
    ctx = make_context(engine, rate_per_second=1_000_000.0, rate_burst=1_000_000)
    with TestClient(app=create_app(ctx)) as client:
        world = onboard(Caller(client, make_key(engine, Scope.ISSUER_ADMIN)))
        ids = objects_of(world, ctx)
        # Requests that succeed may revoke the key named here: not one the tests use.
        spare = {"scope": "merchant", "merchant_id": world.merchant_id, "name": "spare"}
        ids["api_key_id"] = world.issuer.ok(world.issuer.post("/v1/api-keys", spare))["id"]
        yield Env(world, ctx, ids)
    engine.dispose()


SQL_TEXT = [
    text for text in HOSTILE_TEXT if any(w in text for w in ("SELECT", "DROP", "DELETE", "OR"))
]


def post_raw(caller: Caller, path: str, content: bytes, **headers: str) -> Any:
    return caller.http.post(
        path,
        content=content,
        headers={
            **caller.headers(str(uuid.uuid4())),
            "Content-Type": "application/json",
            **headers,
        },
    )


def test_hostile_bodies_on_every_post_route_are_refused_and_change_nothing(env: Env) -> None:
    """Promise: on every POST route the OpenAPI document lists, any JSON body (a valid one
    with a field replaced by any JSON value, removed or added; or any value at all) is
    answered below 500, every refusal is problem+json with a code, and a refused request
    changes no table (only its Idempotency-Key record and, for certificates, the
    quarantine)."""
    world, ids = env.world, env.ids
    bodies = valid_bodies(world, ids)
    posts = [op for op in operations(world.issuer.http) if op.method == "POST"]
    assert {op.path for op in posts} == set(bodies), "a POST route without a valid body here"

    for op in posts:
        hostile_bodies_for(env, op.path, op.url(ids), bodies[op.path])()


def hostile_bodies_for(env: Env, path: str, url: str, valid: Any) -> Callable[[], None]:
    @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=mutated_json(valid) | json_values)
    def fuzz(body: Any) -> None:
        before = snapshot(env.ctx.engine)
        answer = post_raw(env.world.issuer, url, json.dumps(body).encode())
        assert answer.status_code < 500, (path, body, answer.text)
        if answer.status_code >= 400:
            assert_problem(answer)
            assert snapshot(env.ctx.engine) == before, (path, body, answer.text)

    return fuzz


def test_an_oversized_body_is_413_and_changes_nothing(env: Env) -> None:
    """Promise: a body over 1 MiB is 413 request_too_large on every POST route."""
    world, ctx, ids = env.world, env.ctx, env.ids
    before = snapshot(ctx.engine)
    huge = json.dumps({"name": "x" * (1 << 20)}).encode()
    for op in operations(world.issuer.http):
        if op.method == "POST":
            assert_problem(post_raw(world.issuer, op.url(ids), huge), 413, "request_too_large")
    assert snapshot(ctx.engine) == before


def test_an_oversized_batch_is_refused_whole(env: Env) -> None:
    """Promise: a gate batch over 1,000 certificates is 413 batch_too_large, nothing
    recorded (not even in quarantine: the whole batch is refused, the gate keeps it)."""
    world, ctx = env.world, env.ctx
    card = SimulatedCard(balance=10**9)
    certificates = [card.debit(1, "GATE-1", seq).to_json() for seq in range(1, 1_002)]
    batch_id = str(uuid.uuid4())
    body = {
        "batch_id": batch_id,
        "terminal_id": "GATE-1",
        "first_terminal_seq": 1,
        "last_terminal_seq": 1_001,
        "certificates": certificates,
    }
    before = snapshot(ctx.engine, skip={"idempotency_keys"})
    answer = world.operator.post("/v1/gate-batches", body, key=batch_id)
    assert_problem(answer, 413, "batch_too_large")
    assert snapshot(ctx.engine, skip={"idempotency_keys"}) == before


@pytest.mark.parametrize("depth", [33, 1_000, 200_000])
def test_deeply_nested_json_is_400(env: Env, depth: int) -> None:
    """Promise: JSON nested past 32 levels is 400 request_invalid, however deep (never a
    RecursionError), on a route that takes free-form JSON and on one that does not."""
    world, ctx = env.world, env.ctx
    before = snapshot(ctx.engine)
    deep = b'{"certificate":' + b"[" * depth + b"]" * depth + b"}"
    for path in ("/v1/card-transactions", "/v1/merchants"):
        answer = post_raw(world.issuer, path, deep)
        assert_problem(answer, 400, "request_invalid")
        assert "nest" in answer.json()["detail"]
    assert snapshot(ctx.engine) == before
    assert json.dumps(nested(10))  # the helper nests as the test means


HUGE = [2**63, -(2**63) - 1, 2**64, 10**40, -1]
MISTYPED = [1.5, 1e3, 1.0000000000000001e16, "1000", True, None, [1], {"n": 1}]


def test_huge_and_mistyped_integers_are_400(env: Env) -> None:
    """Promise: an integer field given a value past BIGINT (or below its floor), a float
    (even a whole one: 1e16+1 would arrive as 1e16), a numeric string, a boolean, null or a
    container is 400 request_invalid naming the field; a query integer out of range is
    400 too."""
    world, ctx, ids = env.world, env.ctx, env.ids
    before = snapshot(ctx.engine)
    for value in HUGE + MISTYPED:
        integer_fields_refuse(world, ids, value)
    for value in [*HUGE, "abc", "１０", "0x10"]:
        for path, query in (("/v1/merchants", "limit"), ("/v1/hotlist", "since_version")):
            answer = world.issuer.http.get(
                path, params={query: str(value)}, headers=world.issuer.headers()
            )
            assert_problem(answer, 400, "request_invalid")
    assert snapshot(ctx.engine) == before


def integer_fields_refuse(world: World, ids: dict[str, str], value: Any) -> None:
    cases = [
        ("/v1/loads", {**valid_bodies(world, ids)["/v1/loads"], "amount": value}, "amount"),
        ("/v1/refunds", {"card_transaction_id": ids["transaction_id"], "amount": value}, "amount"),
        (
            "/v1/merchants",
            {**valid_bodies(world, ids)["/v1/merchants"], "mdr_bps": value},
            "mdr_bps",
        ),
        (
            f"/v1/webhook-endpoints/{ids['endpoint_id']}/rotate-secret",
            {"previous_valid_for_s": value},
            "previous_valid_for_s",
        ),
    ]
    for path, body, field in cases:
        answer = world.issuer.post(path, body)
        assert_problem(answer, 400, "request_invalid")
        assert field in json.dumps(answer.json().get("errors")), (value, answer.text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"kind":"merchant","name":"Toko \xff\xfe","mcc":"5411"}',
        "\ufeff{}".encode("utf-16"),
        b"\xc0\xaf",
        b'{"name": "\\ud800"}',
        b"{'single': 'quotes'}",
        b"",
    ],
    ids=["latin1", "utf16", "overlong", "lone-surrogate", "not-json", "empty"],
)
def test_bodies_that_are_not_utf8_json_are_400(env: Env, body: bytes) -> None:
    """Promise: a body that is not UTF-8, not JSON, or holds a lone surrogate is 400
    request_invalid, never a decoding crash."""
    world, ctx = env.world, env.ctx
    before = snapshot(ctx.engine)
    for path in ("/v1/merchants", "/v1/card-transactions"):
        assert_problem(post_raw(world.issuer, path, body), 400, "request_invalid")
    assert snapshot(ctx.engine) == before


INVISIBLE = [
    "\x00",
    "\u200b",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\u00a0",
    "\n",
    "\x1b[31m",
    "\U000f0000",
]


def text_fields(world: World, ids: dict[str, str]) -> list[tuple[str, dict[str, Any], str]]:
    """(route, valid body, field) for every free-text or identifier string field."""
    bodies = valid_bodies(world, ids)
    return [
        ("/v1/merchants", bodies["/v1/merchants"], "name"),
        ("/v1/merchants", bodies["/v1/merchants"], "kota"),
        ("/v1/merchants", bodies["/v1/merchants"], "kecamatan"),
        ("/v1/merchants", bodies["/v1/merchants"], "mcc"),
        ("/v1/merchants", bodies["/v1/merchants"], "payout_bank_account"),
        (f"/v1/merchants/{world.merchant_id}", {"name": "Warung"}, "name"),
        ("/v1/terminals", {**bodies["/v1/terminals"], "line": "L1", "station": "S1"}, "line"),
        ("/v1/terminals", {**bodies["/v1/terminals"], "line": "L1", "station": "S1"}, "station"),
        ("/v1/terminals", bodies["/v1/terminals"], "terminal_code"),
        ("/v1/api-keys", bodies["/v1/api-keys"], "name"),
        ("/v1/cards", bodies["/v1/cards"], "serial"),
        (
            "/v1/cards",
            {**bodies["/v1/cards"], "registered": True, "holder_reference": "kyc-9"},
            "holder_reference",
        ),
        (f"/v1/cards/{ids['card_id']}/register", {"holder_reference": "kyc-9"}, "holder_reference"),
        ("/v1/refunds", {**bodies["/v1/refunds"], "reason": "rusak"}, "reason"),
        (
            f"/v1/payouts/{ids['payout_id']}/mark-paid",
            {"bank_reference": "REF-1"},
            "bank_reference",
        ),
        ("/v1/webhook-endpoints", bodies["/v1/webhook-endpoints"], "url"),
    ]


def test_invisible_and_control_characters_are_refused_in_every_text_field(env: Env) -> None:
    """Promise: NUL and other controls, zero-width and direction-changing characters,
    non-ASCII spaces and private-use characters, anywhere in any text field, are 400
    request_invalid naming the field; nothing is stored (PostgreSQL would refuse a NUL
    with a 500; a bidi override makes a name read differently from what is stored)."""
    world, ctx, ids = env.world, env.ctx, env.ids
    before = snapshot(ctx.engine)
    for path, body, field in text_fields(world, ids):
        for bad in INVISIBLE:
            original = str(body[field])
            for spoiled in (bad + original, original[:2] + bad + original[2:], original + bad):
                answer = world.issuer.post(path, {**body, field: spoiled})
                assert_problem(answer, 400, "request_invalid")
                assert field in json.dumps(answer.json().get("errors")), (field, answer.text)
    assert snapshot(ctx.engine) == before


LOOK_ALIKES = {
    "terminal_code": ["P\u041eS-1", "ＰＯＳ-1", "POS\u22121", "POS-1\n", "POS-\U0001d7cf"],
    "mcc": ["５４１１", "\u0665\u0664\u0661\u0661", "5411\n", "541l"],
    "serial": ["０123456789abcdef", "0123456789abcdeｆ", "0123456789abcdef\n"],
    "payout_bank_account": ["0011\u2212223344", "００１１"],
}


def test_look_alike_identifiers_are_refused(env: Env) -> None:
    """Promise: identifiers (terminal codes, MCCs, card serials, bank accounts) take ASCII
    only: a Cyrillic O, fullwidth or other-script digits, a minus sign for a hyphen or a
    trailing newline is 400 request_invalid, never a second terminal that looks like the
    first."""
    world, ctx, ids = env.world, env.ctx, env.ids
    before = snapshot(ctx.engine)
    fields = {field: (path, body) for path, body, field in text_fields(world, ids)}
    for field, spellings in LOOK_ALIKES.items():
        path, body = fields[field]
        for spelling in spellings:
            answer = world.issuer.post(path, {**body, field: spelling})
            assert_problem(answer, 400, "request_invalid")
    assert snapshot(ctx.engine) == before


def test_look_alike_ids_and_idempotency_keys_are_refused(env: Env) -> None:
    """Promise: an object id spelled with fullwidth digits is not the object (404), and an
    Idempotency-Key outside printable ASCII is 400 idempotency_key_invalid."""
    world, ids = env.world, env.ids
    merchant = ids["merchant_id"]
    wide = merchant.translate({ord(d): chr(0xFF10 + int(d)) for d in "0123456789"})
    assert wide != merchant
    assert_problem(world.issuer.get(f"/v1/merchants/{wide}"), 404, "not_found")
    assert world.issuer.get(f"/v1/merchants/{merchant}").status_code == 200
    for key in ("ключ-1", "key\u200b1", "key\t1", "key\x001", "x" * 256, ""):
        answer = world.issuer.http.post(
            "/v1/merchants",
            json=valid_bodies(world, ids)["/v1/merchants"],
            headers=[
                (b"Authorization", f"Bearer {world.issuer.key}".encode()),
                (b"Idempotency-Key", key.encode()),
            ],
        )
        assert_problem(answer, 400, "idempotency_key_invalid")


def test_accents_are_stored_in_one_spelling(env: Env) -> None:
    """Promise: a name with decomposed accents is stored composed (NFC), so two spellings
    that look the same are one."""
    world = env.world
    body = valid_bodies(world, env.ids)["/v1/merchants"]
    made = world.issuer.ok(world.issuer.post("/v1/merchants", {**body, "name": "Kafe\u0301 Ibu"}))
    assert made["name"] == "Kaf\u00e9 Ibu" == unicodedata.normalize("NFC", "Kafe\u0301 Ibu")


def test_sql_text_in_every_string_field_is_data(env: Env) -> None:
    """Promise: SQL in any string field or query parameter is stored and answered as the
    text it is (or refused by the field's own rule), never run: the tables stay, and
    every answer is below 500."""
    world, ctx, ids = env.world, env.ctx, env.ids
    stored = 0
    for path, body, field in text_fields(world, ids):
        for text in SQL_TEXT:
            answer = world.issuer.post(path, {**body, field: text[:64]})
            assert answer.status_code < 500, answer.text
            if answer.status_code < 300:
                stored += 1
                if answer.status_code == 201 and field in answer.json():
                    assert answer.json()[field] == text[:64], (path, field, answer.text)
            else:
                assert_problem(answer)
    assert stored >= 20
    gets = [op for op in operations(world.issuer.http) if op.method == "GET"]
    for op in gets:
        url = PARAM.sub(lambda m: ids.get(m.group(1), str(uuid.uuid4())), op.path)
        for parameter in op.spec.get("parameters", []):
            if parameter["in"] != "query":
                continue
            for text in SQL_TEXT:
                answer = world.issuer.http.get(
                    url, params={parameter["name"]: text}, headers=world.issuer.headers()
                )
                assert answer.status_code < 500, (url, parameter["name"], answer.text)
                if answer.status_code >= 400:
                    assert_problem(answer, 400, "request_invalid")
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.merchants)).scalar()
        assert conn.execute(
            sa.select(sa.func.count()).select_from(schema.card_transactions)
        ).scalar()


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=40))
def test_any_text_in_a_name_is_stored_exactly_or_refused(env: Env, text: str) -> None:
    """Promise: any Unicode text as a merchant name is refused (400 with the field) or
    stored and answered exactly as sent (in NFC)."""
    body = {
        "kind": "merchant",
        "name": text,
        "mcc": "5411",
        "kota": "Jakarta Utara",
        "kecamatan": "Koja",
        "mdr_bps": 10,
    }
    issuer = env.world.issuer
    answer = issuer.post("/v1/merchants", body)
    if answer.status_code == 201:
        assert answer.json()["name"] == unicodedata.normalize("NFC", text)
        again = issuer.get(f"/v1/merchants/{answer.json()['id']}").json()
        assert again["name"] == answer.json()["name"]
    else:
        assert_problem(answer, 400, "request_invalid")


def test_a_certificate_with_hostile_text_is_quarantined_not_a_crash(env: Env) -> None:
    """Promise: a certificate whose terminal id holds a NUL, a bidi override or a
    look-alike is refused with its format reason and kept in quarantine (the raw terminal
    id recorded only when it is printable), single or in a batch; never a 500."""
    world, ctx = env.world, env.ctx
    card = SimulatedCard(balance=10_000)
    genuine = card.debit(1_000, "POS-1").to_json()
    for terminal in ("POS\x001", "POS-\u202e1", "Р0S-1", "P" * 70):
        before = snapshot(ctx.engine)
        answer = world.merchant.post("/v1/card-transactions", {**genuine, "terminal_id": terminal})
        assert_problem(answer, 422, "terminal_id_invalid")
        assert snapshot(ctx.engine) == before
        batch = upload(world.merchant, "POS-1", [{**genuine, "terminal_id": terminal}])
        items = world.merchant.ok(batch)["items"]
        assert [(i["outcome"], i["reason"]) for i in items] == [
            ("quarantined", "terminal_id_invalid")
        ]
    with ctx.engine.connect() as conn:
        codes = set(
            conn.execute(
                sa.select(schema.quarantine.c.terminal_code).where(
                    schema.quarantine.c.reason == "terminal_id_invalid"
                )
            ).scalars()
        )
    assert codes <= {None, "Р0S-1"}, codes
