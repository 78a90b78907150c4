"""ledger.pgarrays: PostgreSQL reads each column back as exactly the values it was built
from (order, NULLs, empty arrays, the extremes of each type), whether sent as bytes
through libpq or as a psycopg parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from sqlalchemy.engine import make_url

from ledger.pgarrays import column, columns, encode, encode_rows
from tests.conftest import postgres_admin_url

ELEMENTS: dict[str, st.SearchStrategy[Any]] = {
    "uuid": st.uuids(),
    "bool": st.booleans(),
    "int2": st.integers(-(2**15), 2**15 - 1),
    "int4": st.integers(-(2**31), 2**31 - 1),
    "int8": st.integers(-(2**63), 2**63 - 1),
    "text": st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
    "bytea": st.binary(max_size=64),
}


@pytest.fixture(scope="module")
def connection() -> Iterator[psycopg.Connection[Any]]:
    url = make_url(postgres_admin_url())
    with psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
        password=url.password, autocommit=True,
    ) as conn:  # fmt: skip
        yield conn


def _read_back(conn: psycopg.Connection[Any], kind: str, values: list[Any]) -> list[Any]:
    row = conn.execute(f"SELECT %b::{kind}[]", (column(kind, values),)).fetchone()
    assert row is not None
    return list(row[0])


def _echo(conn: psycopg.Connection[Any], kind: str, values: list[Any]) -> list[Any]:
    """`values` sent as encoded bytes straight through libpq, as `ledger.store` sends
    them, and read back (in binary, by psycopg's loaders)."""
    result = conn.pgconn.exec_params(
        f"SELECT $1::{kind}[]".encode(), [encode(kind, values)], None, [1], 1
    )
    assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
    loader = Transformer(conn)
    loader.set_pgresult(result)
    return list(loader.load_row(0, tuple)[0])


@pytest.mark.parametrize("kind", sorted(ELEMENTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_each_column_reads_back_exactly(
    connection: psycopg.Connection[Any], kind: str, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.one_of(st.none(), ELEMENTS[kind]), max_size=40))
    assert _read_back(connection, kind, values) == values
    assert _echo(connection, kind, values) == values


def test_rows_become_one_column_per_position(connection: psycopg.Connection[Any]) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    rows = [(a, 1, "x"), (b, -2, None)]
    sent = columns(("uuid", "int8", "text"), rows)
    row = connection.execute("SELECT %b::uuid[], %b::int8[], %b::text[]", sent).fetchone()
    assert row == ([a, b], [1, -2], ["x", None])
    empty = columns(("uuid", "int2"), [])
    assert connection.execute("SELECT %b::uuid[], %b::int2[]", empty).fetchone() == ([], [])
    assert encode_rows(("uuid", "int8", "text"), rows) == [
        encode("uuid", [a, b]), encode("int8", [1, -2]), encode("text", ["x", None])
    ]  # fmt: skip


def test_an_unknown_element_type_is_refused() -> None:
    with pytest.raises(ValueError, match="no binary array encoding"):
        column("numeric", [1])
    with pytest.raises(ValueError, match="no binary array encoding"):
        encode("numeric", [1])
