"""Alembic is the only way the schema is made: upgrade, downgrade and upgrade again work,
and the models the code queries with match what the migrations made."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from jakartaone.migrate import downgrade, target_metadata, upgrade
from ledger import make_engine
from tests.conftest import both_backends


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


@both_backends
def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    expected = {t for metadata in target_metadata() for t in metadata.tables}
    assert _tables(engine) == expected
    downgrade(engine)
    assert _tables(engine) == set()
    upgrade(engine)
    assert _tables(engine) == expected
    engine.dispose()


@both_backends
def test_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        # All packages' metadata at once: compared one by one, each would call the other
        # packages' tables "removed".
        differences = compare_metadata(context, target_metadata())
    assert differences == []


@both_backends
def test_every_constraint_is_named(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    for table in _tables(engine):
        for check in inspector.get_check_constraints(table):
            assert check["name"], f"unnamed CHECK on {table}: {check['sqltext']}"
        for fk in inspector.get_foreign_keys(table):
            assert fk["name"], f"unnamed foreign key on {table}"
        for unique in inspector.get_unique_constraints(table):
            assert unique["name"], f"unnamed unique constraint on {table}"
