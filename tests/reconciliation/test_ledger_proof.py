"""The night's ledger proof re-hashes only what was sealed since the last night it passed."""

from __future__ import annotations

from pathlib import Path

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
