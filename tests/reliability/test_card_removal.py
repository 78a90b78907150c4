"""The card leaves the field at every step of every command sequence a terminal runs:
before the card processes that command, and after it committed but before the answer
arrived. The card stays consistent and the next tap finishes the job exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from card_reader.card import VirtualCard
from card_reader.card_state import MemoryStore
from card_reader.certificate import (
    Certificate,
    TransactionKind,
    make_load_cryptogram,
    serial_hash,
    verify_certificate,
)
from card_reader.errors import CardRemovedError
from card_reader.fares import GateMode, find_station
from card_reader.hotlist import HotlistStore, HotlistUpdate
from card_reader.journal import Journal
from card_reader.keys import SoftwareSam
from card_reader.terminal import Gate, MerchantTerminal, TapResult
from card_reader.transport import ApduChannel, InProcessTransport
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, SERIAL, new_state

T0 = 1_735_776_000  # 2025-01-02 07:00 WIB
START_BALANCE = 50_000


class TearAt:
    """A reader whose card leaves the field at exchange `at`: before the card sees the
    command, or after it processed (and committed) it with the answer lost."""

    def __init__(self, inner: InProcessTransport, at: int | None, after_commit: bool) -> None:
        self.inner, self.at, self.after_commit = inner, at, after_commit
        self.exchanges = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.exchanges += 1
        if self.exchanges == self.at:
            if self.after_commit:
                self.inner.card.process(apdu)
            self.inner.remove()
            raise CardRemovedError("the card left the field during the command")
        return self.inner.transmit(apdu)


@dataclass
class World:
    """A card and the terminals of one command sequence."""

    card: VirtualCard
    transport: InProcessTransport
    terminals: dict[str, Gate | MerchantTerminal]
    clock: list[int]

    def run(self, step: Step, at: int | None = None, after_commit: bool = False) -> TapResult:
        self.transport.tap()
        tearing = TearAt(self.transport, at, after_commit)
        result = step(self, ApduChannel(tearing))
        self.last_exchanges = tearing.exchanges
        return result

    def journaled(self) -> dict[str, list[tuple[bytes, int]]]:
        """Each terminal's journaled certificates, as (card serial, counter), in order."""
        found = {}
        for terminal_id, terminal in self.terminals.items():
            records = [
                json.loads(line.split(" ", 1)[1])
                for line in terminal.journal.path.read_text().splitlines()
            ]
            certs = [
                Certificate.from_json(r["cert"]) for r in records if r["type"] == "certificate"
            ]
            found[terminal_id] = [(c.card_serial, c.counter) for c in certs]
        return found


Step = Callable[[World, ApduChannel], TapResult]


def make_world(tmp_path: Path) -> World:
    clock = [T0]
    terminals: dict[str, Gate | MerchantTerminal] = {}
    gates = {
        "TJ1-MONAS-01": ("TJ-1", "Monas", GateMode.FLAT),
        "MRT-BLM-IN": ("MRT-NS", "Blok M", GateMode.ENTRY),
        "MRT-BHI-OUT": ("MRT-NS", "Bundaran HI", GateMode.EXIT),
    }
    for terminal_id, (line, station, mode) in gates.items():
        line_, station_ = find_station(line, station)
        folder = tmp_path / terminal_id
        terminals[terminal_id] = Gate(
            terminal_id,
            line_,
            station_,
            mode,
            SoftwareSam(AUTH_MASTER),
            Journal(folder, terminal_id),
            HotlistStore(folder),
            lambda: clock[0],
        )
    folder = tmp_path / "SHOP-1"
    terminals["SHOP-1"] = MerchantTerminal(
        "SHOP-1",
        SoftwareSam(AUTH_MASTER),
        Journal(folder, "SHOP-1"),
        HotlistStore(folder),
        lambda: clock[0],
    )
    card = VirtualCard(new_state(balance=START_BALANCE), MemoryStore())
    return World(card, InProcessTransport(card), terminals, clock)


def _gate(terminal_id: str) -> Step:
    def step(world: World, channel: ApduChannel) -> TapResult:
        gate = world.terminals[terminal_id]
        assert isinstance(gate, Gate)
        return gate.process(channel)

    return step


def _sale(world: World, channel: ApduChannel) -> TapResult:
    shop = world.terminals["SHOP-1"]
    assert isinstance(shop, MerchantTerminal)
    return shop.charge(channel, 12_500)


def _load(world: World, channel: ApduChannel) -> TapResult:
    shop = world.terminals["SHOP-1"]
    assert isinstance(shop, MerchantTerminal)
    return shop.load(
        channel,
        20_000,
        lambda serial, counter, amount: make_load_cryptogram(serial, counter, amount, BACK_OFFICE),
    )


def _hotlisted(world: World, channel: ApduChannel) -> TapResult:
    gate = world.terminals["TJ1-MONAS-01"]
    if gate.hotlist.version == 0:
        gate.hotlist.apply(HotlistUpdate(1, frozenset({serial_hash(SERIAL)}), frozenset(), True), 0)
    return _gate("TJ1-MONAS-01")(world, channel)


def _enter_first(world: World) -> None:
    assert world.run(_gate("MRT-BLM-IN")).opened
    world.clock[0] += 20 * 60


# name -> (set-up before the sequence, the sequence, whether a clean run opens)
SEQUENCES: dict[str, tuple[Callable[[World], None] | None, Step, bool]] = {
    "flat-fare gate": (None, _gate("TJ1-MONAS-01"), True),
    "entry gate": (None, _gate("MRT-BLM-IN"), True),
    "exit gate": (_enter_first, _gate("MRT-BHI-OUT"), True),
    "sale": (None, _sale, True),
    "load": (None, _load, True),
    "hotlisted card": (None, _hotlisted, False),
}


def assert_consistent(world: World, start_balance: int) -> None:
    """The card's own record adds up: every certificate in its log verifies, counters run
    without a gap up to the card's counter, and the balance is the start balance plus
    credits minus debits."""
    state = world.card.state
    log = [Certificate.from_bytes(raw) for raw in state.log]
    assert all(verify_certificate(cert, BACK_OFFICE) for cert in log)
    assert [c.counter for c in log] == list(range(state.counter, 0, -1))
    moved = sum(c.amount if c.kind is TransactionKind.CREDIT else -c.amount for c in log)
    assert state.balance == start_balance + moved
    if log:
        assert log[0].balance_after == state.balance


def clean_run(
    tmp_path: Path, name: str
) -> tuple[int, int, int, dict[str, list[tuple[bytes, int]]]]:
    """(exchanges, balance, counter, journals) of the sequence run without a tear."""
    setup, step, opens = SEQUENCES[name]
    world = make_world(tmp_path / "clean")
    if setup:
        setup(world)
    result = world.run(step)
    assert result.opened is opens, result
    state = world.card.state
    return world.last_exchanges, state.balance, state.counter, world.journaled()


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_card_removed_at_every_step_recovers_at_the_next_tap(tmp_path: Path, name: str) -> None:
    """Promise: whichever command the card leaves during, and whether or not it had
    committed that command, the card's state stays consistent, and the next tap finishes
    the operation exactly once: the same balance, counter and journal as one clean run,
    every certificate journaled once, nothing charged or loaded twice."""
    exchanges, balance, counter, journaled = clean_run(tmp_path, name)
    assert exchanges >= 2
    setup, step, opens = SEQUENCES[name]
    for at in range(1, exchanges + 1):
        for after_commit in (False, True):
            world = make_world(tmp_path / f"{at}-{after_commit}")
            if setup:
                setup(world)
            torn = world.run(step, at, after_commit)
            case = f"{name}: removed at exchange {at}, after commit {after_commit}"
            assert (torn.opened, torn.code) == (False, "card_removed"), case
            assert_consistent(world, START_BALANCE)
            world.clock[0] += 5
            again = world.run(step)
            assert again.opened is opens, (case, again)
            state = world.card.state
            assert (state.balance, state.counter) == (balance, counter), case
            assert world.journaled() == journaled, case  # each certificate once per journal
            assert_consistent(world, START_BALANCE)
