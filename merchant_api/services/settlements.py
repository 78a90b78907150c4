"""Settlement: paying each merchant and transit operator what the issuer owes it.

The nightly job (reconciliation/) calls `settle` for every owner after a business day
closes, and `mark_payout_paid` when the bank statement shows the payout; the API's routes
read what they recorded.

Guarantees:
- One settlement per owner and business day (unique constraint), posted with a ledger
  transfer whose id is derived from (owner, day): settling twice is impossible, and
  calling `settle` again answers the settlement already made.
- A settlement covers the card transactions and refunds the back office accepted on the
  business dates after the owner's previous settlement, up to and including
  `business_date` (WIB), so a skipped night is caught up, never lost:
  gross = their debits, fees = their MDR fees, refunds = their refunds, and
  net = gross - fees - refunds + carried_in, where carried_in is the previous settlement's
  net when that was negative (refunds exceeding sales are recovered, not paid).
- A positive net is posted payable -> settlement bank and a payout instruction is
  recorded for the bank; nothing is posted for a zero or negative net.
- A day can be settled only once it has closed in Jakarta (`business_day_not_closed`).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger import Ledger, Transfer, run_read, run_write
from merchant_api import chart, schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, ledger_refusal, not_found
from merchant_api.pagination import page
from merchant_api.schemas.common import Page
from merchant_api.schemas.settlements import Payout, Settlement
from merchant_api.services import webhooks
from merchant_api.wib import business_date, now_us, to_datetime

SETTLEMENTS_NAMESPACE = uuid.UUID("a4c9e2f7-18b3-4d56-8e0a-6b2d7f9c1e84")
s_, p_, ct, rf, m = (
    schema.settlements,
    schema.payouts,
    schema.card_transactions,
    schema.refunds,
    schema.merchants,
)


def settlement_id(merchant_id: uuid.UUID, day: str) -> uuid.UUID:
    return uuid.uuid5(SETTLEMENTS_NAMESPACE, f"settlement:{merchant_id}:{day}")


def settlement_out(row: Any, payout_id: uuid.UUID | None) -> Settlement:
    return Settlement(
        id=row.id,
        merchant_id=row.merchant_id,
        business_date=row.business_date,
        transaction_count=row.transaction_count,
        gross_amount=row.gross_amount,
        fee_amount=row.fee_amount,
        refund_amount=row.refund_amount,
        carried_in=row.carried_in,
        net_amount=row.net_amount,
        payout_amount=row.payout_amount,
        transfer_id=row.transfer_id,
        payout_id=payout_id,
        created_at=to_datetime(row.created_us),
    )


def _with_payout(conn: Connection, row: Any) -> Settlement:
    payout = conn.execute(sa.select(p_.c.id).where(p_.c.settlement_id == row.id)).scalar()
    return settlement_out(row, payout)


def settle(engine: Engine, ledger: Ledger, merchant_id: uuid.UUID, day: date) -> Settlement:
    """Settle `merchant_id` for the business day `day`, in a transaction of its own, and
    commit before returning; idempotent (see the module doc). Raises ApiError with
    `business_day_not_closed` or `not_found`. The nightly job's entry point."""
    result: Settlement = run_write(engine, lambda conn: settle_in(conn, ledger, merchant_id, day))
    return result


def settle_in(conn: Connection, ledger: Ledger, merchant_id: uuid.UUID, day: date) -> Settlement:
    """`settle` inside the caller's write transaction."""
    day_text = day.isoformat()
    if day_text >= business_date(now_us()):
        raise ApiError(422, ErrorCode.BUSINESS_DAY_NOT_CLOSED, f"{day_text} has not closed yet")
    merchant = conn.execute(sa.select(m).where(m.c.id == merchant_id).with_for_update()).first()
    if merchant is None:
        raise not_found("merchant")
    sid = settlement_id(merchant_id, day_text)
    existing = conn.execute(sa.select(s_).where(s_.c.id == sid)).first()
    if existing is not None:
        return _with_payout(conn, existing)
    previous = conn.execute(
        sa.select(s_)
        .where(s_.c.merchant_id == merchant_id, s_.c.business_date < day_text)
        .order_by(s_.c.business_date.desc())
        .limit(1)
    ).first()
    after = previous.business_date if previous is not None else ""
    sales = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(ct.c.amount), 0),
            sa.func.coalesce(sa.func.sum(ct.c.fee), 0),
        ).where(
            ct.c.merchant_id == merchant_id,
            ct.c.kind == "debit",
            ct.c.amount > 0,
            ct.c.business_date > after,
            ct.c.business_date <= day_text,
        )
    ).one()
    refunded = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(rf.c.amount), 0)).where(
            rf.c.merchant_id == merchant_id,
            rf.c.business_date > after,
            rf.c.business_date <= day_text,
        )
    ).scalar_one()
    count, gross, fees = int(sales[0]), int(sales[1]), int(sales[2])
    carried_in = min(0, previous.net_amount) if previous is not None else 0
    net = gross - fees - int(refunded) + carried_in
    payout = max(net, 0)
    now = now_us()
    transfer_id = None
    if payout > 0:
        transfer_id = sid
        result = ledger.submit_in(
            conn,
            [
                Transfer.simple(
                    sid,
                    merchant.payable_account_id,
                    chart.SETTLEMENT_BANK,
                    payout,
                    "settlement",
                    metadata={"merchant_id": str(merchant_id), "business_date": day_text},
                )
            ],
        )[0]
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
    conn.execute(
        sa.insert(s_).values(
            id=sid,
            merchant_id=merchant_id,
            business_date=day_text,
            transaction_count=count,
            gross_amount=gross,
            fee_amount=fees,
            refund_amount=int(refunded),
            carried_in=carried_in,
            net_amount=net,
            payout_amount=payout,
            transfer_id=transfer_id,
            created_us=now,
        )
    )
    if payout > 0:
        conn.execute(
            sa.insert(p_).values(
                id=uuid.uuid5(SETTLEMENTS_NAMESPACE, f"payout:{sid}"),
                settlement_id=sid,
                merchant_id=merchant_id,
                business_date=day_text,
                amount=payout,
                bank_account=merchant.payout_bank_account,
                status="instructed",
                created_us=now,
            )
        )
    row = conn.execute(sa.select(s_).where(s_.c.id == sid)).one()
    settlement = _with_payout(conn, row)
    webhooks.emit(
        conn,
        merchant_id,
        "settlement.created",
        {
            "settlement_id": str(sid),
            "business_date": day_text,
            "net_amount": net,
            "payout_amount": payout,
        },
    )
    return settlement


def mark_payout_paid(engine: Engine, payout_id: uuid.UUID, bank_reference: str) -> Payout:
    """Record that the bank paid a payout (the nightly job, from the bank statement), in a
    transaction of its own; idempotent. Emits `payout.paid` once."""

    def work(conn: Connection) -> Payout:
        row = conn.execute(sa.select(p_).where(p_.c.id == payout_id).with_for_update()).first()
        if row is None:
            raise not_found("payout")
        if row.status != "paid":
            conn.execute(
                sa.update(p_)
                .where(p_.c.id == payout_id)
                .values(status="paid", bank_reference=bank_reference or None, paid_us=now_us())
            )
            webhooks.emit(
                conn,
                row.merchant_id,
                "payout.paid",
                {
                    "payout_id": str(payout_id),
                    "amount": row.amount,
                    "business_date": row.business_date,
                },
            )
        return payout_out(conn.execute(sa.select(p_).where(p_.c.id == payout_id)).one())

    result: Payout = run_write(engine, work)
    return result


def payout_out(row: Any) -> Payout:
    return Payout(
        id=row.id,
        settlement_id=row.settlement_id,
        merchant_id=row.merchant_id,
        business_date=row.business_date,
        amount=row.amount,
        bank_account=row.bank_account,
        status=row.status,
        bank_reference=row.bank_reference,
        created_at=to_datetime(row.created_us),
        paid_at=to_datetime(row.paid_us) if row.paid_us is not None else None,
    )


def get_settlement(ctx: ApiContext, principal: Principal, sid: uuid.UUID) -> Settlement:
    def work(conn: Connection) -> Settlement:
        row = conn.execute(sa.select(s_).where(s_.c.id == sid)).first()
        if row is None or not principal.can_see(row.merchant_id):
            raise not_found("settlement")
        return _with_payout(conn, row)

    result: Settlement = run_read(ctx.engine, work)
    return result


def list_settlements(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    merchant_id: uuid.UUID | None,
    day: str | None,
) -> Page[Settlement]:
    where = []
    if principal.owner is not None:
        where.append(s_.c.merchant_id == principal.owner)
    if merchant_id is not None:
        where.append(s_.c.merchant_id == merchant_id)
    if day is not None:
        where.append(s_.c.business_date == day)

    def work(conn: Connection) -> Page[Settlement]:
        rows, more = page(conn, s_, where, limit, starting_after, ending_before)
        return Page(data=[_with_payout(conn, r) for r in rows], has_more=more)

    result: Page[Settlement] = run_read(ctx.engine, work)
    return result


def get_payout(ctx: ApiContext, principal: Principal, payout_id: uuid.UUID) -> Payout:
    row = run_read(
        ctx.engine, lambda conn: conn.execute(sa.select(p_).where(p_.c.id == payout_id)).first()
    )
    if row is None or not principal.can_see(row.merchant_id):
        raise not_found("payout")
    return payout_out(row)


def list_payouts(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    status: str | None,
) -> Page[Payout]:
    where = []
    if principal.owner is not None:
        where.append(p_.c.merchant_id == principal.owner)
    if status is not None:
        where.append(p_.c.status == status)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, p_, where, limit, starting_after, ending_before)
    )
    return Page(data=[payout_out(r) for r in rows], has_more=more)
