"""The night after the day, on the real clock (the day has closed):

1. `jakartaone ledger verify`: every ledger invariant (alongside step 2).
2. `jakartaone nightly` for the day with the merchants' settlement reports
   (`statements.merchant_reports`, with planted errors). It settles the day and finds the
   planted errors, the clone, and the batch the offline gate still holds.
3. The offline gate comes back and uploads (the API restarted on the real clock: the batch
   arrives on the next business day, as a late upload does). The bank's statement of the
   night's payouts arrives (`statements.bank_statement`, with planted errors).
4. `jakartaone nightly` again with both: the missing batch's break resolves itself, the
   bank's errors are found, nothing is settled twice.
5. `jakartaone export` for the day: the policy report and the data package.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.progress import Progress

from simulation import statements
from simulation.day import Day
from simulation.http import Api
from simulation.incidents import Facts
from simulation.processes import ApiServer, RunSecrets, child_environment, run_cli, start_cli

EXIT_AGREED, EXIT_BREAKS = 0, 4


@dataclass
class NightlyRun:
    exit_code: int
    out: Path
    breaks: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def by_type(self, statuses: tuple[str, ...] = ("NEW", "OPEN")) -> Counter[str]:
        return Counter(b["type"] for b in self.breaks if b.get("status") in statuses)

    @property
    def auto_resolved(self) -> Counter[str]:
        return self.by_type(("AUTO_RESOLVED",))


@dataclass
class Night:
    verify_ok: bool = False
    verify_output: str = ""
    late_upload: dict[str, int] = field(default_factory=dict)
    runs: list[NightlyRun] = field(default_factory=list)
    planted_merchant: Counter[str] = field(default_factory=Counter)
    planted_bank: Counter[str] = field(default_factory=Counter)
    payouts: int = 0
    finance_report: Path | None = None
    policy_report: Path | None = None
    data_package: Path | None = None
    notes: list[str] = field(default_factory=list)


def _missing(done: subprocess.CompletedProcess[str]) -> bool:
    """The build has no such command (click's usage error)."""
    return done.returncode == 2 and "No such command" in done.stderr


def run_night(
    day: Day,
    server: ApiServer,
    run_secrets: RunSecrets,
    issuer_key: str,
    out: Path,
    day_date: date,
    facts: Facts,
    progress: Progress,
    rng: random.Random,
    phase: Callable[[str], None] = lambda name: None,
) -> Night:
    """The night's steps (module doc); `phase(name)` is called as each begins."""
    night = Night()
    database_url = server.env["JAKARTAONE_DATABASE_URL"]
    env = child_environment(database_url)
    task = progress.add_task("the night: verify, nightly, late upload", total=5)
    # Verify reads the ledger in one read transaction (a consistent view whatever the
    # nightly job writes meanwhile), so the two run side by side.
    phase("night: ledger verify and nightly 1")
    verifying = start_cli(["ledger", "verify"], env)
    try:
        reports = out / "merchant-reports"
        night.planted_merchant = statements.merchant_reports(
            day.city.shops, day.sales_by_shop, day_date, reports, rng
        )
        nightly_env = child_environment(database_url, run_secrets)
        first = _nightly(nightly_env, out / "night-1", day_date, reports, None)
        verified, errors = verifying.communicate(timeout=3600)
    finally:
        if verifying.poll() is None:  # the night failed: no orphan left behind
            verifying.kill()
            verifying.wait()
    night.verify_ok = verifying.returncode == 0
    night.verify_output = (verified + errors).strip()
    progress.advance(task)
    if first is None:
        night.notes.append("`jakartaone nightly` is not in this build: reconciliation skipped")
    else:
        night.runs.append(first)
    progress.advance(task)

    # The next morning: the API on the real clock; the gate comes back; the bank reports.
    phase("night: late upload, bank statement")
    late = ApiServer(database_url, run_secrets, server.log_path, server.workers)
    late.start()
    bank = out / "bank" / f"camt053-{day_date.isoformat()}.xml"
    try:
        gate = next(g for g in day.city.gates.values() if g.code == facts.offline_gate)
        gate.uploader.client.base_url = late.url
        gate.online = True
        night.late_upload = dict(gate.uploader.upload_pending().outcomes)
        issuer = Api(late.url, issuer_key, pool=2)
        try:
            payouts = [p for p in issuer.pages("/v1/payouts")
                       if p["business_date"] == day_date.isoformat()]  # fmt: skip
        finally:
            issuer.close()
        night.payouts = len(payouts)
        if payouts:
            night.planted_bank = statements.bank_statement(payouts, day_date, bank, rng)
    finally:
        late.stop()
    progress.advance(task)

    phase("night: nightly 2")
    if first is not None:
        second = _nightly(
            nightly_env, out / "night-2", day_date, reports, bank if bank.exists() else None
        )
        if second is not None:
            night.runs.append(second)
            night.finance_report = _first(second.out, "*.html")
    progress.advance(task)
    phase("night: export")
    export_dir = out / "export"
    done = run_cli(
        ["export", "--date", day_date.isoformat(), "--out", str(export_dir)], nightly_env
    )
    if _missing(done):
        night.notes.append("`jakartaone export` is not in this build: no data package")
    elif done.returncode != 0:
        night.notes.append(f"export failed: {done.stderr[-500:]}")
    night.policy_report = _first(export_dir, "*.html")
    night.data_package = _first(export_dir, "datapackage.json")
    progress.advance(task)
    return night


def _first(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.rglob(pattern)) if directory.exists() else []
    return found[0] if found else None


def _nightly(
    env: dict[str, str], out: Path, day_date: date, reports: Path, bank: Path | None
) -> NightlyRun | None:
    args = ["nightly", "--date", day_date.isoformat(), "--out", str(out), "--no-progress"]
    if any(reports.glob("*.csv")):
        args += ["--merchant-reports", str(reports)]
    if bank is not None:
        args += ["--bank-statement", str(bank)]
    done = run_cli(args, env)
    if _missing(done):
        return None
    run = NightlyRun(done.returncode, out)
    report = _first(out, "report-*.json")
    if report is not None:
        data = json.loads(report.read_text())
        run.breaks = list(data.get("breaks", []))
        run.summary = {k: v for k, v in data.items() if k != "breaks"}
    if done.returncode not in (EXIT_AGREED, EXIT_BREAKS):
        run.error = (done.stdout + done.stderr)[-1500:]
    return run
