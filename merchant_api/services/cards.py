"""Cards (issuer staff): issue, register, block and unblock (the hotlist), replace.

Guarantees:
- A card's serial is stored only as a keyed hash (`cards.serial_hash`, for lookup), its
  public reference (`card_ref` = serial_hash of docs/card-protocol.md, what gates see) and
  sealed (AES-GCM, for key diversification). No answer, log or error carries it.
- A card and its purse account are created in one transaction; registering raises the
  purse's maximum to Rp 20,000,000 in the same transaction that marks it registered.
- Every block and unblock appends a numbered hotlist entry; gates fetch what changed since
  the version they hold, or the whole list.
- Replacing a lost registered card needs it blocked first; its posted balance moves to the
  card-credit clearing account as a credit for the new card, which the new card's next tap
  loads. The old card's later certificates (made before the block) still post against its
  purse; if it no longer holds the value they are quarantined (`exceeds_credits`).
- Locking: a service that touches a purse locks the card rows first, in id order, then the
  ledger locks the purses (also in id order), so no two writers deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from card_reader.certificate import serial_hash as public_card_ref
from ledger import Transfer, run_read, run_write
from ledger.queries import accounts_by_id
from merchant_api import chart, schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, ledger_refusal, not_found
from merchant_api.idempotency import derived_id
from merchant_api.pagination import page
from merchant_api.schemas.cards import (
    Card,
    CardBlock,
    CardCredit,
    CardIssue,
    CardRegister,
    CardReplace,
    Hotlist,
)
from merchant_api.schemas.common import Page
from merchant_api.wib import now_us, to_datetime

c, h, cc = schema.cards, schema.hotlist_entries, schema.card_credits
CARDS_NAMESPACE = uuid.UUID("3f6d2b8e-91c4-4d7a-b0e5-7c1a9f4e2d63")
SERIAL_PURPOSE = "card-serial"


def lock_cards(conn: Connection, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Lock card rows in id order (the first lock any purse-touching service takes)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(c).where(c.c.id.in_(wanted)).order_by(c.c.id).with_for_update()
    ).all()
    return {row.id: row for row in rows}


def card_out(row: Any, balance: int, pending: int) -> Card:
    return Card(
        id=row.id,
        card_ref=row.hotlist_id,
        status=row.status,
        registered=row.registered,
        holder_reference=row.holder_reference,
        purse_account_id=row.purse_account_id,
        balance=balance,
        pending_loads=pending,
        replaces_card_id=row.replaces_card_id,
        replaced_by_card_id=row.replaced_by_card_id,
        blocked_at=to_datetime(row.blocked_us) if row.blocked_us is not None else None,
        block_reason=row.block_reason,
        created_at=to_datetime(row.created_us),
    )


def _with_balances(conn: Connection, rows: list[Any]) -> list[Card]:
    accounts = accounts_by_id(conn, [row.purse_account_id for row in rows])
    out = []
    for row in rows:
        account = accounts.get(row.purse_account_id)
        balance = account.balance if account else 0
        pending = account.credits_pending if account else 0
        out.append(card_out(row, balance, pending))
    return out


def _insert_card(
    ctx: ApiContext,
    conn: Connection,
    card_id: uuid.UUID,
    serial: bytes,
    registered: bool,
    holder_reference: str | None,
    replaces: uuid.UUID | None = None,
) -> None:
    lookup = ctx.secrets.serial_hash(serial)
    taken = conn.execute(sa.select(c.c.id).where(c.c.serial_hash == lookup)).first()
    if taken is not None:
        raise ApiError(409, ErrorCode.CARD_ALREADY_ISSUED, "a card with this serial exists")
    purse = chart.purse_account(card_id, registered)
    result = ctx.ledger.create_accounts_in(conn, [purse])[0]
    if not result.code.succeeded:
        raise ledger_refusal(result.code, result.detail)
    now = now_us()
    conn.execute(
        sa.insert(c).values(
            id=card_id,
            serial_hash=lookup,
            serial_sealed=ctx.secrets.seal(SERIAL_PURPOSE, serial),
            hotlist_id=public_card_ref(serial),
            status="active",
            registered=registered,
            holder_reference=holder_reference,
            purse_account_id=purse.id,
            replaces_card_id=replaces,
            created_us=now,
            updated_us=now,
        )
    )


def card_serial(ctx: ApiContext, row: Any) -> bytes:
    """The card's serial, unsealed for key diversification only. Never log it."""
    return ctx.secrets.unseal(SERIAL_PURPOSE, row.serial_sealed)


def issue_card(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: CardIssue
) -> Card:
    if data.registered and data.holder_reference is None:
        raise ApiError(422, ErrorCode.CARD_NOT_REGISTERED, "a registered card needs its holder")
    card_id = derived_id(principal.api_key_id, idempotency_key, "card")
    serial = bytes.fromhex(data.serial)

    def work(conn: Connection) -> Card:
        if conn.execute(sa.select(c.c.id).where(c.c.id == card_id)).first() is None:
            _insert_card(
                ctx,
                conn,
                card_id,
                serial,
                data.registered,
                data.holder_reference if data.registered else None,
            )
        return _with_balances(conn, [conn.execute(sa.select(c).where(c.c.id == card_id)).one()])[0]

    return run_write(ctx.engine, work)


def _card_row(conn: Connection, card_id: uuid.UUID, *, lock: bool = False) -> Any:
    row = (
        lock_cards(conn, [card_id]).get(card_id)
        if lock
        else conn.execute(sa.select(c).where(c.c.id == card_id)).first()
    )
    if row is None:
        raise not_found("card")
    return row


def get_card(ctx: ApiContext, card_id: uuid.UUID) -> Card:
    return run_read(ctx.engine, lambda conn: _with_balances(conn, [_card_row(conn, card_id)])[0])


def list_cards(
    ctx: ApiContext,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    status: str | None,
) -> Page[Card]:
    where = [c.c.status == status] if status is not None else []

    def work(conn: Connection) -> Page[Card]:
        rows, more = page(conn, c, where, limit, starting_after, ending_before)
        return Page(data=_with_balances(conn, rows), has_more=more)

    return run_read(ctx.engine, work)


def register_card(ctx: ApiContext, card_id: uuid.UUID, data: CardRegister) -> Card:
    def work(conn: Connection) -> Card:
        row = _card_row(conn, card_id, lock=True)
        if row.status != "active":
            raise ApiError(409, ErrorCode.CARD_BLOCKED, "only an active card can be registered")
        if not row.registered:
            ctx.ledger.set_max_balance_in(conn, row.purse_account_id, chart.max_balance(True))
            conn.execute(
                sa.update(c)
                .where(c.c.id == card_id)
                .values(
                    registered=True, holder_reference=data.holder_reference, updated_us=now_us()
                )
            )
        elif row.holder_reference != data.holder_reference:
            raise ApiError(409, ErrorCode.CARD_ALREADY_REGISTERED, "registered to another holder")
        return _with_balances(conn, [_card_row(conn, card_id)])[0]

    return run_write(ctx.engine, work)


def _hotlist(conn: Connection, row: Any, action: str) -> None:
    conn.execute(
        sa.insert(h).values(
            card_id=row.id, hotlist_id=row.hotlist_id, action=action, created_us=now_us()
        )
    )


def block_card(ctx: ApiContext, card_id: uuid.UUID, data: CardBlock) -> Card:
    def work(conn: Connection) -> Card:
        row = _card_row(conn, card_id, lock=True)
        if row.status == "active":
            conn.execute(
                sa.update(c)
                .where(c.c.id == card_id)
                .values(
                    status="blocked",
                    blocked_us=now_us(),
                    block_reason=data.reason,
                    updated_us=now_us(),
                )
            )
            _hotlist(conn, row, "block")
        return _with_balances(conn, [_card_row(conn, card_id)])[0]

    return run_write(ctx.engine, work)


def unblock_card(ctx: ApiContext, card_id: uuid.UUID) -> Card:
    def work(conn: Connection) -> Card:
        row = _card_row(conn, card_id, lock=True)
        if row.status == "replaced":
            raise ApiError(409, ErrorCode.CARD_REPLACED, "a replaced card stays blocked")
        if row.status == "blocked":
            conn.execute(
                sa.update(c)
                .where(c.c.id == card_id)
                .values(status="active", blocked_us=None, block_reason=None, updated_us=now_us())
            )
            _hotlist(conn, row, "unblock")
        return _with_balances(conn, [_card_row(conn, card_id)])[0]

    return run_write(ctx.engine, work)


def replace_card(
    ctx: ApiContext,
    principal: Principal,
    idempotency_key: str,
    card_id: uuid.UUID,
    data: CardReplace,
) -> Card:
    new_id = derived_id(principal.api_key_id, idempotency_key, "replacement_card")
    serial = bytes.fromhex(data.serial)

    def work(conn: Connection) -> Card:
        old = _card_row(conn, card_id, lock=True)
        if old.status == "replaced":
            if old.replaced_by_card_id != new_id:
                raise ApiError(409, ErrorCode.CARD_REPLACED, "this card was already replaced")
            return _with_balances(conn, [_card_row(conn, new_id)])[0]
        if old.status != "blocked":
            raise ApiError(409, ErrorCode.CARD_NOT_BLOCKED, "hotlist the card before replacing it")
        if not old.registered:
            raise ApiError(
                422, ErrorCode.CARD_NOT_REGISTERED, "only a registered card's balance can be moved"
            )
        _insert_card(ctx, conn, new_id, serial, True, old.holder_reference, replaces=old.id)
        now = now_us()
        conn.execute(
            sa.update(c)
            .where(c.c.id == old.id)
            .values(status="replaced", replaced_by_card_id=new_id, updated_us=now)
        )
        purse = accounts_by_id(conn, [old.purse_account_id])[old.purse_account_id]
        movable = purse.credits_posted - purse.debits_posted - purse.debits_pending
        if movable > 0:
            move_id = uuid.uuid5(CARDS_NAMESPACE, f"replacement:{old.id}")
            result = ctx.ledger.submit_in(
                conn,
                [
                    Transfer.simple(
                        move_id,
                        old.purse_account_id,
                        chart.CARD_CREDIT_CLEARING,
                        movable,
                        "card_replacement",
                        metadata={"from_card": str(old.id), "to_card": str(new_id)},
                    )
                ],
            )[0]
            if not result.code.succeeded:
                raise ledger_refusal(result.code, result.detail)
            conn.execute(
                sa.insert(cc).values(
                    id=move_id,
                    card_id=new_id,
                    source="replacement",
                    source_id=old.id,
                    amount=movable,
                    status="pending",
                    created_us=now,
                )
            )
        return _with_balances(conn, [_card_row(conn, new_id)])[0]

    return run_write(ctx.engine, work)


def current_card(conn: Connection, card_id: uuid.UUID) -> uuid.UUID:
    """Follow replacements to the card that now stands for `card_id`."""
    seen = {card_id}
    while True:
        nxt = conn.execute(
            sa.select(c.c.replaced_by_card_id).where(c.c.id == card_id)
        ).scalar_one_or_none()
        if nxt is None or nxt in seen:
            return card_id
        seen.add(nxt)
        card_id = nxt


def hotlist(ctx: ApiContext, since_version: int) -> Hotlist:
    def work(conn: Connection) -> Hotlist:
        version = int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(h.c.version), 0))).scalar_one()
        )
        if since_version <= 0 or since_version > version:
            blocked = (
                conn.execute(
                    sa.select(c.c.hotlist_id).where(c.c.status != "active").order_by(c.c.hotlist_id)
                )
                .scalars()
                .all()
            )
            return Hotlist(version=version, blocked=list(blocked), unblocked=[], full=True)
        latest = conn.execute(
            sa.select(h.c.hotlist_id, h.c.action)
            .where(h.c.version > since_version)
            .order_by(h.c.version)
        ).all()
        final = {row.hotlist_id: row.action for row in latest}
        return Hotlist(
            version=version,
            blocked=sorted(ref for ref, action in final.items() if action == "block"),
            unblocked=sorted(ref for ref, action in final.items() if action == "unblock"),
            full=False,
        )

    return run_read(ctx.engine, work)


def credit_out(row: Any, card_ref: str) -> CardCredit:
    return CardCredit(
        id=row.id,
        card_id=row.card_id,
        card_ref=card_ref,
        source=row.source,
        amount=row.amount,
        status=row.status,
        load_id=row.load_id,
        created_at=to_datetime(row.created_us),
    )


def list_card_credits(
    ctx: ApiContext,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    status: str | None,
    card_id: uuid.UUID | None,
) -> Page[CardCredit]:
    where = []
    if status is not None:
        where.append(cc.c.status == status)
    if card_id is not None:
        where.append(cc.c.card_id == card_id)

    def work(conn: Connection) -> Page[CardCredit]:
        rows, more = page(conn, cc, where, limit, starting_after, ending_before)
        refs = (
            dict(
                conn.execute(
                    sa.select(c.c.id, c.c.hotlist_id).where(c.c.id.in_({r.card_id for r in rows}))
                ).all()
            )
            if rows
            else {}
        )
        return Page(data=[credit_out(r, refs[r.card_id]) for r in rows], has_more=more)

    return run_read(ctx.engine, work)
