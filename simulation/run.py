"""`jakartaone demo`, start to end: the database, the API, the city, the cards, the day,
then the night (`simulation.night`), with progress bars and a summary.

The day replayed is the last closed business day in Jakarta (yesterday, WIB) unless one is
given: the API runs with its business clock set to that day's evening (JAKARTAONE_CLOCK_
OFFSET_SECONDS), so everything it accepts belongs to that day, while the nightly job that
follows runs on the real clock, after the day has closed.
"""

from __future__ import annotations

import logging
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from card_reader.keys import SoftwareSam
from simulation import incidents
from simulation.city import City, onboard
from simulation.day import HOUR, Day
from simulation.http import Api
from simulation.night import Night, run_night
from simulation.pcsc_lane import PcscLane
from simulation.people import SimClock, make_population
from simulation.processes import ApiServer, RunSecrets, checked, child_environment, run_cli
from simulation.tally import Tally

log = logging.getLogger(__name__)
WIB = timezone(timedelta(hours=7), "WIB")
DAY_ENDS_S = 23 * HOUR
# The API's clock during the day starts that evening (module doc), early enough that a
# long run (about 50 ms per card on a busy 2-core machine) still ends before midnight.
SECONDS_PER_CARD_AT_MOST = 0.05
PCSC_SHARE = 50  # one tap in this many through real PC/SC, when available


class DemoError(RuntimeError):
    """The demo cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class Options:
    cards: int = 20_000
    seed: int = 7
    out: Path = Path("demo-out")
    database_url: str | None = None
    day: date | None = None
    threads: int = 16
    workers: int | None = None
    pcsc: bool = True


@dataclass
class Outcome:
    cards: int
    seed: int
    day: date
    database_url: str
    tally: Tally
    facts: incidents.Facts
    night: Night | None
    pcsc: str
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # CPU seconds, by process
    merchants: int = 0
    gates: int = 0

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())


def last_closed_day() -> date:
    return datetime.now(WIB).date() - timedelta(days=1)


def midnight_wib(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=WIB).timestamp())


class Phases:
    """Each phase's wall time (`Outcome.phases`) and where its CPU went (`Outcome.cpu`):
    this process (the city, the cards, the gates, HTTP clients), the API server's processes,
    and the other child processes (the `jakartaone` commands, and the API server's CPU
    once it has been stopped and reaped, which `api` already counts)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.server: ApiServer | None = None
        self._name = ""
        self._started: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        api, reaped = 0.0, 0.0
        if self.server is not None:
            api, reaped = self.server.cpu_seconds(), self.server.cpu_when_stopped
        commands = children.ru_utime + children.ru_stime - reaped
        return time.perf_counter(), time.process_time(), api, commands

    def start(self, name: str) -> None:
        self.stop()
        log.info("phase: %s", name)
        self._name, self._started = name, self._now()

    def stop(self) -> None:
        if self._name:
            spent = [round(b - a, 2) for a, b in zip(self._started, self._now(), strict=True)]
            wall, demo, api, commands = spent
            self.outcome.phases[self._name] = wall
            self.outcome.cpu[self._name] = {"demo": demo, "api": api, "commands": commands}
            log.info("phase %s: %.1f s, CPU %s", self._name, wall, self.outcome.cpu[self._name])
            self._name = ""


def run(options: Options, console: Console) -> Outcome:
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    day_date = options.day or last_closed_day()
    if options.database_url:
        database_url = options.database_url
    else:
        db_path = out / "jakartaone.sqlite3"
        for stale in out.glob("jakartaone.sqlite3*"):
            stale.unlink()
        database_url = f"sqlite:///{db_path}"
    sqlite = database_url.startswith("sqlite")
    workers = options.workers or (1 if sqlite else 2)
    logging.basicConfig(filename=out / "demo.log", level=logging.INFO, force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    _raise_open_files_limit()  # every device keeps its journal open, every shop its client
    rng = random.Random(options.seed)  # noqa: S311 - a reproducible population, not a secret
    run_secrets = RunSecrets()
    tally = Tally()
    outcome = Outcome(
        options.cards, options.seed, day_date, database_url, tally, incidents.Facts(), None, ""
    )
    phases = Phases(outcome)
    start_s = midnight_wib(day_date)
    server_clock_at_s = max(
        12 * HOUR, 24 * HOUR - max(HOUR, int(options.cards * SECONDS_PER_CARD_AT_MOST))
    )
    offset = int(start_s + server_clock_at_s - time.time())

    console.print(f"[bold]JakartaOne demo[/]: {options.cards:,} cards, seed {options.seed}, "
                  f"business day {day_date} (WIB)")  # fmt: skip
    console.print(f"database: {database_url.split('@')[-1]}")
    phases.start("migrate")
    checked(run_cli(["db", "upgrade"], child_environment(database_url)), "jakartaone db upgrade")
    phases.start("api start")
    server = ApiServer(database_url, run_secrets, out / "api.log", workers, offset)
    server.start()
    phases.server = server
    console.print(f"API: `jakartaone serve` at {server.url} ({workers} worker(s)); "
                  f"its clock is set to {day_date} {server_clock_at_s // HOUR:02d}:"
                  f"{server_clock_at_s % HOUR // 60:02d} WIB for the day")  # fmt: skip
    shm = Path("/dev/shm")  # noqa: S108 - the devices' journals, on tmpfs when there is one
    device_root = Path(
        tempfile.mkdtemp(prefix="jakartaone-demo-", dir=shm if shm.is_dir() else None)
    )
    lane = PcscLane()
    issuer: Api | None = None
    city: City | None = None
    day: Day | None = None
    try:
        issuer_key = server.issuer_key()
        issuer = Api(server.url, issuer_key, pool=options.threads * 2)
        if issuer.get("/v1/cards", limit=1)["data"]:
            raise DemoError("the database already holds cards: give the demo an empty one")
        clock = SimClock(start_s + 4 * HOUR)
        sam = SoftwareSam(run_secrets.authentication_master)
        riders = make_population(
            options.cards, rng, run_secrets.authentication_master, run_secrets.back_office_keys
        )
        with _progress(console) as progress:
            phases.start("onboarding")
            merchants = max(20, options.cards // 100)
            task = progress.add_task("onboarding operators, gates, merchants", total=None)
            city = onboard(
                issuer, server.url, rng, merchants, device_root, sam, clock, tally, options.threads,
                lambda n: progress.advance(task, n),
            )  # fmt: skip
            outcome.merchants, outcome.gates = len(city.shops), len(city.gates)
            progress.update(task, total=progress.tasks[task].completed)

            use_pcsc = options.pcsc and lane.start()
            outcome.pcsc = (
                f"real PC/SC (pcscd + vpcd, reader {lane.reader!r}) for 1 tap in {PCSC_SHARE}"
                if use_pcsc
                else f"in-process transport only (no PC/SC: {lane.why_not or 'disabled'})"
            )
            day = Day(
                start_s, city, riders, issuer, rng, clock, tally, options.threads,
                lane.transports if use_pcsc else None, PCSC_SHARE if use_pcsc else 0,
            )  # fmt: skip
            phases.start("cards and first loads")
            task = progress.add_task("issuing and loading cards", total=len(riders))
            day.progress = _logged(progress, task)
            day.issue_cards()
            phases.start("cards: the first loads' upload")
            day.upload_round()
            day.quiesce()

            phases.start("the day")
            outcome.facts = incidents.plant(
                day, run_secrets.authentication_master, run_secrets.back_office_keys
            )
            day.schedule_riders()
            task = progress.add_task("the day: taps, sales, uploads", total=len(day.events))
            day.progress = _logged(progress, task, lambda: f"simulated {day.clock_text()}")
            day.run_until(DAY_ENDS_S)
            lane.stop()
            tally.requests = issuer.requests + sum(s.api.requests for s in city.shops if s.api)

            phases.start("the night: api stop")
            server.stop()
            outcome.night = run_night(
                day, server, run_secrets, issuer_key, out, day_date, outcome.facts, progress, rng,
                phases.start,
            )  # fmt: skip
        phases.stop()
        return outcome
    finally:
        if day is not None:
            day.close()
        lane.stop()
        server.stop()
        if issuer is not None:
            issuer.close()
        if city is not None:
            for device in city.devices():
                device.journal.close()
            for shop in city.shops:
                if shop.api is not None:
                    shop.api.close()
        shutil.rmtree(device_root, ignore_errors=True)


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _logged(
    progress: Progress, task: TaskID, where: Callable[[], str] = lambda: ""
) -> Callable[[int], None]:
    """Advance `task`, and say how far it is in demo.log every 30 s (a long run's record,
    where the bars are not seen)."""
    logged_at = time.monotonic()

    def advance(n: int) -> None:
        nonlocal logged_at
        progress.advance(task, n)
        if time.monotonic() - logged_at >= 30:
            logged_at = time.monotonic()
            state = progress.tasks[task]
            log.info("%s: %d of %s %s", state.description, state.completed, state.total, where())

    return advance


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
