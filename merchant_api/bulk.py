"""Many rows of one table in one statement: inserting them, and finding them by a pair.

On PostgreSQL the rows travel as one array per column (in the binary wire format,
`ledger.pgarrays`) and one `INSERT ... SELECT FROM unnest(...)` writes them all: one
statement for the database to run, and one statement text (so one prepared plan)
whatever the number of rows. `executemany` would send and run an INSERT per row. SQLite
gets `executemany` (in-process, nothing to save). `unnest_insert` is the PostgreSQL form
itself, for callers that send it in a pipeline with other statements.

`pair_in` finds rows by a pair of columns in a form both databases probe by index.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ledger.db import is_sqlite
from ledger.pgarrays import column


def pair_in(
    first: sa.ColumnElement[Any], second: sa.ColumnElement[Any], pairs: Collection[tuple[Any, Any]]
) -> sa.ColumnElement[bool]:
    """`(first, second) IN pairs`, with each column also filtered on its own: SQLite uses
    no index for a row-value IN, and with only that it scans the whole table (the card
    transactions or stored keys of a whole day, once per request)."""
    return sa.and_(
        first.in_({a for a, _ in pairs}),
        second.in_({b for _, b in pairs}),
        sa.tuple_(first, second).in_(list(pairs)),
    )


def insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) into `table`."""
    if not rows:
        return
    if is_sqlite(conn):
        conn.execute(sa.insert(table), rows)
        return
    conn.exec_driver_sql(*unnest_insert(table, rows))


def unnest_insert(table: sa.Table, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """PostgreSQL's INSERT of `rows` (not empty) and its parameters, in psycopg's style."""
    names = tuple(rows[0])
    statement, kinds = _unnest_insert(table, names)
    return statement, {
        name: column(kind, [row[name] for row in rows])
        for name, kind in zip(names, kinds, strict=True)
    }


def _element(column_type: sa.types.TypeEngine[Any]) -> str:
    """The array element type a column's values are sent as (the INSERT casts them)."""
    for sql_type, kind in _ELEMENTS:
        if isinstance(column_type, sql_type):
            return kind
    raise TypeError(f"no array element type for {column_type!r}")


# Subclasses before their bases (BigInteger and SmallInteger are Integers, Text a String).
_ELEMENTS: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.Uuid, "uuid"),
    (sa.BigInteger, "int8"),
    (sa.SmallInteger, "int2"),
    (sa.Integer, "int4"),
    (sa.Boolean, "bool"),
    (sa.String, "text"),
    (sa.LargeBinary, "bytea"),
)


@cache
def _unnest_insert(table: sa.Table, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The INSERT for these columns, and the array element type each column is sent as."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"CAST(%({name})s AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names
    )
    statement = f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
    return statement, tuple(_element(table.c[name].type) for name in names)
