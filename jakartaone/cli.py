"""The `jakartaone` command line: a thin root that wires settings to each package's commands.

Each command is imported only when it is run (or listed by --help): `jakartaone db
upgrade` does not load the HTTP server, DuckDB and the analytics stack, so every command
starts in the time its own work needs (the demo starts about ten of them).
"""

from __future__ import annotations

import importlib

import click

from jakartaone.settings import SettingsError, load_settings

COMMANDS = {
    "api-keys": "merchant_api.cli:api_keys",
    "breaks": "reconciliation.nightly.breaks_cli:breaks",
    "card": "card_reader.cli:card",
    "db": "jakartaone.ledger_commands:db",
    "demo": "jakartaone.demo:demo",
    "export": "jakartaone.export_command:export",
    "gate": "card_reader.cli:gate",
    "keys": "card_reader.cli:keys",
    "ledger": "jakartaone.ledger_commands:ledger",
    "nightly": "reconciliation.nightly.cli:nightly",
    "serve": "merchant_api.cli:serve",
    "terminal": "card_reader.cli:terminal",
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name, on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
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


if __name__ == "__main__":
    main()
