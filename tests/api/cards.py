"""A card for tests: it holds its own keys (personalised from the test master keys), keeps
its balance and counter, signs certificates exactly as docs/card-protocol.md says, and
takes a load only with a valid cryptogram for its current counter."""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from typing import Any

from card_reader.certificate import (
    Certificate,
    Journey,
    TransactionKind,
    certificate_mac,
    load_cryptogram_message,
    serial_hash,
)
from card_reader.keys import BackOfficeKeys, aes_cmac, personalize

TEST_CARD_KEYS = BackOfficeKeys.from_hex("11" * 16, "22" * 16)
TEST_AUTH_MASTER = bytes.fromhex("33" * 16)


@dataclass
class SimulatedCard:
    serial: bytes = field(default_factory=lambda: os.urandom(8))
    balance: int = 0
    counter: int = 0

    def __post_init__(self) -> None:
        self.keys = personalize(self.serial, TEST_AUTH_MASTER, TEST_CARD_KEYS)

    @property
    def serial_hex(self) -> str:
        return self.serial.hex()

    @property
    def ref(self) -> str:
        return serial_hash(self.serial)

    def _sign(self, **fields: Any) -> Certificate:
        unsigned = Certificate(card_serial=self.serial, mac=bytes(16), **fields)
        mac = certificate_mac(self.keys.certificate, unsigned.signed_bytes())
        return Certificate(card_serial=self.serial, mac=mac, **fields)

    def debit(
        self,
        amount: int,
        terminal_id: str,
        terminal_seq: int = 1,
        timestamp: int | None = None,
        journey: Journey | None = None,
    ) -> Certificate:
        assert amount <= self.balance, "a card never goes below zero"
        self.balance -= amount
        self.counter += 1
        return self._sign(
            counter=self.counter,
            kind=TransactionKind.DEBIT,
            amount=amount,
            balance_after=self.balance,
            terminal_id=terminal_id,
            terminal_seq=terminal_seq,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            journey=journey,
        )

    def credit(
        self,
        amount: int,
        cryptogram: bytes,
        terminal_id: str,
        terminal_seq: int = 1,
        timestamp: int | None = None,
    ) -> Certificate:
        expected = aes_cmac(
            self.keys.load, load_cryptogram_message(self.serial, self.counter, amount)
        )
        assert hmac.compare_digest(expected, cryptogram), "the card refuses a bad cryptogram"
        self.balance += amount
        self.counter += 1
        return self._sign(
            counter=self.counter,
            kind=TransactionKind.CREDIT,
            amount=amount,
            balance_after=self.balance,
            terminal_id=terminal_id,
            terminal_seq=terminal_seq,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            journey=None,
        )
