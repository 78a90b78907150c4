"""The demo's closing summary: what the day did, what the night found, where to look."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console
from rich.table import Table

from simulation.night import NightlyRun
from simulation.run import Outcome


def _rp(amount: int) -> str:
    return f"Rp {amount:,}"


def print_summary(outcome: Outcome, console: Console) -> None:
    tally, facts, night = outcome.tally, outcome.facts, outcome.night
    table = Table(title=f"JakartaOne, business day {outcome.day} (WIB)", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    taps = ", ".join(f"{code} {count:,}" for code, count in tally.taps.most_common())
    table.add_row("taps", f"{tally.tap_count:,} ({taps})")
    table.add_row("taps through real PC/SC", f"{tally.taps_pcsc:,}: {outcome.pcsc}")
    table.add_row("fares", _rp(tally.fares_rupiah))
    table.add_row("sales", f"{tally.sales:,} for {_rp(tally.sales_rupiah)} "
                  f"at {outcome.merchants:,} merchants")  # fmt: skip
    loads = ", ".join(f"{channel} {count:,}" for channel, count in tally.loads.most_common())
    table.add_row("loads", f"{sum(tally.loads.values()):,} for {_rp(tally.loads_rupiah)} ({loads})")
    table.add_row("refunds", f"{tally.refunds:,} for {_rp(tally.refunds_rupiah)}")
    table.add_row("rupiah moved", _rp(tally.rupiah_moved))
    uploads = ", ".join(f"{k} {v:,}" for k, v in tally.uploads.most_common())
    table.add_row("uploaded", f"{tally.batches:,} batches from {outcome.gates} gates and the "
                  f"merchants' terminals: {uploads}")  # fmt: skip
    quarantined = ", ".join(f"{k} {v}" for k, v in tally.quarantined.most_common()) or "none"
    table.add_row("quarantined by the API", quarantined)
    table.add_row("lost card", f"finder's taps {facts.finder_taps}; blocked and replaced")
    table.add_row("pulled mid-debit", f"taps {facts.torn_tap} (the torn debit journaled)")
    table.add_row("cloned card", f"taps {facts.clone_taps} at two gates, counter "
                  f"{facts.clone_counter}")  # fmt: skip
    table.add_row("offline gate", f"{facts.offline_gate}: late upload "
                  f"{night.late_upload if night else '-'}")  # fmt: skip
    if night is not None:
        table.add_row("ledger verify", "all invariants hold" if night.verify_ok
                      else night.verify_output[-300:])  # fmt: skip
        planted = night.planted_merchant + night.planted_bank
        listed = ", ".join(f"{k} {v}" for k, v in sorted(planted.items()))
        where = f"merchant reports, bank statement of {night.payouts} payouts"
        table.add_row("planted errors", f"{listed} ({where})")
        for index, run in enumerate(night.runs, start=1):
            table.add_row(f"nightly run {index}", _nightly_line(run))
        table.add_row("finance report", str(night.finance_report or "-"))
        table.add_row("policy report", str(night.policy_report or "-"))
        table.add_row("data package", str(night.data_package or "-"))
        for note in night.notes:
            table.add_row("note", note)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.phases.items())
    table.add_row(
        "time",
        f"{outcome.seconds:.1f} s ({phases}); in the background: uploads "
        f"{tally.upload_seconds:.1f} s, top-ups {tally.top_up_seconds:.1f} s; the day waited "
        f"{tally.upload_wait_seconds:.1f} s for rounds, {tally.card_wait_seconds:.1f} s for "
        f"cards; {tally.requests:,} API requests",
    )
    table.add_row("CPU", _cpu_line(outcome))
    console.print(table)


def _cpu_line(outcome: Outcome) -> str:
    total = {k: sum(p[k] for p in outcome.cpu.values()) for k in ("demo", "api", "commands")}
    return (
        f"this process {total['demo']:.1f} s, the API {total['api']:.1f} s, the commands "
        f"{total['commands']:.1f} s (by phase in summary.json: cpu)"
    )


def _nightly_line(run: NightlyRun) -> str:
    if run.error:
        return f"exit {run.exit_code}: {run.error[-300:]}"
    open_ = ", ".join(f"{k} {v}" for k, v in sorted(run.by_type().items())) or "none"
    resolved = ", ".join(f"{k} {v}" for k, v in sorted(run.auto_resolved.items()))
    line = f"exit {run.exit_code}; open breaks: {open_}"
    return line + (f"; auto-resolved: {resolved}" if resolved else "")


def results(outcome: Outcome) -> dict[str, Any]:
    """The run's numbers for machines (`summary.json` in --out; the tests read it)."""
    tally, night = outcome.tally, outcome.night
    data: dict[str, Any] = {
        "day": outcome.day.isoformat(),
        "cards": outcome.cards,
        "seed": outcome.seed,
        "seconds": round(outcome.seconds, 2),
        "phases": outcome.phases,
        "cpu": outcome.cpu,
        "pcsc": outcome.pcsc,
        "requests": tally.requests,
        "upload_seconds": round(tally.upload_seconds, 2),
        "top_up_seconds": round(tally.top_up_seconds, 2),
        "upload_wait_seconds": round(tally.upload_wait_seconds, 2),
        "card_wait_seconds": round(tally.card_wait_seconds, 2),
        "taps": dict(tally.taps),
        "taps_pcsc": tally.taps_pcsc,
        "fares_rupiah": tally.fares_rupiah,
        "sales": tally.sales,
        "sales_rupiah": tally.sales_rupiah,
        "loads": dict(tally.loads),
        "loads_rupiah": tally.loads_rupiah,
        "refunds": tally.refunds,
        "refunds_rupiah": tally.refunds_rupiah,
        "rupiah_moved": tally.rupiah_moved,
        "uploads": dict(tally.uploads),
        "quarantined": dict(tally.quarantined),
        "facts": dataclasses.asdict(outcome.facts),
    }
    if night is not None:
        data["night"] = {
            "ledger_verified": night.verify_ok,
            "late_upload": night.late_upload,
            "planted_merchant": dict(night.planted_merchant),
            "planted_bank": dict(night.planted_bank),
            "payouts": night.payouts,
            "runs": [
                {
                    "exit": run.exit_code,
                    "open": dict(run.by_type()),
                    "auto_resolved": dict(run.auto_resolved),
                    "error": run.error,
                }
                for run in night.runs
            ],
            "finance_report": str(night.finance_report or ""),
            "policy_report": str(night.policy_report or ""),
            "data_package": str(night.data_package or ""),
            "notes": night.notes,
        }
    return data
