"""The `jakartaone` command line: a thin root that wires settings to each package's commands."""

from __future__ import annotations

import click

from card_reader.cli import card, gate, keys, terminal
from jakartaone.demo import demo
from jakartaone.export_command import export
from jakartaone.ledger_commands import db, ledger
from jakartaone.settings import SettingsError, load_settings
from merchant_api.cli import api_keys, serve
from reconciliation.nightly.cli import nightly


@click.group()
@click.option(
    "--database-url",
    envvar="JAKARTAONE_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL; default JAKARTAONE_DATABASE_URL or the embedded SQLite file.",
)
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """JakartaOne back office."""
    try:
        ctx.obj = load_settings(**({"database_url": database_url} if database_url else {}))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


main.add_command(db)
main.add_command(demo)
main.add_command(export)
main.add_command(ledger)
main.add_command(serve)
main.add_command(api_keys)
main.add_command(keys)
main.add_command(card)
main.add_command(gate)
main.add_command(terminal)
main.add_command(nightly)


if __name__ == "__main__":
    main()
