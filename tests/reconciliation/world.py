"""A crafted business day for the nightly job's tests: merchants, gates, cards that sign
real certificates, accepted through the API's own acceptance code at a time on that day."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from card_reader.certificate import (
    Certificate,
    Journey,
    TransactionKind,
    certificate_mac,
    serial_hash,
)
from card_reader.keys import BackOfficeKeys
from ledger import Ledger, Transfer, run_write
from merchant_api import chart, schema
from merchant_api.context import ApiContext
from merchant_api.crypto import ApiSecrets
from merchant_api.services.certificates import Caller, Source, accept, parse
from merchant_api.wib import day_bounds_us
from reconciliation.nightly.cards import SERIAL_PURPOSE

CARD_KEYS = BackOfficeKeys.from_hex("11" * 16, "22" * 16)
ROOT_KEY = b"\x07" * 32
HOUR_US = 3600 * 1_000_000


@dataclass
class Card:
    id: uuid.UUID
    serial: bytes
    purse: uuid.UUID
    balance: int
    counter: int = 0

    def sign(self, **fields: Any) -> Certificate:
        unsigned = Certificate(card_serial=self.serial, mac=bytes(16), **fields)
        key = CARD_KEYS.certificate_key(self.serial)
        return Certificate(
            card_serial=self.serial, mac=certificate_mac(key, unsigned.signed_bytes()), **fields
        )

    def debit(
        self, amount: int, terminal: str, seq: int, at: int, journey: Journey | None = None
    ) -> Certificate:
        self.balance -= amount
        self.counter += 1
        return self.sign(
            counter=self.counter,
            kind=TransactionKind.DEBIT,
            amount=amount,
            balance_after=self.balance,
            terminal_id=terminal,
            terminal_seq=seq,
            timestamp=at,
            journey=journey,
        )

    def credit(self, amount: int, terminal: str, seq: int, at: int) -> Certificate:
        """The card's receipt for a load (the cryptogram check is the card's, not tested here)."""
        self.balance += amount
        self.counter += 1
        return self.sign(
            counter=self.counter,
            kind=TransactionKind.CREDIT,
            amount=amount,
            balance_after=self.balance,
            terminal_id=terminal,
            terminal_seq=seq,
            timestamp=at,
            journey=None,
        )


@dataclass
class World:
    engine: Engine
    day: dt.date
    clock_us: int = 0
    owners: dict[str, uuid.UUID] = field(default_factory=dict)

    def __post_init__(self) -> None:
        start, _ = day_bounds_us(self.day)
        self.clock_us = start + 9 * HOUR_US
        self.ledger = Ledger(self.engine, clock=self.tick)
        chart.ensure_issuer_accounts(self.ledger)
        self.secrets = ApiSecrets.from_root(ROOT_KEY)
        self.ctx = ApiContext(
            engine=self.engine,
            ledger=self.ledger,
            secrets=self.secrets,
            card_keys=CARD_KEYS,
            run_background=False,
        )
        self.api_key = uuid.uuid4()

    def tick(self) -> int:
        self.clock_us += 1_000
        return self.clock_us

    @property
    def seconds(self) -> int:
        return self.clock_us // 1_000_000

    def merchant(self, name: str, kind: str = "merchant", mdr_bps: int = 100) -> uuid.UUID:
        mid = uuid.uuid5(uuid.NAMESPACE_DNS, f"merchant:{name}")
        account = chart.payable_account(mid, kind == "operator")
        self.ledger.create_accounts([account])
        now = self.tick()
        run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.insert(schema.merchants).values(
                    id=mid,
                    kind=kind,
                    name=name,
                    mcc="5411" if kind == "merchant" else "4111",
                    kota="Jakarta Pusat",
                    kecamatan="Menteng",
                    mdr_bps=mdr_bps,
                    payout_bank_account=f"BANK-{name}",
                    payable_account_id=account.id,
                    created_us=now,
                    updated_us=now,
                )
            ),
        )
        self.owners[name] = mid
        return mid

    def terminal(self, merchant: uuid.UUID, code: str, kind: str = "pos") -> uuid.UUID:
        tid = uuid.uuid5(uuid.NAMESPACE_DNS, f"terminal:{code}")
        run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.insert(schema.terminals).values(
                    id=tid,
                    terminal_code=code,
                    merchant_id=merchant,
                    kind=kind,
                    line="MRT-N" if kind == "gate" else None,
                    station="Blok M" if kind == "gate" else None,
                    created_us=self.tick(),
                )
            ),
        )
        return tid

    def card(self, balance: int) -> Card:
        serial = os.urandom(8)
        card_id = uuid.uuid4()
        purse = chart.purse_account(card_id, registered=False)
        self.ledger.create_accounts([purse])
        now = self.tick()
        run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.insert(schema.cards).values(
                    id=card_id,
                    serial_hash=self.secrets.serial_hash(serial),
                    serial_sealed=self.secrets.seal(SERIAL_PURPOSE, serial),
                    hotlist_id=serial_hash(serial),
                    purse_account_id=purse.id,
                    created_us=now,
                    updated_us=now,
                )
            ),
        )
        if balance:
            self.post(Transfer.simple(uuid.uuid4(), chart.ISSUER_FLOAT, purse.id, balance, "load"))
        return Card(card_id, serial, purse.id, balance)

    def pending_load(self, card: Card, amount: int) -> uuid.UUID:
        """A load the issuer authorized at the card's current counter, not yet confirmed."""
        load_id = uuid.uuid4()
        self.post(
            Transfer.simple(load_id, chart.ISSUER_FLOAT, card.purse, amount, "load", pending=True)
        )
        now = self.tick()
        run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.insert(schema.loads).values(
                    id=load_id,
                    card_id=card.id,
                    amount=amount,
                    channel="bank_transfer",
                    card_counter=card.counter,
                    month=str(self.day)[:7],
                    api_key_id=self.api_key,
                    business_date=str(self.day),
                    created_us=now,
                )
            ),
        )
        return load_id

    def post(self, transfer: Transfer) -> None:
        result = self.ledger.submit([transfer])[0]
        assert result.code.succeeded, result.code

    def submit(self, *certs: Certificate, source: Source = "api") -> list[str]:
        """Accept certificates as the API does, at the world's clock; the outcomes."""
        items = [parse(self.ctx, cert.to_json()) for cert in certs]
        now = self.tick()
        decided = run_write(
            self.engine,
            lambda conn: accept(
                conn,
                self.ctx,
                items,
                Caller(self.api_key, None),
                source,
                now,  # type: ignore[arg-type]
            ),
        )
        return [d.reason or d.outcome for d in decided]

    def batch(self, terminal_code: str, first: int, last: int) -> None:
        terminal = run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.select(schema.terminals).where(schema.terminals.c.terminal_code == terminal_code)
            ).one(),
        )
        now = self.tick()
        run_write(
            self.engine,
            lambda conn: conn.execute(
                sa.insert(schema.gate_batches).values(
                    id=uuid.uuid4(),
                    terminal_id=terminal.id,
                    merchant_id=terminal.merchant_id,
                    api_key_id=self.api_key,
                    first_terminal_seq=first,
                    last_terminal_seq=last,
                    item_count=0,
                    posted_count=0,
                    duplicate_count=0,
                    quarantined_count=0,
                    request_digest=hashlib.sha256(f"{terminal_code}{first}".encode()).digest(),
                    answer=json.dumps({}),
                    business_date=self.day.isoformat(),
                    received_us=now,
                )
            ),
        )

    def next_day(self) -> None:
        self.day = self.day + dt.timedelta(days=1)
        start, _ = day_bounds_us(self.day)
        self.clock_us = start + 9 * HOUR_US
