"""The merchant API's tables as migration 0002 makes them equal merchant_api/schema.py on
both backends, 0002 downgrades cleanly, and docs/api.md tables every error code."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from jakartaone.migrate import downgrade, target_metadata, upgrade
from merchant_api import schema
from merchant_api.errors import ErrorCode
from tests.conftest import both_backends

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@both_backends
def test_the_migration_makes_exactly_the_described_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), target_metadata()
        )
    assert differences == []
    downgrade(engine, "0001")
    tables = set(sa.inspect(engine).get_table_names())
    assert not tables & set(schema.metadata.tables)
    upgrade(engine)
    assert set(schema.metadata.tables) <= set(sa.inspect(engine).get_table_names())


def test_every_constraint_is_named() -> None:
    for table in schema.metadata.sorted_tables:
        for constraint in table.constraints:
            assert constraint.name, (table.name, constraint)


def test_the_docs_table_every_error_code() -> None:
    text = DOCS.read_text()
    missing = [code.value for code in ErrorCode if f"| `{code.value}` |" not in text]
    assert missing == []
