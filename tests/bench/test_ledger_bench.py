"""`python -m bench ledger` at a small size: its JSON line, and that its ceiling made the
same writes as the ledger (the ratio compares like with like)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from bench.ledger import BATCH, run
from tests.conftest import both_backends

FARES = 3 * BATCH


@both_backends
def test_ledger_benchmark_reports_and_its_ceiling_writes_what_the_ledger_wrote(
    database_url: str,
) -> None:
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"

    result = run(database_url, backend, FARES, single_seconds=0.3)

    assert set(result) == {
        "backend", "transfers", "transfers_per_s", "ceiling_transfers_per_s", "ratio",
        "single_commit_hot_per_s",
    }  # fmt: skip
    assert (result["backend"], result["transfers"]) == (backend, FARES)
    assert result["transfers_per_s"] > 0 and result["ceiling_transfers_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["transfers_per_s"] / result["ceiling_transfers_per_s"], rel=0.01
    )
    assert result["single_commit_hot_per_s"] > 0

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        fares = conn.exec_driver_sql(
            "SELECT count(*) FROM transfers WHERE kind = 'fare'"
        ).scalar_one()
        ceiling_transfers = conn.exec_driver_sql(
            "SELECT count(*) FROM ceiling_transfers"
        ).scalar_one()
        ceiling_postings = conn.exec_driver_sql(
            "SELECT count(*) FROM ceiling_postings"
        ).scalar_one()
        # Merchant payables (unsharded: the hot one also takes the single commits) are
        # credited by the benchmark's fares only, in the ledger and in the ceiling alike.
        ledger_credits = conn.exec_driver_sql(
            "SELECT id, credits_posted FROM accounts"
            " WHERE kind = 'merchant_payable' AND shards = 1 AND credits_posted > 0"
        ).all()
        ceiling_credits = conn.exec_driver_sql(
            "SELECT id, credits_posted FROM ceiling_accounts WHERE credits_posted > 0"
        ).all()
    engine.dispose()
    # The ledger also holds the single commits' fares, after the batches.
    assert fares > FARES
    assert ceiling_transfers == FARES
    assert ceiling_postings == 2 * FARES
    ledger_by_account = {_uuid(a): credits for a, credits in ledger_credits}
    ceiling_by_account = {_uuid(a): credits for a, credits in ceiling_credits}
    assert ledger_by_account
    assert ledger_by_account.items() <= ceiling_by_account.items()


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
