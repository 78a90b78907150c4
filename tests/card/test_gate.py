"""Gates and merchant terminals over the in-process transport."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from card_reader.apdu import Ins
from card_reader.backoffice import BackOfficeClient
from card_reader.certificate import (
    JourneyAction,
    TransactionKind,
    make_load_cryptogram,
    serial_hash,
    verify_certificate,
)
from card_reader.fares import GateMode, find_station
from card_reader.hotlist import HotlistStore, HotlistUpdate
from card_reader.journal import Journal
from card_reader.keys import SoftwareSam
from card_reader.terminal import Gate, MerchantTerminal, TapResult
from card_reader.transport import ApduChannel
from card_reader.uploader import Uploader
from tests.card.backoffice_server import API_KEY, running_back_office
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, SERIAL, CardRig

T0 = 1_735_776_000  # 2025-01-02 07:00 WIB


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_gate(tmp_path: Path, clock: Clock) -> Callable[..., Gate]:
    def make(terminal_id: str, line: str, station: str, mode: GateMode) -> Gate:
        line_, station_ = find_station(line, station)
        directory = tmp_path / terminal_id
        return Gate(
            terminal_id,
            line_,
            station_,
            mode,
            SoftwareSam(AUTH_MASTER),
            Journal(directory, terminal_id),
            HotlistStore(directory),
            clock,
        )

    return make


def tap(rig: CardRig, gate: Gate) -> TapResult:
    rig.transport.tap()
    return gate.process(ApduChannel(rig.transport))


def certificates(gate: Gate) -> list:  # type: ignore[type-arg]
    batch = gate.journal.pending_batch()
    return [] if batch is None else list(batch.certificates)


def test_mrt_entry_and_exit(rig: CardRig, make_gate: Callable[..., Gate], clock: Clock) -> None:
    entry = make_gate("MRT-LBB-E1", "MRT-NS", "Lebak Bulus", GateMode.ENTRY)
    exit_ = make_gate("MRT-BHI-X1", "MRT-NS", "Bundaran HI", GateMode.EXIT)
    first = tap(rig, entry)
    assert (first.opened, first.code, first.amount, first.apdus) == (True, "ok", 0, 3)
    assert first.card == "JO-****-****-1234"
    clock.now += 30 * 60
    second = tap(rig, exit_)
    assert (second.opened, second.amount, second.balance, second.apdus) == (True, 14_000, 36_000, 3)
    journey = second.certificate.journey  # type: ignore[union-attr]
    assert journey is not None and journey.action is JourneyAction.EXIT
    assert (journey.entry_station, journey.exit_station) == (201, 213)
    # The exit gate forwarded the entry certificate it found on the card.
    assert [c.counter for c in certificates(exit_)] == [1, 2]
    assert [c.counter for c in certificates(entry)] == [1]
    assert all(verify_certificate(c, BACK_OFFICE) for c in certificates(exit_))


def test_transjakarta_bus_and_refusals(
    make_rig: Callable[..., CardRig], make_gate: Callable[..., Gate]
) -> None:
    bus = make_gate("TJ1-GBK-01", "TJ-1", "GBK", GateMode.FLAT)
    rig = make_rig(balance=3_000)
    result = tap(rig, bus)
    assert (result.opened, result.code, result.apdus) == (False, "insufficient_funds", 2)
    assert certificates(bus) == []
    assert rig.card.state.balance == 3_000


def test_hotlisted_card_is_blocked_then_refused_at_select(
    rig: CardRig, make_gate: Callable[..., Gate]
) -> None:
    gate = make_gate("KRL-BOO-E1", "KRL-BOGOR", "Bogor", GateMode.ENTRY)
    gate.hotlist.apply(HotlistUpdate(1, frozenset({serial_hash(SERIAL)}), frozenset(), True), 0)
    result = tap(rig, gate)
    assert (result.opened, result.code, result.apdus) == (False, "card_hotlisted", 3)
    assert rig.card.state.blocked
    other = make_gate("KRL-BOO-E2", "KRL-BOGOR", "Bogor", GateMode.ENTRY)
    again = tap(rig, other)
    assert (again.opened, again.code, again.apdus) == (False, "card_blocked", 1)


@pytest.mark.parametrize("retap_same_gate", [True, False])
def test_tearing_after_commit_is_recovered_at_the_next_tap(
    rig: CardRig, make_gate: Callable[..., Gate], clock: Clock, retap_same_gate: bool
) -> None:
    gate = make_gate("TJ1-MONAS-01", "TJ-1", "Monas", GateMode.FLAT)
    neighbour = make_gate("TJ1-MONAS-02", "TJ-1", "Monas", GateMode.FLAT)
    rig.transport.tap()
    rig.transport.tear_next(Ins.DEBIT, after_commit=True)
    torn = gate.process(ApduChannel(rig.transport))
    assert (torn.opened, torn.code) == (False, "card_removed")
    assert rig.card.state.balance == 46_500  # the card did pay
    assert certificates(gate) == []
    clock.now += 5
    retry = tap(rig, gate if retap_same_gate else neighbour)
    assert (retry.opened, retry.code, retry.apdus) == (True, "repeat_tap", 2)
    assert rig.card.state.balance == 46_500  # not charged twice
    holder = gate if retap_same_gate else neighbour
    recovered = certificates(holder)
    assert [(c.counter, c.terminal_id) for c in recovered] == [(1, "TJ1-MONAS-01")]
    assert verify_certificate(recovered[0], BACK_OFFICE)


def test_tearing_before_commit_charges_normally_on_retap(
    rig: CardRig, make_gate: Callable[..., Gate]
) -> None:
    gate = make_gate("TJ1-KOTA-01", "TJ-1", "Kota", GateMode.FLAT)
    rig.transport.tap()
    rig.transport.tear_next(Ins.DEBIT, after_commit=False)
    assert gate.process(ApduChannel(rig.transport)).code == "card_removed"
    assert rig.card.state.counter == 0
    again = tap(rig, gate)
    assert (again.opened, again.amount, again.balance) == (True, 3_500, 46_500)


def test_everything_a_gate_saw_reaches_the_back_office_once(
    rig: CardRig, make_gate: Callable[..., Gate], clock: Clock
) -> None:
    entry = make_gate("KRL-JAK-E1", "KRL-BOGOR", "Jakarta Kota", GateMode.ENTRY)
    exit_ = make_gate("KRL-DEP-X1", "KRL-BOGOR", "Depok", GateMode.EXIT)
    for _ in range(3):
        assert tap(rig, entry).opened
        clock.now += 3_600
        assert tap(rig, exit_).opened
        clock.now += 3_600
    with running_back_office(BACK_OFFICE) as (url, server):
        for gate in (entry, exit_):
            assert Uploader(gate.journal, BackOfficeClient(url, API_KEY)).upload_pending().complete
        assert sorted(counter for _serial, counter in server.certificates) == [1, 2, 3, 4, 5, 6]
    assert rig.card.state.balance == 50_000 - 3 * 4_000


def test_merchant_sale_and_load(rig: CardRig, tmp_path: Path, clock: Clock) -> None:
    terminal = MerchantTerminal(
        "SHOP-0042",
        SoftwareSam(AUTH_MASTER),
        Journal(tmp_path / "shop", "SHOP-0042"),
        HotlistStore(tmp_path / "shop"),
        clock,
    )
    rig.transport.tap()
    sale = terminal.charge(ApduChannel(rig.transport), 12_500)
    assert (sale.opened, sale.balance, sale.apdus) == (True, 37_500, 3)
    assert sale.certificate is not None and sale.certificate.journey is None
    rig.transport.tap()
    too_much = terminal.charge(ApduChannel(rig.transport), 40_000)
    assert (too_much.opened, too_much.code) == (False, "insufficient_funds")

    def issuer(serial: bytes, counter: int, amount: int) -> bytes:
        return make_load_cryptogram(serial, counter, amount, BACK_OFFICE)

    rig.transport.tap()
    load = terminal.load(ApduChannel(rig.transport), 100_000, issuer)
    assert (load.opened, load.balance) == (True, 137_500)
    assert load.certificate is not None and load.certificate.kind is TransactionKind.CREDIT
    rig.transport.tap()
    over = terminal.load(ApduChannel(rig.transport), 1_900_000, issuer)
    assert (over.opened, over.code) == (False, "over_max_balance")

    def replaying(serial: bytes, counter: int, amount: int) -> bytes:
        return make_load_cryptogram(serial, counter - 1, amount, BACK_OFFICE)

    rig.transport.tap()
    replay = terminal.load(ApduChannel(rig.transport), 100_000, replaying)
    assert (replay.opened, replay.code) == (False, "load_cryptogram_invalid")
    assert rig.card.state.balance == 137_500
