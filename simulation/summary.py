"""The demo's closing summary: what the day did, what the night found, where to look."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

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
        for index, run in enumerate(night.runs, start=1):
            table.add_row(f"nightly run {index}", _nightly_line(run))
        table.add_row("finance report", str(night.finance_report or "-"))
        table.add_row("policy report", str(night.policy_report or "-"))
        table.add_row("data package", str(night.data_package or "-"))
        for note in night.notes:
            table.add_row("note", note)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.phases.items())
    table.add_row("time", f"{outcome.seconds:.1f} s ({phases}); {tally.requests:,} API requests")
    console.print(table)


def _nightly_line(run: dict[str, object]) -> str:
    report = run.get("report")
    breaks = ""
    if isinstance(report, dict):
        counts = report.get("breaks_by_type") or report.get("breaks")
        breaks = f" breaks: {counts}" if counts else ""
    return f"exit {run.get('exit')}{breaks} ({run.get('out')})"
