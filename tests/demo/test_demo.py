"""`jakartaone demo`, small, end to end on SQLite and on PostgreSQL: the real API process,
real gates and terminals, the night. It must find exactly what was planted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import frictionless

from card_reader.keys import BackOfficeKeys
from simulation.people import make_population
from tests.conftest import both_backends

BIN = Path(sys.executable).parent
CARDS = 250


def run_demo(out: Path, database_url: str, *extra: str) -> dict[str, Any]:
    done = demo_process(out, database_url, *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "JakartaOne, business day" in done.stdout
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def demo_process(out: Path, database_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAKARTAONE_")}
    return subprocess.run(
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


DAY_NUMBERS = ("taps", "fares_rupiah", "sales", "sales_rupiah", "loads", "loads_rupiah", "refunds")
_days: dict[str, dict[str, Any]] = {}


@both_backends
def test_a_small_day_finds_what_was_planted(database_url: str, tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "out", database_url)
    facts = summary["facts"]

    # The same seed makes the same day, on either database.
    day = {k: summary[k] for k in DAY_NUMBERS}
    for other in _days.values():
        assert day == other
    _days[database_url.split(":")[0]] = day

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
    assert facts["offline_certificates"] > 0  # the gate had sent a batch before it went dark
    assert set(summary["quarantined"]) == {"conflicting_duplicate"}

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
    assert night["planted_bank"] == {
        "AMOUNT_MISMATCH": 1,
        "DUPLICATE_EXTERNAL": 1,
        "MISSING_IN_LEDGER": 1,
    }

    # Exactly what was planted is found, and nothing else: the merchants' errors, the
    # clone, and the offline gate's batch, which resolves itself once it arrives.
    first, second = night["runs"]
    assert first["exit"] == second["exit"] == 4, (first["error"], second["error"])
    assert first["open"] == {**night["planted_merchant"], "DUPLICATE_COUNTER": 1,
                             "MISSING_BATCH": 1}  # fmt: skip
    assert first["auto_resolved"] == {}
    planted = Counter(night["planted_merchant"]) + Counter(night["planted_bank"])
    assert second["open"] == {**planted, "DUPLICATE_COUNTER": 1}
    assert second["auto_resolved"] == {"MISSING_BATCH": 1}
    assert Path(night["finance_report"]).is_file()

    # The policymakers' release: a report and a data package that validates.
    assert Path(night["policy_report"]).is_file()
    report = frictionless.validate(night["data_package"])
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:10]

    ledger = subprocess.run(
        [str(BIN / "jakartaone"), "--database-url", database_url, "ledger", "verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr

    # A database that already holds a day is refused, not mixed into.
    again = demo_process(tmp_path / "again", database_url, "--no-pcsc")
    assert again.returncode == 1
    assert "the database already holds cards" in again.stderr


def test_the_same_seed_makes_the_same_population() -> None:
    """Deterministic for a seed: the same holders, cards, journeys, departures and loads
    (the end-to-end runs above also agree with each other on every count)."""
    keys = BackOfficeKeys(bytes(range(16)), bytes(range(16, 32)))
    auth = bytes(range(32, 48))

    def plan(seed: int) -> list[tuple[object, ...]]:
        riders = make_population(500, random.Random(seed), auth, keys)
        return [
            (r.serial, r.registered, r.kecamatan, r.first_load, r.leave_s, r.return_s,
             r.purchases, tuple((leg.line.name, leg.origin.code, leg.destination.code)
                                for leg in r.legs))
            for r in riders
        ]  # fmt: skip

    first = plan(11)
    assert first == plan(11)
    assert first != plan(12)
    commuters = [p for p in first if p[7]]
    assert 0.6 < len(commuters) / len(first) < 0.9
    assert {p[7][0][0] for p in commuters} == {"TJ-1", "MRT-NS", "KRL-BOGOR", "LRT-JAKARTA"}
