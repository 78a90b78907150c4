"""Reading the ledger: accounts with their balances, balances as of a transfer, statements
and transfer listings. Nothing here writes.

Balances derived from postings follow one rule, `posting_effects`: a posted or
post_pending leg moves the posted columns, a pending leg the pending columns, and a
resolution (post, void or expire) releases its pending transfer's legs from the pending
columns. The verifier uses the same SQL to prove invariant 7.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import schema
from ledger.db import AnyRow
from ledger.types import (
    Account,
    AccountKind,
    AccountStatus,
    Phase,
    RecordedPosting,
    RecordedTransfer,
    StatementLine,
)

_MOVES_POSTED = ("posted", "post_pending")


@dataclass(frozen=True, slots=True)
class Balances:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


# Ids bound per query: PostgreSQL takes at most 65,535 parameters in one statement, and every
# id is bound twice below.
_IDS_PER_QUERY = 10_000


def accounts_by_id(conn: Connection, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Account]:
    """Accounts with balances summed over every shard (any number of ids)."""
    wanted = list(set(ids))
    found: dict[uuid.UUID, Account] = {}
    for at in range(0, len(wanted), _IDS_PER_QUERY):
        found.update(_accounts_chunk(conn, wanted[at : at + _IDS_PER_QUERY]))
    return found


def _accounts_chunk(conn: Connection, wanted: list[uuid.UUID]) -> dict[uuid.UUID, Account]:
    a, s = schema.accounts, schema.account_balance_shards
    extra = (
        sa.select(
            s.c.account_id,
            sa.func.sum(s.c.debits_posted).label("dp"),
            sa.func.sum(s.c.credits_posted).label("cp"),
            sa.func.sum(s.c.debits_pending).label("dpend"),
            sa.func.sum(s.c.credits_pending).label("cpend"),
        )
        .where(s.c.account_id.in_(wanted))
        .group_by(s.c.account_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(a, extra.c.dp, extra.c.cp, extra.c.dpend, extra.c.cpend)
        .select_from(a.outerjoin(extra, extra.c.account_id == a.c.id))
        .where(a.c.id.in_(wanted))
    )
    return {row.id: _account(row) for row in rows}


def _account(row: AnyRow) -> Account:
    m = row._mapping
    return Account(
        id=m["id"],
        kind=AccountKind(m["kind"]),
        currency=m["currency"],
        debits_must_not_exceed_credits=m["debits_must_not_exceed_credits"],
        credits_must_not_exceed_debits=m["credits_must_not_exceed_debits"],
        max_balance=m["max_balance"],
        shards=m["shards"],
        name=m["name"],
        status=AccountStatus(m["status"]),
        version=m["version"],
        created_at_us=m["created_at_us"],
        debits_posted=m["debits_posted"] + int(m["dp"] or 0),
        credits_posted=m["credits_posted"] + int(m["cp"] or 0),
        debits_pending=m["debits_pending"] + int(m["dpend"] or 0),
        credits_pending=m["credits_pending"] + int(m["cpend"] or 0),
    )


def balances_from_postings(
    conn: Connection, account_ids: Sequence[uuid.UUID] | None = None, as_of_seq: int | None = None
) -> dict[uuid.UUID, Balances]:
    """Each account's four balance columns recomputed from the journal alone.

    With `as_of_seq`, only transfers with seq <= as_of_seq count (a balance as of then).
    With `account_ids` None, every account with postings.
    """
    t, p = schema.transfers, schema.postings
    r = schema.transfers.alias("resolution")
    seq_ok = t.c.seq <= as_of_seq if as_of_seq is not None else sa.true()
    resolved_by_then = (
        sa.and_(r.c.pending_id == t.c.id, r.c.seq <= as_of_seq)
        if (as_of_seq is not None)
        else r.c.pending_id == t.c.id
    )
    moves_posted = t.c.phase.in_(_MOVES_POSTED)
    open_pending = sa.and_(t.c.phase == "pending", r.c.id.is_(None))

    def total(condition: sa.ColumnElement[bool], value: sa.ColumnElement[int]) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=0)), 0)

    query = (
        sa.select(
            p.c.account_id,
            total(sa.and_(moves_posted, p.c.amount > 0), p.c.amount).label("dp"),
            total(sa.and_(moves_posted, p.c.amount < 0), -p.c.amount).label("cp"),
            total(sa.and_(open_pending, p.c.amount > 0), p.c.amount).label("dpend"),
            total(sa.and_(open_pending, p.c.amount < 0), -p.c.amount).label("cpend"),
        )
        .select_from(p.join(t, t.c.id == p.c.transfer_id).outerjoin(r, resolved_by_then))
        .where(seq_ok)
        .group_by(p.c.account_id)
    )
    if account_ids is not None:
        query = query.where(p.c.account_id.in_(account_ids))
    return {
        row.account_id: Balances(int(row.dp), int(row.cp), int(row.dpend), int(row.cpend))
        for row in conn.execute(query)
    }


def statement(
    conn: Connection, account_id: uuid.UUID, after_seq: int = 0, limit: int = 100
) -> list[StatementLine]:
    """The account's movements after `after_seq`, oldest first, with running balances."""
    start = balances_from_postings(conn, [account_id], as_of_seq=after_seq).get(
        account_id, Balances()
    )
    t, p = schema.transfers, schema.postings
    r = schema.transfers.alias("resolution")
    own = (
        sa.select(
            t.c.seq,
            t.c.id,
            t.c.kind,
            t.c.phase,
            t.c.timestamp_us,
            p.c.amount.label("amount"),
            sa.literal(0).label("released"),
        )
        .select_from(p.join(t, t.c.id == p.c.transfer_id))
        .where(p.c.account_id == account_id, t.c.seq > after_seq)
    )
    releases = (
        sa.select(
            r.c.seq,
            r.c.id,
            r.c.kind,
            r.c.phase,
            r.c.timestamp_us,
            sa.literal(0).label("amount"),
            p.c.amount.label("released"),
        )
        .select_from(p.join(r, r.c.pending_id == p.c.transfer_id))
        .where(p.c.account_id == account_id, r.c.seq > after_seq)
    )
    union = sa.union_all(own, releases).subquery()
    seqs = sa.select(union.c.seq).distinct().order_by(union.c.seq).limit(limit).subquery()
    rows = conn.execute(
        sa.select(union).where(union.c.seq.in_(sa.select(seqs.c.seq))).order_by(union.c.seq)
    ).all()
    dp, cp, dpend, cpend = (
        start.debits_posted,
        start.credits_posted,
        start.debits_pending,
        start.credits_pending,
    )
    lines: list[StatementLine] = []
    by_seq: dict[int, list[AnyRow]] = defaultdict(list)
    for row in rows:
        by_seq[row.seq].append(row)
    for seq, parts in by_seq.items():
        first = parts[0]
        phase = Phase(first.phase)
        amount = 0
        for part in parts:
            released = int(part.released)
            if released > 0:
                dpend -= released
            elif released < 0:
                cpend += released
            value = int(part.amount)
            amount += value
            if phase.value in _MOVES_POSTED:
                dp, cp = (dp + value, cp) if value > 0 else (dp, cp - value)
            elif phase is Phase.PENDING:
                dpend, cpend = (dpend + value, cpend) if value > 0 else (dpend, cpend - value)
        lines.append(
            StatementLine(
                seq, first.id, first.kind, phase, first.timestamp_us, amount, dp, cp, dpend, cpend
            )
        )
    return lines


def transfers(
    conn: Connection,
    *,
    ids: Iterable[uuid.UUID] | None = None,
    account_id: uuid.UUID | None = None,
    kind: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[RecordedTransfer]:
    """Transfers matching every given filter, by seq; `until_us` is exclusive."""
    t, p = schema.transfers, schema.postings
    query = sa.select(t).where(t.c.seq > after_seq).order_by(t.c.seq).limit(limit)
    if ids is not None:
        query = query.where(t.c.id.in_(set(ids)))
    if account_id is not None:
        query = query.where(
            t.c.id.in_(sa.select(p.c.transfer_id).where(p.c.account_id == account_id))
        )
    if kind is not None:
        query = query.where(t.c.kind == kind)
    if since_us is not None:
        query = query.where(t.c.timestamp_us >= since_us)
    if until_us is not None:
        query = query.where(t.c.timestamp_us < until_us)
    rows = conn.execute(query).all()
    legs: dict[uuid.UUID, list[RecordedPosting]] = defaultdict(list)
    if rows:
        posting_rows = conn.execute(
            sa.select(p).where(p.c.transfer_id.in_([row.id for row in rows])).order_by(p.c.leg)
        )
        for pr in posting_rows:
            legs[pr.transfer_id].append(RecordedPosting(pr.leg, pr.account_id, pr.amount))
    return [
        RecordedTransfer(
            seq=row.seq,
            id=row.id,
            kind=row.kind,
            phase=Phase(row.phase),
            currency=row.currency,
            pending_id=row.pending_id,
            linked_id=row.linked_id,
            timeout_s=row.timeout_s,
            metadata=json.loads(row.metadata),
            timestamp_us=row.timestamp_us,
            postings=tuple(legs[row.id]),
        )
        for row in rows
    ]


def expired_pending_ids(conn: Connection, now_us: int, limit: int) -> list[uuid.UUID]:
    """Pending transfers whose timeout has passed and that nothing has resolved yet."""
    t = schema.transfers
    r = schema.transfers.alias("resolution")
    query = (
        sa.select(t.c.id)
        .select_from(t.outerjoin(r, r.c.pending_id == t.c.id))
        .where(
            t.c.phase == "pending",
            t.c.timeout_s > 0,
            t.c.timestamp_us + t.c.timeout_s * 1_000_000 <= now_us,
            r.c.id.is_(None),
        )
        .order_by(t.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def posted_as_of(kind: AccountKind, as_of_seq: int) -> sa.Subquery:
    """Every account of `kind` with its posted columns just after transfer `as_of_seq`:
    columns id, created_at_us, debits_posted, credits_posted.

    The same rule as `balances_from_postings` (a posted or post_pending leg moves the posted
    columns), computed the other way round: today's columns, summed over every shard, minus
    the posted legs of later transfers. It reads the accounts and only the journal's tail,
    so a nightly job can stream it for millions of accounts.
    """
    a, s, t, p = schema.accounts, schema.account_balance_shards, schema.transfers, schema.postings
    shards = (
        sa.select(
            s.c.account_id,
            sa.func.sum(s.c.debits_posted).label("dp"),
            sa.func.sum(s.c.credits_posted).label("cp"),
        )
        .group_by(s.c.account_id)
        .subquery("shards")
    )
    later = (
        sa.select(
            p.c.account_id,
            sa.func.sum(sa.case((p.c.amount > 0, p.c.amount), else_=0)).label("dp"),
            sa.func.sum(sa.case((p.c.amount < 0, -p.c.amount), else_=0)).label("cp"),
        )
        .select_from(p.join(t, t.c.id == p.c.transfer_id))
        .where(t.c.seq > as_of_seq, t.c.phase.in_(_MOVES_POSTED))
        .group_by(p.c.account_id)
        .subquery("later")
    )
    return (
        sa.select(
            a.c.id,
            a.c.created_at_us,
            (
                a.c.debits_posted
                + sa.func.coalesce(shards.c.dp, 0)
                - sa.func.coalesce(later.c.dp, 0)
            ).label("debits_posted"),
            (
                a.c.credits_posted
                + sa.func.coalesce(shards.c.cp, 0)
                - sa.func.coalesce(later.c.cp, 0)
            ).label("credits_posted"),
        )
        .select_from(
            a.outerjoin(shards, shards.c.account_id == a.c.id).outerjoin(
                later, later.c.account_id == a.c.id
            )
        )
        .where(a.c.kind == kind.value)
        .subquery("posted_as_of")
    )
