"""Gate batches: each certificate answered in order, the batch recorded whole or not at
all, a retry answered with the first answer, forwarded certificates posted to their own
terminal's owner, nothing dropped."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from ledger import run_read
from ledger.verify import verify
from merchant_api import schema
from merchant_api.context import ApiContext
from merchant_api.services import certificates
from tests.api.cards import SimulatedCard
from tests.api.conftest import Caller, World
from tests.conftest import both_backends


def upload(caller: Caller, terminal: str, certs: list[Any], batch_id: str | None = None) -> Any:
    batch_id = batch_id or str(uuid.uuid4())
    seqs = [
        c["terminal_seq"] for c in certs if isinstance(c, dict) and c.get("terminal_id") == terminal
    ]
    body = {
        "batch_id": batch_id,
        "terminal_id": terminal,
        "first_terminal_seq": min(seqs, default=0),
        "last_terminal_seq": max(seqs, default=0),
        "certificates": certs,
    }
    return caller.post("/v1/gate-batches", body, key=batch_id)


def count(ctx: ApiContext, table: sa.Table) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@both_backends
def test_a_batch_answers_every_certificate_and_a_retry_gets_the_same_answer(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 30_000)
    stranger = SimulatedCard(balance=10_000)
    fares = [card.debit(3_500, "GATE-1", seq).to_json() for seq in (1, 2, 3)]
    certs = [
        fares[0],
        fares[1],
        fares[1],
        {**fares[2], "amount": 1},
        fares[2],
        stranger.debit(3_500, "GATE-1", 4).to_json(),
        {"not": "a certificate"},
    ]
    batch_id = str(uuid.uuid4())

    first = upload(world.operator, "GATE-1", certs, batch_id)
    retry = upload(world.operator, "GATE-1", certs, batch_id)

    assert first.status_code == 201, first.text
    assert [(i["outcome"], i["reason"]) for i in first.json()["items"]] == [
        ("posted", None),
        ("posted", None),
        ("duplicate", None),
        ("quarantined", "mac_invalid"),
        ("posted", None),
        ("quarantined", "card_unknown"),
        ("quarantined", "json_field_missing"),
    ]
    assert [i["terminal_seq"] for i in first.json()["items"]] == [1, 2, 2, 3, 3, 4, None]
    assert retry.status_code == 201 and retry.json() == first.json()  # replayed
    assert retry.headers.get("Idempotent-Replayed") == "true"
    card_now = world.issuer.ok(world.issuer.get(f"/v1/cards/{card_id}"), 200)
    assert card_now["balance"] == card.balance == 30_000 - 3 * 3_500
    assert count(ctx, schema.quarantine) == 3
    with ctx.engine.connect() as conn:
        batch = conn.execute(sa.select(schema.gate_batches)).one()
    assert (
        batch.item_count,
        batch.posted_count,
        batch.duplicate_count,
        batch.quarantined_count,
    ) == (7, 3, 1, 3)
    assert (batch.first_terminal_seq, batch.last_terminal_seq) == (1, 4)
    # Another key of the same operator retrying after the Idempotency-Key record is gone
    # still gets the stored answer.
    with ctx.engine.begin() as conn:
        conn.execute(sa.delete(schema.idempotency_keys))
    again = upload(world.operator, "GATE-1", certs, batch_id)
    assert again.status_code == 200 and again.json() == first.json()
    assert run_read(ctx.engine, verify).ok


def test_a_batch_id_reused_for_another_body_is_refused(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    batch_id = str(uuid.uuid4())
    assert (
        upload(
            world.operator, "GATE-1", [card.debit(100, "GATE-1").to_json()], batch_id
        ).status_code
        == 201
    )
    other = upload(world.operator, "GATE-1", [card.debit(200, "GATE-1").to_json()], batch_id)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    with_other_key = Caller(
        world.operator.http,
        world.issuer.ok(
            world.issuer.post(
                "/v1/api-keys", {"scope": "gate-operator", "merchant_id": world.operator_id}
            ),
            201,
        )["key"],
    )
    conflict = upload(with_other_key, "GATE-1", [card.debit(300, "GATE-1").to_json()], batch_id)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_key_reused")


def test_forwarded_certificates_post_to_their_own_terminals_owner(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    at_shop = card.debit(2_000, "POS-1", 5).to_json()  # read from the card's purse at the gate
    answer = upload(world.operator, "GATE-1", [at_shop, card.debit(3_500, "GATE-1", 1).to_json()])
    assert [i["outcome"] for i in answer.json()["items"]] == ["posted", "posted"]
    shop_sales = world.merchant.ok(world.merchant.get("/v1/card-transactions", card_id=card_id))
    debits = [t["amount"] for t in shop_sales["data"] if t["kind"] == "debit"]
    assert debits == [2_000]  # the load's credit, at the shop's terminal, is listed too


def test_a_gate_the_caller_does_not_own_gets_everything_quarantined(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    answer = upload(world.merchant, "GATE-1", [card.debit(3_500, "GATE-1").to_json()])
    assert answer.status_code == 201
    assert answer.json()["items"][0] == {
        "terminal_seq": 1,
        "outcome": "quarantined",
        "reason": "terminal_not_owned",
    }
    assert count(ctx, schema.card_transactions) == 1  # the load only
    assert count(ctx, schema.gate_batches) == 0


def test_envelope_errors_refuse_the_whole_batch(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    cert = card.debit(100, "GATE-1").to_json()
    batch_id = str(uuid.uuid4())
    mismatch = world.operator.post(
        "/v1/gate-batches",
        {
            "batch_id": batch_id,
            "terminal_id": "GATE-1",
            "first_terminal_seq": 1,
            "last_terminal_seq": 1,
            "certificates": [cert],
        },
        key=str(uuid.uuid4()),
    )
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "batch_id_mismatch")
    backwards = world.operator.post(
        "/v1/gate-batches",
        {
            "batch_id": batch_id,
            "terminal_id": "GATE-1",
            "first_terminal_seq": 5,
            "last_terminal_seq": 1,
            "certificates": [cert],
        },
        key=batch_id,
    )
    assert (backwards.status_code, backwards.json()["code"]) == (422, "batch_seq_out_of_range")
    empty_id = str(uuid.uuid4())
    empty = world.operator.post(
        "/v1/gate-batches",
        {
            "batch_id": empty_id,
            "terminal_id": "GATE-1",
            "first_terminal_seq": 0,
            "last_terminal_seq": 0,
            "certificates": [],
        },
        key=empty_id,
    )
    assert (empty.status_code, empty.json()["code"]) == (400, "request_invalid")
    assert count(ctx, schema.card_transactions) == 1


def test_a_batch_over_the_limit_is_refused_whole(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    cert = card.debit(1, "GATE-1").to_json()
    too_many = [cert] * (ctx.limits.max_batch_certificates + 1)
    answer = upload(world.operator, "GATE-1", too_many)
    assert (answer.status_code, answer.json()["code"]) == (413, "batch_too_large")
    assert count(ctx, schema.quarantine) == 0


def test_a_batch_that_fails_midway_records_nothing(
    world: World, ctx: ApiContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    certs = [card.debit(100, "GATE-1", s).to_json() for s in (1, 2)] + [{"junk": True}]
    real_quarantine = certificates._quarantine

    def broken(*args: Any, **kwargs: Any) -> None:
        real_quarantine(*args, **kwargs)
        raise RuntimeError("the process died before commit")

    monkeypatch.setattr(certificates, "_quarantine", broken)
    batch_id = str(uuid.uuid4())
    failed = upload(world.operator, "GATE-1", certs, batch_id)
    assert failed.status_code == 500
    assert (
        count(ctx, schema.card_transactions),
        count(ctx, schema.quarantine),
        count(ctx, schema.gate_batches),
    ) == (1, 0, 0)
    assert world.issuer.ok(world.issuer.get(f"/v1/cards/{card_id}"))["balance"] == 10_000
    monkeypatch.setattr(certificates, "_quarantine", real_quarantine)
    retried = upload(world.operator, "GATE-1", certs, batch_id)  # the key was released
    assert [i["outcome"] for i in retried.json()["items"]] == ["posted", "posted", "quarantined"]


@both_backends
def test_a_certificate_twice_in_one_batch_shares_its_first_copy_refusal(
    world: World, ctx: ApiContext
) -> None:
    _, card = world.issue_card()
    card.balance = 10_000  # value the back office never loaded (a tampered chip)
    cert = card.debit(10_000, "GATE-1", 1).to_json()
    answer = upload(world.operator, "GATE-1", [cert, cert])
    assert answer.status_code == 201, answer.text
    items = answer.json()["items"]
    assert [(i["outcome"], i.get("reason")) for i in items] == [
        ("quarantined", "exceeds_credits"),
        ("quarantined", "exceeds_credits"),
    ]
    assert count(ctx, schema.card_transactions) == 0
    assert [
        r.reason
        for r in run_read(
            ctx.engine, lambda c: c.execute(sa.select(schema.quarantine.c.reason)).all()
        )
    ] == ["exceeds_credits"]
