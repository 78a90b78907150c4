"""`jakartaone demo`: a day of JakartaOne in Jakarta, end to end (the `simulation` package)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from simulation.run import DemoError, Options, run
from simulation.summary import print_summary, results


@click.command()
@click.option("--cards", default=20_000, show_default=True, help="Cards to issue.")
@click.option("--seed", default=7, show_default=True, help="The population and day's seed.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where the database, reports and logs go.")  # fmt: skip
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The business day to replay (default: yesterday in Jakarta).")  # fmt: skip
@click.option("--database-url", default=None,
              help="An empty database; default: a new SQLite file in --out.")  # fmt: skip
@click.option("--threads", default=16, show_default=True, help="Concurrent HTTP requests.")
@click.option("--no-pcsc", is_flag=True, help="Every tap in-process, even with pcscd.")
def demo(
    cards: int,
    seed: int,
    out: Path,
    day: object,
    database_url: str | None,
    threads: int,
    no_pcsc: bool,
) -> None:
    """Run a day of JakartaOne through every real part, then the night after it."""
    console = Console()
    options = Options(
        cards=cards,
        seed=seed,
        out=out,
        database_url=database_url,
        day=day.date() if hasattr(day, "date") else None,
        threads=threads,
        pcsc=not no_pcsc,
    )
    try:
        outcome = run(options, console)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(outcome, console)
    summary = out / "summary.json"
    summary.write_text(json.dumps(results(outcome), indent=2, sort_keys=True, default=str))
    console.print(f"numbers for machines: {summary}")
    if outcome.night is not None and not outcome.night.verify_ok:
        raise SystemExit(1)
