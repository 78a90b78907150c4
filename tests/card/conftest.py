"""Fixtures for the card tests: issuer keys, personalized virtual cards, sessions."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from card_reader.card import VirtualCard
from card_reader.card_state import UNREGISTERED_MAX_BALANCE, CardState, MemoryStore
from card_reader.certificate import Certificate, TransactionKind, certificate_mac
from card_reader.errors import CardReaderError, PcscServiceUnavailableError
from card_reader.keys import BackOfficeKeys, SoftwareSam, personalize
from card_reader.pcsc import PcscContext
from card_reader.pcscd import PcscdProcess, ensure_pcscd
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel, InProcessTransport
from card_reader.vpcd import DEFAULT_PORT as VPCD_PORT
from card_reader.vpcd import VpcdCard

AUTH_MASTER = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
BACK_OFFICE = BackOfficeKeys(
    bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"),
    bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"),
)
SERIAL = bytes.fromhex("4a4f000000001234")


def new_state(
    serial: bytes = SERIAL, balance: int = 50_000, max_balance: int = UNREGISTERED_MAX_BALANCE
) -> CardState:
    return CardState(
        serial=serial,
        keys=personalize(serial, AUTH_MASTER, BACK_OFFICE),
        balance=balance,
        max_balance=max_balance,
    )


@dataclass
class CardRig:
    """A card in the field of an in-process reader, and a terminal session on it."""

    card: VirtualCard
    store: MemoryStore
    transport: InProcessTransport
    channel: ApduChannel
    session: CardSession

    def new_session(self, sam: SoftwareSam | None = None) -> CardSession:
        self.transport.tap()
        self.channel = ApduChannel(self.transport)
        self.session = CardSession(self.channel, sam or SoftwareSam(AUTH_MASTER))
        return self.session


@pytest.fixture
def make_rig() -> Callable[..., CardRig]:
    def make(balance: int = 50_000, **kwargs: object) -> CardRig:
        store = MemoryStore()
        card = VirtualCard(new_state(balance=balance, **kwargs), store)  # type: ignore[arg-type]
        transport = InProcessTransport(card)
        channel = ApduChannel(transport)
        return CardRig(
            card, store, transport, channel, CardSession(channel, SoftwareSam(AUTH_MASTER))
        )

    return make


@pytest.fixture
def rig(make_rig: Callable[..., CardRig]) -> CardRig:
    return make_rig()


VPCD_READER = "Virtual PCD 00 00"


def _unavailable(reason: str) -> None:
    if os.environ.get("JAKARTAONE_CI"):
        pytest.fail(f"real PC/SC is required on CI: {reason}")
    pytest.skip(f"real PC/SC tests need pcscd and vsmartcard-vpcd: {reason}")


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdProcess | None]:
    """pcscd with the vpcd reader: started here (and stopped at the end) unless it runs."""
    log_path = tmp_path_factory.mktemp("pcscd") / "pcscd.log"
    try:
        process = ensure_pcscd(log_path)
    except PcscServiceUnavailableError as error:
        _unavailable(str(error))
        raise
    try:
        with PcscContext() as context:
            context.find_reader(VPCD_READER)
    except CardReaderError as error:
        if process is not None:
            process.stop()
        _unavailable(f"pcscd runs without the vpcd reader ({error})")
    yield process
    if process is not None:
        process.stop()


@pytest.fixture
def vpcd_card(pcscd: PcscdProcess | None) -> Iterator[Callable[..., VpcdCard]]:
    """Make virtual cards on vpcd's first reader; every one is removed after the test."""
    made: list[VpcdCard] = []

    def make(card: VirtualCard) -> VpcdCard:
        virtual = VpcdCard(card, port=VPCD_PORT)
        made.append(virtual)
        return virtual

    yield make
    for virtual in made:
        virtual.remove()
    # Let pcscd see the card leave before the next test taps another one.
    with contextlib.suppress(CardReaderError), PcscContext() as context:
        deadline = time.monotonic() + 3
        while context.card_present(VPCD_READER) and time.monotonic() < deadline:
            time.sleep(0.05)


def signed_certificate(
    counter: int,
    terminal_seq: int,
    terminal_id: str = "GATE-1",
    serial: bytes = SERIAL,
    amount: int = 3_500,
) -> Certificate:
    """A certificate exactly as the card `serial` would sign it."""
    unsigned = Certificate(
        card_serial=serial,
        counter=counter,
        kind=TransactionKind.DEBIT,
        amount=amount,
        balance_after=100_000 - counter * amount,
        terminal_id=terminal_id,
        terminal_seq=terminal_seq,
        timestamp=1_735_700_000 + counter,
        journey=None,
        mac=bytes(16),
    )
    mac = certificate_mac(BACK_OFFICE.certificate_key(serial), unsigned.signed_bytes())
    return dataclasses.replace(unsigned, mac=mac)
