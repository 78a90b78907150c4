from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from ledger import AccountKind, Ledger, MonotonicClock, NewAccount


class FakeTime:
    """A wall clock the test moves by hand (microseconds)."""

    def __init__(self, start_us: int = 1_790_000_000_000_000) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def ledger(engine: Engine, fake_time: FakeTime) -> Ledger:
    return Ledger(engine, clock=MonotonicClock(fake_time))


@pytest.fixture
def open_account(ledger: Ledger) -> Callable[..., uuid.UUID]:
    """Create an account and return its id; keyword arguments go to NewAccount."""

    def make(kind: AccountKind = AccountKind.SUSPENSE, **options: object) -> uuid.UUID:
        account_id = uuid.uuid4()
        ledger.create_account(NewAccount(account_id, kind, **options))  # type: ignore[arg-type]
        return account_id

    return make
