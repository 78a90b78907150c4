"""Card batches: a personalization bureau's cards, issued in one request (issuer staff).

Guarantees (besides those of `merchant_api.services.cards` for each card):
- A batch is issued in one transaction: every card, its purse and its first load, or
  nothing. A serial already issued, or twice in the batch, refuses the whole batch
  (409 `card_already_issued`).
- Card ids derive from the Idempotency-Key and the card's place in the batch, load ids
  from the card: a batch sent again after its idempotency record expired answers the
  cards it made and makes nothing twice.
- A first load is exactly a bank-transfer load for card counter 0
  (`merchant_api.services.loads`): a pending transfer from the issuer float, confirmed by
  the card's credit certificate (`POST /v1/loads/{id}/confirm` or in a terminal's batch).
  A new card has loaded nothing this month and its first load fits its maximum balance,
  which is below Bank Indonesia's monthly limit, so the monthly check cannot fail here.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from card_reader.certificate import make_load_cryptogram
from card_reader.certificate import serial_hash as public_card_ref
from ledger import Transfer, run_write
from merchant_api import chart, schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, ledger_refusal
from merchant_api.idempotency import derived_id
from merchant_api.schemas.cards import CardBatch, CardBatchCreate, IssuedCard
from merchant_api.services.cards import SERIAL_PURPOSE
from merchant_api.wib import business_date, month, now_us

c, ld = schema.cards, schema.loads


def issue_batch(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: CardBatchCreate
) -> CardBatch:
    items = data.cards
    for item in items:
        if item.registered and item.holder_reference is None:
            raise ApiError(422, ErrorCode.CARD_NOT_REGISTERED, "a registered card needs its holder")
    serials = [bytes.fromhex(item.serial) for item in items]
    if len(set(serials)) != len(serials):
        raise ApiError(409, ErrorCode.CARD_ALREADY_ISSUED, "a serial appears twice in the batch")
    ids = [
        derived_id(principal.api_key_id, f"{idempotency_key}#{index}", "card")
        for index in range(len(items))
    ]
    lookups = [ctx.secrets.serial_hash(serial) for serial in serials]

    def work(conn: Connection) -> list[Any]:
        made = {row.id for row in conn.execute(sa.select(c.c.id).where(c.c.id.in_(ids)))}
        fresh = [i for i, card_id in enumerate(ids) if card_id not in made]
        if fresh:
            _insert(
                ctx, conn, principal, [(ids[i], serials[i], lookups[i], items[i]) for i in fresh]
            )
        cards = {row.id: row for row in conn.execute(sa.select(c).where(c.c.id.in_(ids)))}
        loads = {
            row.card_id: row
            for row in conn.execute(
                sa.select(ld).where(ld.c.card_id.in_(ids), ld.c.card_counter == 0)
            )
        }
        return [(cards[card_id], loads.get(card_id)) for card_id in ids]

    rows = run_write(ctx.engine, work)
    issued = []
    for serial, (card, load) in zip(serials, rows, strict=True):
        pending = load is not None and load.status == "pending"
        issued.append(
            IssuedCard(
                id=card.id,
                card_ref=card.hotlist_id,
                registered=card.registered,
                load_id=load.id if load is not None else None,
                load_amount=load.amount if load is not None else None,
                cryptogram=make_load_cryptogram(serial, 0, load.amount, ctx.card_keys).hex()
                if pending
                else None,
            )
        )
    return CardBatch(cards=issued)


def _insert(
    ctx: ApiContext,
    conn: Connection,
    principal: Principal,
    fresh: list[tuple[uuid.UUID, bytes, bytes, Any]],
) -> None:
    taken = conn.execute(
        sa.select(c.c.id).where(c.c.serial_hash.in_([lookup for _, _, lookup, _ in fresh]))
    ).first()
    if taken is not None:
        raise ApiError(
            409, ErrorCode.CARD_ALREADY_ISSUED, "a card with one of these serials exists"
        )
    purses = [chart.purse_account(card_id, item.registered) for card_id, _, _, item in fresh]
    for result in ctx.ledger.create_accounts_in(conn, purses):
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
    now = now_us()
    conn.execute(
        sa.insert(c),
        [
            {
                "id": card_id,
                "serial_hash": lookup,
                "serial_sealed": ctx.secrets.seal(SERIAL_PURPOSE, serial),
                "hotlist_id": public_card_ref(serial),
                "status": "active",
                "registered": item.registered,
                "holder_reference": item.holder_reference if item.registered else None,
                "purse_account_id": purse.id,
                "replaces_card_id": None,
                "created_us": now,
                "updated_us": now,
            }
            for (card_id, serial, lookup, item), purse in zip(fresh, purses, strict=True)
        ],
    )
    loaded = [
        (card_id, purse, item.first_load)
        for (card_id, _, _, item), purse in zip(fresh, purses, strict=True)
        if item.first_load is not None
    ]
    if not loaded:
        return
    load_ids = [
        uuid.uuid5(chart.CHART_NAMESPACE, f"first-load:{card_id}") for card_id, _, _ in loaded
    ]
    transfers = [
        Transfer.simple(
            load_id,
            chart.ISSUER_FLOAT,
            purse.id,
            amount,
            "card_load",
            pending=True,
            metadata={"card_id": str(card_id), "channel": "bank_transfer"},
        )
        for load_id, (card_id, purse, amount) in zip(load_ids, loaded, strict=True)
    ]
    for posted in ctx.ledger.submit_in(conn, transfers):
        if not posted.code.succeeded:
            raise ledger_refusal(posted.code, posted.detail)
    conn.execute(
        sa.insert(ld),
        [
            {
                "id": load_id,
                "card_id": card_id,
                "amount": amount,
                "channel": "bank_transfer",
                "agent_merchant_id": None,
                "card_credit_id": None,
                "card_counter": 0,
                "status": "pending",
                "month": month(now),
                "api_key_id": principal.api_key_id,
                "business_date": business_date(now),
                "created_us": now,
            }
            for load_id, (card_id, _, amount) in zip(load_ids, loaded, strict=True)
        ],
    )
