"""The whole ledger as a beancount file, for auditors: `jakartaone ledger export`.

What it holds: an `open` for every account (and `close` for closed ones), one transaction
per transfer that moved money (posted, or the posted part of a pending transfer), dated in
Jakarta time (WIB, UTC+7) and carrying its seq and id, and a `balance` assertion for every
account the day after the last movement, so that beancount's own checker proves that the
file adds up to what the ledger holds. Reservations that never moved money (pending,
void and expire) appear as comments only: beancount has no notion of them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import queries, schema
from ledger.db import AnyRow
from ledger.types import AccountKind, AccountStatus

WIB = dt.timezone(dt.timedelta(hours=7), "WIB")

ROOTS = {
    AccountKind.CARD_PURSE: "Liabilities:CardPurse",
    AccountKind.MERCHANT_PAYABLE: "Liabilities:MerchantPayable",
    AccountKind.OPERATOR_PAYABLE: "Liabilities:OperatorPayable",
    AccountKind.CARD_CREDIT_CLEARING: "Liabilities:CardCreditClearing",
    AccountKind.SUSPENSE: "Liabilities:Suspense",
    AccountKind.ISSUER_FLOAT: "Assets:IssuerFloat",
    AccountKind.AGENT_RECEIVABLE: "Assets:AgentReceivable",
    AccountKind.SETTLEMENT_BANK: "Assets:SettlementBank",
    AccountKind.FEE_REVENUE: "Income:Fees",
    AccountKind.EQUITY: "Equity:Opening",
}


def account_name(kind: AccountKind, account_id: uuid.UUID) -> str:
    return f"{ROOTS[kind]}:X{account_id.hex.upper()}"


def _day(timestamp_us: int) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp_us / 1_000_000, WIB).date()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def export(conn: Connection, out: TextIO) -> int:
    """Write the ledger to `out`; returns the number of transactions written."""
    accounts = queries.accounts_by_id(conn, conn.execute(sa.select(schema.accounts.c.id)).scalars())
    names = {a.id: account_name(a.kind, a.id) for a in accounts.values()}
    out.write('option "title" "JakartaOne ledger"\noption "operating_currency" "IDR"\n\n')
    last_day = dt.date(1970, 1, 1)
    for a in sorted(accounts.values(), key=lambda a: (a.created_at_us, a.id)):
        label = f"  ; {a.name}" if a.name else ""
        out.write(f"{_day(a.created_at_us)} open {names[a.id]} {a.currency}{label}\n")
        last_day = max(last_day, _day(a.created_at_us))
    out.write("\n")
    written = 0
    for seq, transfer_id, kind, phase, timestamp_us, legs in _transfers(conn):
        day = _day(timestamp_us)
        last_day = max(last_day, day)
        if phase not in ("posted", "post_pending"):
            out.write(f"; {day} {phase} {kind} seq {seq} id {transfer_id}\n")
            continue
        out.write(f"{day} * {_quote(kind)} {_quote(phase)}\n")
        out.write(f'  seq: {seq}\n  transfer-id: "{transfer_id}"\n')
        for account_id, amount, currency in legs:
            out.write(f"  {names[account_id]}  {amount} {currency}\n")
        out.write("\n")
        written += 1
    check_day = last_day + dt.timedelta(days=1)
    for a in sorted(accounts.values(), key=lambda a: names[a.id]):
        net = a.debits_posted - a.credits_posted
        out.write(f"{check_day} balance {names[a.id]}  {net} {a.currency}\n")
    for a in accounts.values():
        if a.status is AccountStatus.CLOSED:
            out.write(f"{check_day} close {names[a.id]}\n")
    return written


def _transfers(
    conn: Connection,
) -> Iterator[tuple[int, uuid.UUID, str, str, int, list[tuple[uuid.UUID, int, str]]]]:
    t, p = schema.transfers, schema.postings
    rows = conn.execute(
        sa.select(
            t.c.seq,
            t.c.id,
            t.c.kind,
            t.c.phase,
            t.c.timestamp_us,
            p.c.account_id,
            p.c.amount,
            p.c.currency,
        )
        .select_from(t.outerjoin(p, p.c.transfer_id == t.c.id))
        .order_by(t.c.seq, p.c.leg)
        .execution_options(yield_per=20_000)
    )
    current: AnyRow | None = None
    legs: list[tuple[uuid.UUID, int, str]] = []
    for row in rows:
        if current is not None and row.seq != current.seq:
            yield current.seq, current.id, current.kind, current.phase, current.timestamp_us, legs
            legs = []
        current = row
        if row.account_id is not None:
            legs.append((row.account_id, row.amount, row.currency))
    if current is not None:
        yield current.seq, current.id, current.kind, current.phase, current.timestamp_us, legs
