"""Settlements: net per owner and closed business day, posted to the settlement bank
once, negative nets carried, payouts recorded and marked paid."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from ledger import Ledger, run_read
from ledger.verify import verify
from merchant_api import chart, schema
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError
from merchant_api.services import settlements
from merchant_api.wib import business_date, now_us
from tests.api.conftest import World
from tests.conftest import both_backends


def move_to(ctx: ApiContext, day: date) -> None:
    """Date every accepted transaction and refund so far on `day` (as if made then)."""
    with ctx.engine.begin() as conn:
        for table in (schema.card_transactions, schema.refunds):
            conn.execute(
                sa.update(table)
                .where(table.c.business_date == business_date(now_us()))
                .values(business_date=day.isoformat())
            )


@both_backends
def test_a_day_settles_once_for_its_net(world: World, ctx: ApiContext) -> None:
    today = date.fromisoformat(business_date(now_us()))
    day = today - timedelta(days=2)
    card_id, card = world.issue_card()
    world.load(card_id, card, 100_000)
    sales = [
        world.merchant.ok(
            world.merchant.post("/v1/card-transactions", card.debit(amount, "POS-1").to_json()), 201
        )
        for amount in (10_000, 25_001)
    ]
    world.merchant.ok(
        world.merchant.post(
            "/v1/refunds", {"card_transaction_id": sales[0]["id"], "amount": 4_000}
        ),
        201,
    )
    move_to(ctx, day)
    fees = sum(chart.mdr_fee(s["amount"], 70) for s in sales)
    bank = Ledger(ctx.engine).get_account(chart.SETTLEMENT_BANK)
    assert bank is not None

    made = settlements.settle(ctx.engine, ctx.ledger, uuid.UUID(world.merchant_id), day)
    again = settlements.settle(ctx.engine, ctx.ledger, uuid.UUID(world.merchant_id), day)
    over_http = world.issuer.ok(
        world.issuer.post(
            "/v1/settlements", {"merchant_id": world.merchant_id, "business_date": day.isoformat()}
        ),
        201,
    )

    net = 35_001 - fees - 4_000
    assert (
        made.gross_amount,
        made.fee_amount,
        made.refund_amount,
        made.net_amount,
        made.payout_amount,
        made.transaction_count,
    ) == (35_001, fees, 4_000, net, net, 2)
    assert again == made and over_http["id"] == str(made.id)
    payable = world.merchant.ok(world.merchant.get(f"/v1/merchants/{world.merchant_id}/balance"))
    assert payable["available"] == 0
    bank_after = Ledger(ctx.engine).get_account(chart.SETTLEMENT_BANK)
    assert bank_after is not None and bank.balance - bank_after.balance == net
    payouts = world.merchant.ok(world.merchant.get("/v1/payouts"))["data"]
    assert [(p["amount"], p["status"], p["bank_account"]) for p in payouts] == [
        (net, "instructed", "0123456789")
    ]
    listed = world.merchant.ok(world.merchant.get("/v1/settlements", business_date=day.isoformat()))
    assert [s["net_amount"] for s in listed["data"]] == [net]
    assert world.operator.ok(world.operator.get("/v1/settlements"))["data"] == []
    paid = world.issuer.ok(
        world.issuer.post(
            f"/v1/payouts/{payouts[0]['id']}/mark-paid", {"bank_reference": "BCA-77"}
        ),
        200,
    )
    assert (paid["status"], paid["bank_reference"]) == ("paid", "BCA-77")
    assert run_read(ctx.engine, verify).ok


def test_a_negative_net_is_carried_and_skipped_days_are_caught_up(
    world: World, ctx: ApiContext
) -> None:
    today = date.fromisoformat(business_date(now_us()))
    card_id, card = world.issue_card()
    world.load(card_id, card, 100_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(20_000, "POS-1").to_json()), 201
    )
    move_to(ctx, today - timedelta(days=5))
    world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 20_000}),
        201,
    )
    move_to(ctx, today - timedelta(days=4))
    merchant = uuid.UUID(world.merchant_id)

    first = settlements.settle(ctx.engine, ctx.ledger, merchant, today - timedelta(days=5))
    second = settlements.settle(ctx.engine, ctx.ledger, merchant, today - timedelta(days=4))
    world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(50_000, "POS-1").to_json()), 201
    )
    move_to(ctx, today - timedelta(days=2))
    third = settlements.settle(ctx.engine, ctx.ledger, merchant, today - timedelta(days=1))

    fee = chart.mdr_fee(20_000, 70)
    assert (first.net_amount, first.payout_amount) == (20_000 - fee, 20_000 - fee)
    assert (second.net_amount, second.payout_amount) == (-20_000, 0)
    assert second.transfer_id is None
    big_fee = chart.mdr_fee(50_000, 70)
    assert (third.carried_in, third.net_amount) == (-20_000, 50_000 - big_fee - 20_000)
    payable = world.merchant.ok(world.merchant.get(f"/v1/merchants/{world.merchant_id}/balance"))
    assert payable["available"] == 0
    assert run_read(ctx.engine, verify).ok


def test_an_open_day_cannot_be_settled(world: World, ctx: ApiContext) -> None:
    today = date.fromisoformat(business_date(now_us()))
    with pytest.raises(ApiError) as refused:
        settlements.settle(ctx.engine, ctx.ledger, uuid.UUID(world.merchant_id), today)
    assert refused.value.code == "business_day_not_closed"
    answer = world.issuer.post(
        "/v1/settlements", {"merchant_id": world.merchant_id, "business_date": today.isoformat()}
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "business_day_not_closed")
    with ctx.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.settlements)).scalar() == 0
        )
