"""A load's own credit certificate arriving after card evidence already settled the load:
recorded once as the card transaction it is, moving no money, by every path (a single
submission, a gate batch, the load's confirmation); and a credit at the counter of a load
the evidence voided stays quarantined."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from card_reader.certificate import Certificate
from ledger import run_read
from ledger import schema as ledger_schema
from ledger.verify import verify
from merchant_api import schema
from merchant_api.context import ApiContext
from merchant_api.services.certificates import load_post_id, transaction_id
from merchant_api.services.loads import resolve_load
from merchant_api.wib import business_date, now_us
from tests.api.cards import SimulatedCard
from tests.api.conftest import World
from tests.api.test_gate_batches import upload
from tests.api.test_loads_and_refunds import card_state, start_load
from tests.conftest import both_backends
from tests.reconciliation import world as crafted


@dataclass
class Settled:
    """A load posted by card evidence: its credit (counter 2) was lost, the debit after it
    (counter 3) was uploaded and showed the value on the card."""

    card_id: str
    card: SimulatedCard
    load: dict[str, Any]
    late_credit: Certificate


def settled_by_evidence(world: World, credit_terminal: str = "POS-1") -> Settled:
    card_id, card = world.issue_card()
    world.load(card_id, card, 1_000)  # counter 1
    load = start_load(world, card_id, card, 20_000)
    late_credit = card.credit(20_000, bytes.fromhex(load["cryptogram"]), credit_terminal)
    debit = card.debit(15_000, "POS-1")
    world.merchant.ok(world.merchant.post("/v1/card-transactions", debit.to_json()), 201)
    settled = world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))
    assert (settled["status"], settled["resolution"]) == ("posted", "card_evidence")
    assert settled["card_transaction_id"] is None
    return Settled(card_id, card, settled, late_credit)


def ledger_transfers(ctx: ApiContext) -> int:
    return int(
        run_read(
            ctx.engine,
            lambda conn: conn.execute(
                sa.select(sa.func.count()).select_from(ledger_schema.transfers)
            ).scalar_one(),
        )
    )


def quarantined(ctx: ApiContext) -> list[tuple[str, int | None]]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(schema.quarantine.c.reason, schema.quarantine.c.card_counter).order_by(
                schema.quarantine.c.seq
            )
        ).all()
    return [(r.reason, r.card_counter) for r in rows]


def counters(world: World, card_id: str) -> list[int]:
    listed = world.issuer.ok(world.issuer.get("/v1/card-transactions", card_id=card_id, limit=100))
    return sorted(t["card_counter"] for t in listed["data"])


def assert_recorded_once(world: World, ctx: ApiContext, settled: Settled, before: int) -> None:
    """The late credit is the card's transaction at counter 2, its transfer the load's post;
    the load keeps its resolution and names the certificate; no money moved."""
    tx_id = str(transaction_id(uuid.UUID(settled.card_id), settled.late_credit.counter))
    recorded = world.issuer.ok(world.issuer.get(f"/v1/card-transactions/{tx_id}"), 200)
    assert (recorded["kind"], recorded["amount"], recorded["card_counter"]) == ("credit", 20_000, 2)
    assert recorded["transfer_id"] == str(load_post_id(uuid.UUID(settled.load["id"])))
    load = world.issuer.ok(world.issuer.get(f"/v1/loads/{settled.load['id']}"))
    assert (load["status"], load["resolution"], load["card_transaction_id"]) == (
        "posted",
        "card_evidence",
        tx_id,
    )
    assert load["resolved_at"] == settled.load["resolved_at"]
    with ctx.engine.connect() as conn:
        load_id = conn.execute(
            sa.select(schema.card_transactions.c.load_id).where(
                schema.card_transactions.c.id == uuid.UUID(tx_id)
            )
        ).scalar_one()
    assert str(load_id) == settled.load["id"]
    assert ledger_transfers(ctx) == before
    assert card_state(world, settled.card_id)["balance"] == settled.card.balance == 6_000
    assert counters(world, settled.card_id) == [1, 2, 3]
    assert run_read(ctx.engine, verify).ok


@both_backends
def test_a_late_credit_submitted_alone_is_posted_once_and_moves_no_money(
    world: World, ctx: ApiContext
) -> None:
    settled = settled_by_evidence(world)
    before = ledger_transfers(ctx)
    body = settled.late_credit.to_json()

    first = world.merchant.post("/v1/card-transactions", body, key="late-credit-1")
    replayed = world.merchant.post("/v1/card-transactions", body, key="late-credit-1")
    again = world.merchant.post("/v1/card-transactions", body)  # another key: a duplicate

    assert first.status_code == 201, first.text
    assert replayed.status_code == 201 and replayed.json() == first.json()
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert again.status_code == 200 and again.json() == first.json()
    assert_recorded_once(world, ctx, settled, before)
    assert quarantined(ctx) == []


@both_backends
def test_a_late_credit_in_a_gate_batch_is_posted_once_and_moves_no_money(
    world: World, ctx: ApiContext
) -> None:
    settled = settled_by_evidence(world, credit_terminal="GATE-1")
    before = ledger_transfers(ctx)
    batch_id = str(uuid.uuid4())
    certs = [settled.late_credit.to_json()]

    first = upload(world.operator, "GATE-1", certs, batch_id)
    retry = upload(world.operator, "GATE-1", certs, batch_id)
    other_batch = upload(world.operator, "GATE-1", certs)

    assert first.status_code == 201, first.text
    assert first.json()["items"] == [{"terminal_seq": 1, "outcome": "posted", "reason": None}]
    assert retry.status_code == 201 and retry.json() == first.json()
    assert other_batch.status_code == 201, other_batch.text
    assert [i["outcome"] for i in other_batch.json()["items"]] == ["duplicate"]
    assert_recorded_once(world, ctx, settled, before)
    assert quarantined(ctx) == []


@both_backends
def test_a_batch_whose_later_debit_settles_the_load_records_its_credit_too(
    world: World, ctx: ApiContext
) -> None:
    """A gate's journal read out of order: the debit after the credit comes first in the
    batch, posts the load on its evidence, and the credit then completes it."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 1_000)
    load = start_load(world, card_id, card, 20_000)
    credit = card.credit(20_000, bytes.fromhex(load["cryptogram"]), "GATE-1", 1)
    debit = card.debit(15_000, "GATE-1", 2)
    before = ledger_transfers(ctx)

    answer = upload(world.operator, "GATE-1", [debit.to_json(), credit.to_json()])

    assert answer.status_code == 201, answer.text
    assert [(i["outcome"], i["reason"]) for i in answer.json()["items"]] == [
        ("posted", None),
        ("posted", None),
    ]
    settled = world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))
    credit_tx = str(transaction_id(uuid.UUID(card_id), credit.counter))
    assert (settled["status"], settled["resolution"], settled["card_transaction_id"]) == (
        "posted",
        "card_evidence",
        credit_tx,
    )
    assert ledger_transfers(ctx) == before + 2  # the load's post and the debit, once each
    assert card_state(world, card_id)["balance"] == card.balance == 6_000
    assert counters(world, card_id) == [1, 2, 3]
    assert run_read(ctx.engine, verify).ok


@both_backends
def test_a_late_credit_confirming_its_load_answers_the_load(world: World, ctx: ApiContext) -> None:
    settled = settled_by_evidence(world)
    before = ledger_transfers(ctx)
    path = f"/v1/loads/{settled.load['id']}/confirm"
    stray = settled.card.debit(1_000, "POS-1")  # not this load's certificate

    confirmed = world.issuer.ok(
        world.issuer.post(path, {"certificate": settled.late_credit.to_json()}), 200
    )
    again = world.issuer.ok(
        world.issuer.post(path, {"certificate": settled.late_credit.to_json()}), 200
    )
    refused = world.issuer.post(path, {"certificate": stray.to_json()})

    assert again == confirmed and confirmed["card_transaction_id"] is not None
    assert (refused.status_code, refused.json()["code"]) == (409, "load_not_pending")
    settled.card.balance += 1_000  # the stray debit was never posted
    assert_recorded_once(world, ctx, settled, before)
    assert quarantined(ctx) == [("load_not_pending", 4)]


@both_backends
def test_a_credit_at_the_counter_of_a_load_the_evidence_voided_is_a_conflicting_duplicate(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    load = start_load(world, card_id, card, 20_000)
    cryptogram = bytes.fromhex(load["cryptogram"])
    clone = SimulatedCard(serial=card.serial, balance=card.balance, counter=card.counter)
    debit = card.debit(3_000, "POS-1")  # spends the counter the cryptogram was bound to
    world.merchant.ok(world.merchant.post("/v1/card-transactions", debit.to_json()), 201)
    voided = world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))
    assert (voided["status"], voided["resolution"]) == ("voided", "card_evidence")
    # A copy of the card's earlier state signs a credit for the same counter.
    forged = clone.credit(20_000, cryptogram, "GATE-1").to_json()
    before = ledger_transfers(ctx)

    single = world.issuer.post("/v1/card-transactions", forged)
    batch = upload(world.operator, "GATE-1", [forged])

    assert (single.status_code, single.json()["code"]) == (422, "conflicting_duplicate")
    assert batch.status_code == 201, batch.text
    assert [(i["outcome"], i["reason"]) for i in batch.json()["items"]] == [
        ("quarantined", "conflicting_duplicate")
    ]
    # The same input refused for the same reason is kept once.
    assert quarantined(ctx) == [("conflicting_duplicate", 2)]
    assert world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))["status"] == "voided"
    assert ledger_transfers(ctx) == before
    assert card_state(world, card_id)["balance"] == 7_000


def test_a_credit_for_a_load_the_nightly_job_voided_has_no_load(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    load = start_load(world, card_id, card, 5_000)
    credit = card.credit(5_000, bytes.fromhex(load["cryptogram"]), "POS-1")
    assert resolve_load(ctx.engine, ctx.ledger, uuid.UUID(load["id"]), post=False) == "voided"

    answer = world.merchant.post("/v1/card-transactions", credit.to_json())

    assert (answer.status_code, answer.json()["code"]) == (422, "credit_without_load")
    assert quarantined(ctx) == [("credit_without_load", 1)]
    assert counters(world, card_id) == []


@both_backends
def test_whatever_order_a_loads_certificates_arrive_in_the_load_posts_once(
    fresh_engines: Callable[[], Engine], database_url: str
) -> None:
    """The card takes a load (credit at counter 1), then pays 1 to 4 times. Its
    certificates reach the back office in any order, in any grouping (each group one
    batch), some sent twice: every certificate is recorded once (posted the first time, a
    duplicate after), the load is posted exactly once and names its credit, nothing is
    quarantined, and the purse equals the card's balance."""
    day = dt.date.fromisoformat(business_date(now_us())) - dt.timedelta(days=3)

    @settings(
        max_examples=20 if database_url.startswith("postgresql") else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def arrivals(data: st.DataObject) -> None:
        engine = fresh_engines()
        try:
            check(engine, data)
        finally:
            engine.dispose()

    def check(engine: Engine, data: st.DataObject) -> None:
        world = crafted.World(engine, day)
        world.terminal(world.merchant("Warung Sari"), "POS-1")
        card = world.card(10_000)
        load_id = world.pending_load(card, 20_000)
        certs = [card.credit(20_000, "POS-1", 1, world.seconds)]
        for seq in range(2, 2 + data.draw(st.integers(1, 4), label="debits")):
            amount = data.draw(st.integers(1, 3_000), label="amount")
            certs.append(card.debit(amount, "POS-1", seq, world.seconds))
        order = data.draw(st.permutations(certs), label="order")
        retries = data.draw(st.lists(st.sampled_from(certs), max_size=3), label="retries")
        sent = [*order, *retries]
        seen: set[int] = set()
        while sent:
            size = data.draw(st.integers(1, len(sent)), label="batch size")
            group, sent = sent[:size], sent[size:]
            wanted = []
            for cert in group:
                wanted.append("duplicate" if cert.counter in seen else "posted")
                seen.add(cert.counter)
            source = data.draw(st.sampled_from(["api", "gate_batch"]), label="source")
            assert world.submit(*group, source=source) == wanted

        with engine.connect() as conn:
            load = conn.execute(sa.select(schema.loads).where(schema.loads.c.id == load_id)).one()
            recorded = conn.execute(
                sa.select(schema.card_transactions.c.card_counter).where(
                    schema.card_transactions.c.card_id == card.id
                )
            ).scalars()
            kept = conn.execute(sa.select(sa.func.count()).select_from(schema.quarantine))
            assert kept.scalar_one() == 0
            assert sorted(recorded) == [c.counter for c in certs]
        assert load.status == "posted"
        assert load.card_transaction_id == transaction_id(card.id, 1)
        moved = world.ledger.transfers(account_id=card.purse, limit=100)
        assert [t.id for t in moved if t.pending_id == load_id] == [load_post_id(load_id)]
        purse = world.ledger.get_account(card.purse)
        assert purse is not None and purse.balance == card.balance
        assert run_read(engine, verify).ok

    arrivals()
