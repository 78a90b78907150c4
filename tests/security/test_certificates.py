"""Certificates and load cryptograms under attack: forged, altered, replayed, cloned,
re-targeted, or submitted by someone who does not own the terminal. Every one is refused
(nothing posts, no money moves) and kept in the quarantine table, with its reason and its
raw input sealed, for the nightly job."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from card_reader.certificate import Certificate, Journey, JourneyAction, TransitMode
from ledger import schema as ledger_schema
from merchant_api import schema
from merchant_api.context import ApiContext
from tests.api.cards import SimulatedCard
from tests.api.conftest import World
from tests.api.test_gate_batches import upload
from tests.api.test_loads_and_refunds import start_load
from tests.conftest import both_backends
from tests.security.api import assert_problem

pytestmark = both_backends


def quarantined(ctx: ApiContext) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(schema.quarantine).order_by(schema.quarantine.c.seq)))


def money(ctx: ApiContext) -> tuple[Any, ...]:
    """Every account balance and every transfer: what must not move when a certificate is
    refused."""
    accounts = ledger_schema.metadata.tables
    with ctx.engine.connect() as conn:
        return tuple(
            sorted(map(str, conn.execute(sa.select(table)).all()))
            for name, table in sorted(accounts.items())
            if "account" in name or "transfer" in name
        )


def submit(world: World, cert: dict[str, Any], as_operator: bool = False) -> Any:
    caller = world.operator if as_operator else world.merchant
    return caller.post("/v1/card-transactions", cert)


def altered(cert: Certificate, **changes: Any) -> dict[str, Any]:
    """The certificate with fields changed and its MAC kept (what a tampering terminal
    can do: it cannot re-sign)."""
    return {**cert.to_json(), **changes}


def expect_refused(
    world: World, ctx: ApiContext, body: dict[str, Any], reason: str, as_operator: bool = False
) -> None:
    """The submission is refused with `reason`, moves no money, and the quarantine holds
    it (its raw input sealed: unsealed, it is exactly what was sent)."""
    before = money(ctx)
    answer = submit(world, body, as_operator)
    assert_problem(answer, 422, reason)
    assert money(ctx) == before
    record = next(r for r in reversed(quarantined(ctx)) if r.reason == reason)
    assert record.source == "card_transaction" and record.status == "open"
    raw = ctx.secrets.unseal("quarantine", bytes(record.raw_sealed))
    assert json.loads(raw) == body
    assert body.get("card_serial", "").encode() not in bytes(record.raw_sealed)


def test_forged_and_altered_certificates_are_refused_and_quarantined(
    world: World, ctx: ApiContext
) -> None:
    """Promise: a certificate whose MAC is not the card's (random, all zeros, made with
    another key) or whose fields were changed after the card signed (amount, balance,
    counter, terminal, time, kind, journey) is refused with mac_invalid and quarantined;
    no money moves."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    genuine = card.debit(3_000, "POS-1")
    impostor = SimulatedCard(serial=os.urandom(8))
    impostor.serial = card.serial  # the serial copied, the keys not
    impostor.balance, impostor.counter = card.balance + 3_000, card.counter - 1
    entry = Journey(TransitMode.MRT, JourneyAction.ENTRY, line=1, entry_station=6)
    forgeries = [
        altered(genuine, mac=os.urandom(16).hex()),
        altered(genuine, mac="00" * 16),
        impostor.debit(3_000, "POS-1").to_json(),
        altered(genuine, amount=1),
        altered(genuine, balance_after=genuine.balance_after + 10_000),
        altered(genuine, counter=genuine.counter + 5),
        altered(genuine, terminal_id="GATE-1"),
        altered(genuine, timestamp=genuine.timestamp - 86_400),
        altered(genuine, kind="credit"),
        altered(genuine, journey=entry.to_json()),
        altered(genuine, terminal_seq=genuine.terminal_seq + 1),
    ]
    for forged in forgeries:
        expect_refused(world, ctx, forged, "mac_invalid")
    assert len({r.raw_digest for r in quarantined(ctx)}) == len(forgeries)
    # The genuine one still posts, once.
    assert world.merchant.ok(submit(world, genuine.to_json()), 201)["amount"] == 3_000


def test_replays_and_clones_never_post_twice(world: World, ctx: ApiContext) -> None:
    """Promise: a certificate replayed by its terminal's owner is answered as the
    duplicate it is (the same transaction, no second posting); replayed by anyone else it
    is refused (terminal_not_owned) and quarantined; the same counter signed again with
    other content (a cloned card) is conflicting_duplicate and quarantined. A refused
    input replayed maps to its first quarantine record."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    genuine = card.debit(5_000, "POS-1")
    posted = world.merchant.ok(submit(world, genuine.to_json()), 201)
    before = money(ctx)
    for _ in range(3):
        again = submit(world, genuine.to_json())
        assert again.status_code == 200 and again.json()["id"] == posted["id"]
    # Replayed inside a batch as a forwarded certificate: a duplicate, not a second sale.
    batch = world.operator.ok(upload(world.operator, "GATE-1", [genuine.to_json()]))
    assert [i["outcome"] for i in batch["items"]] == ["duplicate"]
    assert money(ctx) == before
    expect_refused(world, ctx, genuine.to_json(), "terminal_not_owned", as_operator=True)

    clone = SimulatedCard(serial=card.serial, balance=card.balance + 5_000)
    clone.counter = genuine.counter - 1
    expect_refused(world, ctx, clone.debit(1_000, "POS-1").to_json(), "conflicting_duplicate")

    forged = altered(genuine, amount=1)
    expect_refused(world, ctx, forged, "mac_invalid")
    records = len(quarantined(ctx))
    assert_problem(submit(world, forged), 422, "mac_invalid")
    assert len(quarantined(ctx)) == records  # the first record answers for the replay


def test_certificates_of_a_terminal_the_caller_does_not_own_are_refused(
    world: World, ctx: ApiContext
) -> None:
    """Promise: a merchant's terminal's certificate submitted by another owner's key, or a
    batch uploaded for a gate the caller does not own, posts nothing: every certificate is
    quarantined as terminal_not_owned."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    sale = card.debit(2_000, "POS-1")
    expect_refused(world, ctx, sale.to_json(), "terminal_not_owned", as_operator=True)
    before = money(ctx)
    tap = card.debit(1_000, "GATE-1", terminal_seq=7)
    batch_id = str(uuid.uuid4())
    answer = world.merchant.ok(upload(world.merchant, "GATE-1", [tap.to_json()], batch_id))
    assert [(i["outcome"], i["reason"]) for i in answer["items"]] == [
        ("quarantined", "terminal_not_owned")
    ]
    assert money(ctx) == before
    kept = [r for r in quarantined(ctx) if r.source == "gate_batch"]
    assert [(r.reason, r.batch_id, r.terminal_code) for r in kept] == [
        ("terminal_not_owned", uuid.UUID(batch_id), "GATE-1")
    ]
    # The owner of the gate can still upload it.
    assert world.operator.ok(world.operator.post("/v1/card-transactions", tap.to_json()), 201)


def test_load_cryptograms_cannot_be_replayed_or_retargeted(world: World, ctx: ApiContext) -> None:
    """Promise: a load is confirmed only by its own card's credit certificate, at the
    load's counter + 1, for its amount. Another card's credit (a re-targeted cryptogram),
    a credit for another amount or counter, a forged credit, a credit nobody's load
    expects, and any other certificate offered for a load already confirmed (a replay)
    are refused and quarantined; the load stays as it was and no money moves."""
    card_a, a = world.issue_card()
    card_b, b = world.issue_card()
    load = start_load(world, card_a, a, 20_000)
    # The cryptogram is bound to card A: card B refuses it (the card checks it with its
    # own load key), so B's credit can only come from B's own load.
    with pytest.raises(AssertionError, match="refuses a bad cryptogram"):
        b.credit(20_000, bytes.fromhex(load["cryptogram"]), "POS-1")
    load_b = start_load(world, card_b, b, 20_000)
    b_credit = b.credit(20_000, bytes.fromhex(load_b["cryptogram"]), "POS-1")
    # A's cryptogram is bound to its amount: a card asked for more refuses it.
    with pytest.raises(AssertionError, match="refuses a bad cryptogram"):
        SimulatedCard(serial=a.serial, counter=a.counter).credit(
            90_000, bytes.fromhex(load["cryptogram"]), "POS-1"
        )
    a_credit = a.credit(20_000, bytes.fromhex(load["cryptogram"]), "POS-1")
    confirm = f"/v1/loads/{load['id']}/confirm"
    before = money(ctx)
    refusals = [
        ({"certificate": b_credit.to_json()}, 422, "load_card_mismatch"),
        ({"certificate": altered(a_credit, amount=90_000)}, 422, "mac_invalid"),
        ({"certificate": altered(a_credit, counter=a_credit.counter + 1)}, 422, "mac_invalid"),
        ({"certificate": a.debit(100, "POS-1").to_json()}, 422, "not_a_credit"),
    ]
    for body, status, reason in refusals:
        records = len(quarantined(ctx))
        assert_problem(world.issuer.post(confirm, body), status, reason)
        assert len(quarantined(ctx)) == records + 1
        assert quarantined(ctx)[-1].source == "load_confirmation"
        assert quarantined(ctx)[-1].load_id == uuid.UUID(load["id"])
    assert money(ctx) == before
    assert world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))["status"] == "pending"

    # The genuine credit confirms it; confirming again with it changes nothing.
    assert world.issuer.ok(world.issuer.post(confirm, {"certificate": a_credit.to_json()}))
    posted = money(ctx)
    assert world.issuer.ok(world.issuer.post(confirm, {"certificate": a_credit.to_json()}))
    assert money(ctx) == posted
    # Any other certificate for the confirmed load is a replay: 409, kept in quarantine.
    second = SimulatedCard(serial=a.serial, balance=a.balance, counter=a.counter)
    replays = [b_credit.to_json(), second.debit(1, "POS-1").to_json()]
    for body in ({"certificate": replay} for replay in replays):
        records = len(quarantined(ctx))
        assert_problem(world.issuer.post(confirm, body), 409, "load_not_pending")
        assert len(quarantined(ctx)) == records + 1
        assert quarantined(ctx)[-1].reason == "load_not_pending"
    assert money(ctx) == posted

    # A credit no load expects (value the issuer never authorized) is quarantined too:
    # here a card signing a credit it was never given a cryptogram for.
    stray = SimulatedCard(serial=b.serial, balance=b.balance, counter=b.counter)._sign(
        counter=b.counter + 1,
        kind=a_credit.kind,
        amount=7_000,
        balance_after=b.balance + 7_000,
        terminal_id="POS-1",
        terminal_seq=3,
        timestamp=a_credit.timestamp,
        journey=None,
    )
    expect_refused(world, ctx, stray.to_json(), "credit_without_load")
