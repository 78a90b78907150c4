"""`jakartaone export`: the anonymized analytics release of one business day.

Exit codes (each refusal prints `error: <code>: <why>` on stderr and writes nothing):
    0  the release was written
    2  bad command-line input (click's usage errors: a date not YYYY-MM-DD, epsilon <= 0,
       --epsilon without --dp, a bad --memory-limit)
    3  the release key is missing or unusable (JAKARTAONE_RELEASE_KEY: hex, >= 32 bytes)
    4  the output directory already holds files
    5  the journal has not sealed the day yet (run `jakartaone ledger seal`)
    6  the day's data breaks the release's input contract (a record it cannot read)
    7  the database cannot be read (not reachable, or not migrated: `jakartaone db upgrade`)
"""

from __future__ import annotations

import datetime as dt
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from jakartaone.settings import Settings
from ledger import make_engine
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.inputs import MIN_KEY_BYTES
from reconciliation.export import export_day


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2
    KEY = 3
    OUTPUT_NOT_EMPTY = 4
    DAY_NOT_SEALED = 5
    DATA_INVALID = 6
    DATABASE = 7


_EXIT_BY_CODE = {
    ReleaseErrorCode.KEY_TOO_SHORT: ExitCode.KEY,
    ReleaseErrorCode.CONFIG_INVALID: ExitCode.USAGE,
    ReleaseErrorCode.OUTPUT_NOT_EMPTY: ExitCode.OUTPUT_NOT_EMPTY,
    ReleaseErrorCode.DAY_NOT_SEALED: ExitCode.DAY_NOT_SEALED,
}


def _fail(exit_code: ExitCode, code: str, why: str) -> NoReturn:
    click.echo(f"error: {code}: {why}", err=True)
    sys.exit(exit_code)


def release_key(settings: Settings) -> bytes:
    """The release key from the settings, or exit 3; the key itself is never printed."""
    if settings.release_key is None:
        _fail(ExitCode.KEY, "key_missing", "set JAKARTAONE_RELEASE_KEY (hex, at least 32 bytes)")
    try:
        key = bytes.fromhex(settings.release_key.get_secret_value())
    except ValueError:
        _fail(ExitCode.KEY, "key_invalid", "JAKARTAONE_RELEASE_KEY is not hex")
    if len(key) < MIN_KEY_BYTES:
        _fail(ExitCode.KEY, "key_too_short", f"JAKARTAONE_RELEASE_KEY needs {MIN_KEY_BYTES} bytes")
    return key


@click.command(name="export")
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    required=True,
    help="The business day (WIB), YYYY-MM-DD.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the release; created if missing, and it must be empty.",
)
@click.option(
    "--dp/--no-dp",
    default=False,
    show_default=True,
    help="Add differential-privacy noise (OpenDP) on top of the thresholds.",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Privacy budget of the release with --dp (default 1.0).",
)
@click.option(
    "--memory-limit",
    default=None,
    help="Memory cap of the release's DuckDB, like 1GB (default 1GB); it spills beyond.",
)
@click.pass_context
def export(
    ctx: click.Context,
    day: dt.datetime,
    out_dir: Path,
    dp: bool,
    epsilon: float | None,
    memory_limit: str | None,
) -> None:
    """Publish the anonymized spending and travel statistics of one day (docs/privacy.md).

    Reads the ledger database (JAKARTAONE_DATABASE_URL) and writes a Frictionless data
    package, CSV, Parquet and an offline HTML report into --out. The release key comes
    from JAKARTAONE_RELEASE_KEY.

    Exit codes: 0 written; 2 bad options; 3 release key missing or unusable; 4 --out not
    empty; 5 the day is not sealed yet (jakartaone ledger seal); 6 a stored record the
    release cannot read; 7 the database cannot be read.
    """
    settings = ctx.find_object(Settings) or Settings()
    if epsilon is not None and not dp:
        raise click.UsageError("--epsilon applies only with --dp")
    options: dict[str, Any] = {"differential_privacy": dp}
    if epsilon is not None:
        options["epsilon"] = epsilon
    if memory_limit is not None:
        options["duckdb_memory_limit"] = memory_limit
    config = ReleaseConfig(**options)
    key = release_key(settings)
    engine = make_engine(settings.database_url)
    try:
        summary = export_day(engine, day.date(), out_dir, key, config)
    except ReleaseError as exc:
        _fail(_EXIT_BY_CODE.get(exc.code, ExitCode.DATA_INVALID), exc.code.value, exc.message)
    except sa.exc.DBAPIError as exc:
        # The driver's message can carry the URL's user and host, never the key; keep to
        # its class so nothing of the connection string is printed.
        _fail(ExitCode.DATABASE, "database_unreadable", type(exc.orig).__name__)
    finally:
        engine.dispose()
    published = sum(t.published for t in summary.tables)
    suppressed = sum(t.suppressed for t in summary.tables)
    click.echo(
        f"released {summary.day.isoformat()} into {summary.out_dir}: {len(summary.tables)} "
        f"tables, {published} cells published, {suppressed} suppressed"
    )
    if summary.epsilon is not None:
        click.echo(f"differential privacy: epsilon {summary.epsilon}")
    click.echo(f"sha256 {summary.sha256}")
