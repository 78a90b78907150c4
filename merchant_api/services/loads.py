"""Loads (top-ups, two-phase), card credits and refunds.

Guarantees:
- A load is a pending ledger transfer from its funding account (issuer float for bank
  transfers, agent receivable for agent cash, card-credit clearing for refunds and
  replacements) to the card's purse. The pending credit counts against the purse's maximum
  at once, so Bank Indonesia's balance limit holds even for loads not yet confirmed. The
  monthly incoming limit (Rp 20,000,000 unregistered, Rp 40,000,000 registered, per WIB
  calendar month, counting pending and posted top-ups; card credits are value returning to
  the card and do not count) is checked under the card's row lock.
- The answer carries the load cryptogram for exactly this card, counter and amount
  (docs/card-protocol.md); the card accepts it once.
- Confirming with the card's credit certificate posts the load; any certificate that does
  not match (`not_a_credit`, `mac_invalid`, `counter_mismatch`, `amount_mismatch`,
  `load_card_mismatch`, a format reason) is refused with that code and quarantined. A load
  never confirmed is settled by the card's later certificates (merchant_api.services.
  certificates) or by the nightly job, never voided while the card may hold the value.
  A load posted by card evidence still takes its own credit certificate when it comes: it
  is recorded (the card's counter chain complete) and answers the load, moving no money.
- A refund moves value from the merchant's payable to card-credit clearing at once (a
  posted transfer linked to the original), never more in total than the original amount
  (checked under the transaction's row lock, and by a CHECK constraint). The value then
  waits as a card credit for the card's next tap, which loads it (channel card_credit).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from card_reader.certificate import (
    LoadVerification,
    make_load_cryptogram,
    verify_load_certificate,
)
from ledger import Ledger, PostPending, Request, Transfer, VoidPending, run_read, run_write
from merchant_api import chart, schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, ledger_refusal, not_found
from merchant_api.idempotency import derived_id
from merchant_api.pagination import page
from merchant_api.schemas.cards import Load, LoadConfirm, LoadCreate, Refund, RefundCreate
from merchant_api.schemas.common import Page
from merchant_api.services import certificates, webhooks
from merchant_api.services.cards import card_serial, current_card, lock_cards
from merchant_api.services.transactions import write
from merchant_api.wib import business_date, month, now_us, to_datetime

c, ld, cc, rf = schema.cards, schema.loads, schema.card_credits, schema.refunds
ct, m = schema.card_transactions, schema.merchants

_FUNDING = {
    "bank_transfer": chart.ISSUER_FLOAT,
    "agent_cash": chart.AGENT_RECEIVABLE,
    "card_credit": chart.CARD_CREDIT_CLEARING,
}


def load_out(ctx: ApiContext, row: Any, serial: bytes | None) -> Load:
    cryptogram = None
    if row.status == "pending" and serial is not None:
        cryptogram = make_load_cryptogram(serial, row.card_counter, row.amount, ctx.card_keys).hex()
    return Load(
        id=row.id,
        card_id=row.card_id,
        amount=row.amount,
        channel=row.channel,
        card_counter=row.card_counter,
        status=row.status,
        resolution=row.resolution,
        cryptogram=cryptogram,
        card_credit_id=row.card_credit_id,
        agent_merchant_id=row.agent_merchant_id,
        card_transaction_id=row.card_transaction_id,
        created_at=to_datetime(row.created_us),
        resolved_at=to_datetime(row.resolved_us) if row.resolved_us is not None else None,
    )


def _agent_for(conn: Connection, principal: Principal, data: LoadCreate) -> uuid.UUID | None:
    """Who takes the customer's money, and whether this caller may load by this channel."""
    if principal.owner is None:
        if data.channel == "agent_cash" and data.agent_merchant_id is None:
            raise ApiError(
                422,
                ErrorCode.LOAD_CHANNEL_NOT_ALLOWED,
                "agent_cash loads name the agent (agent_merchant_id)",
            )
        return data.agent_merchant_id
    if data.channel == "bank_transfer":
        raise ApiError(
            403, ErrorCode.LOAD_CHANNEL_NOT_ALLOWED, "bank transfer loads are made by the issuer"
        )
    if data.channel == "agent_cash":
        _require_active(conn, principal.owner)
        is_agent = conn.execute(
            sa.select(m.c.load_agent).where(m.c.id == principal.owner)
        ).scalar_one_or_none()
        if not is_agent:
            raise ApiError(
                403, ErrorCode.LOAD_CHANNEL_NOT_ALLOWED, "this merchant is not a load agent"
            )
    return principal.owner


def _require_active(conn: Connection, merchant_id: uuid.UUID) -> None:
    """A suspended merchant takes no new money in or out (its cards' certificates still
    post: that value already left the card)."""
    status = conn.execute(sa.select(m.c.status).where(m.c.id == merchant_id)).scalar_one()
    if status != "active":
        raise ApiError(422, ErrorCode.MERCHANT_SUSPENDED, "the merchant is suspended")


def _card_for(conn: Connection, data: LoadCreate) -> Any:
    if (data.card_id is None) == (data.card_ref is None):
        raise ApiError(400, ErrorCode.REQUEST_INVALID, "name the card by card_id or card_ref")
    where = c.c.id == data.card_id if data.card_id is not None else c.c.hotlist_id == data.card_ref
    card_id = conn.execute(sa.select(c.c.id).where(where)).scalar_one_or_none()
    if card_id is None:
        raise not_found("card")
    return lock_cards(conn, [card_id])[card_id]


def create_load(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: LoadCreate
) -> Load:
    load_id = derived_id(principal.api_key_id, idempotency_key, "load")

    def work(conn: Connection) -> tuple[Any, bytes]:
        existing = conn.execute(sa.select(ld).where(ld.c.id == load_id)).first()
        if existing is not None:
            card = conn.execute(sa.select(c).where(c.c.id == existing.card_id)).one()
            return existing, card_serial(ctx, card)
        if (data.channel == "card_credit") != (data.card_credit_id is not None):
            raise ApiError(
                422,
                ErrorCode.LOAD_CHANNEL_NOT_ALLOWED,
                "card_credit_id goes with channel card_credit, and only with it",
            )
        agent = _agent_for(conn, principal, data)
        card = _card_for(conn, data)
        if card.status != "active":
            code = ErrorCode.CARD_REPLACED if card.status == "replaced" else ErrorCode.CARD_BLOCKED
            raise ApiError(422, code, "the card cannot take loads")
        now = now_us()
        if data.channel == "card_credit":
            _claim_credit(conn, card.id, load_id, data)
        else:
            _check_monthly_limit(conn, card, data.amount, month(now))
        result = ctx.ledger.submit_in(
            conn,
            [
                Transfer.simple(
                    load_id,
                    _FUNDING[data.channel],
                    card.purse_account_id,
                    data.amount,
                    "card_load",
                    pending=True,
                    metadata={"card_id": str(card.id), "channel": data.channel},
                )
            ],
        )[0]
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
        conn.execute(
            sa.insert(ld).values(
                id=load_id,
                card_id=card.id,
                amount=data.amount,
                channel=data.channel,
                agent_merchant_id=agent,
                card_credit_id=data.card_credit_id,
                card_counter=data.card_counter,
                status="pending",
                month=month(now),
                api_key_id=principal.api_key_id,
                business_date=business_date(now),
                created_us=now,
            )
        )
        return conn.execute(sa.select(ld).where(ld.c.id == load_id)).one(), card_serial(ctx, card)

    row, serial = write(ctx, work)
    return load_out(ctx, row, serial)


def _claim_credit(
    conn: Connection, card_id: uuid.UUID, load_id: uuid.UUID, data: LoadCreate
) -> None:
    if data.card_credit_id is None:
        raise ApiError(422, ErrorCode.CARD_CREDIT_NOT_PENDING, "card_credit loads name the credit")
    credit_row = conn.execute(
        sa.select(cc)
        .where(cc.c.id == data.card_credit_id, cc.c.card_id == card_id)
        .with_for_update()
    ).first()
    if credit_row is None:
        raise not_found("card credit")
    if credit_row.status != "pending":
        raise ApiError(409, ErrorCode.CARD_CREDIT_NOT_PENDING, f"the credit is {credit_row.status}")
    if credit_row.amount != data.amount:
        raise ApiError(422, ErrorCode.AMOUNT_MISMATCH, "load the credit's whole amount")
    conn.execute(
        sa.update(cc).where(cc.c.id == credit_row.id).values(status="loading", load_id=load_id)
    )


def _check_monthly_limit(conn: Connection, card: Any, amount: int, this_month: str) -> None:
    loaded = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ld.c.amount), 0)).where(
            ld.c.card_id == card.id,
            ld.c.month == this_month,
            ld.c.status != "voided",
            ld.c.channel != "card_credit",
        )
    ).scalar_one()
    limit = chart.monthly_incoming_limit(card.registered)
    if int(loaded) + amount > limit:
        raise ApiError(
            422,
            ErrorCode.MONTHLY_LOAD_LIMIT_EXCEEDED,
            f"this card may take at most Rp {limit:,} a month",
        )


def _visible_load(conn: Connection, principal: Principal, load_id: uuid.UUID) -> Any:
    row = conn.execute(sa.select(ld).where(ld.c.id == load_id)).first()
    if row is None or (principal.owner is not None and row.agent_merchant_id != principal.owner):
        raise not_found("load")
    return row


def get_load(ctx: ApiContext, principal: Principal, load_id: uuid.UUID) -> Load:
    def work(conn: Connection) -> tuple[Any, bytes]:
        row = _visible_load(conn, principal, load_id)
        card = conn.execute(sa.select(c).where(c.c.id == row.card_id)).one()
        return row, card_serial(ctx, card)

    row, serial = run_read(ctx.engine, work)
    return load_out(ctx, row, serial)


def list_loads(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    card_id: uuid.UUID | None,
    status: str | None,
) -> Page[Load]:
    where = []
    if principal.owner is not None:
        where.append(ld.c.agent_merchant_id == principal.owner)
    if card_id is not None:
        where.append(ld.c.card_id == card_id)
    if status is not None:
        where.append(ld.c.status == status)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, ld, where, limit, starting_after, ending_before)
    )
    # Lists carry no cryptograms: fetch the one load to get it.
    return Page(data=[load_out(ctx, r, None) for r in rows], has_more=more)


def confirm_load(
    ctx: ApiContext, principal: Principal, load_id: uuid.UUID, data: LoadConfirm
) -> Load:
    item = certificates.parse(ctx, data.certificate)
    caller = certificates.Caller(principal.api_key_id, principal.owner, load_id=load_id)

    def work(conn: Connection) -> tuple[Any, bytes, str | None]:
        row = _visible_load(conn, principal, load_id)
        card = lock_cards(conn, [row.card_id])[row.card_id]
        row = conn.execute(sa.select(ld).where(ld.c.id == load_id)).one()
        refusal = _confirmation_refusal(ctx, card, row, item)
        # Posted by card evidence, and this is its own credit arriving late (recorded,
        # moving no money: merchant_api.services.certificates).
        late = row.status == "posted" and row.card_transaction_id is None and refusal is None
        if row.status != "pending" and not late:
            if (
                row.status == "posted"
                and item.cert is not None
                and item.reason is None
                and _recorded_digest(conn, row.card_transaction_id)
                == certificates.certificate_digest(item.cert)
            ):
                return row, card_serial(ctx, card), None  # confirmed before with this certificate
            # Another certificate for a settled load (a replayed or re-targeted credit):
            # refused, and kept for the nightly job like every refused certificate.
            item.reason = item.reason or ErrorCode.LOAD_NOT_PENDING.value
            certificates.accept(conn, ctx, [item], caller, "load", now_us())
            return row, b"", ErrorCode.LOAD_NOT_PENDING.value
        item.reason = refusal
        decided = certificates.accept(conn, ctx, [item], caller, "load", now_us())[0]
        if decided.outcome == "quarantined":
            return row, b"", decided.reason or "quarantined"
        row = conn.execute(sa.select(ld).where(ld.c.id == load_id)).one()
        if not late:  # a late certificate's load was posted before: nothing moved now
            _emit_loaded(conn, row)
        return row, card_serial(ctx, card), None

    row, serial, refusal = write(ctx, work)
    if refusal == ErrorCode.LOAD_NOT_PENDING:
        raise ApiError(
            409, refusal, f"the load is {row.status}; the certificate is kept in quarantine"
        )
    if refusal is not None:
        raise ApiError(
            422, refusal, "the certificate does not confirm this load; it is kept in quarantine"
        )
    return load_out(ctx, row, serial)


def _confirmation_refusal(
    ctx: ApiContext, card: Any, load: Any, item: certificates.Submitted
) -> str | None:
    """Why `item` is not this load's own credit certificate (its format or MAC reason,
    another card's, or the card's cryptogram check), or None when it is."""
    if item.reason is not None or item.cert is None:
        return item.reason
    if ctx.secrets.serial_hash(item.cert.card_serial) != bytes(card.serial_hash):
        return ErrorCode.LOAD_CARD_MISMATCH.value
    verdict = verify_load_certificate(
        item.cert, ctx.card_keys, counter_before=load.card_counter, amount=load.amount
    )
    return None if verdict is LoadVerification.OK else verdict.value


def _recorded_digest(conn: Connection, transaction_id: uuid.UUID | None) -> bytes | None:
    """The exact certificate that confirmed a load: a retry must carry the same bytes, not
    merely the same counter (another card's credit at that counter is a replay)."""
    if transaction_id is None:
        return None
    digest = conn.execute(
        sa.select(schema.card_transactions.c.certificate_digest).where(
            schema.card_transactions.c.id == transaction_id
        )
    ).scalar_one_or_none()
    return None if digest is None else bytes(digest)


def resolve_load(
    engine: Engine, ledger: Ledger, load_id: uuid.UUID, post: bool
) -> Literal["posted", "voided"]:
    """Settle a pending load the card's certificates never settled (the nightly job, once
    it has decided from the whole chain of the card's certificates whether the card holds
    the value): post it (`post`) or void it, in a transaction of its own, and commit.
    Idempotent for the same decision; a load already resolved the other way raises
    ApiError `load_not_pending`. A card credit carried by the load follows it."""

    def work(conn: Connection) -> Literal["posted", "voided"]:
        row = conn.execute(sa.select(ld).where(ld.c.id == load_id)).first()
        if row is None:
            raise not_found("load")
        lock_cards(conn, [row.card_id])
        row = conn.execute(sa.select(ld).where(ld.c.id == load_id)).one()
        wanted: Literal["posted", "voided"] = "posted" if post else "voided"
        if row.status != "pending":
            if row.status == wanted:
                return wanted
            raise ApiError(409, ErrorCode.LOAD_NOT_PENDING, f"the load is {row.status}")
        request: Request = (
            PostPending(certificates.load_post_id(load_id), load_id)
            if post
            else VoidPending(certificates.load_void_id(load_id), load_id)
        )
        result = ledger.submit_in(conn, [request])[0]
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
        now = now_us()
        conn.execute(
            sa.update(ld)
            .where(ld.c.id == load_id)
            .values(
                status=wanted,
                resolution="nightly",
                resolution_transfer_id=request.id,
                resolved_us=now,
            )
        )
        if row.card_credit_id is not None:
            certificates.credit_follows_load(conn, row, wanted, now)
        if post:
            _emit_loaded(conn, conn.execute(sa.select(ld).where(ld.c.id == load_id)).one())
        return wanted

    result: Literal["posted", "voided"] = run_write(engine, work)
    return result


def _emit_loaded(conn: Connection, load: Any) -> None:
    if load.status != "posted":
        return
    if load.agent_merchant_id is not None and load.channel == "agent_cash":
        webhooks.emit(
            conn,
            load.agent_merchant_id,
            "load.posted",
            {"load_id": str(load.id), "card_id": str(load.card_id), "amount": load.amount},
        )
    if load.card_credit_id is not None:
        refund = conn.execute(
            sa.select(rf).where(rf.c.card_credit_id == load.card_credit_id)
        ).first()
        if refund is not None:
            webhooks.emit(
                conn,
                refund.merchant_id,
                "refund.loaded",
                {"refund_id": str(refund.id), "amount": refund.amount, "load_id": str(load.id)},
            )


# --- Refunds -------------------------------------------------------------------------

REFUNDS_NAMESPACE = uuid.UUID("e2b8c4d1-7a3f-4e69-9d0c-5f1a6b8e3c72")


def refund_out(row: Any, credit_status: Any) -> Refund:
    return Refund(
        id=row.id,
        card_transaction_id=row.card_transaction_id,
        merchant_id=row.merchant_id,
        card_id=row.card_id,
        amount=row.amount,
        reason=row.reason,
        card_credit_id=row.card_credit_id,
        status=credit_status,
        business_date=row.business_date,
        created_at=to_datetime(row.created_us),
    )


def _refund_with_status(conn: Connection, refund_id: uuid.UUID) -> Refund:
    row = conn.execute(sa.select(rf).where(rf.c.id == refund_id)).one()
    status = conn.execute(sa.select(cc.c.status).where(cc.c.id == row.card_credit_id)).scalar_one()
    return refund_out(row, status)


def create_refund(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: RefundCreate
) -> Refund:
    refund_id = derived_id(principal.api_key_id, idempotency_key, "refund")

    def work(conn: Connection) -> Refund:
        if conn.execute(sa.select(rf.c.id).where(rf.c.id == refund_id)).first() is not None:
            return _refund_with_status(conn, refund_id)
        original = conn.execute(
            sa.select(ct).where(ct.c.id == data.card_transaction_id).with_for_update()
        ).first()
        if original is None or not principal.can_see(original.merchant_id):
            raise not_found("card transaction")
        _require_active(conn, original.merchant_id)
        if original.kind != "debit" or original.transfer_id is None:
            raise ApiError(422, ErrorCode.REFUND_NOT_ALLOWED, "only a debit with value refunds")
        if original.refunded_amount + data.amount > original.amount:
            left = original.amount - original.refunded_amount
            raise ApiError(
                422,
                ErrorCode.REFUND_EXCEEDS_TRANSACTION,
                f"at most Rp {left:,} of this transaction is left to refund",
            )
        payable = conn.execute(
            sa.select(m.c.payable_account_id).where(m.c.id == original.merchant_id)
        ).scalar_one()
        result = ctx.ledger.submit_in(
            conn,
            [
                Transfer.simple(
                    refund_id,
                    payable,
                    chart.CARD_CREDIT_CLEARING,
                    data.amount,
                    "refund",
                    linked_id=original.transfer_id,
                    metadata={"card_transaction_id": str(original.id)},
                )
            ],
        )[0]
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
        now = now_us()
        credit_id = uuid.uuid5(REFUNDS_NAMESPACE, str(refund_id))
        conn.execute(
            sa.insert(cc).values(
                id=credit_id,
                card_id=current_card(conn, original.card_id),
                source="refund",
                source_id=refund_id,
                amount=data.amount,
                status="pending",
                created_us=now,
            )
        )
        conn.execute(
            sa.insert(rf).values(
                id=refund_id,
                card_transaction_id=original.id,
                merchant_id=original.merchant_id,
                card_id=original.card_id,
                amount=data.amount,
                reason=data.reason,
                card_credit_id=credit_id,
                business_date=business_date(now),
                created_us=now,
            )
        )
        conn.execute(
            sa.update(ct)
            .where(ct.c.id == original.id)
            .values(refunded_amount=ct.c.refunded_amount + data.amount)
        )
        refund = _refund_with_status(conn, refund_id)
        webhooks.emit(
            conn,
            original.merchant_id,
            "refund.created",
            {
                "refund_id": str(refund_id),
                "card_transaction_id": str(original.id),
                "amount": data.amount,
            },
        )
        return refund

    result: Refund = write(ctx, work)
    return result


def get_refund(ctx: ApiContext, principal: Principal, refund_id: uuid.UUID) -> Refund:
    def work(conn: Connection) -> Refund:
        row = conn.execute(sa.select(rf).where(rf.c.id == refund_id)).first()
        if row is None or not principal.can_see(row.merchant_id):
            raise not_found("refund")
        return _refund_with_status(conn, refund_id)

    result: Refund = run_read(ctx.engine, work)
    return result


def list_refunds(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    card_transaction_id: uuid.UUID | None,
) -> Page[Refund]:
    where = []
    if principal.owner is not None:
        where.append(rf.c.merchant_id == principal.owner)
    if card_transaction_id is not None:
        where.append(rf.c.card_transaction_id == card_transaction_id)

    def work(conn: Connection) -> Page[Refund]:
        rows, more = page(conn, rf, where, limit, starting_after, ending_before)
        statuses = (
            dict(
                conn.execute(
                    sa.select(cc.c.id, cc.c.status).where(
                        cc.c.id.in_([r.card_credit_id for r in rows])
                    )
                ).all()
            )
            if rows
            else {}
        )
        return Page(data=[refund_out(r, statuses[r.card_credit_id]) for r in rows], has_more=more)

    result: Page[Refund] = run_read(ctx.engine, work)
    return result
