"""Commands: `keys`, `card`, `gate` and `terminal` (registered on the `jakartaone` CLI).

Keys come from the environment, never from the command line (where `ps` would show them):
JAKARTAONE_AUTHENTICATION_MASTER_KEY (terminals' SAM; issuing cards),
JAKARTAONE_CERTIFICATE_MASTER_KEY and JAKARTAONE_LOAD_MASTER_KEY (issuer back office;
issuing cards, loads), JAKARTAONE_GATE_API_KEY (a terminal's key for the back office API).
The one exception is `keys diversify`, a key-ceremony tool that takes a master key to
check derivations against other implementations.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from card_reader.backoffice import BackOfficeClient
from card_reader.card import VirtualCard
from card_reader.card_state import (
    REGISTERED_MAX_BALANCE,
    UNREGISTERED_MAX_BALANCE,
    CardState,
    CardStateError,
    FileStore,
    new_serial,
)
from card_reader.certificate import make_load_cryptogram, mask_serial, serial_hash
from card_reader.errors import CardReaderError, NoCardError, PcscServiceUnavailableError
from card_reader.fares import FareConfigError, GateMode, find_station
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal, JournalUnavailableError
from card_reader.keys import (
    ENV_AUTHENTICATION_MASTER_KEY,
    BackOfficeKeys,
    KeyMaterialError,
    SoftwareSam,
    diversify,
    key_from_env,
    key_from_hex,
    personalize,
)
from card_reader.pcsc import PcscContext, PcscTransport, TapMonitor
from card_reader.terminal import Gate, MerchantTerminal, TapResult
from card_reader.transport import ApduChannel
from card_reader.uploader import Uploader
from card_reader.vpcd import DEFAULT_PORT, VpcdCard

ENV_GATE_API_KEY = "JAKARTAONE_GATE_API_KEY"
DEFAULT_READER = "Virtual PCD 00 00"

log = logging.getLogger("card_reader")


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _hex(text: str, name: str) -> bytes:
    try:
        return bytes.fromhex(text.replace(" ", "").replace(":", ""))
    except ValueError:
        raise _fail(f"{name} is not hexadecimal") from None


# keys ---------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """AN10922 key diversification (key ceremonies, cross-checks)."""


@keys.command("diversify")
@click.option("--master-key", required=True, help="AES-128 master key, 32 hex digits.")
@click.option("--input", "data", required=True, help="Diversification input M, 1-31 bytes hex.")
def keys_diversify(master_key: str, data: str) -> None:
    """Print the AN10922 AES-128 diversified key, in hex."""
    try:
        click.echo(diversify(key_from_hex(master_key, "--master-key"), _hex(data, "--input")).hex())
    except KeyMaterialError as error:
        raise _fail(str(error)) from None


# card ---------------------------------------------------------------------------------------


@click.group()
def card() -> None:
    """Issue, inspect and emulate JakartaOne cards."""


@card.command("issue")
@click.option("--state", "state_path", type=click.Path(path_type=Path), required=True)
@click.option("--serial", help="8-byte serial in hex (default: random).")
@click.option("--balance", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--registered", is_flag=True, help="Registered e-money: Rp 20,000,000 limit.")
def card_issue(state_path: Path, serial: str | None, balance: int, registered: bool) -> None:
    """Personalize a new card into a state file (issuer keys from the environment).

    The opening balance is written at personalization, as an issuer's personalization
    bureau would; the back office must record it as the card's opening position.
    """
    if state_path.exists():
        raise _fail(f"{state_path} exists; a card is issued once")
    card_serial = _hex(serial, "--serial") if serial else new_serial()
    if len(card_serial) != 8:
        raise _fail("--serial is 8 bytes")
    try:
        authentication_master = key_from_env(ENV_AUTHENTICATION_MASTER_KEY)
        card_keys = personalize(card_serial, authentication_master, BackOfficeKeys.from_env())
        state = CardState(
            serial=card_serial,
            keys=card_keys,
            balance=balance,
            max_balance=REGISTERED_MAX_BALANCE if registered else UNREGISTERED_MAX_BALANCE,
        )
    except (KeyMaterialError, CardStateError) as error:
        raise _fail(str(error)) from None
    FileStore(state_path).save(state)
    click.echo(f"issued {mask_serial(card_serial)} balance Rp {balance:,}")


@card.command("show")
@click.option("--state", "state_path", type=click.Path(path_type=Path), required=True)
def card_show(state_path: Path) -> None:
    """Show a card's purse (serial masked; its hotlist id in full)."""
    state = _load_state(state_path)
    click.echo(f"card        {mask_serial(state.serial)}")
    click.echo(f"hotlist id  {serial_hash(state.serial)}")
    click.echo(f"balance     Rp {state.balance:,} (max Rp {state.max_balance:,})")
    click.echo(f"counter     {state.counter}")
    click.echo(f"blocked     {'yes' if state.blocked else 'no'}")
    click.echo(f"journey     {state.journey.to_json() if state.journey else '-'}")
    click.echo(f"log         {len(state.log)} certificates")


def _load_state(state_path: Path) -> CardState:
    try:
        return FileStore(state_path).load()
    except CardStateError as error:
        raise _fail(f"{state_path}: {error.code}") from None


@card.command("emulate")
@click.option("--state", "state_path", type=click.Path(path_type=Path), required=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="vpcd port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--removed", is_flag=True, help="Start out of the field (wait for `tap`).")
def card_emulate(state_path: Path, port: int, host: str, removed: bool) -> None:
    """Run the card on a vpcd reader so pcscd sees it.

    Standard input takes commands, one per line: `tap` (bring the card to the reader),
    `remove` (take it away), `quit`. The end of input leaves the card as it is until
    SIGINT or SIGTERM. Every change of the card is committed to the state file atomically.
    """
    store = FileStore(state_path)
    virtual = VpcdCard(VirtualCard(_load_state(state_path), store), host, port)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def tap() -> bool:
        try:
            virtual.tap()
        except OSError:
            click.echo(f"no vpcd reader on {host}:{port} (is pcscd running with vpcd?)", err=True)
            return False
        click.echo("tapped")
        return True

    if not removed and not tap():
        raise SystemExit(1)

    def read_commands() -> None:
        for line in sys.stdin:
            command = line.strip().lower()
            if command == "tap":
                tap()
            elif command == "remove":
                virtual.remove()
                click.echo("removed")
            elif command == "quit":
                break
            elif command:
                click.echo(f"unknown command {command!r} (tap, remove, quit)", err=True)
            sys.stdout.flush()
        else:
            return  # end of input: keep running until a signal
        stop.set()

    threading.Thread(target=read_commands, daemon=True).start()
    sys.stdout.flush()
    while not stop.wait(0.2):
        pass
    virtual.remove()


# gate and terminal ---------------------------------------------------------------------------


def _sam() -> SoftwareSam:
    try:
        return SoftwareSam.from_env()
    except KeyMaterialError as error:
        raise _fail(f"the terminal's SAM key: {error}") from None


def _client(api_url: str) -> BackOfficeClient:
    api_key = os.environ.get(ENV_GATE_API_KEY)
    if not api_key:
        raise _fail(f"{ENV_GATE_API_KEY} is not set")
    return BackOfficeClient(api_url, api_key)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


class _Reader:
    """The PC/SC side of a terminal loop: waits for taps, survives pcscd restarts."""

    def __init__(self, reader_filter: str | None) -> None:
        self.monitor = TapMonitor(reader_filter)
        self._context: PcscContext | None = None

    def next_tap(self, timeout: float) -> str | None:
        try:
            return self.monitor.wait_for_tap(timeout)
        except PcscServiceUnavailableError as error:
            log.warning("PC/SC unavailable (%s); retrying in 2 s", error.detail)
            self.close_context()
            time.sleep(2.0)
            return None

    def check(self, reader_filter: str | None) -> None:
        """Say clearly, once at start, if there is no service or no such reader yet."""
        try:
            with PcscContext() as context:
                context.find_reader(reader_filter)
        except CardReaderError as error:
            log.warning("%s; waiting for it", error)

    def connect(self, reader: str) -> PcscTransport:
        if self._context is None:
            self._context = PcscContext()
        return PcscTransport(self._context, reader)

    def close_context(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None

    def close(self) -> None:
        self.monitor.stop()
        self.close_context()


def _serve_taps(
    reader_filter: str | None,
    handle: Callable[[ApduChannel], TapResult],
    max_taps: int | None,
    stop: threading.Event,
    timeout: float | None = None,
) -> int:
    """Process taps until `max_taps` (or `timeout` seconds without one). Returns how many
    opened."""
    reader = _Reader(reader_filter)
    reader.check(reader_filter)
    processed = opened = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not stop.is_set() and (max_taps is None or processed < max_taps):
            if deadline is not None and time.monotonic() > deadline:
                raise _fail("no card was tapped in time")
            name = reader.next_tap(0.5)
            if name is None:
                continue
            started = time.perf_counter()
            try:
                with reader.connect(name) as transport:
                    result = handle(ApduChannel(transport))
            except NoCardError:
                continue  # gone before we connected: not a tap
            except CardReaderError as error:
                log.warning("tap failed: %s", error)
                reader.close_context()
                continue
            elapsed = (time.perf_counter() - started) * 1000
            processed += 1
            opened += result.opened
            click.echo(f"{result.describe()} ({result.apdus} APDUs, {elapsed:.1f} ms)")
            sys.stdout.flush()
    finally:
        reader.close()
    return opened


def _with_sync(
    journal: Journal, hotlist: HotlistStore, api_url: str | None, interval: float
) -> tuple[threading.Event, threading.Thread | None]:
    stop = threading.Event()
    thread = None
    if api_url:
        uploader = Uploader(journal, _client(api_url), hotlist)
        thread = threading.Thread(target=uploader.run, args=(stop, interval), daemon=True)
        thread.start()
    return stop, thread


@click.group()
def gate() -> None:
    """Transit gates and bus validators."""


@gate.command("run")
@click.option("--station", required=True, help='Station name, e.g. "Lebak Bulus".')
@click.option("--line", required=True, help="Line: TJ-1, MRT-NS, KRL-BOGOR or LRT-JAKARTA.")
@click.option("--mode", type=click.Choice([m.value for m in GateMode]), required=True)
@click.option("--terminal-id", required=True, help="This gate's id (1-16 of A-Z a-z 0-9 . _ -).")
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--reader", default=DEFAULT_READER, show_default=True, help="Reader name part.")
@click.option("--api-url", help="Back office base URL; offline when not given.")
@click.option("--sync-interval", type=float, default=30.0, show_default=True)
@click.option("--max-taps", type=click.IntRange(min=1), help="Stop after this many taps.")
def gate_run(
    station: str,
    line: str,
    mode: str,
    terminal_id: str,
    data_dir: Path,
    reader: str,
    api_url: str | None,
    sync_interval: float,
    max_taps: int | None,
) -> None:
    """Run a gate: wait for taps, decide offline, journal, upload when online."""
    _setup_logging()
    try:
        line_, station_ = find_station(line, station)
        journal = Journal(data_dir, terminal_id)
        hotlist = HotlistStore(data_dir)
        the_gate = Gate(terminal_id, line_, station_, GateMode(mode), _sam(), journal, hotlist)
    except (FareConfigError, ValueError, JournalUnavailableError) as error:
        raise _fail(str(error)) from None
    stop, thread = _with_sync(journal, hotlist, api_url, sync_interval)
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    click.echo(f"gate {terminal_id} at {station_.name} ({line_.name}, {mode}) ready")
    try:
        _serve_taps(reader, the_gate.process, max_taps, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=10)
        journal.close()


@click.command("upload")
@click.option("--terminal-id", required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--api-url", required=True)
def upload(terminal_id: str, data_dir: Path, api_url: str) -> None:
    """Deliver the journal to the back office now and refresh the hotlist."""
    journal = Journal(data_dir, terminal_id)
    try:
        uploader = Uploader(journal, _client(api_url), HotlistStore(data_dir))
        report = uploader.upload_pending()
        hotlist_ok = uploader.refresh_hotlist()
        stats = journal.stats()
    finally:
        journal.close()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing new"
    click.echo(f"{report.batches} batches: {outcomes}; {stats.pending} pending")
    if report.refused:
        click.echo(f"refused batches (kept in the journal): {', '.join(report.refused)}")
    if not report.complete or not hotlist_ok:
        raise _fail(f"not everything was delivered: {report.error or 'hotlist'}")


gate.add_command(upload)


@click.group()
def terminal() -> None:
    """Merchant terminals: sales, and loads at the issuer's service points."""


def _merchant(terminal_id: str, data_dir: Path) -> MerchantTerminal:
    try:
        return MerchantTerminal(
            terminal_id, _sam(), Journal(data_dir, terminal_id), HotlistStore(data_dir)
        )
    except (ValueError, JournalUnavailableError) as error:
        raise _fail(str(error)) from None


_terminal_options = [
    click.option("--amount", type=click.IntRange(min=1), required=True, help="Rupiah."),
    click.option("--terminal-id", required=True),
    click.option("--data-dir", type=click.Path(path_type=Path), required=True),
    click.option("--reader", default=DEFAULT_READER, show_default=True),
    click.option("--timeout", type=float, default=60.0, show_default=True),
]


def _with_terminal_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_terminal_options):
        command = option(command)
    return command


def _one_tap(
    merchant: MerchantTerminal,
    reader: str,
    timeout: float,
    handle: Callable[[ApduChannel], TapResult],
) -> None:
    stop = threading.Event()
    try:
        opened = _serve_taps(reader, handle, 1, stop, timeout)
    finally:
        merchant.journal.close()
    if not opened:
        raise SystemExit(1)


@terminal.command("charge")
@_with_terminal_options
def terminal_charge(
    amount: int, terminal_id: str, data_dir: Path, reader: str, timeout: float
) -> None:
    """Wait for a card and charge one sale to it."""
    merchant = _merchant(terminal_id, data_dir)
    _one_tap(merchant, reader, timeout, lambda channel: merchant.charge(channel, amount))


@terminal.command("load")
@_with_terminal_options
def terminal_load(
    amount: int, terminal_id: str, data_dir: Path, reader: str, timeout: float
) -> None:
    """Wait for a card and load value onto it (issuer service desks only: needs the
    issuer's back office keys to make the load cryptogram)."""
    try:
        back_office = BackOfficeKeys.from_env()
    except KeyMaterialError as error:
        raise _fail(f"loads need the issuer's keys: {error}") from None
    merchant = _merchant(terminal_id, data_dir)

    def cryptogram(serial: bytes, counter: int, value: int) -> bytes:
        return make_load_cryptogram(serial, counter, value, back_office)

    _one_tap(merchant, reader, timeout, lambda channel: merchant.load(channel, amount, cryptogram))


terminal.add_command(upload)
