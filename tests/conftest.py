"""Fixtures every test package shares: real databases, migrated by Alembic.

PostgreSQL tests read JAKARTAONE_TEST_POSTGRES_URL and get a database of their own,
created for them and dropped after. Without that variable they skip with the reason,
except on CI (JAKARTAONE_CI=1), where a missing PostgreSQL is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from jakartaone.migrate import upgrade
from ledger import make_engine

BACKENDS = ("sqlite", "postgresql")

# The machine has one pcscd and one vpcd reader port: their users run in one xdist worker.
PCSC_USERS = (
    "tests/card/test_pcsc.py",
    "tests/card/test_cli.py",
    "tests/demo/",
    "tests/security/test_demo_secrets.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(PCSC_USERS):
            item.add_marker(pytest.mark.xdist_group("pcsc"))


def postgres_admin_url() -> str:
    url = os.environ.get("JAKARTAONE_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("JAKARTAONE_CI"):
        pytest.fail("JAKARTAONE_TEST_POSTGRES_URL is not set on CI")
    pytest.skip("PostgreSQL tests need JAKARTAONE_TEST_POSTGRES_URL (not set on this machine)")


@pytest.fixture(scope="session")
def make_postgres_database() -> Iterator[Callable[..., str]]:
    """A factory of fresh PostgreSQL databases (empty, or copies of `template`); all are
    dropped at the end."""
    created: list[str] = []
    admin = None

    def make(template: str | None = None) -> str:
        nonlocal admin
        base = make_url(postgres_admin_url())
        if admin is None:
            admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        name = f"jo_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{suffix}')
        created.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    yield make
    if admin is not None:
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, make_postgres_database: Callable[..., str]
) -> str:
    """An empty database of the backend named by the test's `backend` parameter."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        return make_postgres_database()
    return f"sqlite:///{tmp_path / 'jakartaone.sqlite3'}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database (Alembic head)."""
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


both_backends = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


@pytest.fixture
def fresh_engines(
    database_url: str, tmp_path: Path, make_postgres_database: Callable[..., str]
) -> Iterator[Callable[[], Engine]]:
    """A factory of freshly migrated databases of the test's backend, each one a quick
    copy of a template migrated once (for tests that need a clean ledger many times)."""
    template = make_engine(database_url)
    upgrade(template)
    template.dispose()
    engines: list[Engine] = []

    def make() -> Engine:
        if database_url.startswith("postgresql"):
            url = make_postgres_database(template=make_url(database_url).database)
        else:
            source = Path(make_url(database_url).database or "")
            copy = tmp_path / f"copy-{uuid.uuid4().hex[:8]}.sqlite3"
            copy.write_bytes(source.read_bytes())
            url = f"sqlite:///{copy}"
        engines.append(make_engine(url))
        return engines[-1]

    yield make
    for eng in engines:
        eng.dispose()
