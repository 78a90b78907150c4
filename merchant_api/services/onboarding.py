"""Onboarding by issuer staff: merchants and operators, terminals, API keys.

Guarantees:
- A merchant and its payable account are created in one transaction; an operator's payable
  has balance shards (every fare credits it). The merchant's id comes from the request's
  Idempotency-Key, so a request retried after a crash finds what it made.
- A terminal belongs to exactly one owner; its `terminal_code` (the id the card signs) is
  unique across JakartaOne.
- An API key's scope matches its owner: merchant keys to merchants, gate-operator keys to
  operators, issuer-admin and analyst keys to no one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import run_read, run_write
from merchant_api import chart, crypto, schema
from merchant_api.auth import Principal, Scope
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, ledger_refusal, not_found
from merchant_api.idempotency import derived_id
from merchant_api.pagination import page
from merchant_api.schemas.common import Page
from merchant_api.schemas.onboarding import (
    ApiKey,
    ApiKeyCreate,
    Balance,
    Merchant,
    MerchantCreate,
    MerchantUpdate,
    Terminal,
    TerminalCreate,
)
from merchant_api.wib import now_us, to_datetime

m, t, k = schema.merchants, schema.terminals, schema.api_keys


# --- Merchants -----------------------------------------------------------------------


def merchant_out(row: Any) -> Merchant:
    return Merchant(
        id=row.id,
        kind=row.kind,
        name=row.name,
        mcc=row.mcc,
        kota=row.kota,
        kecamatan=row.kecamatan,
        mdr_bps=row.mdr_bps,
        load_agent=row.load_agent,
        payout_bank_account=row.payout_bank_account,
        status=row.status,
        payable_account_id=row.payable_account_id,
        created_at=to_datetime(row.created_us),
    )


def create_merchant(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: MerchantCreate
) -> Merchant:
    merchant_id = derived_id(principal.api_key_id, idempotency_key, "merchant")
    payable = chart.payable_account(merchant_id, operator=data.kind == "operator")

    def work(conn: Connection) -> Any:
        existing = conn.execute(sa.select(m).where(m.c.id == merchant_id)).first()
        if existing is not None:
            return existing
        result = ctx.ledger.create_accounts_in(conn, [payable])[0]
        if not result.code.succeeded:
            raise ledger_refusal(result.code, result.detail)
        now = now_us()
        conn.execute(
            sa.insert(m).values(
                id=merchant_id,
                kind=data.kind,
                name=data.name,
                mcc=data.mcc,
                kota=data.kota,
                kecamatan=data.kecamatan,
                mdr_bps=data.mdr_bps,
                load_agent=data.load_agent,
                payout_bank_account=data.payout_bank_account,
                payable_account_id=payable.id,
                status="active",
                created_us=now,
                updated_us=now,
            )
        )
        return conn.execute(sa.select(m).where(m.c.id == merchant_id)).one()

    return merchant_out(run_write(ctx.engine, work))


def _visible_merchant(conn: Connection, principal: Principal, merchant_id: uuid.UUID) -> Any:
    row = conn.execute(sa.select(m).where(m.c.id == merchant_id)).first()
    if row is None or not principal.can_see(row.id):
        raise not_found("merchant")
    return row


def get_merchant(ctx: ApiContext, principal: Principal, merchant_id: uuid.UUID) -> Merchant:
    return merchant_out(
        run_read(ctx.engine, lambda conn: _visible_merchant(conn, principal, merchant_id))
    )


def list_merchants(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    kind: str | None,
) -> Page[Merchant]:
    where = []
    if principal.owner is not None:
        where.append(m.c.id == principal.owner)
    if kind is not None:
        where.append(m.c.kind == kind)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, m, where, limit, starting_after, ending_before)
    )
    return Page(data=[merchant_out(r) for r in rows], has_more=more)


def update_merchant(
    ctx: ApiContext, principal: Principal, merchant_id: uuid.UUID, data: MerchantUpdate
) -> Merchant:
    changes = {
        name: value
        for name in ("name", "mdr_bps", "status", "load_agent", "payout_bank_account")
        if (value := getattr(data, name)) is not None
    }

    def work(conn: Connection) -> Any:
        _visible_merchant(conn, principal, merchant_id)
        if changes:
            conn.execute(
                sa.update(m).where(m.c.id == merchant_id).values(**changes, updated_us=now_us())
            )
        return conn.execute(sa.select(m).where(m.c.id == merchant_id)).one()

    return merchant_out(run_write(ctx.engine, work))


def merchant_balance(ctx: ApiContext, principal: Principal, merchant_id: uuid.UUID) -> Balance:
    row = run_read(ctx.engine, lambda conn: _visible_merchant(conn, principal, merchant_id))
    account = ctx.ledger.get_account(row.payable_account_id)
    if account is None:  # created in the same transaction as the merchant: cannot happen
        raise not_found("payable account")
    pending = account.credits_pending - account.debits_pending
    return Balance(
        merchant_id=merchant_id,
        currency=account.currency,
        available=account.balance,
        pending=pending,
    )


# --- Terminals -----------------------------------------------------------------------


def terminal_out(row: Any) -> Terminal:
    return Terminal(
        id=row.id,
        terminal_code=row.terminal_code,
        merchant_id=row.merchant_id,
        kind=row.kind,
        line=row.line,
        station=row.station,
        status=row.status,
        created_at=to_datetime(row.created_us),
    )


def create_terminal(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: TerminalCreate
) -> Terminal:
    terminal_id = derived_id(principal.api_key_id, idempotency_key, "terminal")

    def work(conn: Connection) -> Any:
        existing = conn.execute(sa.select(t).where(t.c.id == terminal_id)).first()
        if existing is not None:
            return existing
        _visible_merchant(conn, principal, data.merchant_id)
        taken = conn.execute(
            sa.select(t.c.id).where(t.c.terminal_code == data.terminal_code)
        ).first()
        if taken is not None:
            raise ApiError(
                409,
                ErrorCode.TERMINAL_CODE_TAKEN,
                "another terminal already has this terminal_code",
            )
        conn.execute(
            sa.insert(t).values(
                id=terminal_id,
                terminal_code=data.terminal_code,
                merchant_id=data.merchant_id,
                kind=data.kind,
                line=data.line,
                station=data.station,
                status="active",
                created_us=now_us(),
            )
        )
        return conn.execute(sa.select(t).where(t.c.id == terminal_id)).one()

    return terminal_out(run_write(ctx.engine, work))


def _visible_terminal(conn: Connection, principal: Principal, terminal_id: uuid.UUID) -> Any:
    row = conn.execute(sa.select(t).where(t.c.id == terminal_id)).first()
    if row is None or not principal.can_see(row.merchant_id):
        raise not_found("terminal")
    return row


def get_terminal(ctx: ApiContext, principal: Principal, terminal_id: uuid.UUID) -> Terminal:
    return terminal_out(
        run_read(ctx.engine, lambda conn: _visible_terminal(conn, principal, terminal_id))
    )


def list_terminals(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    merchant_id: uuid.UUID | None,
) -> Page[Terminal]:
    where = []
    if principal.owner is not None:
        where.append(t.c.merchant_id == principal.owner)
    if merchant_id is not None:
        where.append(t.c.merchant_id == merchant_id)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, t, where, limit, starting_after, ending_before)
    )
    return Page(data=[terminal_out(r) for r in rows], has_more=more)


def retire_terminal(ctx: ApiContext, principal: Principal, terminal_id: uuid.UUID) -> Terminal:
    def work(conn: Connection) -> Any:
        _visible_terminal(conn, principal, terminal_id)
        conn.execute(sa.update(t).where(t.c.id == terminal_id).values(status="retired"))
        return conn.execute(sa.select(t).where(t.c.id == terminal_id)).one()

    return terminal_out(run_write(ctx.engine, work))


# --- API keys ------------------------------------------------------------------------


def api_key_out(row: Any, token: str | None = None) -> ApiKey:
    return ApiKey(
        id=row.id,
        prefix=row.prefix,
        scope=row.scope,
        merchant_id=row.merchant_id,
        name=row.name,
        created_at=to_datetime(row.created_us),
        expires_at=to_datetime(row.expires_us) if row.expires_us is not None else None,
        revoked_at=to_datetime(row.revoked_us) if row.revoked_us is not None else None,
        key=token,
    )


def _owner_matches(conn: Connection, scope: Scope, merchant_id: uuid.UUID | None) -> None:
    if not scope.has_owner:
        if merchant_id is not None:
            raise ApiError(
                422, ErrorCode.MERCHANT_KIND_MISMATCH, f"{scope.value} keys belong to no merchant"
            )
        return
    if merchant_id is None:
        raise ApiError(
            422, ErrorCode.MERCHANT_KIND_MISMATCH, f"{scope.value} keys need merchant_id"
        )
    kind = conn.execute(sa.select(m.c.kind).where(m.c.id == merchant_id)).scalar_one_or_none()
    if kind is None:
        raise not_found("merchant")
    wanted = "merchant" if scope is Scope.MERCHANT else "operator"
    if kind != wanted:
        raise ApiError(
            422,
            ErrorCode.MERCHANT_KIND_MISMATCH,
            f"{scope.value} keys belong to a {wanted}, not a {kind}",
        )


def insert_api_key(
    conn: Connection,
    key_id: uuid.UUID,
    scope: Scope,
    merchant_id: uuid.UUID | None,
    name: str,
    expires_us: int | None,
) -> tuple[Any, str]:
    """Make a key in the caller's transaction; returns its row and the secret token."""
    _owner_matches(conn, scope, merchant_id)
    made = crypto.new_api_key()
    conn.execute(
        sa.insert(k).values(
            id=key_id,
            prefix=made.prefix,
            secret_hash=made.secret_hash,
            scope=scope.value,
            merchant_id=merchant_id,
            name=name,
            created_us=now_us(),
            expires_us=expires_us,
        )
    )
    return conn.execute(sa.select(k).where(k.c.id == key_id)).one(), made.token


def create_api_key(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: ApiKeyCreate
) -> ApiKey:
    key_id = derived_id(principal.api_key_id, idempotency_key, "api_key")
    expires_us = _us(data.expires_at) if data.expires_at is not None else None

    def work(conn: Connection) -> tuple[Any, str | None]:
        existing = conn.execute(sa.select(k).where(k.c.id == key_id)).first()
        if existing is not None:
            return existing, None  # made before; its secret was shown then, and only then
        return insert_api_key(
            conn, key_id, Scope(data.scope), data.merchant_id, data.name, expires_us
        )

    row, token = run_write(ctx.engine, work)
    return api_key_out(row, token)


def _us(when: datetime) -> int:
    if when.tzinfo is None:
        raise ApiError(400, ErrorCode.REQUEST_INVALID, "times need a UTC offset")
    return int(when.timestamp() * 1_000_000)


def get_api_key(ctx: ApiContext, key_id: uuid.UUID) -> ApiKey:
    row = run_read(
        ctx.engine, lambda conn: conn.execute(sa.select(k).where(k.c.id == key_id)).first()
    )
    if row is None:
        raise not_found("API key")
    return api_key_out(row)


def list_api_keys(
    ctx: ApiContext,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    merchant_id: uuid.UUID | None,
) -> Page[ApiKey]:
    where = [k.c.merchant_id == merchant_id] if merchant_id is not None else []
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, k, where, limit, starting_after, ending_before)
    )
    return Page(data=[api_key_out(r) for r in rows], has_more=more)


def revoke_api_key(ctx: ApiContext, key_id: uuid.UUID) -> ApiKey:
    def work(conn: Connection) -> Any:
        row = conn.execute(sa.select(k).where(k.c.id == key_id)).first()
        if row is None:
            raise not_found("API key")
        if row.revoked_us is None:
            conn.execute(sa.update(k).where(k.c.id == key_id).values(revoked_us=now_us()))
        return conn.execute(sa.select(k).where(k.c.id == key_id)).one()

    return api_key_out(run_write(ctx.engine, work))
