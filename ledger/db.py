"""Database engines for the ledger, and the one way to run a write transaction.

SQLite (the embedded default) runs in WAL mode with full fsync, foreign keys on, a busy
timeout, a 64 MiB page cache per connection and a checkpoint every 10,000 log pages; a
write transaction starts with BEGIN IMMEDIATE, so that it holds the single writer lock
from its first read (SQLAlchemy silently drops FOR UPDATE on SQLite, and a deferred BEGIN
would let two writers read the same balance). PostgreSQL runs at READ COMMITTED with
explicit row locks taken in a fixed order (see ledger.batch); a serialization failure or
deadlock, should one happen, is retried here and never reaches a caller.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ledger.store import forget_statements_on_rollback

log = logging.getLogger(__name__)

T = TypeVar("T")

# A result row of any shape (SQLAlchemy 2.1 types rows by their column tuple).
AnyRow = sa.Row[*tuple[Any, ...]]

# SQLSTATEs that mean "run the transaction again": serialization failure, deadlock, and a
# prepared statement of ledger.store's found missing (it prepares it again).
_RETRYABLE_SQLSTATES = {"40001", "40P01", "26000"}
MAX_ATTEMPTS = 12


class RetryTransaction(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a transaction to roll it back and run it again from the start."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` with the settings the ledger relies on."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    ping_idle = "pool_pre_ping" not in kwargs
    engine = sa.create_engine(url, **kwargs)
    if ping_idle:
        _ping_idle_connections(engine)
    forget_statements_on_rollback(engine)
    return engine


# A pooled connection unused for longer than this is pinged before it is handed out.
IDLE_PING_S = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection with a round trip only when it has sat idle.

    A connection dropped while idle (a database restart, a failover, a firewall's timeout)
    is found here and replaced before any work runs on it. Pinging every checkout, as
    `pool_pre_ping` does, costs one more round trip per transaction on a busy server,
    where connections are returned and taken again within milliseconds; should such a
    connection die, the work notices on its first statement, and `run_write` runs it
    again on a fresh connection (reads fail once, and the API answers 503 with
    Retry-After)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and hands out a new one.
            raise sa.exc.DisconnectionError("idle connection lost") from exc


# Each SQLite connection's page cache, in KiB. SQLite's default is 2 MiB: once the journal's
# indexes outgrow it, every insert at a random uuid reads its index pages back from the
# operating system and writes them out again at commit. Measured with the ledger
# benchmark (200,000 transfers, 2026-11-29): 6,394 transfers/s at 2 MiB, 8,084 at 64 MiB
# (and its plain-SQL ceiling, which shares these connections, 12,866 against 15,072/s).
# The cache fills only as pages are read, so a small database never holds that much.
SQLITE_CACHE_KIB = 65_536
# Pages the write-ahead log may hold before a commit copies them into the database file
# (SQLite's default is 1,000, 4 MiB). A 1,000-transfer batch dirties thousands of pages
# (balances of up to two thousand accounts, inserts at random places in the uuid
# indexes), so at the default most commits ended in a checkpoint (in one profile the
# commit took 47 ms of a 118 ms batch); with room for several batches, a page changed by
# consecutive batches is copied once. Measured with
# the ledger benchmark's loop (60,000 transfers, alternating, 2026-11-29, ms per batch):
# 148.9 and 173.4 at 1,000 pages, 126.8 and 148.7 at 10,000.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", 60)
    connect_args.setdefault("check_same_thread", False)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's own BEGIN handling is not immediate).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("ledger_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_sqlite(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "sqlite"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RetryTransaction):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        # The connection died (the database restarted, say). Even if it died during
        # COMMIT, running the work again is safe: it reads before it writes, so work that
        # did commit is found and answered as such (`exists`), never applied twice.
        return True
    # The driver's own error, whether SQLAlchemy wrapped it or the store raised it raw.
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    # A unique violation means a concurrent writer inserted the same key first (the same
    # transfer id, say). Every write here reads before it inserts, so the next attempt
    # sees that row and answers `exists` (or a named difference) instead.
    if sqlstate == "23505":
        return True
    return "database is locked" in str(orig)


def run_write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in one write transaction, retrying transient conflicts.

    `work` must be a pure function of the database state it reads: it may run more than
    once, and only the run that commits has any effect.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(ledger_write=True)
                with conn.begin():
                    return work(conn)
        except Exception as exc:
            if attempt == MAX_ATTEMPTS or not _retryable(exc):
                raise
            delay = min(0.2, 0.002 * 2**attempt) * random.random()  # noqa: S311 - jitter
            log.debug("retrying write transaction (attempt %d): %s", attempt, type(exc).__name__)
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in one read-only transaction (a consistent snapshot on PostgreSQL)."""
    with engine.connect() as conn, conn.begin():
        if not is_sqlite(conn):
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return work(conn)
