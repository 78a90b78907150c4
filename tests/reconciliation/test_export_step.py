"""The night's last step: the anonymized analytics release, run by the nightly job itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reconciliation.nightly.taxonomy import ExitCode
from tests.reconciliation.test_scenarios import night, shop_day
from tests.reconciliation.world import World


def test_nightly_writes_the_days_release_and_reports_it(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))  # type: ignore[attr-defined]
    release = tmp_path / "analytics"
    result = night(world, tmp_path / "night", export_dir=release, release_key=os.urandom(32))
    assert result.exit_code is ExitCode.AGREED
    outcome = result.summary["analytics"]
    assert outcome["status"] == "released"
    package = json.loads((release / "datapackage.json").read_text())
    assert package["resources"]
    report = json.loads(next((tmp_path / "night").glob("report-*.json")).read_text())
    assert report["analytics"]["sha256"] == outcome["sha256"]


def test_a_refused_release_is_reported_and_the_books_still_reconcile(
    world: World, tmp_path: Path
) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))  # type: ignore[attr-defined]
    release = tmp_path / "analytics"
    release.mkdir()
    (release / "earlier.csv").write_text("an earlier release\n")
    result = night(world, tmp_path / "night", export_dir=release, release_key=os.urandom(32))
    assert result.exit_code is ExitCode.AGREED
    assert result.summary["analytics"]["status"] == "refused"
    assert result.summary["analytics"]["code"] == "output_not_empty"
    assert sorted(p.name for p in release.iterdir()) == ["earlier.csv"]
