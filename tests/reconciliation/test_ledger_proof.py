"""The night's ledger proof re-hashes only what was sealed since the last night it passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.verify import Check, Report, verify
from reconciliation.nightly.proof import prove
from reconciliation.nightly.taxonomy import ExitCode
from tests.reconciliation.test_scenarios import night, shop_day
from tests.reconciliation.world import World


def test_a_night_rehashes_from_the_last_proven_seal(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))  # type: ignore[attr-defined]
    first = night(world, tmp_path / "1")
    assert first.exit_code is ExitCode.AGREED
    assert first.summary["seal"]["rehashed_after_seq"] == 0
    assert first.summary["seal"]["verified"] is True
    proven = first.summary["seal"]["last_seq"]
    assert proven > 0

    second = night(world, tmp_path / "2")
    assert second.exit_code is ExitCode.AGREED
    assert second.summary["seal"]["rehashed_after_seq"] == proven
    assert second.summary["seal"]["transfers"] == first.summary["seal"]["transfers"]

    weekly = night(world, tmp_path / "3", full_verify=True)
    assert weekly.summary["seal"]["rehashed_after_seq"] == 0


def _tamper(world: World) -> None:
    """Edits behind the ledger's back, each breaking a different invariant."""
    sqlite = world.engine.dialect.name == "sqlite"
    tables = ("transfers", "postings")
    with world.engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(
                f"DROP TRIGGER trg_{table}_no_update"
                if sqlite
                else f"ALTER TABLE {table} DISABLE TRIGGER trg_{table}_append_only"
            )
        conn.exec_driver_sql(
            'UPDATE transfers SET metadata = \'{"edited": "é"}\''
            " WHERE seq = (SELECT max(seq) FROM transfers)"
        )
        conn.exec_driver_sql(
            "UPDATE postings SET amount = amount + 1 WHERE leg = 0 AND transfer_id ="
            " (SELECT id FROM transfers WHERE seq = (SELECT min(seq) FROM transfers))"
        )
        conn.exec_driver_sql("UPDATE accounts SET debits_posted = debits_posted + 7")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_night_proves_what_ledger_verify_proves(world: World, tmp_path: Path) -> None:
    """The night's proof (SQL on PostgreSQL) finds exactly what ledger.verify finds, on an
    intact ledger and on a tampered one, whole and incremental."""
    _, card = shop_day(world)
    for counter in (1, 2, 3):
        world.submit(card.debit(1_000 * counter, "POS-1", counter, world.seconds))  # type: ignore[attr-defined]
    first = night(world, tmp_path / "1")
    assert first.exit_code is ExitCode.AGREED
    world.submit(card.debit(500, "POS-1", 4, world.seconds))  # type: ignore[attr-defined]
    world.ledger.seal()
    mark = first.summary["seal"]["last_seq"]
    for rehash_after in (0, mark):
        assert _same(world, rehash_after).ok
    _tamper(world)
    for rehash_after in (0, mark):
        report = _same(world, rehash_after)
        checks = {v.check for v in report.violations}
        assert {Check.GUARD_MISSING, Check.TRANSFER_UNBALANCED, Check.BALANCE_MISMATCH} <= checks
        assert Check.CONTENT_HASH_MISMATCH in checks


def _same(world: World, rehash_after: int) -> Report:
    proved = prove(world.engine, rehash_after)
    with world.engine.connect() as conn:
        expected = verify(conn, rehash_after_seq=rehash_after)
    assert sorted(map(str, proved.violations)) == sorted(map(str, expected.violations))
    assert (proved.transfers, proved.accounts, proved.sealed_through, proved.unsealed) == (
        expected.transfers,
        expected.accounts,
        expected.sealed_through,
        expected.unsealed,
    )
    return proved
