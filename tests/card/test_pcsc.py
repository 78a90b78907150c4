"""The card through the real stack: pyscard -> pcscd -> vpcd -> the virtual card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card_reader.apdu import SW, Command, Ins
from card_reader.card import VirtualCard
from card_reader.card_state import MemoryStore
from card_reader.certificate import verify_certificate
from card_reader.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    PcscServiceUnavailableError,
    ReaderUnavailableError,
)
from card_reader.fares import GateMode, find_station
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal
from card_reader.keys import SoftwareSam
from card_reader.pcsc import PcscContext, PcscTransport, TapMonitor
from card_reader.pcsc import _error as pcsc_error
from card_reader.pcscd import PcscdProcess
from card_reader.protocol import CardSession
from card_reader.terminal import Gate
from card_reader.transport import ApduChannel
from card_reader.vpcd import VpcdCard
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, VPCD_READER, new_state

NOW = 1_735_700_000


def session_on(transport: PcscTransport) -> CardSession:
    return CardSession(ApduChannel(transport), SoftwareSam(AUTH_MASTER))


def test_a_debit_through_pcscd_takes_three_round_trips(vpcd_card: Callable[..., VpcdCard]) -> None:
    card = VirtualCard(new_state(balance=20_000), MemoryStore())
    virtual = vpcd_card(card)
    virtual.tap()
    with (
        PcscContext() as context,
        PcscTransport.when_present(
            context, context.find_reader(VPCD_READER), timeout=5
        ) as transport,
    ):
        session = session_on(transport)
        session.select()
        assert session.authenticate().balance == 20_000
        cert = session.debit(
            amount=3_500, terminal_id="TJ1-GBK-01", terminal_seq=1, timestamp=NOW, journey=None
        )
        assert session.channel.exchanges == 3
    assert verify_certificate(cert, BACK_OFFICE)
    assert card.state.balance == 16_500
    assert virtual.apdus == 3


def test_long_answers_and_wrong_le_through_pcscd(vpcd_card: Callable[..., VpcdCard]) -> None:
    card = VirtualCard(new_state(balance=100_000), MemoryStore())
    vpcd_card(card).tap()
    with (
        PcscContext() as context,
        PcscTransport.when_present(
            context, context.find_reader(VPCD_READER), timeout=5
        ) as transport,
    ):
        for seq in range(1, 13):
            session = session_on(transport)
            session.select()
            session.authenticate()
            session.debit(
                amount=10, terminal_id="T-1", terminal_seq=seq, timestamp=NOW, journey=None
            )
        session = session_on(transport)
        session.select()
        session.authenticate()
        before = session.channel.exchanges
        log = session.read_log(12)
        assert [c.terminal_seq for c in log] == list(range(12, 0, -1))
        assert session.channel.exchanges - before >= 2  # 61XX + GET RESPONSE
        channel = ApduChannel(transport)
        select = Command(0x00, Ins.SELECT, 4, 0, bytes.fromhex("F04A414B4F4E4531"), 3)
        assert channel.send(select).sw == SW.OK
        assert channel.exchanges == 2  # 6C1A, then again with Le = 26


@pytest.mark.parametrize("after_commit", [False, True])
def test_card_pulled_mid_debit(vpcd_card: Callable[..., VpcdCard], after_commit: bool) -> None:
    card = VirtualCard(new_state(balance=20_000), MemoryStore())
    virtual = vpcd_card(card)
    virtual.tap()
    with PcscContext() as context:
        reader = context.find_reader(VPCD_READER)
        with PcscTransport.when_present(context, reader, timeout=5) as transport:
            session = session_on(transport)
            session.select()
            session.authenticate()
            virtual.tear_next(Ins.DEBIT, after_commit=after_commit)
            with pytest.raises(CardRemovedError):
                session.debit(
                    amount=5_000, terminal_id="T-1", terminal_seq=9, timestamp=NOW, journey=None
                )
        assert card.state.balance == (15_000 if after_commit else 20_000)
        assert len(card.state.log) == (1 if after_commit else 0)
        with pytest.raises(NoCardError):
            PcscTransport.when_present(context, reader, timeout=1.0)
        virtual.tap()
        with PcscTransport.when_present(context, reader, timeout=5) as transport:
            session = session_on(transport)
            session.select()
            last = session.authenticate().last_certificate
        assert (last is not None) is after_commit


def test_tap_detection_and_no_card(vpcd_card: Callable[..., VpcdCard]) -> None:
    card = VirtualCard(new_state(), MemoryStore())
    virtual = vpcd_card(card)
    monitor = TapMonitor(VPCD_READER)
    try:
        monitor.start()
        assert monitor.wait_for_tap(0.2) is None
        with PcscContext() as context, pytest.raises(NoCardError):
            PcscTransport(context, context.find_reader(VPCD_READER))
        virtual.tap()
        assert monitor.wait_for_tap(5.0) == VPCD_READER
    finally:
        monitor.stop()


def test_no_matching_reader(pcscd: PcscdProcess | None) -> None:
    with PcscContext() as context:
        assert VPCD_READER in context.readers()
        with pytest.raises(NoReaderError) as info:
            context.find_reader("Reader That Is Not There")
    assert info.value.code == "no_reader"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(apdus=st.lists(st.binary(min_size=4, max_size=200), min_size=1, max_size=5))
def test_random_apdus_through_pcscd_always_get_a_status_word(
    vpcd_card: Callable[..., VpcdCard], apdus: list[bytes]
) -> None:
    card = VirtualCard(new_state(), MemoryStore())
    virtual = vpcd_card(card)
    virtual.tap()
    with (
        PcscContext() as context,
        PcscTransport.when_present(
            context, context.find_reader(VPCD_READER), timeout=5
        ) as transport,
    ):
        for apdu in apdus:
            raw = transport.transmit(apdu)
            assert len(raw) >= 2
            assert int.from_bytes(raw[-2:], "big") != SW.NO_PRECISE_DIAGNOSIS
    virtual.remove()
    assert card.state.balance == 50_000 and card.state.counter == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_pcscd_going_away_and_coming_back(
    vpcd_card: Callable[..., VpcdCard], pcscd: PcscdProcess | None
) -> None:
    if pcscd is None:
        pytest.skip("pcscd was not started by these tests, so they may not stop it")
    card = VirtualCard(new_state(), MemoryStore())
    virtual = vpcd_card(card)
    virtual.tap()
    monitor = TapMonitor(VPCD_READER)
    context = PcscContext()
    transport = PcscTransport.when_present(context, context.find_reader(VPCD_READER), timeout=5)
    session = session_on(transport)
    session.select()
    pcscd.stop()
    with pytest.raises((PcscServiceUnavailableError, CardRemovedError)) as info:
        session.authenticate()
    assert info.value.code in ("pcsc_service_unavailable", "card_removed")
    with pytest.raises(PcscServiceUnavailableError):
        PcscContext()
    with pytest.raises(PcscServiceUnavailableError):
        monitor.wait_for_tap(0.5)
    transport.close()
    context.close()
    virtual.remove()
    pcscd.start()
    virtual.tap()
    try:
        assert monitor.wait_for_tap(5.0) == VPCD_READER
    finally:
        monitor.stop()
    with (
        PcscContext() as context,
        PcscTransport.when_present(
            context, context.find_reader(VPCD_READER), timeout=5
        ) as transport,
    ):
        session = session_on(transport)
        session.select()
        assert session.authenticate().balance == 50_000


@pytest.mark.parametrize(
    ("name", "connecting", "error"),
    [
        ("SCARD_E_NO_SERVICE", False, PcscServiceUnavailableError),
        ("SCARD_E_SERVICE_STOPPED", False, PcscServiceUnavailableError),
        ("SCARD_E_READER_UNAVAILABLE", False, ReaderUnavailableError),
        ("SCARD_E_UNKNOWN_READER", True, ReaderUnavailableError),
        ("SCARD_E_NO_READERS_AVAILABLE", False, NoReaderError),
        ("SCARD_W_REMOVED_CARD", False, CardRemovedError),
        ("SCARD_W_REMOVED_CARD", True, NoCardError),
        ("SCARD_E_NO_SMARTCARD", True, NoCardError),
    ],
)
def test_pcsc_result_codes_become_named_errors(name: str, connecting: bool, error: type) -> None:
    import smartcard.scard

    mapped = pcsc_error(getattr(smartcard.scard, name), connecting=connecting)
    assert type(mapped) is error
    assert "0x8010" in str(mapped)


def test_gate_tap_torn_through_pcscd_is_recovered(
    vpcd_card: Callable[..., VpcdCard], tmp_path: Path
) -> None:
    card = VirtualCard(new_state(balance=20_000), MemoryStore())
    virtual = vpcd_card(card)
    line, station = find_station("KRL-BOGOR", "Manggarai")
    gate = Gate(
        "KRL-MRI-E1",
        line,
        station,
        GateMode.ENTRY,
        SoftwareSam(AUTH_MASTER),
        Journal(tmp_path, "KRL-MRI-E1"),
        HotlistStore(tmp_path),
    )
    virtual.tap()
    with PcscContext() as context:
        reader = context.find_reader(VPCD_READER)
        virtual.tear_next(Ins.DEBIT, after_commit=True)
        with PcscTransport.when_present(context, reader, timeout=5) as transport:
            torn = gate.process(ApduChannel(transport))
        assert (torn.opened, torn.code) == (False, "card_removed")
        assert card.state.counter == 1 and gate.journal.stats().certificates == 0
        virtual.tap()
        with PcscTransport.when_present(context, reader, timeout=5) as transport:
            retry = gate.process(ApduChannel(transport))
    assert (retry.opened, retry.code) == (True, "repeat_tap")
    assert gate.journal.stats().certificates == 1
    assert card.state.counter == 1 and card.state.balance == 20_000
    gate.journal.close()
