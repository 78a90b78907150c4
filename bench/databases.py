"""Scratch databases for benchmarks: a temporary SQLite file, or a new PostgreSQL database
made next to the one JAKARTAONE_BENCH_POSTGRES_URL (or the test URL) names."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """Yield the URL of an empty database of `backend`; it is removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="jakartaone-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        return
    base = make_url(
        os.environ.get("JAKARTAONE_BENCH_POSTGRES_URL")
        or os.environ.get("JAKARTAONE_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"jo_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
