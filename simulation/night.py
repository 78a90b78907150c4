"""The night after the day, on the real clock (the day has closed):

1. `jakartaone ledger verify`: every ledger invariant.
2. `jakartaone nightly` for the day, with the merchants' settlement reports and the bank's
   statement (`statements`), each made from what the merchants' terminals and the bank
   saw, with a few errors planted in them: the first run finds them, and the missing
   batch of the gate that is still offline.
3. The offline gate comes back and uploads (the API now on the real clock: the batch
   arrives the next business day, as a late upload does).
4. `jakartaone nightly` again: the missing batch's break resolves itself; then
   `jakartaone export` for the day: the policy report and the data package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.progress import Progress

from simulation.day import Day
from simulation.incidents import Facts
from simulation.processes import ApiServer, RunSecrets, child_environment, run_cli

NIGHTLY_OK, NIGHTLY_BREAKS = 0, 1


@dataclass
class Night:
    verify_ok: bool = False
    verify_output: str = ""
    late_upload: dict[str, int] = field(default_factory=dict)
    nightly_available: bool = False
    export_available: bool = False
    runs: list[dict[str, Any]] = field(default_factory=list)  # each nightly run's summary
    planted: dict[str, int] = field(default_factory=dict)
    finance_report: Path | None = None
    policy_report: Path | None = None
    data_package: Path | None = None
    notes: list[str] = field(default_factory=list)


def _has_command(env: dict[str, str], name: str) -> bool:
    done = run_cli(["--help"], env, timeout=60)
    return any(line.strip().startswith(name + " ") for line in done.stdout.splitlines())


def run_night(
    day: Day,
    server: ApiServer,
    run_secrets: RunSecrets,
    out: Path,
    day_date: date,
    facts: Facts,
    progress: Progress,
) -> Night:
    night = Night()
    env = child_environment(server.env["JAKARTAONE_DATABASE_URL"])
    task = progress.add_task("the night: verify, nightly, late upload", total=5)
    done = run_cli(["ledger", "verify"], env)
    night.verify_ok = done.returncode == 0
    night.verify_output = (done.stdout + done.stderr).strip()
    progress.advance(task)

    night.nightly_available = _has_command(env, "nightly")
    night.export_available = _has_command(env, "export")
    if night.nightly_available:
        night.runs.append(_nightly(env, out / "night-1", day_date))
    else:
        night.notes.append("`jakartaone nightly` is not in this build: reconciliation skipped")
    progress.advance(task)

    # The gate comes back: the API is restarted on the real clock (the next business day).
    late = ApiServer(
        server.env["JAKARTAONE_DATABASE_URL"], run_secrets, server.log_path, server.workers
    )
    late.start()
    try:
        gate = next(g for g in day.city.gates.values() if g.code == facts.offline_gate)
        client = gate.uploader.client
        client.base_url = late.url
        gate.online = True
        report = gate.uploader.upload_pending()
        night.late_upload = dict(report.outcomes)
    finally:
        late.stop()
    progress.advance(task)

    if night.nightly_available:
        night.runs.append(_nightly(env, out / "night-2", day_date))
        night.finance_report = _first(out / "night-2", "*.html")
    progress.advance(task)
    if night.export_available:
        export_dir = out / "export"
        done = run_cli(["export", "--date", day_date.isoformat(), "--out", str(export_dir)], env)
        if done.returncode != 0:
            night.notes.append(f"export failed: {done.stderr[-500:]}")
        night.policy_report = _first(export_dir, "*.html")
        night.data_package = _first(export_dir, "datapackage.json")
    else:
        night.notes.append("`jakartaone export` is not in this build: no data package")
    progress.advance(task)
    return night


def _first(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.rglob(pattern)) if directory.exists() else []
    return found[0] if found else None


def _nightly(env: dict[str, str], out: Path, day_date: date) -> dict[str, Any]:
    done = run_cli(["nightly", "--date", day_date.isoformat(), "--out", str(out)], env)
    summary: dict[str, Any] = {"exit": done.returncode, "out": str(out)}
    report = _first(out, "*.json")
    if report is not None:
        summary["report"] = json.loads(report.read_text())
    if done.returncode not in (NIGHTLY_OK, NIGHTLY_BREAKS):
        summary["error"] = done.stderr[-1000:]
    return summary
