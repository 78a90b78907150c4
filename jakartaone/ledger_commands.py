"""`jakartaone db ...` and `jakartaone ledger ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jakartaone import migrate
from jakartaone.settings import Settings
from ledger import Ledger, make_engine, run_read
from ledger.export_beancount import export
from ledger.verify import verify


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return settings


@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command()
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database up to REVISION."""
    engine = make_engine(_settings(ctx).database_url)
    migrate.upgrade(engine, revision)
    click.echo(f"database at {revision}")


@db.command()
@click.option("--revision", default="base", show_default=True)
@click.pass_context
def downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database down to REVISION (base: drop everything)."""
    engine = make_engine(_settings(ctx).database_url)
    migrate.downgrade(engine, revision)
    click.echo(f"database at {revision}")


@click.group()
def ledger() -> None:
    """The double-entry ledger."""


@ledger.command(name="verify")
@click.pass_context
def verify_command(ctx: click.Context) -> None:
    """Check every ledger invariant; exit 0 if all hold, 1 with the list otherwise."""
    engine = make_engine(_settings(ctx).database_url)
    report = run_read(engine, verify)
    click.echo(
        f"{report.transfers} transfers, {report.accounts} accounts;"
        f" sealed through seq {report.sealed_through}, {report.unsealed} not yet sealed"
    )
    if report.ok:
        click.echo("all invariants hold")
        return
    click.echo(f"{len(report.violations)} violation(s):", err=True)
    for violation in report.violations:
        click.echo(f"  {violation}", err=True)
    sys.exit(1)


@ledger.command(name="seal")
@click.pass_context
def seal_command(ctx: click.Context) -> None:
    """Seal every committed transfer not yet in a journal block."""
    block = Ledger(make_engine(_settings(ctx).database_url)).seal()
    if block is None:
        click.echo("nothing new to seal")
    else:
        click.echo(
            f"block {block.block_no}: seq {block.first_seq}-{block.last_seq},"
            f" {block.transfer_count} transfers, head {block.block_hash.hex()}"
        )


@ledger.command(name="export")
@click.option("--format", "fmt", type=click.Choice(["beancount"]), default="beancount")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def export_command(ctx: click.Context, fmt: str, out_path: Path) -> None:
    """Write the whole ledger as a plain-text accounting file for auditors."""
    engine = make_engine(_settings(ctx).database_url)
    with out_path.open("w", encoding="utf-8") as out:
        written = run_read(engine, lambda conn: export(conn, out))
    click.echo(f"{written} transactions written to {out_path} ({fmt})")
