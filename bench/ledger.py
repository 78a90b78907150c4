"""`python -m bench ledger --backend sqlite|postgresql --json`

1. Batched: 200,000 two-leg transfers in batches of 1,000 across 10,000 accounts (card
   purses with no-overdraft and maximum-balance bounds, merchant payables, and one hot
   merchant payable that gets 1% of the transfers), through `Ledger.submit`.
2. The ceiling: the same rows inserted and the same balances updated with the fastest
   plain SQL we can write (COPY and one UPDATE per batch on PostgreSQL, executemany on
   SQLite), with no checks, no hashes and no triggers, into tables of the same shape.
   The two alternate batch by batch, each timed on its own: the ratio then compares
   them on the same machine at the same moment, with their tables at the same size.
   (Run one after the other, a minute apart, the ratio moved with the machine's speed,
   which here changes by up to 40% from one minute to the next.)
3. Hot single commits: 8 processes each committing one transfer at a time, all crediting
   the same hot account.

Last line: {"backend", "transfers", "transfers_per_s", "ceiling_transfers_per_s", "ratio",
"single_commit_hot_per_s"}.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench import log
from bench.databases import scratch_database
from jakartaone.migrate import upgrade
from ledger import AccountKind, Ledger, NewAccount, Transfer, make_engine

ACCOUNTS = 10_000
MERCHANTS = 2_000
BATCH = 1_000
SINGLE_WRITERS = 8


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ledger")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--transfers", type=int, default=200_000)
    parser.add_argument("--single-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with scratch_database(args.backend) as url:
        result = run(url, args.backend, args.transfers, args.single_seconds)
    print(json.dumps(result) if args.json else result)
    return 0


def run(url: str, backend: str, count: int, single_seconds: float) -> dict[str, Any]:
    engine = make_engine(url)
    upgrade(engine)
    ledger = Ledger(engine)
    cards, merchants, hot, bank = _accounts(ledger)
    if backend == "postgresql":
        _vacuum_analyze(engine)
    rng = random.Random(7)
    plan = [
        (uuid.uuid4(), rng.choice(cards), hot if rng.random() < 0.01 else rng.choice(merchants),
         rng.randint(2_000, 14_000))
        for _ in range(count)
    ]  # fmt: skip
    # The plan is 800,000 long-lived objects (a tuple and three uuids per transfer), made
    # by the benchmark, not by the ledger. Frozen, they are out of reach of Python's
    # cyclic collector, which would otherwise walk them all at every full collection
    # while either loop below builds its rows (5 to 7 ms of client CPU per batch).
    gc.freeze()

    log(f"{backend}: {count} transfers in batches of {BATCH}, through the ledger and,")
    log("  alternating batch by batch, the same writes in plain SQL (the ceiling)")
    ledger_seconds = ceiling_seconds = 0.0
    with _Ceiling(engine, [*cards, *merchants, hot]) as ceiling:
        for i in range(0, count, BATCH):
            chunk = plan[i : i + BATCH]
            started = time.perf_counter()
            batch = [Transfer.simple(t, d, c, a, "fare") for t, d, c, a in chunk]
            results = ledger.submit(batch)
            ledger_seconds += time.perf_counter() - started
            assert all(r.code.succeeded for r in results), {r.code for r in results}
            ceiling_seconds += ceiling.write(chunk)
    log(f"  ledger: {count / ledger_seconds:,.0f} transfers/s")
    log(f"  ceiling: {count / ceiling_seconds:,.0f} transfers/s")
    gc.unfreeze()  # the plan is garbage once run() returns (run() also runs in tests)

    log(f"  {SINGLE_WRITERS} writers committing single transfers to one hot account")
    single = _single_commits(url, cards, hot, single_seconds)
    log(f"  hot single commits: {single:,.0f}/s")
    engine.dispose()
    _ = bank
    return {
        "backend": backend,
        "transfers": count,
        "transfers_per_s": round(count / ledger_seconds),
        "ceiling_transfers_per_s": round(count / ceiling_seconds),
        "ratio": round(ceiling_seconds / ledger_seconds, 3),
        "single_commit_hot_per_s": round(single),
    }


def _vacuum_analyze(engine: sa.Engine) -> None:
    """What autovacuum does on a production server after the set-up's 10,000 loads: fresh
    statistics and a visibility map. Benchmark machines here run with autovacuum off, and a
    planner that still believes the tables empty is not the ledger's cost."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def _accounts(ledger: Ledger) -> tuple[list[uuid.UUID], list[uuid.UUID], uuid.UUID, uuid.UUID]:
    bank, hot = uuid.uuid4(), uuid.uuid4()
    cards = [uuid.uuid4() for _ in range(ACCOUNTS - MERCHANTS)]
    merchants = [uuid.uuid4() for _ in range(MERCHANTS - 1)]
    new = [
        NewAccount(bank, AccountKind.ISSUER_FLOAT),
        NewAccount(hot, AccountKind.MERCHANT_PAYABLE, shards=16),
        *(NewAccount(m, AccountKind.MERCHANT_PAYABLE) for m in merchants),
        *(
            NewAccount(c, AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True,
                       max_balance=20_000_000)
            for c in cards
        ),
    ]  # fmt: skip
    for i in range(0, len(new), 5_000):
        ledger.create_accounts(new[i : i + 5_000])
    loads = [Transfer.simple(uuid.uuid4(), bank, c, 19_000_000, "load") for c in cards]
    for i in range(0, len(loads), BATCH):
        ledger.submit(loads[i : i + BATCH])
    return cards, merchants, hot, bank


# The ledger's own tables' shape: the same columns, keys and indexes (and, on PostgreSQL,
# the balance table's fillfactor), with no CHECK constraints and no triggers.
CEILING_DDL = [
    "CREATE TABLE ceiling_accounts (id {uuid} PRIMARY KEY, debits_posted BIGINT NOT NULL,"
    " credits_posted BIGINT NOT NULL){balance_storage}",
    "CREATE TABLE ceiling_transfers (seq {seq}, id {uuid} NOT NULL UNIQUE, kind VARCHAR(32),"
    " phase VARCHAR(16), currency VARCHAR(3), pending_id {uuid}, linked_id {uuid},"
    " timeout_s BIGINT, metadata TEXT, timestamp_us BIGINT, content_hash {bytes})",
    "CREATE UNIQUE INDEX uq_ceiling_transfers_pending_id ON ceiling_transfers (pending_id)"
    " WHERE pending_id IS NOT NULL",
    "CREATE INDEX ix_ceiling_transfers_linked_id ON ceiling_transfers (linked_id)"
    " WHERE linked_id IS NOT NULL",
    "CREATE INDEX ix_ceiling_transfers_timestamp_us ON ceiling_transfers (timestamp_us)",
    "CREATE INDEX ix_ceiling_transfers_kind_seq ON ceiling_transfers (kind, seq)",
    "CREATE TABLE ceiling_postings (transfer_id {uuid} NOT NULL, leg SMALLINT NOT NULL,"
    " account_id {uuid} NOT NULL, currency VARCHAR(3), amount BIGINT NOT NULL,"
    " PRIMARY KEY (transfer_id, leg))",
    "CREATE INDEX ix_ceiling_postings_account ON ceiling_postings (account_id)",
]
TRANSFER_COLUMNS = (
    "id, kind, phase, currency, pending_id, linked_id, timeout_s, metadata, timestamp_us,"
    " content_hash"
)


class _Ceiling:
    """The ceiling's own tables on the ledger's database; `write` does one batch's writes."""

    def __init__(self, engine: sa.Engine, accounts: list[uuid.UUID]) -> None:
        self._postgres = engine.dialect.name == "postgresql"
        self._engine = engine
        self._accounts = accounts
        self._now = time.time_ns() // 1000
        self._written = 0
        # A plain function, as fast as the original closure (no attribute lookups per id).
        self._key: Callable[[uuid.UUID], Any] = _same_id if self._postgres else _hex_id

    def __enter__(self) -> _Ceiling:
        types = {
            "uuid": "UUID" if self._postgres else "TEXT",
            "seq": "BIGSERIAL PRIMARY KEY" if self._postgres else "INTEGER PRIMARY KEY",
            "bytes": "BYTEA" if self._postgres else "BLOB",
            "balance_storage": " WITH (fillfactor = 50)" if self._postgres else "",
        }
        self._raw: Any = self._engine.raw_connection()
        self._cursor = self._raw.cursor()
        for ddl in CEILING_DDL:
            self._cursor.execute(ddl.format(**types))
        rows = [(self._key(a), 0, 0) for a in self._accounts]
        if self._postgres:
            with self._cursor.copy("COPY ceiling_accounts FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self._cursor.execute("BEGIN")
            self._cursor.executemany("INSERT INTO ceiling_accounts VALUES (?, ?, ?)", rows)
        self._raw.commit()
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def write(self, chunk: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, int]]) -> float:
        """Write one batch and commit; the seconds it took."""
        # The content hashes the ledger computes, as stored bytes: the ceiling stores them
        # and computes nothing, so they are made before the clock starts.
        hashes = [random.randbytes(32) for _ in chunk]
        key = self._key
        started = time.perf_counter()
        transfers = [
            (key(t), "fare", "posted", "IDR", None, None, 0, "{}", self._now + self._written + j,
             hashes[j])
            for j, (t, _, _, _) in enumerate(chunk)
        ]  # fmt: skip
        postings = [
            row
            for t, d, c, a in chunk
            for row in ((key(t), 0, key(d), "IDR", a), (key(t), 1, key(c), "IDR", -a))
        ]
        debits: dict[Any, int] = defaultdict(int)
        credits: dict[Any, int] = defaultdict(int)
        for _, d, c, a in chunk:
            debits[key(d)] += a
            credits[key(c)] += a
        if self._postgres:
            _ceiling_batch_postgres(self._cursor, transfers, postings, debits, credits)
        else:
            _ceiling_batch_sqlite(self._cursor, transfers, postings, debits, credits)
        self._raw.commit()
        self._written += len(chunk)
        return time.perf_counter() - started


def _same_id(u: uuid.UUID) -> uuid.UUID:
    return u


def _hex_id(u: uuid.UUID) -> str:
    return u.hex


def _ceiling_batch_postgres(
    cursor: Any, transfers: list[Any], postings: list[Any], debits: dict[Any, int],
    credits: dict[Any, int],
) -> None:  # fmt: skip
    with cursor.copy(
        "COPY ceiling_postings (transfer_id, leg, account_id, currency, amount) FROM STDIN"
    ) as copy:
        for row in postings:
            copy.write_row(row)
    with cursor.copy(f"COPY ceiling_transfers ({TRANSFER_COLUMNS}) FROM STDIN") as copy:
        for row in transfers:
            copy.write_row(row)
    ids = sorted(set(debits) | set(credits))
    cursor.execute(
        "UPDATE ceiling_accounts a SET debits_posted = a.debits_posted + v.d,"
        " credits_posted = a.credits_posted + v.c"
        " FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS v(id, d, c) WHERE a.id = v.id",
        (ids, [debits.get(i, 0) for i in ids], [credits.get(i, 0) for i in ids]),
    )


def _ceiling_batch_sqlite(
    cursor: Any, transfers: list[Any], postings: list[Any], debits: dict[Any, int],
    credits: dict[Any, int],
) -> None:  # fmt: skip
    cursor.execute("BEGIN")
    cursor.executemany("INSERT INTO ceiling_postings VALUES (?, ?, ?, ?, ?)", postings)
    cursor.executemany(
        f"INSERT INTO ceiling_transfers ({TRANSFER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        transfers,
    )
    ids = sorted(set(debits) | set(credits))
    cursor.executemany(
        "UPDATE ceiling_accounts SET debits_posted = debits_posted + ?,"
        " credits_posted = credits_posted + ? WHERE id = ?",
        [(debits.get(i, 0), credits.get(i, 0), i) for i in ids],
    )


def _single_writer(url: str, cards: list[uuid.UUID], hot: uuid.UUID, seconds: float) -> int:
    ledger = Ledger(make_engine(url, pool_size=1))
    rng = random.Random()
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        transfer = Transfer.simple(uuid.uuid4(), rng.choice(cards), hot, 3_500, "fare")
        assert ledger.submit([transfer])[0].code.succeeded
        done += 1
    ledger.engine.dispose()
    return done


def _single_commits(url: str, cards: list[uuid.UUID], hot: uuid.UUID, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(SINGLE_WRITERS) as pool:
        # Warm up the workers (imports, connections) before the clock starts.
        pool.starmap(_single_writer, [(url, cards, hot, 0.2)] * SINGLE_WRITERS)
        started = time.perf_counter()
        done = pool.starmap(_single_writer, [(url, cards, hot, seconds)] * SINGLE_WRITERS)
        elapsed = time.perf_counter() - started
    return sum(done) / elapsed
