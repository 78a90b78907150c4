"""`jakartaone nightly`: the command's body (the composition root only registers it)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from jakartaone.export_command import release_key
from jakartaone.settings import Settings
from merchant_api.cli import context_from_settings
from merchant_api.crypto import KeyConfigError
from reconciliation.nightly.job import (
    DEFAULT_MEMORY_LIMIT,
    NightlyConfig,
    NightlyError,
    run_nightly,
)
from reconciliation.nightly.statements import InputError
from reconciliation.nightly.taxonomy import ExitCode


@click.command()
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--merchant-reports",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of merchants' settlement reports (CSV).",
)
@click.option(
    "--bank-statement",
    "statements",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A bank statement: camt.053 XML (.xml) or CSV; repeatable.",
)
@click.option("--shards", default=4, show_default=True, help="Card shards (1, 2, 4, 8 or 16).")
@click.option(
    "--memory-limit", default=DEFAULT_MEMORY_LIMIT, show_default=True, help="DuckDB's memory cap."
)
@click.option("--threads", default=2, show_default=True, help="DuckDB threads.")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the day's anonymized analytics release here, as `jakartaone export`"
    " does (needs JAKARTAONE_RELEASE_KEY; the directory must be empty).",
)
@click.option(
    "--full-verify",
    is_flag=True,
    help="Re-hash every transfer ever made, not only those sealed since the last night"
    " whose proof passed (run it weekly).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@click.pass_context
def nightly(
    ctx: click.Context,
    day: dt.datetime,
    out_dir: Path,
    merchant_reports: Path | None,
    statements: tuple[Path, ...],
    shards: int,
    memory_limit: str,
    threads: int,
    export_dir: Path | None,
    full_verify: bool,
    no_progress: bool,
) -> None:
    """Reconcile and settle business day DATE; write the report to OUT.

    Exit codes: 0 everything agrees; 4 breaks are open; 3 the job could not run."""
    settings = ctx.find_object(Settings)
    assert settings is not None
    config = NightlyConfig(
        day=day.date(),
        out_dir=out_dir,
        merchant_reports=merchant_reports,
        bank_statements=statements,
        shards=shards,
        memory_limit=memory_limit,
        threads=threads,
        progress=not no_progress,
        export_dir=export_dir,
        full_verify=full_verify,
        release_key=release_key(settings) if export_dir is not None else None,
    )
    try:
        api = context_from_settings(settings)
        result = run_nightly(api.engine, api.ledger, api.card_keys, api.secrets, config)
    except (NightlyError, InputError, KeyConfigError) as exc:
        click.echo(f"nightly: {exc}", err=True)
        sys.exit(ExitCode.FAILED)
    except Exception as exc:
        click.echo(f"nightly: failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(ExitCode.FAILED)
    summary = result.summary
    click.echo(
        f"{summary['business_date']}: {summary['unsettled_breaks']} open break(s);"
        f" paid out {summary['payout_total']}; report in {out_dir}"
    )
    if "analytics" in summary:
        click.echo(f"analytics release: {summary['analytics']}")
    sys.exit(result.exit_code)
