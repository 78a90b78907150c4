"""What accepting certificates reads and writes (merchant_api.services.certificates), in
each database's fastest form.

A coalesced group of single submissions (merchant_api.coalesce) is one transaction: claim
the Idempotency-Keys, read what the decisions need, post to the ledger, write what was
decided, store the answers, commit. Sent one statement at a time that was about a dozen
round trips, and on a busy machine each one also waits for the database's process to be
scheduled: the tail of the API's latency (docs/api.md, "What limits them"). Here the
reads are one call and the writes another, and on PostgreSQL each call is one round trip:
its statements travel together in psycopg's pipeline mode (BEGIN with the reads, COMMIT
with the writes when the caller asks), with rows as typed arrays (`ledger.pgarrays`), so
that each statement's text, and its prepared plan, is the same whatever the group's size.
SQLite runs in the process: `CoreStore` runs the same statements one by one through
SQLAlchemy Core, as there is no round trip to save.

Both stores run the same statements in the same order. Read: the Idempotency-Keys' claims
(first, in key order: see `idempotency.Claims`), the cards (locked, in id order: see
merchant_api.services.cards), the terminals with their owners, the card transactions
already recorded for these (card, counter), the enabled webhook endpoints of the
terminals' owners. Write: card transactions, events, webhook deliveries, the answers
stored with their keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection

from ledger.db import is_sqlite
from ledger.pgarrays import column
from merchant_api import idempotency, schema
from merchant_api.bulk import insert_rows, pair_in, unnest_insert

cards, terminals, merchants = schema.cards, schema.terminals, schema.merchants
ct, ld, w = schema.card_transactions, schema.loads, schema.webhook_endpoints

Answer = tuple[uuid.UUID, str, uuid.UUID, int, bytes]  # see idempotency.complete_in


@dataclass(frozen=True, slots=True)
class Reads:
    serial_hashes: Collection[bytes]  # the cards, by serial hash
    terminal_codes: Collection[str]
    transactions: Collection[tuple[bytes, int]]  # recorded ones, by (serial hash, counter)
    claims: idempotency.Claims | None = None
    endpoints: bool = False  # the terminals' owners' enabled webhook endpoints


@dataclass(frozen=True, slots=True)
class Found:
    # Every column of `cards` and `has_pending_load`; the rows are locked.
    cards: Sequence[Any]
    # id, terminal_code, merchant_id, kind, and the owner's kind, mdr_bps, payable_account_id
    terminals: Sequence[Any]
    transactions: Sequence[Any]  # every column of card_transactions
    claimed: set[uuid.UUID] = field(default_factory=set)  # the claims that won their keys
    endpoints: Sequence[Any] = ()  # id, merchant_id, events


@dataclass(frozen=True, slots=True)
class Writes:
    transactions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)


class Store(Protocol):
    def read(self, reads: Reads) -> Found: ...

    def write(self, writes: Writes, *, commit: bool = False) -> None:
        """With `commit`, the transaction may be committed with the writes (the caller's
        own commit then finds nothing left to do): only when nothing follows them."""


def store_for(conn: Connection) -> Store:
    if is_sqlite(conn):
        return CoreStore(conn)
    return PostgresStore(conn)


_has_pending_load = (
    sa.select(ld.c.id).where(ld.c.card_id == cards.c.id, ld.c.status == "pending").exists()
)


class CoreStore:
    """The statements one by one, through SQLAlchemy Core (SQLite's form)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def read(self, reads: Reads) -> Found:
        conn = self._conn
        claimed = idempotency.insert_claims(conn, reads.claims) if reads.claims else set()
        found_cards = (
            conn.execute(
                sa.select(cards, _has_pending_load.label("has_pending_load"))
                .where(cards.c.serial_hash.in_(reads.serial_hashes))
                .order_by(cards.c.id)
                .with_for_update(of=cards)
            ).all()
            if reads.serial_hashes
            else []
        )
        found_terminals = (
            conn.execute(
                sa.select(
                    terminals.c.id,
                    terminals.c.terminal_code,
                    terminals.c.merchant_id,
                    terminals.c.kind,
                    merchants.c.kind.label("owner_kind"),
                    merchants.c.mdr_bps,
                    merchants.c.payable_account_id,
                )
                .select_from(terminals.join(merchants, merchants.c.id == terminals.c.merchant_id))
                .where(terminals.c.terminal_code.in_(reads.terminal_codes))
            ).all()
            if reads.terminal_codes
            else []
        )
        recorded = (
            conn.execute(
                sa.select(ct)
                .select_from(cards.join(ct, ct.c.card_id == cards.c.id))
                .where(pair_in(cards.c.serial_hash, ct.c.card_counter, reads.transactions))
            ).all()
            if reads.transactions
            else []
        )
        owners = {row.merchant_id for row in found_terminals}
        endpoints = (
            conn.execute(
                sa.select(w.c.id, w.c.merchant_id, w.c.events).where(
                    w.c.merchant_id.in_(owners), w.c.status == "enabled"
                )
            ).all()
            if reads.endpoints and owners
            else []
        )
        return Found(found_cards, found_terminals, recorded, claimed, endpoints)

    def write(self, writes: Writes, *, commit: bool = False) -> None:
        # The caller's run_write commits: in-process, committing here saves nothing.
        insert_rows(self._conn, ct, writes.transactions)
        insert_rows(self._conn, schema.events, writes.events)
        insert_rows(self._conn, schema.webhook_deliveries, writes.deliveries)
        idempotency.complete_in(self._conn, writes.answers)


def _columns(table: sa.Table, alias: str) -> str:
    return ", ".join(f"{alias}.{c.name}" for c in table.c)


# PostgreSQL's forms, in psycopg's parameter style, every list an array parameter.
_CARDS = (
    f"SELECT {_columns(cards, 'c')}, EXISTS (SELECT FROM loads l"
    " WHERE l.card_id = c.id AND l.status = 'pending') AS has_pending_load"
    " FROM cards c WHERE c.serial_hash = ANY(CAST(%(hashes)s AS bytea[]))"
    " ORDER BY c.id FOR UPDATE OF c"
)
_TERMINALS = (
    "SELECT t.id, t.terminal_code, t.merchant_id, t.kind, m.kind AS owner_kind, m.mdr_bps,"
    " m.payable_account_id FROM terminals t JOIN merchants m ON m.id = t.merchant_id"
    " WHERE t.terminal_code = ANY(CAST(%(codes)s AS text[]))"
)
_TRANSACTIONS = (
    f"SELECT {_columns(ct, 'ct')}"
    " FROM unnest(CAST(%(hashes)s AS bytea[]), CAST(%(counters)s AS int8[]))"
    " AS wanted(serial_hash, card_counter)"
    " JOIN cards c ON c.serial_hash = wanted.serial_hash"
    " JOIN card_transactions ct ON ct.card_id = c.id AND ct.card_counter = wanted.card_counter"
)
_ENDPOINTS = (
    "SELECT e.id, e.merchant_id, e.events FROM webhook_endpoints e"
    " WHERE e.status = 'enabled' AND e.merchant_id IN (SELECT t.merchant_id FROM terminals t"
    " WHERE t.terminal_code = ANY(CAST(%(codes)s AS text[])))"
)


class PostgresStore:
    """Each call's statements in one round trip (psycopg's pipeline mode)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def read(self, reads: Reads) -> Found:
        codes = {"codes": column("text", list(reads.terminal_codes))}
        wanted = list(reads.transactions)
        statements = [
            (_CARDS, {"hashes": column("bytea", list(reads.serial_hashes))}),
            (_TERMINALS, codes),
            (
                _TRANSACTIONS,
                {
                    "hashes": column("bytea", [serial_hash for serial_hash, _ in wanted]),
                    "counters": column("int8", [counter for _, counter in wanted]),
                },
            ),
        ]
        if reads.endpoints:
            statements.append((_ENDPOINTS, codes))
        if reads.claims:  # first: the claims are made before anything else is read
            statements.insert(
                0, (idempotency.CLAIM_POSTGRESQL, reads.claims.postgresql_parameters())
            )
        results = _round_trip(self._conn, statements, commit=False)
        claimed = {row.claim for row in results.pop(0)} if reads.claims else set()
        found_cards, found_terminals, recorded = results[:3]
        endpoints = results[3] if reads.endpoints else []
        return Found(found_cards, found_terminals, recorded, claimed, endpoints)

    def write(self, writes: Writes, *, commit: bool = False) -> None:
        statements = [
            unnest_insert(table, rows)
            for table, rows in (
                (ct, writes.transactions),
                (schema.events, writes.events),
                (schema.webhook_deliveries, writes.deliveries),
            )
            if rows
        ]
        if writes.answers:
            statements.append(
                (idempotency.COMPLETE_POSTGRESQL, idempotency.complete_parameters(writes.answers))
            )
        if statements or commit:
            _round_trip(self._conn, statements, commit=commit)


def _round_trip(
    conn: Connection, statements: list[tuple[str, dict[str, Any]]], *, commit: bool
) -> list[list[Any]]:
    """Run `statements` in order (and COMMIT behind them if `commit`) in one round trip;
    each one's rows, as named tuples (none for a statement that returns none).

    psycopg is called directly, because SQLAlchemy's cursor cannot run in pipeline mode;
    its errors are turned into SQLAlchemy's, as SQLAlchemy would (and as ledger.store
    does): a lost connection is invalidated (the pool replaces it) and flagged, so that
    db.run_write runs the transaction again on a fresh one, and a unique violation is an
    IntegrityError."""
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    cursors = [driver.cursor(row_factory=namedtuple_row) for _ in statements]
    try:
        with driver.pipeline():
            for cursor, (sql, params) in zip(cursors, statements, strict=True):
                cursor.execute(sql, params)
            if commit:
                # Queued as a statement: `driver.commit()` would wait for it on its own,
                # and leaving the pipeline would wait once more.
                driver.execute("COMMIT")
        return [cursor.fetchall() if cursor.description is not None else [] for cursor in cursors]
    except psycopg.Error as exc:
        lost = driver.broken
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            "; ".join(sql for sql, _ in statements), None, exc, psycopg.Error,
            hide_parameters=True, connection_invalidated=lost,
        ) from exc  # fmt: skip
    finally:
        for cursor in cursors:
            cursor.close()
