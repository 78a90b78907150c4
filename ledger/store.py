"""The batch's reads and writes, in each database's fastest form.

`ledger.batch` decides; a `Store` fetches what it needs and writes what it decided, in the
caller's transaction. Both stores run the same statements in the same order; they differ
only in how rows travel: PostgreSQL gets the whole batch as typed arrays, one call per
phase (the statements running inside a function), sent through libpq's pipeline so that
the transaction's BEGIN goes with the read and its COMMIT with the write (a single commit
is two network round trips), and locks taken in a fixed order; SQLite gets `executemany`
and `json_each` lists, and needs no row locks because BEGIN IMMEDIATE already holds its
single writer lock.

Lock order on PostgreSQL (why no two batches deadlock): bounded accounts are locked first,
in id order, when they are read; then, in the write phase, unbounded accounts' primary rows
in id order and their extra shard rows in (account, shard) order; nothing is locked after
that except the unique index entry of each new transfer. Every lock is FOR NO KEY UPDATE,
which does not conflict with the KEY SHARE locks that the postings' foreign keys take.
"""

from __future__ import annotations

import json
import select
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import psycopg
import sqlalchemy as sa
from psycopg import pq
from psycopg.adapt import Transformer
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ledger.pgarrays import encode, encode_rows
from ledger.types import AccountStatus

T = TypeVar("T")

# The rows both stores read (PostgreSQL's ledger_read builds the same arrays, the
# accounts' in the shape of `AccountRow`).
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


class AccountRow(msgspec.Struct, frozen=True, array_like=True):
    """An account as a batch read it. Only `balance` changes (in place), and only a
    bounded account's (the batch's working copy, under the row lock).

    A msgspec Struct, built in C: a batch builds one per account it names, up to two
    thousand, and a dataclass took 1.1 us each against 0.3 us. Array-like, so that
    PostgreSQL's ledger_read sends each one as a JSON array that msgspec decodes straight
    into it (migration 0008)."""

    id: uuid.UUID
    currency: str
    status: AccountStatus
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    max_balance: int | None
    shards: int
    # debits_posted, credits_posted, debits_pending, credits_pending
    balance: list[int]
    # Whether a bound applies: either balance flag, or a maximum balance.
    bounded: bool


@dataclass(frozen=True, slots=True)
class Found:
    transfers: list[tuple[Any, ...]]  # TRANSFER_COLUMNS, one row per leg, by seq and leg
    resolutions: list[tuple[uuid.UUID, str]]  # (pending_id, phase)
    accounts: list[AccountRow]


class Store(Protocol):
    # Whether a batch gains by being written in parts (see `write`): only where the
    # database works while the client decides, that is, not in process.
    overlaps_writes: bool

    def read(self, reads: Reads, meanwhile: Callable[[], T]) -> tuple[Found, T]:
        """What `reads` asks for, and what `meanwhile` returns; a store that can runs
        `meanwhile` while the database answers."""

    def write(self, parts: Iterator[Writes], *, overlapped: bool, commit: bool) -> dict[int, int]:
        """Write a batch's parts in order; returns each new transfer's seq, by its id's
        `uuid.int`.

        `parts` is lazy: the batch decides each part when the store asks for it. With
        `overlapped` (a batch of several parts), a store that can sends each part as soon
        as it is decided and asks for the next without waiting for the database, so that
        the batch's decision and the server's writes run at the same time; otherwise the
        parts may wait to travel with what follows them. Raises a retryable error
        (db.run_write runs the batch again) if an account in a part's `recheck` no longer
        has the status the batch saw, read after the balance updates.

        With `commit`, the caller says that nothing follows the write in its transaction:
        a store may then commit the transaction itself, in the same round trip as the
        write, and the caller's own commit finds nothing left to do. The transaction has
        then committed when `write` returns, and failed whole when it raises."""


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
    one per column, in PostgreSQL's binary format (`ledger.pgarrays`). The read's answer
    comes back as one JSON document, decoded straight into typed rows and `AccountRow`s
    by msgspec; the write's as one binary array, the new transfers' seqs in the order of
    the rows sent (migration 0008).

    The statements go through libpq itself, in its pipeline mode (`_Pipeline`), not
    through psycopg's cursors: a round trip carries every statement that is ready, so a
    transaction's BEGIN travels with its read and a batch's COMMIT with its last write,
    and nothing of psycopg's per-statement machinery runs (adapting each parameter,
    its cursors, its generators waiting on the socket). A hot single commit is then
    two round trips instead of four. Measured with 8 writers crediting one hot account,
    alternating with the code before (2026-11-29, commits/s): 991, 998, 864 before and
    1,201, 1,174, 1,062 after; and with `python -m bench ledger` on PostgreSQL, 1,007, 1,032,
    831 before and 1,050, 1,329, 1,099 after. One writer's CPU per commit, client and
    server: 669 to 835 and 870 to 970 us before, 453 to 502 and 713 to 803 us after.
    (psycopg's own pipeline mode had cost more client CPU than the round trips it saved:
    see docs/ledger.md, "Round of 14:00 UTC".)"""

    overlaps_writes = True

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def read(self, reads: Reads, meanwhile: Callable[[], T]) -> tuple[Found, T]:
        params = [
            encode("uuid", list(reads.transfers)),
            encode("uuid", list(reads.resolutions)),
            encode("uuid", list(reads.accounts)),
        ]
        with self._pipeline(_READ) as pipeline:
            pipeline.send(_READ, params)
            pipeline.sync()
            done = meanwhile()
            (answer,) = pipeline.results()
        decoded = msgspec.json.decode(answer.get_value(0, 0) or b"", type=_ReadAnswer)
        return Found(decoded.transfers, decoded.resolutions, decoded.accounts), done

    def write(self, parts: Iterator[Writes], *, overlapped: bool, commit: bool) -> dict[int, int]:
        """Each part is one ledger_write call; overlapped, each is sent as soon as it is
        decided, and the server writes one part while the client decides the next. An
        error in any call aborts the rest, and is raised when the answers are read.
        Each call answers with its new transfers' seqs in the order of its transfer rows
        (migration 0008)."""
        sent: list[list[int]] = []
        with self._pipeline(_WRITE) as pipeline:
            for writes in parts:
                pipeline.send(_WRITE, _write_params(writes))
                if overlapped:
                    pipeline.flush()
                sent.append([t[0].int for t in writes.transfers])
            if commit:
                pipeline.commit()
            pipeline.sync()
            answers = pipeline.results()
        seqs: dict[int, int] = {}
        # psycopg's own loader reads the binary arrays (in C).
        loader = Transformer(self._conn.connection.driver_connection)
        for ids, answer in zip(sent, answers, strict=True):
            loader.set_pgresult(answer)
            (new_seqs,) = loader.load_row(0, tuple)
            seqs.update(zip(ids, new_seqs or (), strict=True))  # NULL: none made
        return seqs

    @contextmanager
    def _pipeline(self, statement: _Statement) -> Iterator[_Pipeline]:
        """A pipeline on this transaction's connection, whose errors are SQLAlchemy's, as
        SQLAlchemy would raise them: a lost connection is invalidated (the pool replaces
        it) and flagged, so that db.run_write runs the transaction again on a fresh one.
        Should the caller's own code fail in between (a bug while deciding a part), the
        statements already sent are answered and dropped before the error goes on, so
        that the caller's rollback finds the connection as psycopg left it; an interrupt
        (KeyboardInterrupt, say) invalidates the connection instead."""
        driver: psycopg.Connection[Any] = self._conn.connection.driver_connection  # type: ignore[assignment]
        prepared = self._conn.connection.info.setdefault(_PREPARED, set())
        try:
            pipeline = _Pipeline(driver, prepared)
            try:
                yield pipeline
            except Exception:
                if not pipeline.finished and not driver.broken:
                    pipeline.abandon()
                raise
            except BaseException:
                # Interrupted halfway through an exchange: the connection's state is unknown.
                self._conn.invalidate()
                raise
        except psycopg.Error as exc:
            lost = driver.broken
            if lost:
                self._conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                statement.sql.decode(), None, exc, psycopg.Error, hide_parameters=True,
                connection_invalidated=lost,
            ) from exc  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Statement:
    """A statement the store prepares once per connection, under its own name (psycopg's
    automatic names start with `_pg3_`).

    Prepared rather than parsed anew each time: per hot single commit, 620 to 653 us of
    server CPU prepared against 727 to 757 us unnamed (one writer, three alternating
    runs, 2026-11-29). A name can vanish: psycopg deallocates all of a connection's
    prepared statements after a rollback or a DROP, ALTER or DISCARD it ran, so the
    store forgets its names on every rollback (`forget_statements_on_rollback`), and
    should one still be missing, the transaction fails with invalid_sql_statement_name,
    which db.run_write retries, and the store prepares again (closing the name first,
    which is no error if it is gone)."""

    name: bytes
    sql: bytes
    # 0 for text, 1 for binary; parameters are always binary.
    result_format: int


_READ = _Statement(
    b"ledger_read", b"SELECT ledger_read($1::uuid[], $2::uuid[], $3::uuid[])::text", 0
)

# The connection's `info` key for the names of the statements prepared on it (SQLAlchemy
# drops `info` with the connection it belongs to).
_PREPARED = "ledger.store.prepared"
_NAME_NOT_PREPARED = "26000"  # invalid_sql_statement_name


def forget_statements_on_rollback(engine: Engine) -> None:
    """Prepare the store's statements again (see `_Statement`) after any rollback that
    psycopg will send on one of `engine`'s connections, whether through SQLAlchemy's
    Connection or the pool's reset on return: whether psycopg then deallocates them
    depends on its own cache, which it does not show. (psycopg sends no ROLLBACK, and
    deallocates nothing, on a connection with no transaction open.)"""

    def forget(dbapi_connection: Any, info: dict[str, Any]) -> None:
        if dbapi_connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            info.pop(_PREPARED, None)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Connection) -> None:
        if not conn.invalidated:
            forget(conn.connection.driver_connection, conn.connection.info)

    @event.listens_for(engine, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, _state: Any) -> None:
        forget(dbapi_connection, record.info)


# The ledger's write transactions run at READ COMMITTED: its row locks, taken in a fixed
# order, and the status recheck in ledger_write are what keep them correct (see the
# module's docstring and ledger.batch); the level is named so that no server default
# can change it.
_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"

_SUCCEEDED = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


class _Pipeline:
    """Statements sent through libpq's pipeline mode and answered together after one
    Sync: one round trip for any number of statements.

    Opened on a connection with no transaction, it begins one first (a psycopg
    connection outside autocommit would have sent that BEGIN as a round trip of its
    own); a statement not prepared on the connection is prepared in the same round
    trip. After an error the server skips the rest up to the Sync; `results` raises the
    first error, as psycopg would have raised it.

    Waiting for the socket releases the GIL (poll), as psycopg's own waiting does."""

    def __init__(self, driver: psycopg.Connection[Any], prepared: set[bytes]) -> None:
        self._driver = driver
        self._pg = driver.pgconn
        self._prepared = prepared
        self._preparing: list[bytes] = []
        # Per result to come: whether the caller asked for it (BEGIN, CLOSE, PREPARE and
        # COMMIT answer only whether they succeeded).
        self._wanted: list[bool] = []
        self._poller: select.poll | None = None
        self._synced = False
        self.finished = False
        begin = self._pg.transaction_status == pq.TransactionStatus.IDLE and not driver.autocommit
        self._pg.enter_pipeline_mode()
        if begin:
            self._pg.send_query_params(_BEGIN, None)
            self._wanted.append(False)

    def send(self, statement: _Statement, params: list[bytes]) -> None:
        """Queue `statement` (libpq sends it once its buffer fills, or at `flush`)."""
        if statement.name not in self._prepared and statement.name not in self._preparing:
            self._pg.send_close_prepared(statement.name)
            self._pg.send_prepare(statement.name, statement.sql)
            self._preparing.append(statement.name)
            self._wanted += (False, False)
        self._pg.send_query_prepared(
            statement.name, params, [_BINARY] * len(params), statement.result_format
        )
        self._wanted.append(True)

    def commit(self) -> None:
        self._pg.send_query_params(b"COMMIT", None)
        self._wanted.append(False)

    def sync(self) -> None:
        """End what is queued with a Sync and send it all: the server answers it now."""
        self._pg.pipeline_sync()
        self._synced = True
        self.flush()

    def results(self) -> list[pq.abc.PGresult]:
        """The answers of the statements `send` queued, in order, once all have come."""
        results = self._collect()
        for result in results:
            if result.status not in _SUCCEEDED:
                error = psycopg.errors.error_from_result(result, self._driver.info.encoding)
                if error.sqlstate == _NAME_NOT_PREPARED:
                    self._prepared.clear()
                raise error
        self._prepared.update(self._preparing)
        return [result for result, wanted in zip(results, self._wanted, strict=True) if wanted]

    def abandon(self) -> None:
        """Answer and drop whatever was sent, and leave pipeline mode."""
        if not self._synced:
            self.sync()
        self._collect()

    def _collect(self) -> list[pq.abc.PGresult]:
        results = []
        while True:
            while self._pg.is_busy():
                self._wait(select.POLLIN)
                self._pg.consume_input()
            result = self._pg.get_result()
            if result is None:  # the end of one statement's answer, or of the connection
                if self._pg.status == pq.ConnStatus.BAD:
                    raise psycopg.OperationalError(self._pg.get_error_message())
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            results.append(result)
        self._pg.exit_pipeline_mode()
        self.finished = True
        return results

    def flush(self) -> None:
        """Send everything queued, without waiting for an answer."""
        # psycopg's connections are non-blocking: a large batch may not fit the socket's
        # buffer at once. The server's answers are read meanwhile, so that neither side
        # ever waits for the other to read.
        while self._pg.flush():
            if self._wait(select.POLLIN | select.POLLOUT) & select.POLLIN:
                self._pg.consume_input()

    def _wait(self, events: int) -> int:
        if self._poller is None:
            self._poller = select.poll()
        self._poller.register(self._pg.socket, events)
        ready = self._poller.poll()
        return ready[0][1] if ready else 0


_BINARY = 1


def _write_params(writes: Writes) -> list[bytes]:
    primary = [(a, *deltas) for a, shard, *deltas in writes.shard_deltas if shard == 0]
    shards = [row for row in writes.shard_deltas if row[1] != 0]
    return [
        *encode_rows(_POSTING_TYPES, writes.postings),
        *encode_rows(_BALANCE_TYPES, writes.bounded),
        *encode_rows(_BALANCE_TYPES, primary),
        *encode_rows(_SHARD_TYPES, shards),
        *encode_rows(_RECHECK_TYPES, writes.recheck),
        *encode_rows(_TRANSFER_TYPES, writes.transfers),
    ]


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
_WRITE = _Statement(
    b"ledger_write",
    "SELECT ledger_write({})".format(
        ", ".join(f"${number}::{kind}[]" for number, kind in enumerate(_WRITE_TYPES, 1))
    ).encode(),
    1,
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
    accounts: list[AccountRow]


_STATUSES = {status.value: status for status in AccountStatus}


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

    def read(self, reads: Reads, meanwhile: Callable[[], T]) -> tuple[Found, T]:
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
            AccountRow(
                uuid.UUID(r[0]), r[1], _STATUSES[r[2]], bool(r[3]), bool(r[4]), r[5], r[6],
                [r[7], r[8], r[9], r[10]], bool(r[3] or r[4] or r[5] is not None),
            )
            for r in self._rows(SQLITE_ACCOUNTS, reads.accounts)
        ]  # fmt: skip
        return Found(transfers, resolutions, accounts)

    def write(self, parts: Iterator[Writes], *, overlapped: bool, commit: bool) -> dict[int, int]:
        # The caller's commit ends the transaction: committing here would save no round trip.
        seqs: dict[int, int] = {}
        for writes in parts:
            seqs |= self._write(writes)
        return seqs

    def _write(self, writes: Writes) -> dict[int, int]:
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
        return {t[0].int: first + i for i, t in enumerate(writes.transfers)}


def _transfer_row(r: Sequence[Any]) -> tuple[Any, ...]:
    """A TRANSFER_COLUMNS row with its ids as UUIDs (SQLite reads them as text)."""

    def as_id(text: str | None) -> uuid.UUID | None:
        return uuid.UUID(text) if text is not None else None

    return (r[0], as_id(r[1]), *r[2:5], as_id(r[5]), as_id(r[6]), *r[7:11], as_id(r[11]), r[12])


def _hex(value: uuid.UUID | None) -> str | None:
    return value.hex if value is not None else None


def _hex_list(ids: Collection[uuid.UUID]) -> str:
    return json.dumps([i.hex for i in ids])
