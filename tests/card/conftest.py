"""Fixtures for the card tests: issuer keys, personalized virtual cards, sessions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from card_reader.card import VirtualCard
from card_reader.card_state import UNREGISTERED_MAX_BALANCE, CardState, MemoryStore
from card_reader.keys import BackOfficeKeys, SoftwareSam, personalize
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel, InProcessTransport

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
