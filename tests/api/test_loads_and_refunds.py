"""Loads (two-phase, Bank Indonesia limits, settled by card evidence), refunds (partial,
repeated, never more than the original) loaded back at the card's next tap, and card
replacement."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from ledger import run_read
from ledger.verify import verify
from merchant_api import chart, schema
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError
from merchant_api.services.loads import resolve_load
from tests.api.cards import SimulatedCard
from tests.api.conftest import World
from tests.conftest import both_backends


def start_load(world: World, card_id: str, card: SimulatedCard, amount: int) -> dict:
    return world.issuer.ok(
        world.issuer.post(
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


def card_state(world: World, card_id: str) -> dict:
    return world.issuer.ok(world.issuer.get(f"/v1/cards/{card_id}"), 200)


@both_backends
def test_a_load_is_pending_until_the_card_confirms_it(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    load = start_load(world, card_id, card, 25_000)
    assert load["status"] == "pending" and len(bytes.fromhex(load["cryptogram"])) == 16
    assert (card_state(world, card_id)["balance"], card_state(world, card_id)["pending_loads"]) == (
        0,
        25_000,
    )

    cert = card.credit(25_000, bytes.fromhex(load["cryptogram"]), "POS-1")
    confirmed = world.issuer.ok(
        world.issuer.post(f"/v1/loads/{load['id']}/confirm", {"certificate": cert.to_json()}), 200
    )
    again = world.issuer.ok(
        world.issuer.post(f"/v1/loads/{load['id']}/confirm", {"certificate": cert.to_json()}), 200
    )

    assert confirmed["status"] == "posted" and confirmed["resolution"] == "confirmed"
    assert confirmed["cryptogram"] is None and again == confirmed
    assert (card_state(world, card_id)["balance"], card_state(world, card_id)["pending_loads"]) == (
        25_000,
        0,
    )
    assert run_read(ctx.engine, verify).ok


def test_a_confirmation_that_does_not_match_is_refused_and_quarantined(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    load = start_load(world, card_id, card, 5_000)
    not_a_credit = card.debit(1_000, "POS-1")
    answer = world.issuer.post(
        f"/v1/loads/{load['id']}/confirm", {"certificate": not_a_credit.to_json()}
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "not_a_credit")
    other_id, other = world.issue_card()
    other_load = start_load(world, other_id, other, 5_000)
    foreign = other.credit(5_000, bytes.fromhex(other_load["cryptogram"]), "POS-1")
    answer = world.issuer.post(
        f"/v1/loads/{load['id']}/confirm", {"certificate": foreign.to_json()}
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "load_card_mismatch")
    with ctx.engine.connect() as conn:
        reasons = conn.execute(
            sa.select(schema.quarantine.c.reason, schema.quarantine.c.source)
        ).all()
    assert sorted(reasons) == [
        ("load_card_mismatch", "load_confirmation"),
        ("not_a_credit", "load_confirmation"),
    ]
    assert world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))["status"] == "pending"


def test_bank_indonesia_limits_hold(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, chart.UNREGISTERED_MAX_BALANCE - 1_000)
    over = world.issuer.post(
        "/v1/loads",
        {
            "card_id": card_id,
            "amount": 2_000,
            "channel": "bank_transfer",
            "card_counter": card.counter,
        },
    )
    assert (over.status_code, over.json()["code"]) == (422, "exceeds_max_balance")
    # Registered: Rp 20,000,000 held, Rp 40,000,000 a month incoming.
    reg_id, reg = world.issue_card(registered=True)
    loaded = 0
    for _ in range(2):
        world.load(reg_id, reg, chart.REGISTERED_MAX_BALANCE)
        loaded += chart.REGISTERED_MAX_BALANCE
        cert = reg.debit(chart.REGISTERED_MAX_BALANCE, "POS-1")
        world.merchant.ok(world.merchant.post("/v1/card-transactions", cert.to_json()), 201)
    monthly = world.issuer.post(
        "/v1/loads",
        {"card_id": reg_id, "amount": 1, "channel": "bank_transfer", "card_counter": reg.counter},
    )
    assert loaded == chart.REGISTERED_MONTHLY_INCOMING
    assert (monthly.status_code, monthly.json()["code"]) == (422, "monthly_load_limit_exceeded")


def test_registration_raises_the_limit(world: World) -> None:
    card_id, card = world.issue_card()
    registered = world.issuer.ok(
        world.issuer.post(f"/v1/cards/{card_id}/register", {"holder_reference": "kyc-42"}), 200
    )
    assert registered["registered"] is True
    world.load(card_id, card, 5_000_000)
    assert card_state(world, card_id)["balance"] == 5_000_000


@both_backends
def test_a_lost_confirmation_is_settled_by_the_cards_next_debit(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 1_000)
    load = start_load(world, card_id, card, 20_000)
    card.credit(20_000, bytes.fromhex(load["cryptogram"]), "POS-1")  # its answer was lost
    debit = card.debit(15_000, "POS-1")  # more than the ledger's posted balance

    posted = world.merchant.post("/v1/card-transactions", debit.to_json())

    assert posted.status_code == 201, posted.text
    settled = world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))
    assert (settled["status"], settled["resolution"]) == ("posted", "card_evidence")
    assert card_state(world, card_id)["balance"] == card.balance == 6_000
    assert run_read(ctx.engine, verify).ok


def test_a_load_the_card_never_took_is_voided_when_its_counter_is_spent(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    load = start_load(world, card_id, card, 20_000)  # the card left before the credit
    debit = card.debit(3_000, "POS-1")  # spends the counter the cryptogram was bound to
    world.merchant.ok(world.merchant.post("/v1/card-transactions", debit.to_json()), 201)
    voided = world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))
    assert (voided["status"], voided["resolution"]) == ("voided", "card_evidence")
    assert (card_state(world, card_id)["balance"], card_state(world, card_id)["pending_loads"]) == (
        7_000,
        0,
    )


def test_a_load_stays_pending_while_the_evidence_says_nothing(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    load = start_load(world, card_id, card, 5_000)
    card.credit(5_000, bytes.fromhex(load["cryptogram"]), "POS-1")
    card.debit(9_000, "POS-1")  # a certificate not uploaded yet
    later = card.debit(1_000, "POS-1")  # balance before it (6,000) <= posted balance
    world.merchant.ok(world.merchant.post("/v1/card-transactions", later.to_json()), 201)
    assert world.issuer.ok(world.issuer.get(f"/v1/loads/{load['id']}"))["status"] == "pending"


@both_backends
def test_refunds_are_partial_repeated_and_bounded_then_loaded_at_the_next_tap(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(30_000, "POS-1").to_json()), 201
    )
    first = world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 10_000}),
        201,
    )
    second = world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 20_000}),
        201,
    )
    too_much = world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 1})
    assert (too_much.status_code, too_much.json()["code"]) == (422, "refund_exceeds_transaction")
    assert (
        world.merchant.ok(world.merchant.get(f"/v1/card-transactions/{sale['id']}"))[
            "refunded_amount"
        ]
        == 30_000
    )
    assert first["status"] == second["status"] == "pending"

    credits = world.operator.ok(world.operator.get("/v1/card-credits", card_id=card_id))["data"]
    assert sorted(c["amount"] for c in credits) == [10_000, 20_000]
    assert {c["card_ref"] for c in credits} == {card.ref}
    for credit in credits:  # the gate sees the card and loads what waits for it
        load = world.operator.ok(
            world.operator.post(
                "/v1/loads",
                {
                    "card_ref": card.ref,
                    "amount": credit["amount"],
                    "channel": "card_credit",
                    "card_counter": card.counter,
                    "card_credit_id": credit["id"],
                },
            ),
            201,
        )
        cert = card.credit(credit["amount"], bytes.fromhex(load["cryptogram"]), "GATE-1")
        world.operator.ok(
            world.operator.post(f"/v1/loads/{load['id']}/confirm", {"certificate": cert.to_json()}),
            200,
        )
    assert card_state(world, card_id)["balance"] == card.balance == 50_000
    refunded = world.merchant.ok(world.merchant.get(f"/v1/refunds/{first['id']}"))
    assert refunded["status"] == "loaded"
    assert world.operator.ok(world.operator.get("/v1/card-credits", card_id=card_id))["data"] == []
    assert run_read(ctx.engine, verify).ok


def test_a_credit_cannot_be_loaded_twice_while_its_load_is_pending(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(4_000, "POS-1").to_json()), 201
    )
    world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 4_000}),
        201,
    )
    credit = world.operator.ok(world.operator.get("/v1/card-credits", card_id=card_id))["data"][0]
    body = {
        "card_id": card_id,
        "amount": 4_000,
        "channel": "card_credit",
        "card_counter": card.counter,
        "card_credit_id": credit["id"],
    }
    world.operator.ok(world.operator.post("/v1/loads", body), 201)
    twice = world.operator.post("/v1/loads", body)
    assert (twice.status_code, twice.json()["code"]) == (409, "card_credit_not_pending")


def test_a_lost_registered_card_is_replaced_and_its_balance_follows(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card(registered=True)
    world.load(card_id, card, 80_000)
    world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(5_000, "POS-1").to_json()), 201
    )
    early = world.issuer.post(
        f"/v1/cards/{card_id}/replace", {"serial": SimulatedCard().serial_hex}
    )
    assert (early.status_code, early.json()["code"]) == (409, "card_not_blocked")
    world.issuer.ok(world.issuer.post(f"/v1/cards/{card_id}/block", {"reason": "lost"}), 200)
    new = SimulatedCard()
    replaced = world.issuer.ok(
        world.issuer.post(f"/v1/cards/{card_id}/replace", {"serial": new.serial_hex}), 201
    )
    assert replaced["replaces_card_id"] == card_id and replaced["registered"] is True
    old = card_state(world, card_id)
    assert (old["status"], old["balance"], old["replaced_by_card_id"]) == (
        "replaced",
        0,
        replaced["id"],
    )
    credit = world.operator.ok(world.operator.get("/v1/card-credits", card_id=replaced["id"]))[
        "data"
    ]
    assert [(c["source"], c["amount"]) for c in credit] == [("replacement", 75_000)]
    hotlist = world.operator.ok(world.operator.get("/v1/hotlist"))
    assert hotlist["full"] and hotlist["blocked"] == [card.ref]
    assert run_read(ctx.engine, verify).ok


def test_only_load_agents_take_cash_and_only_the_issuer_takes_bank_transfers(world: World) -> None:
    card_id, _ = world.issue_card()
    body = {"card_id": card_id, "amount": 1_000, "card_counter": 0}
    refused = world.merchant.post("/v1/loads", {**body, "channel": "agent_cash"})
    assert (refused.status_code, refused.json()["code"]) == (403, "load_channel_not_allowed")
    bank = world.merchant.post("/v1/loads", {**body, "channel": "bank_transfer"})
    assert (bank.status_code, bank.json()["code"]) == (403, "load_channel_not_allowed")
    world.issuer.ok(
        world.issuer.post(f"/v1/merchants/{world.merchant_id}", {"load_agent": True}), 200
    )
    agent_load = world.merchant.ok(
        world.merchant.post("/v1/loads", {**body, "channel": "agent_cash"}), 201
    )
    assert agent_load["agent_merchant_id"] == world.merchant_id


def test_a_suspended_merchant_cannot_refund_or_take_cash(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(4_000, "POS-1").to_json()), 201
    )
    world.issuer.ok(
        world.issuer.post(
            f"/v1/merchants/{world.merchant_id}", {"status": "suspended", "load_agent": True}
        ),
        200,
    )
    refund = world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 1})
    assert (refund.status_code, refund.json()["code"]) == (422, "merchant_suspended")
    cash = world.merchant.post(
        "/v1/loads",
        {
            "card_id": card_id,
            "amount": 1_000,
            "channel": "agent_cash",
            "card_counter": card.counter,
        },
    )
    assert (cash.status_code, cash.json()["code"]) == (422, "merchant_suspended")
    # Its terminals' certificates still post: the card already paid.
    assert (
        world.merchant.post("/v1/card-transactions", card.debit(100, "POS-1").to_json()).status_code
        == 201
    )


def test_the_hotlist_is_versioned_and_incremental(world: World) -> None:
    first_id, first = world.issue_card()
    second_id, second = world.issue_card()
    empty = world.operator.ok(world.operator.get("/v1/hotlist", since_version=0))
    assert empty == {"version": 0, "blocked": [], "unblocked": [], "full": True}
    world.issuer.ok(world.issuer.post(f"/v1/cards/{first_id}/block", {"reason": "stolen"}), 200)
    v1 = world.operator.ok(world.operator.get("/v1/hotlist", since_version=0))
    assert (v1["blocked"], v1["full"]) == ([first.ref], True)
    world.issuer.ok(world.issuer.post(f"/v1/cards/{second_id}/block", {"reason": "lost"}), 200)
    world.issuer.ok(world.issuer.post(f"/v1/cards/{first_id}/unblock"), 200)
    delta = world.operator.ok(world.operator.get("/v1/hotlist", since_version=v1["version"]))
    assert delta == {
        "version": v1["version"] + 2,
        "blocked": [second.ref],
        "unblocked": [first.ref],
        "full": False,
    }
    same = world.operator.ok(world.operator.get("/v1/hotlist", since_version=delta["version"]))
    assert (same["blocked"], same["unblocked"], same["full"]) == ([], [], False)
    whole = world.operator.ok(world.operator.get("/v1/hotlist"))
    assert whole["blocked"] == [second.ref] and whole["full"]
    # Blocking twice changes nothing; nothing in the hotlist names a serial.
    world.issuer.ok(world.issuer.post(f"/v1/cards/{second_id}/block", {"reason": "lost"}), 200)
    assert world.operator.ok(world.operator.get("/v1/hotlist"))["version"] == delta["version"]
    assert first.serial_hex not in str(whole) and second.serial_hex not in str(whole)


def test_the_nightly_job_resolves_a_load_the_cards_evidence_left_open(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    taken = start_load(world, card_id, card, 7_000)
    card.credit(7_000, bytes.fromhex(taken["cryptogram"]), "POS-1")  # never confirmed
    never = start_load(world, *world.issue_card(), 3_000)
    taken_id, never_id = uuid.UUID(taken["id"]), uuid.UUID(never["id"])

    assert resolve_load(ctx.engine, ctx.ledger, taken_id, post=True) == "posted"
    assert resolve_load(ctx.engine, ctx.ledger, taken_id, post=True) == "posted"
    assert resolve_load(ctx.engine, ctx.ledger, never_id, post=False) == "voided"
    with pytest.raises(ApiError) as refused:
        resolve_load(ctx.engine, ctx.ledger, never_id, post=True)
    assert refused.value.code == "load_not_pending"
    posted = world.issuer.ok(world.issuer.get(f"/v1/loads/{taken['id']}"))
    assert (posted["status"], posted["resolution"]) == ("posted", "nightly")
    assert card_state(world, card_id)["balance"] == 7_000
    assert run_read(ctx.engine, verify).ok
