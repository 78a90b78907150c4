"""Inserting many rows of one table in one statement.

On PostgreSQL the rows travel as one array per column and one `INSERT ... SELECT FROM
unnest(...)` writes them all: one statement for the database to run, and one statement
text (so one prepared plan) whatever the number of rows. `executemany` would send and run
an INSERT per row. SQLite gets `executemany` (in-process, nothing to save).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ledger.db import is_sqlite


def insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) into `table`."""
    if not rows:
        return
    if is_sqlite(conn):
        conn.execute(sa.insert(table), rows)
        return
    names = tuple(rows[0])
    conn.execute(
        _unnest_insert(table, names), {name: [row[name] for row in rows] for name in names}
    )


@cache
def _unnest_insert(table: sa.Table, names: tuple[str, ...]) -> sa.TextClause:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names
    )
    return sa.text(f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})")
