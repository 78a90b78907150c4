"""Every SQLite connection the ledger's engine opens carries the settings `ledger.db`
relies on: WAL, full fsync, foreign keys, a busy timeout, its page cache and its
checkpoint interval."""

from __future__ import annotations

from pathlib import Path

from ledger import make_engine
from ledger.db import SQLITE_CACHE_KIB, SQLITE_WAL_AUTOCHECKPOINT_PAGES


def test_each_connection_is_configured(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        for _ in range(2):  # a second, separate connection too
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                settings = {
                    pragma: cursor.execute(f"PRAGMA {pragma}").fetchone()[0]
                    for pragma in (
                        "journal_mode", "synchronous", "foreign_keys", "busy_timeout",
                        "cache_size", "wal_autocheckpoint",
                    )
                }  # fmt: skip
            finally:
                raw.detach()
                raw.close()
            assert settings == {
                "journal_mode": "wal",
                "synchronous": 2,  # FULL
                "foreign_keys": 1,
                "busy_timeout": 60_000,
                "cache_size": -SQLITE_CACHE_KIB,  # negative: KiB, not pages
                "wal_autocheckpoint": SQLITE_WAL_AUTOCHECKPOINT_PAGES,
            }
    finally:
        engine.dispose()
