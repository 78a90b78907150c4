"""The nightly analytics export: one business day from the ledger database to a release.

    export_day(engine, day, out_dir, key, config=None) -> ReleaseSummary

reads the day (analytics.extract: card transactions, refunds and loads as events; every
card's shadow-purse balance at the end of the day; the journal block sealing the day) in
one read transaction and hands it, streamed, to analytics.release.run_release, which
writes the release into out_dir (docs/privacy.md).

Guarantees:
- Nothing is written to the database; the release sees one consistent snapshot.
- Deterministic: the same database state, day, key and config give byte-identical files.
- A refusal raises analytics.errors.ReleaseError with its code and writes nothing:
  `day_not_sealed` (seal the journal first), `record_invalid` (a stored record the
  release cannot read), `output_not_empty`, `key_too_short`, `config_invalid`, or a rule of
  the input contract (analytics.inputs).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
from sqlalchemy.engine import Connection, Engine

from ledger import run_read
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.extract import cards_reader, day_seal, events_reader
from reconciliation.analytics.release import ReleaseSummary, run_release


def export_day(
    engine: Engine,
    day: dt.date,
    out_dir: Path,
    key: bytes,
    config: ReleaseConfig | None = None,
) -> ReleaseSummary:
    """Release `day` (a WIB business day) from the database behind `engine` into out_dir."""
    config = config or ReleaseConfig()

    def work(conn: Connection) -> ReleaseSummary:
        seal, as_of_seq = day_seal(conn, day)
        failures: list[Exception] = []
        events = events_reader(conn, day, config.network, failures)
        cards = cards_reader(conn, day, as_of_seq, failures)
        try:
            return run_release(day, events, cards, seal, out_dir, key, config)
        except duckdb.Error:
            if failures:  # the reader's own error, not DuckDB's wrapping of it
                raise failures[0] from None
            raise

    return run_read(engine, work)
