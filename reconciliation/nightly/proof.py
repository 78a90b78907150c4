"""The night's ledger proof: every check of `ledger.verify`, fast enough for a whole day.

`ledger.verify` is the code of record (and what `jakartaone ledger verify` runs); on SQLite
the night calls it as it is. On PostgreSQL it streams every transfer and posting through
Python, which takes minutes at millions of transfers, so there the night proves the same
invariants with the same checks, codes and messages, but inside the database:
- invariants 1 to 5 and 7 are SQL that returns only the rows that break them;
- each transfer after `rehash_after_seq` is re-hashed by PostgreSQL's `sha256()` over the
  canonical encoding of `ledger.journal.content_hash`, written out below in SQL
  (tests/reconciliation/test_ledger_proof.py proves both encodings agree byte for byte);
- each block's root is folded in Python from (seq, content_hash) pairs that PostgreSQL
  concatenates in chunks of seqs, so memory stays bounded and Python touches no row.
The work is split into chunks over seq ranges that two connections share, in one exported
snapshot, so both cores work and every query sees the same database.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from ledger import journal
from ledger.db import run_read
from ledger.queries import Balances

# The checks of ledger.verify that already return only the rows that break them are reused
# as they are (most are private there: ledger.verify has few public per-check entry points).
from ledger.verify import (
    Check,
    Report,
    Violation,
    _guards,
    _pending_resolutions,
    _unique_ids,
    chain_violations,
    verify,
)

SEQ_CHUNK = 250_000
WORKERS = 2
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")

_CANONICAL = (
    "'\\x{label}'::bytea || uuid_send(t.id)"
    " || int2send(octet_length(t.kind)::int2) || convert_to(t.kind, 'UTF8')"
    " || int2send(octet_length(t.phase)::int2) || convert_to(t.phase, 'UTF8')"
    " || int2send(octet_length(t.currency)::int2) || convert_to(t.currency, 'UTF8')"
    " || coalesce(uuid_send(t.pending_id), '\\x{no_id}'::bytea)"
    " || coalesce(uuid_send(t.linked_id), '\\x{no_id}'::bytea)"
    " || int8send(t.timeout_s) || int8send(t.timestamp_us)"
    " || int4send(octet_length(convert_to(t.metadata, 'UTF8')))"
    " || convert_to(t.metadata, 'UTF8')"
    " || int2send(l.legs::int2) || coalesce(l.encoded, ''::bytea)"
).format(label=b"jakartaone.transfer.v1\x00".hex(), no_id=journal.NO_ID.hex())

# The seqs in (lo, hi] whose stored hash is not the hash of their content. The chunk's
# transfers are taken in id order so that their postings, found through the (transfer_id,
# leg) index, are visited in index order rather than at random (a fifth less time at
# 1,000,000 transfers per night, docs/reconciliation.md).
REHASH_SQL = f"""
SELECT t.seq FROM (SELECT * FROM transfers WHERE seq > %(lo)s AND seq <= %(hi)s ORDER BY id) t
CROSS JOIN LATERAL (
    SELECT count(*) AS legs,
           string_agg(int2send(p.leg) || uuid_send(p.account_id) || int8send(p.amount),
                      ''::bytea ORDER BY p.leg) AS encoded
    FROM postings p WHERE p.transfer_id = t.id) l
WHERE sha256({_CANONICAL}) IS DISTINCT FROM t.content_hash
"""

# (count, the (seq, content_hash) pairs in seq order) for seqs in (lo, hi].
ROOT_SQL = """
SELECT count(*), string_agg(int8send(seq) || content_hash, ''::bytea ORDER BY seq)
FROM transfers WHERE seq > %(lo)s AND seq <= %(hi)s
"""

_NO_LEGS = "('void_pending', 'expire_pending')"
BALANCED_SQL = f"""
SELECT t.id, count(p.leg) AS legs, coalesce(sum(p.amount), 0) AS total,
       coalesce(sum(CASE WHEN p.currency <> t.currency THEN 1 ELSE 0 END), 0) AS foreign_legs,
       t.phase IN {_NO_LEGS} AS no_legs
FROM transfers t LEFT JOIN postings p ON p.transfer_id = t.id
GROUP BY t.id, t.phase
HAVING (t.phase IN {_NO_LEGS} AND count(p.leg) > 0)
    OR (t.phase NOT IN {_NO_LEGS} AND count(p.leg) NOT BETWEEN 2 AND 16)
    OR coalesce(sum(p.amount), 0) <> 0
    OR coalesce(sum(CASE WHEN p.currency <> t.currency THEN 1 ELSE 0 END), 0) > 0
"""

ORPHANS_SQL = """
SELECT DISTINCT p.transfer_id FROM postings p
WHERE NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = p.transfer_id)
"""

_STORED = """
SELECT a.id, a.currency, a.debits_must_not_exceed_credits AS dmnec,
       a.credits_must_not_exceed_debits AS cmned, a.max_balance,
       a.debits_posted + coalesce(s.dp, 0) AS dp, a.credits_posted + coalesce(s.cp, 0) AS cp,
       a.debits_pending + coalesce(s.dpend, 0) AS dpend,
       a.credits_pending + coalesce(s.cpend, 0) AS cpend
FROM accounts a LEFT JOIN (
    SELECT account_id, sum(debits_posted) AS dp, sum(credits_posted) AS cp,
           sum(debits_pending) AS dpend, sum(credits_pending) AS cpend
    FROM account_balance_shards GROUP BY account_id) s ON s.account_id = a.id
"""

BOUNDS_SQL = f"""
SELECT id, dmnec AND dp + dpend > cp AS debits_over, cmned AND cp + cpend > dp AS credits_over,
       CASE WHEN dmnec THEN cp + cpend - dp ELSE dp + dpend - cp END AS held, max_balance
FROM ({_STORED}) a
WHERE (dmnec AND dp + dpend > cp) OR (cmned AND cp + cpend > dp)
   OR (max_balance IS NOT NULL
       AND CASE WHEN dmnec THEN cp + cpend - dp ELSE dp + dpend - cp END > max_balance)
"""

# ledger.queries.balances_from_postings, as one statement.
_DERIVED = """
SELECT p.account_id,
  coalesce(sum(CASE WHEN t.phase IN ('posted', 'post_pending') AND p.amount > 0
                    THEN p.amount ELSE 0 END), 0) AS dp,
  coalesce(sum(CASE WHEN t.phase IN ('posted', 'post_pending') AND p.amount < 0
                    THEN -p.amount ELSE 0 END), 0) AS cp,
  coalesce(sum(CASE WHEN t.phase = 'pending' AND r.id IS NULL AND p.amount > 0
                    THEN p.amount ELSE 0 END), 0) AS dpend,
  coalesce(sum(CASE WHEN t.phase = 'pending' AND r.id IS NULL AND p.amount < 0
                    THEN -p.amount ELSE 0 END), 0) AS cpend
FROM postings p JOIN transfers t ON t.id = p.transfer_id
LEFT JOIN transfers r ON r.pending_id = t.id
GROUP BY p.account_id
"""

BALANCES_SQL = f"""
SELECT a.id AS stored_id, d.account_id AS derived_id,
       a.dp, a.cp, a.dpend, a.cpend,
       coalesce(d.dp, 0) AS ddp, coalesce(d.cp, 0) AS dcp,
       coalesce(d.dpend, 0) AS ddpend, coalesce(d.cpend, 0) AS dcpend
FROM ({_STORED}) a FULL JOIN ({_DERIVED}) d ON d.account_id = a.id
WHERE a.id IS NULL
   OR (a.dp, a.cp, a.dpend, a.cpend)
      <> (coalesce(d.dp, 0), coalesce(d.cp, 0), coalesce(d.dpend, 0), coalesce(d.cpend, 0))
"""

CURRENCY_SQL = f"""
SELECT currency, sum(dp), sum(cp), sum(dpend), sum(cpend)
FROM ({_STORED}) a GROUP BY currency ORDER BY currency
"""


def prove(engine: Engine, rehash_after_seq: int) -> Report:
    """`ledger.verify.verify(conn, rehash_after_seq)`, by the fastest means of the dialect."""
    if engine.dialect.name != "postgresql":
        return run_read(engine, lambda conn: verify(conn, rehash_after_seq=rehash_after_seq))
    return _prove_postgresql(engine, rehash_after_seq)


@dataclass(slots=True)
class _Tally:
    transfers: int = 0
    in_blocks: int = 0


def _prove_postgresql(engine: Engine, mark: int) -> Report:
    violations: list[Violation] = []
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
        if not _SNAPSHOT_ID.match(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
        blocks = journal.all_blocks(conn)
        horizon = int(
            conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM transfers").scalar_one()
        )
        tasks = _Tasks(engine, snapshot)
        roots = {block.block_no: hashlib.sha256(journal.BLOCK_LABEL) for block in blocks}
        found = {block.block_no: 0 for block in blocks}
        tally = _Tally()
        mismatched: list[int] = []
        other: list[Violation] = []
        # The long whole-ledger aggregates first, so the chunks fill in around them.
        tasks.add(lambda cur: other.extend(_balances(cur)))
        tasks.add(lambda cur: other.extend(_balanced(cur)))
        tasks.add(lambda cur: other.extend(_bounds(cur)))
        _queue_journal(tasks, blocks, horizon, mark, roots, found, tally, mismatched)
        tasks.run()
        violations += _ordered(other, Check.TRANSFER_LEGS_INVALID, Check.TRANSFER_UNBALANCED,
                               Check.POSTING_CURRENCY_MISMATCH)  # fmt: skip
        violations += _ordered(other, Check.BOUND_EXCEEDED)
        violations += _unique_ids(conn)
        violations += _pending_resolutions(conn)
        violations += _guards(conn)
        violations += chain_violations(blocks)
        for seq in sorted(mismatched):
            violations.append(Violation(Check.CONTENT_HASH_MISMATCH, f"transfer seq {seq}"))
        for block in blocks:
            n = found[block.block_no]
            if roots[block.block_no].digest() != block.transfers_root or n != block.transfer_count:
                violations.append(
                    Violation(
                        Check.BLOCK_ROOT_MISMATCH,
                        f"block {block.block_no} (seq {block.first_seq}-{block.last_seq}):"
                        f" {n} transfers found, {block.transfer_count} sealed",
                    )
                )
        violations += _ordered(other, Check.BALANCE_MISMATCH, Check.CURRENCY_IMBALANCE)
        accounts = int(conn.exec_driver_sql("SELECT count(*) FROM accounts").scalar_one())
        conn.rollback()
    sealed_through = blocks[-1].last_seq if blocks else 0
    return Report(
        tuple(violations),
        tally.transfers,
        accounts,
        sealed_through,
        tally.transfers - tally.in_blocks,
    )


def _ordered(found: list[Violation], *checks: Check) -> list[Violation]:
    return sorted((v for v in found if v.check in checks), key=lambda v: (v.check, v.detail))


def _queue_journal(
    tasks: _Tasks,
    blocks: list[journal.Block],
    horizon: int,
    mark: int,
    roots: dict[int, Any],
    found: dict[int, int],
    tally: _Tally,
    mismatched: list[int],
) -> None:
    """Root chunks in seq order (each block's hash is folded in order) and re-hash chunks.

    A seq belongs to the last block whose first_seq is at most it, if it is not past that
    block's last_seq (ledger.verify's locator); any other transfer is unsealed."""
    lock = threading.Lock()
    spans: list[tuple[int, int, int | None]] = []  # (lo, hi] and its block
    at = 0
    ordered = sorted(blocks, key=lambda b: b.first_seq)
    for i, block in enumerate(ordered):
        lo = max(at, block.first_seq - 1)
        if lo > at:
            spans.append((at, lo, None))
        end = block.last_seq
        if i + 1 < len(ordered):
            end = min(end, ordered[i + 1].first_seq - 1)
        if end > lo:
            spans.append((lo, end, block.block_no))
        at = max(at, end)
    if horizon > at:
        spans.append((at, horizon, None))
    root_chunks: list[tuple[int, int, int | None]] = []
    for lo, hi, block_no in spans:
        for start in range(lo, hi, SEQ_CHUNK):
            root_chunks.append((start, min(start + SEQ_CHUNK, hi), block_no))
    # Chunks of one block are hashed strictly in order: each task waits for its turn.
    turns = [threading.Event() for _ in root_chunks]
    if turns:
        turns[0].set()

    def root_task(index: int, lo: int, hi: int, block_no: int | None) -> Callable[[Any], None]:
        def run(cur: Any) -> None:
            cur.execute(ROOT_SQL, {"lo": lo, "hi": hi})
            count, pairs = cur.fetchone()
            turns[index].wait()
            with lock:
                tally.transfers += count
                if block_no is not None:
                    tally.in_blocks += count
                    found[block_no] += count
                    if pairs:
                        roots[block_no].update(pairs)
            if index + 1 < len(turns):
                turns[index + 1].set()

        return run

    def rehash_task(lo: int, hi: int) -> Callable[[Any], None]:
        def run(cur: Any) -> None:
            cur.execute(REHASH_SQL, {"lo": lo, "hi": hi})
            seqs = [row[0] for row in cur.fetchall()]
            with lock:
                mismatched.extend(seqs)

        return run

    for index, (lo, hi, block_no) in enumerate(root_chunks):
        tasks.add(root_task(index, lo, hi, block_no), ordered_turn=True)
    for start in range(mark, horizon, SEQ_CHUNK):
        tasks.add(rehash_task(start, min(start + SEQ_CHUNK, horizon)))


class _Tasks:
    """Work for WORKERS connections, each in the exported snapshot. Root chunks are taken
    in order (a later one only waits for an earlier one already taken), so no worker waits
    on a chunk nobody holds."""

    def __init__(self, engine: Engine, snapshot: str) -> None:
        self.engine = engine
        self.snapshot = snapshot
        self.ordered: queue.SimpleQueue[Callable[[Any], None]] = queue.SimpleQueue()
        self.rest: queue.SimpleQueue[Callable[[Any], None]] = queue.SimpleQueue()
        self.errors: list[BaseException] = []

    def add(self, task: Callable[[Any], None], ordered_turn: bool = False) -> None:
        (self.ordered if ordered_turn else self.rest).put(task)

    def _next(self) -> Callable[[Any], None] | None:
        for source in (self.ordered, self.rest):
            try:
                return source.get_nowait()
            except queue.Empty:
                continue
        return None

    def _work(self) -> None:
        raw = self.engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            driver.autocommit = True  # the transaction below is begun explicitly
            with driver.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
                while not self.errors and (task := self._next()) is not None:
                    task(cur)
                cur.execute("ROLLBACK")
            driver.autocommit = False
        except BaseException as exc:
            self.errors.append(exc)
            raw.invalidate()  # in an unknown state: the pool must not hand it out again
        finally:
            raw.close()

    def run(self) -> None:
        threads = [threading.Thread(target=self._work) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]


def _balanced(cur: Any) -> list[Violation]:
    found = []
    cur.execute(BALANCED_SQL)
    for transfer_id, legs, total, foreign, no_legs in cur.fetchall():
        if (no_legs and legs) or (not no_legs and not 2 <= legs <= 16):
            found.append(
                Violation(Check.TRANSFER_LEGS_INVALID, f"transfer {transfer_id}: {legs} legs")
            )
        if total:
            found.append(
                Violation(Check.TRANSFER_UNBALANCED, f"transfer {transfer_id}: sums to {total}")
            )
        if foreign:
            found.append(Violation(Check.POSTING_CURRENCY_MISMATCH, f"transfer {transfer_id}"))
    cur.execute(ORPHANS_SQL)
    for (transfer_id,) in cur.fetchall():
        found.append(
            Violation(Check.TRANSFER_LEGS_INVALID, f"postings of missing transfer {transfer_id}")
        )
    return found


def _bounds(cur: Any) -> list[Violation]:
    found = []
    cur.execute(BOUNDS_SQL)
    for account_id, debits_over, credits_over, held, max_balance in cur.fetchall():
        if debits_over:
            found.append(
                Violation(Check.BOUND_EXCEEDED, f"account {account_id}: debits exceed credits")
            )
        if credits_over:
            found.append(
                Violation(Check.BOUND_EXCEEDED, f"account {account_id}: credits exceed debits")
            )
        if max_balance is not None and held > max_balance:
            found.append(
                Violation(Check.BOUND_EXCEEDED, f"account {account_id}: {held} > {max_balance}")
            )
    return found


def _balances(cur: Any) -> list[Violation]:
    found = []
    cur.execute(BALANCES_SQL)
    for stored_id, derived_id, *amounts in cur.fetchall():
        if stored_id is None:
            found.append(
                Violation(Check.BALANCE_MISMATCH, f"postings name unknown account {derived_id}")
            )
            continue
        have = Balances(*(int(x) for x in amounts[:4]))
        want = Balances(*(int(x) for x in amounts[4:]))
        found.append(
            Violation(
                Check.BALANCE_MISMATCH, f"account {stored_id}: stored {have}, postings {want}"
            )
        )
    cur.execute(CURRENCY_SQL)
    for currency, dp, cp, dpend, cpend in cur.fetchall():
        if dp != cp or dpend != cpend:
            found.append(
                Violation(
                    Check.CURRENCY_IMBALANCE,
                    f"{currency}: debits {dp} vs credits {cp}, pending {dpend} vs {cpend}",
                )
            )
    return found
