"""`jakartaone nightly` end to end: exit codes, outputs, and the report in real headless
Chromium with no network."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from jakartaone.cli import main
from reconciliation.nightly.taxonomy import ExitCode
from tests.reconciliation.test_scenarios import gap_day, shop_day
from tests.reconciliation.world import CARD_KEYS, ROOT_KEY, World

CHROMIUM = "/usr/bin/chromium"


def _run(world: World, out: Path, *extra: str) -> tuple[int, str]:
    env = {
        "JAKARTAONE_API_SECRET_KEY": ROOT_KEY.hex(),
        "JAKARTAONE_CERTIFICATE_MASTER_KEY": CARD_KEYS.certificate_master.hex(),
        "JAKARTAONE_LOAD_MASTER_KEY": CARD_KEYS.load_master.hex(),
    }
    url = world.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            url,
            "nightly",
            "--date",
            str(world.day),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
        env=env,
    )
    return result.exit_code, result.output


def test_exit_codes_and_outputs(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    code, output = _run(world, tmp_path)
    assert code == ExitCode.AGREED, output
    card.debit(1_000, "POS-1", 2, world.seconds)
    world.submit(card.debit(1_000, "POS-1", 3, world.seconds))
    code, output = _run(world, tmp_path)
    assert code == ExitCode.BREAKS, output
    report = json.loads((tmp_path / f"report-{world.day}.json").read_text())
    assert [b["type"] for b in report["breaks"]] == ["COUNTER_GAP"]
    bad = tmp_path / "bad.xml"
    bad.write_text('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    code, output = _run(world, tmp_path, "--bank-statement", str(bad))
    assert code == ExitCode.FAILED and "xml_forbidden" in output


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not __import__("os").environ.get("JAKARTAONE_CI"),
    reason="headless Chromium (Debian package chromium) is not installed",
)
def test_report_renders_offline_in_chromium(world: World, tmp_path: Path) -> None:
    gap_day(world)
    _run(world, tmp_path)
    page = tmp_path / f"report-{world.day}.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [
            shutil.which("chromium") or CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"Nightly reconciliation, {world.day}" in dom
    assert "COUNTER_GAP" in dom and "<svg" in dom and "Warung Sari" in dom
