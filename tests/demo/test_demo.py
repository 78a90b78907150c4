"""`jakartaone demo`, small, end to end on SQLite and on PostgreSQL: the real API process,
real gates and terminals, the night. It must find exactly what was planted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import both_backends

BIN = Path(sys.executable).parent
CARDS = 250


def run_demo(out: Path, database_url: str, *extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAKARTAONE_")}
    done = subprocess.run(
        [
            str(BIN / "jakartaone"),
            "demo",
            "--cards",
            str(CARDS),
            "--seed",
            "11",
            "--out",
            str(out),
            "--database-url",
            database_url,
            "--threads",
            "8",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "JakartaOne, business day" in done.stdout
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


@both_backends
def test_a_small_day_finds_what_was_planted(database_url: str, tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "out", database_url)
    facts = summary["facts"]

    # The day happened through the gates, the terminals and the API.
    assert summary["cards"] == CARDS
    assert summary["taps"]["ok"] > CARDS
    assert summary["sales"] > CARDS // 3
    assert summary["loads"]["bank_transfer"] > 0 and summary["loads"]["agent_cash"] > 0
    assert summary["loads"]["card_credit"] >= 1  # the replacement card's balance
    assert summary["uploads"]["posted"] > summary["taps"]["ok"] // 2

    # The incidents, as the gates and the API saw them.
    assert facts["finder_taps"] == ["ok", "card_hotlisted"]
    assert facts["replacement_card_id"] and facts["replacement_card_id"] != facts["lost_card_id"]
    assert facts["torn_tap"] == ["ok", "card_removed", "repeat_tap"]
    assert facts["clone_taps"] == ["ok", "ok"]
    assert summary["quarantined"] == {"conflicting_duplicate": 1}

    # The night: the books verify; the offline gate's late batch arrived.
    night = summary["night"]
    assert night["ledger_verified"] is True
    assert sum(night["late_upload"].values()) > 0
    assert night["planted_merchant"] == {
        "AMOUNT_MISMATCH": 1,
        "DUPLICATE_EXTERNAL": 1,
        "MISSING_IN_LEDGER": 1,
        "MISSING_IN_EXTERNAL": 1,
    }

    ledger = subprocess.run(
        [str(BIN / "jakartaone"), "--database-url", database_url, "ledger", "verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_same_seed_makes_the_same_day(database_url: str, tmp_path: Path) -> None:
    """Deterministic for a seed: the same population, the same taps, sales and rupiah."""
    first = run_demo(tmp_path / "a", f"sqlite:///{tmp_path / 'a.sqlite3'}", "--no-pcsc")
    second = run_demo(tmp_path / "b", f"sqlite:///{tmp_path / 'b.sqlite3'}", "--no-pcsc")
    keys = ("taps", "fares_rupiah", "sales", "sales_rupiah", "loads", "loads_rupiah", "refunds")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
