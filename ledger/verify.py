"""The verifier: proves every ledger invariant from the database as it is now.

It trusts nothing the application wrote except the data itself: it recomputes each
transfer's hash and each block's root, re-derives every balance from the postings, and
checks that the database's own guards (triggers) are still in place. Each broken rule is
reported with its own code (`Check`) and what it concerns; an empty report means all hold.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import journal, queries, schema
from ledger.db import AnyRow, is_sqlite


class Check(StrEnum):
    TRANSFER_UNBALANCED = "transfer_unbalanced"  # invariant 1
    TRANSFER_LEGS_INVALID = "transfer_legs_invalid"  # invariant 1
    POSTING_CURRENCY_MISMATCH = "posting_currency_mismatch"  # invariant 1
    BOUND_EXCEEDED = "bound_exceeded"  # invariant 2
    DUPLICATE_TRANSFER_ID = "duplicate_transfer_id"  # invariant 3
    PENDING_RESOLVED_TWICE = "pending_resolved_twice"  # invariant 4
    RESOLUTION_INVALID = "resolution_invalid"  # invariant 4
    POST_EXCEEDS_PENDING = "post_exceeds_pending"  # invariant 4
    GUARD_MISSING = "guard_missing"  # invariant 5
    CONTENT_HASH_MISMATCH = "content_hash_mismatch"  # invariant 6
    BLOCK_ROOT_MISMATCH = "block_root_mismatch"  # invariant 6
    BLOCK_CHAIN_BROKEN = "block_chain_broken"  # invariant 6
    BALANCE_MISMATCH = "balance_mismatch"  # invariant 7
    CURRENCY_IMBALANCE = "currency_imbalance"  # invariant 7


@dataclass(frozen=True, slots=True)
class Violation:
    check: Check
    detail: str

    def __str__(self) -> str:
        return f"{self.check.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Report:
    violations: tuple[Violation, ...]
    transfers: int
    accounts: int
    sealed_through: int
    unsealed: int

    @property
    def ok(self) -> bool:
        return not self.violations


def verify(conn: Connection, rehash_after_seq: int = 0) -> Report:
    """Check invariants 1 to 7; run it in one read transaction for a consistent view.

    rehash_after_seq > 0 is the incremental form for a nightly run: transfers with seq up to
    it were re-hashed by an earlier verification that passed, so their content is not hashed
    again (the costly part). Their stored hashes still enter their blocks' roots and chain,
    so a changed hash or block shows; an edit to such a transfer's content that also forged
    its hash, root and every later block is only caught by the full form, which is the
    default and what `jakartaone ledger verify` runs.
    """
    violations: list[Violation] = []
    violations += _balanced_transfers(conn)
    violations += _bounds(conn)
    violations += _unique_ids(conn)
    violations += _pending_resolutions(conn)
    violations += _guards(conn)
    hashed, sealed_through, unsealed = _journal(conn, violations, rehash_after_seq)
    violations += _balances(conn)
    accounts = conn.execute(sa.select(sa.func.count()).select_from(schema.accounts)).scalar_one()
    return Report(tuple(violations), hashed, int(accounts), sealed_through, unsealed)


def _balanced_transfers(conn: Connection) -> Iterator[Violation]:
    t, p = schema.transfers, schema.postings
    legs = sa.func.count(p.c.leg)
    total = sa.func.coalesce(sa.func.sum(p.c.amount), 0)
    foreign = sa.func.sum(sa.case((p.c.currency != t.c.currency, 1), else_=0))
    rows = conn.execute(
        sa.select(
            t.c.id, t.c.phase, legs.label("legs"), total.label("total"), foreign.label("foreign")
        )
        .select_from(t.outerjoin(p, p.c.transfer_id == t.c.id))
        .group_by(t.c.id, t.c.phase)
    )
    for row in rows:
        no_legs = row.phase in ("void_pending", "expire_pending")
        if (no_legs and row.legs) or (not no_legs and not 2 <= row.legs <= 16):
            yield Violation(Check.TRANSFER_LEGS_INVALID, f"transfer {row.id}: {row.legs} legs")
        if row.total:
            yield Violation(Check.TRANSFER_UNBALANCED, f"transfer {row.id}: sums to {row.total}")
        if row.foreign:
            yield Violation(Check.POSTING_CURRENCY_MISMATCH, f"transfer {row.id}")
    orphans = conn.execute(
        sa.select(p.c.transfer_id).distinct().where(~sa.exists().where(t.c.id == p.c.transfer_id))
    )
    for (transfer_id,) in orphans:
        yield Violation(Check.TRANSFER_LEGS_INVALID, f"postings of missing transfer {transfer_id}")


def _bounds(conn: Connection) -> Iterator[Violation]:
    accounts = queries.accounts_by_id(conn, conn.execute(sa.select(schema.accounts.c.id)).scalars())
    for a in accounts.values():
        if (
            a.debits_must_not_exceed_credits
            and a.debits_posted + a.debits_pending > a.credits_posted
        ):
            yield Violation(Check.BOUND_EXCEEDED, f"account {a.id}: debits exceed credits")
        if (
            a.credits_must_not_exceed_debits
            and a.credits_posted + a.credits_pending > a.debits_posted
        ):
            yield Violation(Check.BOUND_EXCEEDED, f"account {a.id}: credits exceed debits")
        if a.max_balance is not None:
            held = (
                a.credits_posted + a.credits_pending - a.debits_posted
                if a.debits_must_not_exceed_credits
                else a.debits_posted + a.debits_pending - a.credits_posted
            )
            if held > a.max_balance:
                yield Violation(Check.BOUND_EXCEEDED, f"account {a.id}: {held} > {a.max_balance}")


def _unique_ids(conn: Connection) -> Iterator[Violation]:
    t = schema.transfers
    rows = conn.execute(sa.select(t.c.id).group_by(t.c.id).having(sa.func.count() > 1))
    for (transfer_id,) in rows:
        yield Violation(Check.DUPLICATE_TRANSFER_ID, f"transfer id {transfer_id} recorded twice")


def _pending_resolutions(conn: Connection) -> Iterator[Violation]:
    t, p = schema.transfers, schema.postings
    pt = schema.transfers.alias("pending")
    twice = conn.execute(
        sa.select(t.c.pending_id)
        .where(t.c.pending_id.is_not(None))
        .group_by(t.c.pending_id)
        .having(sa.func.count() > 1)
    )
    for (pending_id,) in twice:
        yield Violation(Check.PENDING_RESOLVED_TWICE, f"pending transfer {pending_id}")
    bad_target = conn.execute(
        sa.select(t.c.id, t.c.phase)
        .select_from(t.outerjoin(pt, pt.c.id == t.c.pending_id))
        .where(
            t.c.pending_id.is_not(None),
            sa.or_(
                pt.c.id.is_(None),
                pt.c.phase != "pending",
                sa.and_(
                    t.c.phase == "expire_pending",
                    sa.or_(
                        pt.c.timeout_s == 0,
                        t.c.timestamp_us < pt.c.timestamp_us + pt.c.timeout_s * 1_000_000,
                    ),
                ),
            ),
        )
    )
    for row in bad_target:
        yield Violation(Check.RESOLUTION_INVALID, f"{row.phase} {row.id}")
    pp = schema.postings.alias("pending_leg")
    # SQLite, with no statistics, looked the pending leg up by its account (every leg a hot
    # issuer account ever had: 34 s at 5,000 cards) instead of by its transfer; the unary
    # plus, SQLite's documented way, takes account_id out of its index choice (migration
    # 0005 does the same in the trigger). PostgreSQL has no unary plus for uuid and plans
    # from statistics.
    pending_leg_account = (
        sa.literal_column(f"+{pp.name}.account_id") if is_sqlite(conn) else pp.c.account_id
    )
    over = conn.execute(
        sa.select(t.c.id)
        .distinct()
        .select_from(
            t.join(p, p.c.transfer_id == t.c.id).outerjoin(
                pp,
                sa.and_(pp.c.transfer_id == t.c.pending_id, pending_leg_account == p.c.account_id),
            )
        )
        .where(
            t.c.phase == "post_pending",
            sa.or_(
                pp.c.amount.is_(None),
                (pp.c.amount > 0) != (p.c.amount > 0),
                sa.func.abs(p.c.amount) > sa.func.abs(pp.c.amount),
            ),
        )
    )
    for (transfer_id,) in over:
        yield Violation(Check.POST_EXCEEDS_PENDING, f"post {transfer_id}")


EXPECTED_GUARDS = {
    "sqlite": {
        "trg_transfers_no_update", "trg_transfers_no_delete", "trg_postings_no_update",
        "trg_postings_no_delete", "trg_journal_blocks_no_update", "trg_journal_blocks_no_delete",
        "trg_accounts_no_delete", "trg_postings_checked", "trg_transfers_balanced",
    },
    "postgresql": {
        "trg_transfers_append_only", "trg_postings_append_only", "trg_journal_blocks_append_only",
        "trg_transfers_no_truncate", "trg_postings_no_truncate", "trg_journal_blocks_no_truncate",
        "trg_accounts_no_delete", "trg_accounts_no_truncate", "trg_postings_checked",
        "trg_transfers_balanced",
    },
}  # fmt: skip


def _guards(conn: Connection) -> Iterator[Violation]:
    if is_sqlite(conn):
        present = set(
            conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars()
        )
        expected = EXPECTED_GUARDS["sqlite"]
    else:
        present = set(
            conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D'"
            ).scalars()
        )
        expected = EXPECTED_GUARDS["postgresql"]
    for name in sorted(expected - present):
        yield Violation(Check.GUARD_MISSING, f"trigger {name} is missing or disabled")


def chain_violations(blocks: list[journal.Block]) -> list[Violation]:
    """Each block's own hash and its link to the block before it, in order."""
    violations = []
    prev_hash, prev_last, prev_no = journal.GENESIS_HASH, 0, 0
    for block in blocks:
        expected = journal.block_hash(
            block_no=block.block_no,
            first_seq=block.first_seq,
            last_seq=block.last_seq,
            transfer_count=block.transfer_count,
            root=block.transfers_root,
            prev_hash=block.prev_hash,
            sealed_at_us=block.sealed_at_us,
        )
        if (
            block.prev_hash != prev_hash
            or block.block_hash != expected
            or block.block_no != prev_no + 1
            or block.first_seq != prev_last + 1
        ):
            violations.append(Violation(Check.BLOCK_CHAIN_BROKEN, f"block {block.block_no}"))
        prev_hash, prev_last, prev_no = block.block_hash, block.last_seq, block.block_no
    return violations


def _journal(
    conn: Connection, violations: list[Violation], rehash_after_seq: int
) -> tuple[int, int, int]:
    """Recompute the hashes after rehash_after_seq and every block; returns (transfers,
    sealed through seq, unsealed)."""
    blocks = journal.all_blocks(conn)
    violations += chain_violations(blocks)
    sealed_through = blocks[-1].last_seq if blocks else 0

    per_block: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    block_of = _block_locator(blocks)
    count = unsealed = 0
    for transfer in _hashed_transfers(conn, rehash_after_seq):
        seq, stored, recomputed = transfer
        count += 1
        if stored != recomputed:
            violations.append(Violation(Check.CONTENT_HASH_MISMATCH, f"transfer seq {seq}"))
        block_no = block_of(seq)
        if block_no is None:
            unsealed += 1
        else:
            per_block[block_no].append((seq, stored))
    for block in blocks:
        root, n = journal.transfers_root(per_block.get(block.block_no, []))
        if root != block.transfers_root or n != block.transfer_count:
            violations.append(
                Violation(
                    Check.BLOCK_ROOT_MISMATCH,
                    f"block {block.block_no} (seq {block.first_seq}-{block.last_seq}):"
                    f" {n} transfers found, {block.transfer_count} sealed",
                )
            )
    return count, sealed_through, unsealed


def _block_locator(blocks: list[journal.Block]):  # type: ignore[no-untyped-def]
    import bisect

    firsts = [blk.first_seq for blk in blocks]

    def locate(seq: int) -> int | None:
        i = bisect.bisect_right(firsts, seq) - 1
        if i >= 0 and seq <= blocks[i].last_seq:
            return blocks[i].block_no
        return None

    return locate


def _hashed_transfers(
    conn: Connection, rehash_after_seq: int
) -> Iterator[tuple[int, bytes, bytes]]:
    """(seq, stored hash, recomputed hash) for every transfer, streamed in seq order; up to
    rehash_after_seq the stored hash stands for the recomputed one."""
    t, p = schema.transfers, schema.postings
    if rehash_after_seq > 0:
        trusted = conn.execute(
            sa.select(t.c.seq, t.c.content_hash)
            .where(t.c.seq <= rehash_after_seq)
            .order_by(t.c.seq)
            .execution_options(yield_per=50_000)
        )
        for seq, stored in trusted:
            yield seq, bytes(stored), bytes(stored)
    rows = conn.execute(
        sa.select(t, p.c.leg, p.c.account_id, p.c.amount)
        .select_from(t.outerjoin(p, p.c.transfer_id == t.c.id))
        .where(t.c.seq > rehash_after_seq)
        .order_by(t.c.seq, p.c.leg)
        .execution_options(yield_per=20_000)
    )
    current = None
    legs: list[tuple[int, uuid.UUID, int]] = []
    for row in rows:
        if current is not None and row.seq != current.seq:
            yield _rehash(current, legs)
            legs = []
        current = row
        if row.leg is not None:
            legs.append((row.leg, row.account_id, row.amount))
    if current is not None:
        yield _rehash(current, legs)


def _rehash(row: AnyRow, legs: list[tuple[int, uuid.UUID, int]]) -> tuple[int, bytes, bytes]:
    m = row._mapping
    digest = journal.content_hash(
        id=m["id"],
        kind=m["kind"],
        phase=m["phase"],
        currency=m["currency"],
        pending_id=m["pending_id"],
        linked_id=m["linked_id"],
        timeout_s=m["timeout_s"],
        metadata_json=m["metadata"],
        timestamp_us=m["timestamp_us"],
        postings=legs,
    )
    return m["seq"], bytes(m["content_hash"]), digest


def _balances(conn: Connection) -> Iterator[Violation]:
    derived = queries.balances_from_postings(conn)
    ids = conn.execute(sa.select(schema.accounts.c.id)).scalars().all()
    stored = queries.accounts_by_id(conn, ids)
    zero = queries.Balances()
    per_currency: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account_id, account in stored.items():
        have = queries.Balances(
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
        )
        want = derived.get(account_id, zero)
        if have != want:
            yield Violation(
                Check.BALANCE_MISMATCH, f"account {account_id}: stored {have}, postings {want}"
            )
        totals = per_currency[account.currency]
        for i, value in enumerate(
            (have.debits_posted, have.credits_posted, have.debits_pending, have.credits_pending)
        ):
            totals[i] += value
    for account_id in derived.keys() - stored.keys():
        yield Violation(Check.BALANCE_MISMATCH, f"postings name unknown account {account_id}")
    for currency, (dp, cp, dpend, cpend) in sorted(per_currency.items()):
        if dp != cp or dpend != cpend:
            yield Violation(
                Check.CURRENCY_IMBALANCE,
                f"{currency}: debits {dp} vs credits {cp}, pending {dpend} vs {cpend}",
            )
