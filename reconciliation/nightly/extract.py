"""The extraction: what the night's checks need, copied from the ledger database into DuckDB.

DuckDB cannot attach PostgreSQL or SQLite here (its extensions cannot be downloaded), so this
module is the project's own bridge:
- PostgreSQL: each query runs as `COPY (...) TO STDOUT (FORMAT csv)`, streamed in chunks to
  a spill file that DuckDB's CSV reader loads with declared types. Nothing is held in
  Python row by row.
- SQLite: the query is read in chunks (`fetchmany`), each chunk becomes an Arrow table that
  DuckDB appends.

Scope, partitioned by day and by card shard:
- Cards in scope are those with a certificate received on the day, those with an unsettled
  card break (re-examined, so that late data can resolve it) and those with a pending load
  (or a load an unsettled break is about).
  For each, the *floor* is the lowest counter received that day (0 for a card re-examined
  for a break, the load's counter + 1 for a pending load). The extraction copies every
  certificate of the card from its floor up (whatever day it arrived) and the *anchor*: the
  card's certificate just below the floor, which the chain continues from.
- Every row carries its card shard (`shard`, from the card id): the checks run shard by
  shard, and a fleet of machines could take one (day, shard) each (docs/reconciliation.md).
- Gate terminals in scope are those with a batch received that day or an unsettled
  MISSING_BATCH break, with the same floor and anchor over their sequence numbers.
Ids are carried as 32 lower-case hex digits, money as BIGINT, binary values as hex.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy.engine import Engine

CHUNK_ROWS = 100_000
COPY_CHUNK_BYTES = 1 << 20
SHARD_DIGITS = "0123456789abcdef"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    duck: str  # DuckDB type

    @property
    def arrow(self) -> pa.DataType:
        return {
            "VARCHAR": pa.string(),
            "BIGINT": pa.int64(),
            "INTEGER": pa.int32(),
        }[self.duck]


@dataclass(frozen=True, slots=True)
class Extract:
    """One query and the DuckDB table it fills. `pg` and `sqlite` are the two dialects'
    SELECTs, the same columns in the same order."""

    table: str
    columns: tuple[Column, ...]
    pg: str
    sqlite: str


def _cols(spec: str) -> tuple[Column, ...]:
    return tuple(Column(*part.split(":")) for part in spec.split())


def _hex_id(column: str, dialect: str) -> str:
    return f"replace({column}::text, '-', '')" if dialect == "pg" else f"lower({column})"


def _hex_bytes(column: str, dialect: str) -> str:
    return f"encode({column}, 'hex')" if dialect == "pg" else f"lower(hex({column}))"


def _both(template: Callable[[str], str]) -> tuple[str, str]:
    return template("pg"), template("sqlite")


TX_COLUMNS = _cols(
    "id:VARCHAR card_id:VARCHAR card_counter:BIGINT kind:VARCHAR amount:BIGINT"
    " balance_after:BIGINT fee:BIGINT merchant_id:VARCHAR terminal_code:VARCHAR"
    " terminal_seq:BIGINT card_time_us:BIGINT journey:VARCHAR mac:VARCHAR"
    " transfer_id:VARCHAR business_date:VARCHAR floor:BIGINT"
)


def _tx_select(d: str, source: str) -> str:
    return (
        f"SELECT {_hex_id('t.id', d)}, {_hex_id('t.card_id', d)}, t.card_counter, t.kind,"
        f" t.amount, t.balance_after, t.fee, {_hex_id('t.merchant_id', d)}, t.terminal_code,"
        f" t.terminal_seq, t.card_time_us, t.journey, {_hex_bytes('t.mac', d)},"
        f" {_hex_id('t.transfer_id', d)}, t.business_date, s.floor"
        f" FROM recon_scope_cards s {source}"
    )


def _tx(d: str) -> str:
    above = _tx_select(
        d, "JOIN card_transactions t ON t.card_id = s.card_id AND t.card_counter >= s.floor"
    )
    if d == "pg":
        # One backward probe of the (card_id, card_counter) index per card: PostgreSQL plans
        # the max() form below as a hash of every card transaction ever recorded (2.4 s
        # instead of 0.9 s for 200,000 cards at 2,000,000 transactions).
        anchor = _tx_select(
            d,
            "CROSS JOIN LATERAL (SELECT * FROM card_transactions a WHERE a.card_id = s.card_id"
            " AND a.card_counter < s.floor ORDER BY a.card_counter DESC LIMIT 1) t",
        )
    else:
        anchor = _tx_select(
            d,
            "JOIN card_transactions t ON t.card_id = s.card_id"
            " AND t.card_counter = (SELECT max(a.card_counter) FROM card_transactions a"
            " WHERE a.card_id = s.card_id AND a.card_counter < s.floor)",
        )
    return f"{above} UNION ALL {anchor}"


CARD_COLUMNS = _cols(
    "card_id:VARCHAR status:VARCHAR purse_account_id:VARCHAR credits_posted:BIGINT"
    " debits_posted:BIGINT credits_pending:BIGINT serial_sealed:VARCHAR"
)


def _cards(d: str) -> str:
    return (
        f"SELECT {_hex_id('c.id', d)}, c.status, {_hex_id('c.purse_account_id', d)},"
        " a.credits_posted, a.debits_posted, a.credits_pending,"
        f" {_hex_bytes('c.serial_sealed', d)}"
        " FROM recon_scope_cards s JOIN cards c ON c.id = s.card_id"
        " JOIN accounts a ON a.id = c.purse_account_id"
    )


LEDGER_COLUMNS = _cols("transfer_id:VARCHAR kind:VARCHAR timestamp_us:BIGINT amount:BIGINT")


def _ledger(d: str) -> str:
    return (
        f"SELECT {_hex_id('t.id', d)}, t.kind, t.timestamp_us, p.amount"
        " FROM transfers t JOIN postings p ON p.transfer_id = t.id"
        " WHERE t.timestamp_us >= {start} AND t.timestamp_us < {end}"
        " AND t.kind IN ('fare', 'card_debit') AND t.phase = 'posted' AND p.amount > 0"
    )


BATCH_COLUMNS = _cols(
    "id:VARCHAR terminal_code:VARCHAR merchant_id:VARCHAR first_seq:BIGINT last_seq:BIGINT"
    " business_date:VARCHAR floor:BIGINT"
)


def _batch_select(d: str, where: str) -> str:
    return (
        f"SELECT {_hex_id('b.id', d)}, t.terminal_code, {_hex_id('b.merchant_id', d)},"
        " b.first_terminal_seq, b.last_terminal_seq, b.business_date, s.floor"
        " FROM recon_scope_terminals s JOIN gate_batches b ON b.terminal_id = s.terminal_id"
        f" JOIN terminals t ON t.id = b.terminal_id {where}"
    )


def _batches(d: str) -> str:
    above = _batch_select(d, "WHERE b.last_terminal_seq >= s.floor")
    anchor = _batch_select(
        d,
        "WHERE b.last_terminal_seq = (SELECT max(x.last_terminal_seq) FROM gate_batches x"
        " WHERE x.terminal_id = s.terminal_id AND x.last_terminal_seq < s.floor)",
    )
    return f"{above} UNION ALL {anchor}"


LOAD_COLUMNS = _cols(
    "id:VARCHAR card_id:VARCHAR amount:BIGINT card_counter:BIGINT business_date:VARCHAR"
    " status:VARCHAR"
)


def _loads(d: str) -> str:
    """Pending loads, and loads an unsettled break is about (to see them settled)."""
    return (
        f"SELECT {_hex_id('id', d)}, {_hex_id('card_id', d)}, amount, card_counter,"
        " business_date, status FROM loads WHERE status = 'pending'"
        " OR id IN (SELECT load_id FROM recon_scope_loads)"
    )


QUARANTINE_COLUMNS = _cols(
    "id:VARCHAR reason:VARCHAR source:VARCHAR card_id:VARCHAR card_counter:BIGINT"
    " terminal_code:VARCHAR terminal_seq:BIGINT amount:BIGINT merchant_id:VARCHAR"
    " business_date:VARCHAR status:VARCHAR"
)


def _quarantine(d: str) -> str:
    return (
        f"SELECT {_hex_id('id', d)}, reason, source, {_hex_id('card_id', d)}, card_counter,"
        f" terminal_code, terminal_seq, amount, {_hex_id('merchant_id', d)}, business_date,"
        " status FROM quarantine WHERE business_date = '{day}' OR status = 'open'"
    )


MERCHANT_COLUMNS = _cols(
    "id:VARCHAR kind:VARCHAR name:VARCHAR payable_account_id:VARCHAR payout_bank_account:VARCHAR"
)


def _merchants(d: str) -> str:
    return (
        f"SELECT {_hex_id('id', d)}, kind, name, {_hex_id('payable_account_id', d)},"
        " payout_bank_account FROM merchants"
    )


EXTRACTS = (
    Extract("tx", TX_COLUMNS, *_both(_tx)),
    Extract("cards", CARD_COLUMNS, *_both(_cards)),
    Extract("ledger_tx", LEDGER_COLUMNS, *_both(_ledger)),
    Extract("batches", BATCH_COLUMNS, *_both(_batches)),
    Extract("loads", LOAD_COLUMNS, *_both(_loads)),
    Extract("quarantine", QUARANTINE_COLUMNS, *_both(_quarantine)),
    Extract("merchants", MERCHANT_COLUMNS, *_both(_merchants)),
)
SHARDED = ("tx", "cards")  # the tables whose rows carry their card's shard
BESIDE = ("ledger_tx",)  # extracted on a second connection (PostgreSQL)
LEDGER_WINDOW_SLACK_US = 600 * 1_000_000  # the ledger's clock and the API's may straddle midnight


@dataclass(frozen=True, slots=True)
class Scope:
    """Subjects re-examined tonight because an unsettled break concerns them."""

    break_cards: frozenset[str]  # card ids (hex)
    break_terminals: frozenset[str]  # terminal codes
    break_loads: frozenset[str]  # load ids (hex)


def create_duck(spill_dir: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB with a memory cap, spilling to `spill_dir`; no extension is ever
    installed or loaded, and after set-up it cannot read or write files on its own."""
    return duckdb.connect(
        str(spill_dir / "nightly.duckdb"),
        config={
            "memory_limit": memory_limit,
            "threads": threads,
            "temp_directory": str(spill_dir / "spill"),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "python_enable_replacements": False,
        },
    )


def extract(
    engine: Engine,
    duck: duckdb.DuckDBPyConnection,
    day: dt.date,
    day_bounds_us: tuple[int, int],
    scope: Scope,
    spill_dir: Path,
    shards: int,
    tick: Callable[[str], None],
) -> dict[str, int]:
    """Fill DuckDB with the night's inputs; returns the rows copied per table."""
    start, end = day_bounds_us
    values = {
        "day": day.isoformat(),
        "start": str(start - LEDGER_WINDOW_SLACK_US),
        "end": str(end + LEDGER_WINDOW_SLACK_US),
    }
    counts: dict[str, int] = {}
    pg = engine.dialect.name == "postgresql"
    # On PostgreSQL the ledger's side (it needs no scope table) streams out on a second
    # connection while the first one streams the certificates: two server processes work.
    aside = {spec.table: spec for spec in EXTRACTS if pg and spec.table in BESIDE}
    with ThreadPoolExecutor(max_workers=1) as beside:
        files = {
            table: beside.submit(
                _pg_to_file_on_own_connection, engine, spec.pg.format(**values), spill_dir, table
            )
            for table, spec in aside.items()
        }
        raw = engine.raw_connection()
        try:
            _scope_tables(raw, pg, day.isoformat(), scope)
            for spec in EXTRACTS:
                _create(duck, spec, shards)
                if spec.table in aside:
                    continue
                select = _select(spec, shards)
                sql = (spec.pg if pg else spec.sqlite).format(**values)
                if pg:
                    path = _pg_to_file(raw, sql, spill_dir, spec.table)
                    counts[spec.table] = _file_to_duck(path, duck, spec, select)
                else:
                    counts[spec.table] = _copy_sqlite(raw, sql, duck, spec, select)
                tick(spec.table)
            raw.rollback()
        finally:
            raw.close()
        for table, spec in aside.items():
            counts[table] = _file_to_duck(files[table].result(), duck, spec, _select(spec, shards))
            tick(table)
    return counts


def _create(duck: duckdb.DuckDBPyConnection, spec: Extract, shards: int) -> None:
    columns = ", ".join(f"{c.name} {c.duck}" for c in spec.columns)
    duck.execute(
        f"CREATE OR REPLACE TABLE {spec.table} ({columns}"
        + (", shard INTEGER)" if spec.table in SHARDED else ")")
    )


def _select(spec: Extract, shards: int) -> str:
    return f"SELECT *, {_shard_of(shards)}" if spec.table in SHARDED else "SELECT *"


def _scope_tables(raw: Any, pg: bool, day: str, scope: Scope) -> None:
    """Temporary tables in the source database naming the cards and terminals in scope."""
    cur = raw.cursor()
    temp = "CREATE TEMPORARY TABLE" if pg else "CREATE TEMP TABLE"
    uuid_type = "uuid" if pg else "CHAR(32)"
    for name in ("recon_scope_cards", "recon_scope_terminals", "recon_scope_loads"):
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"{temp} recon_scope_loads (load_id {uuid_type} PRIMARY KEY)")
    if scope.break_loads:
        cur.executemany(
            f"INSERT INTO recon_scope_loads VALUES ({'%s' if pg else '?'})",
            [(i,) for i in _ids(scope.break_loads, pg)],
        )
    cur.execute(f"{temp} recon_scope_cards (card_id {uuid_type} PRIMARY KEY, floor BIGINT)")
    cur.execute(f"{temp} recon_scope_terminals (terminal_id {uuid_type} PRIMARY KEY, floor BIGINT)")
    param = "%s" if pg else "?"
    cur.execute(
        "INSERT INTO recon_scope_cards SELECT card_id, min(floor) FROM ("
        f" SELECT card_id, min(card_counter) AS floor FROM card_transactions"
        f" WHERE business_date = {param} GROUP BY card_id"
        " UNION ALL SELECT card_id, min(card_counter) + 1 FROM loads WHERE status = 'pending'"
        " OR id IN (SELECT load_id FROM recon_scope_loads)"
        " GROUP BY card_id) u GROUP BY card_id",
        (day,),
    )
    _add_floor_zero(cur, pg, "recon_scope_cards", "card_id", _ids(scope.break_cards, pg))
    cur.execute(
        "INSERT INTO recon_scope_terminals SELECT terminal_id, min(first_terminal_seq)"
        f" FROM gate_batches WHERE business_date = {param} GROUP BY terminal_id",
        (day,),
    )
    if scope.break_terminals:
        marks = ", ".join([param] * len(scope.break_terminals))
        cur.execute(
            f"SELECT id FROM terminals WHERE terminal_code IN ({marks})",
            tuple(sorted(scope.break_terminals)),
        )
        found = [row[0] for row in cur.fetchall()]
        _add_floor_zero(cur, pg, "recon_scope_terminals", "terminal_id", found)
    if pg:
        cur.execute("ANALYZE recon_scope_cards")
        cur.execute("ANALYZE recon_scope_terminals")
    cur.close()


def _ids(hex_ids: Iterable[str], pg: bool) -> list[Any]:
    return [uuid.UUID(h) if pg else h for h in sorted(hex_ids)]


def _add_floor_zero(cur: Any, pg: bool, table: str, column: str, ids: list[Any]) -> None:
    """Re-examine these subjects from their very first record (floor 0)."""
    if not ids:
        return
    if pg:
        cur.executemany(
            f"INSERT INTO {table} VALUES (%s, 0) ON CONFLICT ({column}) DO UPDATE SET floor = 0",
            [(i,) for i in ids],
        )
    else:
        cur.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, 0)", [(i,) for i in ids])


def _pg_to_file_on_own_connection(engine: Engine, sql: str, spill_dir: Path, table: str) -> Path:
    raw = engine.raw_connection()
    try:
        path = _pg_to_file(raw, sql, spill_dir, table)
        raw.rollback()
        return path
    finally:
        raw.close()


def _pg_to_file(raw: Any, sql: str, spill_dir: Path, table: str) -> Path:
    path = spill_dir / f"{table}.csv"
    cur = raw.cursor()
    with path.open("wb") as out, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for chunk in copy:
            out.write(chunk)
    cur.close()
    return path


def _file_to_duck(path: Path, duck: duckdb.DuckDBPyConnection, spec: Extract, select: str) -> int:
    if path.stat().st_size == 0:
        path.unlink()
        return 0
    types = ", ".join(f"'{c.name}': '{c.duck}'" for c in spec.columns)
    duck.execute(
        f"INSERT INTO {spec.table} {select} FROM read_csv(?, header = false,"
        f" columns = {{{types}}}, quote = '\"', escape = '\"')",
        [str(path)],
    )
    path.unlink()
    ((count,),) = duck.execute(f"SELECT count(*) FROM {spec.table}").fetchall()
    return int(count)


def _copy_sqlite(
    raw: Any, sql: str, duck: duckdb.DuckDBPyConnection, spec: Extract, select: str
) -> int:
    cur = raw.cursor()
    cur.execute(sql)
    schema = pa.schema([(c.name, c.arrow) for c in spec.columns])
    total = 0
    while rows := cur.fetchmany(CHUNK_ROWS):
        chunk = pa.Table.from_arrays(
            [
                pa.array(list(col), type=f.type)
                for col, f in zip(zip(*rows, strict=True), schema, strict=True)
            ],
            schema=schema,
        )
        duck.register("recon_chunk", chunk)
        duck.execute(f"INSERT INTO {spec.table} {select} FROM recon_chunk")
        duck.unregister("recon_chunk")
        total += len(rows)
    cur.close()
    return total


def _shard_of(shards: int) -> str:
    """Each card's shard: its id's last hex digit modulo `shards`."""
    return f"(instr('{SHARD_DIGITS}', right(card_id, 1)) - 1) % {shards} AS shard"


def load_rows(
    duck: duckdb.DuckDBPyConnection,
    table: str,
    columns: tuple[Column, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """A small table from Python rows (parsed reports and statements)."""
    spec = ", ".join(f"{c.name} {c.duck}" for c in columns)
    duck.execute(f"CREATE OR REPLACE TABLE {table} ({spec})")
    if rows:
        schema = pa.schema([(c.name, c.arrow) for c in columns])
        data = pa.Table.from_arrays(
            [
                pa.array(list(col), type=f.type)
                for col, f in zip(zip(*rows, strict=True), schema, strict=True)
            ],
            schema=schema,
        )
        duck.register("recon_rows", data)
        duck.execute(f"INSERT INTO {table} SELECT * FROM recon_rows")
        duck.unregister("recon_rows")
