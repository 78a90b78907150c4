"""Settlement, payouts and bank statements.

Settlement itself is the merchant API's (merchant_api.services.settlements.settle): one
settlement per owner and business day, posted payable -> settlement bank under a transfer
id derived from (owner, day), so a second run answers the first settlement and posts
nothing. This module calls it for every merchant and transit operator, writes the payout
instruction file, proves the settlements equal the ledger, and matches payouts against the
bank's statements.

What each break proves:
- settlement (source `settlement`): MISSING_IN_LEDGER, a settlement that says it paid out
  but whose transfer the ledger does not have; AMOUNT_MISMATCH, a transfer of another
  amount than the settlement's payout.
- bank (source `bank_statement`): MISSING_IN_LEDGER, the bank paid out money against no
  payout of ours; AMOUNT_MISMATCH, the bank paid another amount; DUPLICATE_EXTERNAL, the
  bank paid one payout twice; MISSING_IN_EXTERNAL, a payout instructed before the day that
  no statement shows paid.
"""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ledger import Ledger, run_read
from ledger import schema as ledger_schema
from merchant_api import schema as api
from merchant_api.services.settlements import mark_payout_paid, settle
from reconciliation.nightly.findings import CheckResult, Finding
from reconciliation.nightly.statements import StatementEntry
from reconciliation.nightly.taxonomy import BreakType, Source

SETTLE_WORKERS = 4
PAYOUT_FILE_COLUMNS = (
    "payout_id",
    "merchant_id",
    "merchant_name",
    "bank_account",
    "amount",
    "currency",
    "business_date",
)


@dataclass(frozen=True, slots=True)
class SettlementLine:
    merchant_id: str
    name: str
    kind: str
    transaction_count: int
    gross: int
    fees: int
    refunds: int
    carried_in: int
    net: int
    payout: int
    transfer_id: str | None


def settle_all(
    engine: Engine, ledger: Ledger, day: dt.date, tick: Callable[[], None]
) -> list[SettlementLine]:
    """Settle every merchant and operator for `day` (idempotent, see the module doc).

    Owners are settled concurrently on PostgreSQL (each settlement is its own transaction
    and waits mostly on its commit); SQLite has one writer, so one at a time."""
    owners = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(api.merchants.c.id, api.merchants.c.name, api.merchants.c.kind).order_by(
                api.merchants.c.seq
            )
        ).all(),
    )

    def one(owner: sa.Row[Any]) -> SettlementLine:
        s = settle(engine, ledger, owner.id, day)
        tick()
        return SettlementLine(
            owner.id.hex,
            owner.name,
            owner.kind,
            s.transaction_count,
            s.gross_amount,
            s.fee_amount,
            s.refund_amount,
            s.carried_in,
            s.net_amount,
            s.payout_amount,
            s.transfer_id.hex if s.transfer_id else None,
        )

    workers = 1 if engine.dialect.name == "sqlite" else SETTLE_WORKERS
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, owners))


def write_payout_file(engine: Engine, day: str, path: Path) -> int:
    """The day's payout instructions for the bank, one line per payout; returns the total."""
    p, m = api.payouts, api.merchants
    rows = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(p.c.id, p.c.merchant_id, m.c.name, p.c.bank_account, p.c.amount)
            .select_from(p.join(m, m.c.id == p.c.merchant_id))
            .where(p.c.business_date == day)
            .order_by(p.c.seq)
        ).all(),
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PAYOUT_FILE_COLUMNS)
        for row in rows:
            writer.writerow(
                [row.id, row.merchant_id, row.name, row.bank_account, row.amount, "IDR", day]
            )
    tmp.replace(path)
    return sum(int(r.amount) for r in rows)


def check_settlements(engine: Engine, day: str) -> CheckResult:
    """Every settlement of the day that paid out has its ledger transfer, for its amount."""
    result = CheckResult(Source.SETTLEMENT)
    s, p = api.settlements, ledger_schema.postings
    # Joined leg by leg (the postings' key), not through a sum over every posting ever made.
    rows = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(
                s.c.id,
                s.c.merchant_id,
                s.c.payout_amount,
                s.c.transfer_id,
                sa.func.sum(p.c.amount).label("amount"),
            )
            .select_from(
                s.outerjoin(p, sa.and_(p.c.transfer_id == s.c.transfer_id, p.c.amount > 0))
            )
            .where(s.c.business_date == day, s.c.transfer_id.is_not(None))
            .group_by(s.c.id, s.c.merchant_id, s.c.payout_amount, s.c.transfer_id)
        ).all(),
    )
    for row in rows:
        subject = f"settlement:{row.id.hex}"
        result.examined.add(subject)
        if row.amount == row.payout_amount:
            continue
        kind = BreakType.MISSING_IN_LEDGER if row.amount is None else BreakType.AMOUNT_MISMATCH
        result.findings.append(
            Finding(
                kind,
                Source.SETTLEMENT,
                subject,
                f"settlement:{row.id.hex}",
                "the settlement's transfer is not what it paid out",
                merchant_id=row.merchant_id.hex,
                reference=row.transfer_id.hex,
                ledger_amount=row.amount,
                external_amount=row.payout_amount,
            )
        )
    return result


def match_statements(
    engine: Engine, day: str, entries: list[StatementEntry], tick: Callable[[], None]
) -> CheckResult:
    """Payouts against the bank's debits; a matched payout is marked paid (idempotent)."""
    result = CheckResult(Source.BANK_STATEMENT)
    debits = [e for e in entries if e.direction == "DBIT"]
    by_ref = Counter(e.reference for e in debits)
    p = api.payouts
    ids = {_uuid(e.reference) for e in debits} - {None}
    payouts = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(p).where(sa.or_(p.c.id.in_(ids), p.c.status == "instructed"))
        ).all(),
    )
    known = {row.id.hex: row for row in payouts}
    seen: set[str] = set()
    for entry in debits:
        payout_key = _uuid(entry.reference)
        payout = known.get(payout_key.hex) if payout_key else None
        subject = f"payout:{payout.id.hex}" if payout else f"bank:{entry.reference}"
        result.examined.add(subject)
        if payout is None:
            result.findings.append(
                _bank(BreakType.MISSING_IN_LEDGER, subject, entry, None, "no such payout")
            )
            continue
        if by_ref[entry.reference] > 1 and entry.reference not in seen:
            result.findings.append(
                _bank(BreakType.DUPLICATE_EXTERNAL, subject, entry, payout.amount, "paid twice")
            )
        seen.add(entry.reference)
        if entry.amount != payout.amount:
            result.findings.append(
                _bank(BreakType.AMOUNT_MISMATCH, subject, entry, payout.amount, "paid amount")
            )
        elif payout.status != "paid":
            mark_payout_paid(engine, payout.id, f"{entry.source}:{entry.booking_date}"[:64])
        tick()
    paid = {ref.hex for e in debits if (ref := _uuid(e.reference)) is not None}
    for row in payouts:
        if row.status == "instructed" and row.business_date < day and row.id.hex not in paid:
            subject = f"payout:{row.id.hex}"
            result.examined.add(subject)
            result.findings.append(
                Finding(
                    BreakType.MISSING_IN_EXTERNAL,
                    Source.BANK_STATEMENT,
                    subject,
                    f"payout:{row.id.hex}",
                    f"payout of {row.business_date} not on any statement",
                    merchant_id=row.merchant_id.hex,
                    reference=row.id.hex,
                    ledger_amount=row.amount,
                )
            )
        elif row.status == "instructed" and row.business_date < day:
            result.examined.add(f"payout:{row.id.hex}")
    return result


def _bank(
    kind: BreakType, subject: str, entry: StatementEntry, ours: int | None, detail: str
) -> Finding:
    return Finding(
        kind,
        Source.BANK_STATEMENT,
        subject,
        f"{subject}:{entry.reference}",
        f"{detail} ({entry.source}, booked {entry.booking_date})",
        reference=entry.reference[:128],
        ledger_amount=ours,
        external_amount=entry.amount,
    )


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
