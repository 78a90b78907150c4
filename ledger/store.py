"""The batch's reads and writes, in each database's fastest form.

`ledger.batch` decides; a `Store` fetches what it needs and writes what it decided, in the
caller's transaction. Both stores run the same statements in the same order; they differ
only in how rows travel: PostgreSQL gets the whole batch as typed arrays, one call per
phase (one network round trip each, the statements running inside a function) and locks taken
in a fixed order; SQLite gets `executemany` and `json_each` lists, and needs no row locks because
BEGIN IMMEDIATE already holds its single writer lock.

Lock order on PostgreSQL (why no two batches deadlock): bounded accounts are locked first,
in id order, when they are read; then, in the write phase, unbounded accounts' primary rows
in id order and their extra shard rows in (account, shard) order; nothing is locked after
that except the unique index entry of each new transfer. Every lock is FOR NO KEY UPDATE,
which does not conflict with the KEY SHARE locks that the postings' foreign keys take.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger.pgarrays import column, columns

T = TypeVar("T")

# Row shapes both stores return (PostgreSQL's ledger_read builds the same arrays).
TRANSFER_COLUMNS = (
    "t.seq, t.id, t.kind, t.phase, t.currency, t.pending_id, t.linked_id, t.timeout_s,"
    " t.metadata, t.timestamp_us, p.leg, p.account_id, p.amount"
)
ACCOUNT_COLUMNS = (
    "id, currency, status, debits_must_not_exceed_credits, credits_must_not_exceed_debits,"
    " max_balance, shards, debits_posted, credits_posted, debits_pending, credits_pending"
)


PostingRow = tuple[uuid.UUID, int, uuid.UUID, str, int]
BoundedRow = tuple[uuid.UUID, int, int, int, int]
ShardDelta = tuple[uuid.UUID, int, int, int, int, int]
TransferRow = tuple[
    uuid.UUID, str, str, str, uuid.UUID | None, uuid.UUID | None, int, str, int, bytes
]


@dataclass(frozen=True, slots=True)
class Writes:
    """Everything one batch writes, as columns of plain values."""

    postings: list[PostingRow]
    # Bounded accounts: new absolute (debits_posted, credits_posted, debits_pending,
    # credits_pending); these rows are already locked.
    bounded: list[BoundedRow]
    # Unbounded accounts: (account, shard, four deltas), sorted by (account, shard).
    shard_deltas: list[ShardDelta]
    # Unbounded accounts, each with the status the batch saw; it must still hold after
    # the balance updates, or the transaction is retried.
    recheck: list[tuple[uuid.UUID, str]]
    transfers: list[
        tuple[uuid.UUID, str, str, str, uuid.UUID | None, uuid.UUID | None, int, str, int, bytes]
    ]


@dataclass(frozen=True, slots=True)
class Reads:
    """What a batch asks for in one round trip."""

    transfers: Collection[uuid.UUID] = ()  # by id, with their legs
    resolutions: Collection[uuid.UUID] = ()  # resolutions of these pending ids
    # Accounts: the bounded ones are read under a lock, taken in id order; the others
    # without one (see ledger.batch on hot accounts).
    accounts: Collection[uuid.UUID] = ()


@dataclass(frozen=True, slots=True)
class Found:
    transfers: list[tuple[Any, ...]]  # TRANSFER_COLUMNS, one row per leg, by seq and leg
    resolutions: list[tuple[uuid.UUID, str]]  # (pending_id, phase)
    accounts: list[tuple[Any, ...]]  # ACCOUNT_COLUMNS


class Store(Protocol):
    # Whether a batch gains by being written in parts (see `write`): only where the
    # database works while the client decides, that is, not in process.
    overlaps_writes: bool

    def read(
        self, reads: Reads, meanwhile: Callable[[], T], *, overlapped: bool
    ) -> tuple[Found, T]:
        """What `reads` asks for, and what `meanwhile` returns. With `overlapped`, a store
        that can runs `meanwhile` while the database answers (worth it for a large batch
        only, as for `write`)."""

    def write(self, parts: Iterator[Writes], *, overlapped: bool) -> dict[uuid.UUID, int]:
        """Write a batch's parts in order; returns each new transfer's seq.

        `parts` is lazy: the batch decides each part when the store asks for it. With
        `overlapped`, a store that can sends each part and asks for the next without
        waiting for the database, so that the batch's decision and the server's writes
        run at the same time; a batch of one part is written without that machinery,
        which costs more than it saves for a single round trip. Raises a retryable error
        (db.run_write runs the batch again) if an account in a part's `recheck` no longer
        has the status the batch saw, read after the balance updates."""


def store_for(conn: Connection) -> Store:
    if conn.dialect.name == "sqlite":
        return SqliteStore(conn)
    return PostgresStore(conn)


# SQLite's reads: one JSON list parameter per statement, expanded by json_each.
SQLITE_TRANSFERS = (
    f"SELECT {TRANSFER_COLUMNS} FROM transfers t LEFT JOIN postings p ON p.transfer_id = t.id"
    " WHERE t.id IN (SELECT value FROM json_each(?)) ORDER BY t.seq, p.leg"
)
SQLITE_RESOLUTIONS = (
    "SELECT pending_id, phase FROM transfers WHERE pending_id IN (SELECT value FROM json_each(?))"
)
SQLITE_ACCOUNTS = (
    f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN (SELECT value FROM json_each(?))"
)


class PostgresStore:
    """Reads and writes through ledger_read and ledger_write (see migration 0004): each is
    one statement, whatever the batch's size, with the batch travelling as typed arrays,
    one per column, in PostgreSQL's binary format, built by `ledger.pgarrays` (psycopg's
    text format quotes every element through a regular expression, about 2 ms per 1,000
    uuids; its binary lists take a sixth of that, and pgarrays half of that again), and
    psycopg prepares both statements after their fifth use. The
    read's answer comes back as one JSON document, decoded straight into typed rows by
    msgspec.

    Round trips: one per call, plus the transaction's BEGIN and COMMIT. psycopg's
    pipeline mode serves a large batch only, to overlap the client's work with the
    server's (`read` and `write` with `overlapped`). For a small batch it costs more
    client CPU than the round trips it could save: per hot single commit (medians of six
    alternating samples, 2026-11-29), the client's CPU fell from 675 to 535 us without
    it, the server's from 760 to 705 us, and even one writer's wall time fell (1,589 to
    1,417 us). Hot commits from many writers on few cores are bound by CPU, not by round
    trips."""

    overlaps_writes = True

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def read(
        self, reads: Reads, meanwhile: Callable[[], T], *, overlapped: bool
    ) -> tuple[Found, T]:
        params = (
            column("uuid", list(reads.transfers)),
            column("uuid", list(reads.resolutions)),
            column("uuid", list(reads.accounts)),
        )
        driver = self._driver()
        with self._errors(_READ_CALL):
            with self._pipeline(overlapped):
                cursor = driver.cursor().execute(_READ_CALL, params)
                done = meanwhile()
            answer = _one_row(cursor)
        decoded = msgspec.json.decode(answer[0], type=_ReadAnswer)
        return Found(decoded.transfers, decoded.resolutions, decoded.accounts), done

    def write(self, parts: Iterator[Writes], *, overlapped: bool) -> dict[uuid.UUID, int]:
        """Each part is one ledger_write call. Overlapped, the calls go through psycopg's
        pipeline: each is sent as soon as its part is decided and the answers are read at
        the end, so the server writes one part while the client decides the next. An
        error in any call aborts the rest and is raised when the pipeline ends."""
        driver = self._driver()
        seqs: dict[uuid.UUID, int] = {}
        with self._errors(_WRITE_CALL):
            with self._pipeline(overlapped):
                sent = [
                    driver.cursor().execute(_WRITE_CALL, _write_params(writes)) for writes in parts
                ]
            for cursor in sent:
                ids, new_seqs = _one_row(cursor)
                seqs.update(zip(ids or (), new_seqs or (), strict=True))  # NULLs: none made
        return seqs

    def _driver(self) -> psycopg.Connection[Any]:
        """psycopg itself: SQLAlchemy's cursor would adapt the binary arrays on its own."""
        return self._conn.connection.driver_connection  # type: ignore[return-value]

    def _pipeline(self, overlapped: bool) -> AbstractContextManager[object]:
        """psycopg's pipeline when overlapping, in which each statement is sent without
        waiting for its answer (leaving it waits for all); otherwise each waits in turn."""
        return self._driver().pipeline() if overlapped else nullcontext()

    @contextmanager
    def _errors(self, sql: str) -> Iterator[None]:
        """psycopg's errors turned into SQLAlchemy's, as SQLAlchemy would: a lost connection
        is invalidated (the pool replaces it) and flagged, so that db.run_write runs the
        transaction again on a fresh one."""
        driver = self._driver()
        try:
            yield
        except psycopg.Error as exc:
            lost = driver.broken
            if lost:
                self._conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                sql, None, exc, psycopg.Error, hide_parameters=True,
                connection_invalidated=lost,
            ) from exc  # fmt: skip


_READ_CALL = "SELECT ledger_read(%b::uuid[], %b::uuid[], %b::uuid[])::text"


def _one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row each batch function returns."""
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def _write_params(writes: Writes) -> tuple[Any, ...]:
    primary = [(a, *deltas) for a, shard, *deltas in writes.shard_deltas if shard == 0]
    shards = [row for row in writes.shard_deltas if row[1] != 0]
    return (
        *columns(_POSTING_TYPES, writes.postings),
        *columns(_BALANCE_TYPES, writes.bounded),
        *columns(_BALANCE_TYPES, primary),
        *columns(_SHARD_TYPES, shards),
        *columns(_RECHECK_TYPES, writes.recheck),
        *columns(_TRANSFER_TYPES, writes.transfers),
    )


# ledger_write's parameters, in order: each group's element types (migration 0004).
_POSTING_TYPES = ("uuid", "int2", "uuid", "text", "int8")
_BALANCE_TYPES = ("uuid", "int8", "int8", "int8", "int8")
_SHARD_TYPES = ("uuid", "int2", "int8", "int8", "int8", "int8")
_RECHECK_TYPES = ("uuid", "text")
_TRANSFER_TYPES = ("uuid", "text", "text", "text", "uuid", "uuid", "int8", "text", "int8", "bytea")
_WRITE_TYPES = (
    *_POSTING_TYPES, *_BALANCE_TYPES, *_BALANCE_TYPES, *_SHARD_TYPES, *_RECHECK_TYPES,
    *_TRANSFER_TYPES,
)  # fmt: skip
_WRITE_CALL = "SELECT ids, seqs FROM ledger_write({})".format(
    ", ".join(f"%b::{kind}[]" for kind in _WRITE_TYPES)
)


class _ReadAnswer(msgspec.Struct):
    """ledger_read's answer, decoded in C into the row shapes `Found` holds."""

    transfers: list[
        tuple[
            int, uuid.UUID, str, str, str, uuid.UUID | None, uuid.UUID | None, int, str, int,
            int | None, uuid.UUID | None, int | None,
        ]
    ]  # fmt: skip
    resolutions: list[tuple[uuid.UUID, str]]
    accounts: list[tuple[uuid.UUID, str, str, bool, bool, int | None, int, int, int, int, int]]


class SqliteStore:
    # SQLite runs in the client's own thread: parts would only add statements (measured
    # at 250 per part: about 12% more time per 1,000-transfer batch).
    overlaps_writes = False

    def __init__(self, conn: Connection) -> None:
        self._db: Any = conn.connection.driver_connection

    def _rows(self, sql: str, ids: Collection[uuid.UUID]) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        return [tuple(row) for row in self._db.execute(sql, (_hex_list(ids),)).fetchall()]

    def read(
        self, reads: Reads, meanwhile: Callable[[], T], *, overlapped: bool
    ) -> tuple[Found, T]:
        # In process, nothing can overlap.
        return self._read(reads), meanwhile()

    def _read(self, reads: Reads) -> Found:
        rows = self._rows(SQLITE_TRANSFERS, reads.transfers)
        transfers = [_transfer_row(r) for r in rows]
        resolutions = [
            (uuid.UUID(r[0]), r[1]) for r in self._rows(SQLITE_RESOLUTIONS, reads.resolutions)
        ]
        # No row locks: BEGIN IMMEDIATE already made this the only writer.
        accounts = [
            (uuid.UUID(r[0]), r[1], r[2], bool(r[3]), bool(r[4]), *r[5:])
            for r in self._rows(SQLITE_ACCOUNTS, reads.accounts)
        ]
        return Found(transfers, resolutions, accounts)

    def write(self, parts: Iterator[Writes], *, overlapped: bool) -> dict[uuid.UUID, int]:
        seqs: dict[uuid.UUID, int] = {}
        for writes in parts:
            seqs |= self._write(writes)
        return seqs

    def _write(self, writes: Writes) -> dict[uuid.UUID, int]:
        # Nothing else writes while BEGIN IMMEDIATE holds the lock: no status to recheck.
        db = self._db
        db.executemany(
            "INSERT INTO postings (transfer_id, leg, account_id, currency, amount)"
            " VALUES (?, ?, ?, ?, ?)",
            [(t.hex, leg, a.hex, c, amount) for t, leg, a, c, amount in writes.postings],
        )
        db.executemany(
            "UPDATE accounts SET debits_posted = ?, credits_posted = ?, debits_pending = ?,"
            " credits_pending = ?, version = version + 1 WHERE id = ?",
            [(*values, a.hex) for a, *values in writes.bounded],
        )
        db.executemany(
            "UPDATE accounts SET debits_posted = debits_posted + ?,"
            " credits_posted = credits_posted + ?, debits_pending = debits_pending + ?,"
            " credits_pending = credits_pending + ?, version = version + 1 WHERE id = ?",
            [(*values, a.hex) for a, shard, *values in writes.shard_deltas if shard == 0],
        )
        db.executemany(
            "UPDATE account_balance_shards SET debits_posted = debits_posted + ?,"
            " credits_posted = credits_posted + ?, debits_pending = debits_pending + ?,"
            " credits_pending = credits_pending + ? WHERE account_id = ? AND shard = ?",
            [(*values, a.hex, shard) for a, shard, *values in writes.shard_deltas if shard != 0],
        )
        first = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM transfers").fetchone()[0]
        db.executemany(
            "INSERT INTO transfers (seq, id, kind, phase, currency, pending_id, linked_id,"
            " timeout_s, metadata, timestamp_us, content_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (first + i, t[0].hex, *t[1:4], _hex(t[4]), _hex(t[5]), *t[6:])
                for i, t in enumerate(writes.transfers)
            ],
        )
        return {t[0]: first + i for i, t in enumerate(writes.transfers)}


def _transfer_row(r: Sequence[Any]) -> tuple[Any, ...]:
    """A TRANSFER_COLUMNS row with its ids as UUIDs (SQLite reads them as text)."""

    def as_id(text: str | None) -> uuid.UUID | None:
        return uuid.UUID(text) if text is not None else None

    return (r[0], as_id(r[1]), *r[2:5], as_id(r[5]), as_id(r[6]), *r[7:11], as_id(r[11]), r[12])


def _hex(value: uuid.UUID | None) -> str | None:
    return value.hex if value is not None else None


def _hex_list(ids: Collection[uuid.UUID]) -> str:
    return json.dumps([i.hex for i in ids])
