"""Every kind of bad input gets its own named code, and nothing is written."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ledger import (
    AccountKind,
    AccountStatus,
    BatchTooLargeError,
    Ledger,
    NewAccount,
    PostPending,
    ResultCode,
    Transfer,
    credit,
    debit,
)
from ledger.codes import AccountResultCode
from ledger.types import ID_INT_MAX, MAX_AMOUNT, MAX_BATCH_SIZE
from tests.conftest import both_backends


def _journal_size(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        transfers = conn.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
        postings = conn.execute(sa.text("SELECT count(*) FROM postings")).scalar_one()
    return transfers, postings


@both_backends
def test_each_bad_transfer_has_its_own_code(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a = open_account(AccountKind.ISSUER_FLOAT)
    b = open_account(AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True, max_balance=500)
    frozen = open_account()
    closed = open_account()
    usd = open_account(currency="USD")
    ledger.set_status(frozen, AccountStatus.FROZEN)
    ledger.set_status(closed, AccountStatus.CLOSED)
    unknown = uuid.uuid4()

    def simple(amount: int, src: uuid.UUID = a, dst: uuid.UUID = b, **kw: object) -> Transfer:
        return Transfer.simple(uuid.uuid4(), src, dst, amount, "test", **kw)  # type: ignore[arg-type]

    cases: list[tuple[object, ResultCode]] = [
        (simple(0), ResultCode.AMOUNT_MUST_BE_POSITIVE),
        (simple(-5), ResultCode.AMOUNT_MUST_BE_POSITIVE),
        (simple(MAX_AMOUNT + 1), ResultCode.AMOUNT_EXCEEDS_MAXIMUM),
        (Transfer(uuid.uuid4(), (debit(a, 1),), "test"), ResultCode.POSTINGS_TOO_FEW),
        (
            Transfer(uuid.uuid4(), (debit(a, 1),) + (credit(b, 1),) * 16, "test"),
            ResultCode.POSTINGS_TOO_MANY,
        ),
        (
            Transfer(uuid.uuid4(), (debit(a, 5), credit(a, 5)), "test"),
            ResultCode.ACCOUNTS_MUST_BE_DIFFERENT,
        ),
        (
            Transfer(uuid.uuid4(), (debit(a, 5), credit(b, 4)), "test"),
            ResultCode.TRANSFER_UNBALANCED,
        ),
        (Transfer.simple(uuid.UUID(int=0), a, b, 1, "test"), ResultCode.ID_MUST_NOT_BE_ZERO),
        (
            Transfer.simple(uuid.UUID(int=ID_INT_MAX), a, b, 1, "test"),
            ResultCode.ID_MUST_NOT_BE_INT_MAX,
        ),
        (Transfer.simple(uuid.uuid4(), a, b, 1, "Bad Kind!"), ResultCode.KIND_INVALID),
        (simple(1, metadata={"x": 1.5}), ResultCode.METADATA_INVALID),
        (simple(1, metadata={"x": "y" * 5000}), ResultCode.METADATA_TOO_LARGE),
        (simple(1, timeout_s=5), ResultCode.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (simple(1, pending=True, timeout_s=-1), ResultCode.TIMEOUT_INVALID),
        (simple(1, src=unknown), ResultCode.ACCOUNT_NOT_FOUND),
        (simple(1, dst=frozen), ResultCode.ACCOUNT_FROZEN),
        (simple(1, dst=closed), ResultCode.ACCOUNT_CLOSED),
        (simple(1, dst=usd), ResultCode.CURRENCIES_MUST_MATCH),
        (simple(1, src=b, dst=a), ResultCode.EXCEEDS_CREDITS),
        (simple(501), ResultCode.EXCEEDS_MAX_BALANCE),
        (simple(1, linked_id=uuid.uuid4()), ResultCode.LINKED_TRANSFER_NOT_FOUND),
        (PostPending(uuid.uuid4(), uuid.uuid4()), ResultCode.PENDING_TRANSFER_NOT_FOUND),
    ]
    before = _journal_size(engine)
    results = ledger.submit([request for request, _ in cases])  # type: ignore[misc]
    assert [r.code for r in results] == [code for _, code in cases]
    assert all(r.seq is None for r in results)
    assert _journal_size(engine) == before
    for account in ledger.get_accounts([a, b]).values():
        assert (account.debits_posted, account.credits_posted) == (0, 0)


@both_backends
def test_each_bad_account_has_its_own_code(ledger: Ledger) -> None:
    def new(**kw: object) -> NewAccount:
        return NewAccount(uuid.uuid4(), AccountKind.CARD_PURSE, **kw)  # type: ignore[arg-type]

    cases = [
        (NewAccount(uuid.UUID(int=0), AccountKind.SUSPENSE), AccountResultCode.ID_MUST_NOT_BE_ZERO),
        (new(currency="idr"), AccountResultCode.CURRENCY_INVALID),
        (
            new(debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=True),
            AccountResultCode.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        (
            new(debits_must_not_exceed_credits=True, max_balance=0),
            AccountResultCode.MAX_BALANCE_MUST_BE_POSITIVE,
        ),
        (new(max_balance=10), AccountResultCode.MAX_BALANCE_REQUIRES_BALANCE_FLAG),
        (new(shards=0), AccountResultCode.SHARDS_OUT_OF_RANGE),
        (
            new(debits_must_not_exceed_credits=True, shards=4),
            AccountResultCode.SHARDS_REQUIRE_UNBOUNDED_ACCOUNT,
        ),
        (new(name="x" * 129), AccountResultCode.NAME_TOO_LONG),
    ]
    results = ledger.create_accounts([account for account, _ in cases])
    assert [r.code for r in results] == [code for _, code in cases]
    assert ledger.get_accounts([account.id for account, _ in cases]) == {}


@both_backends
def test_account_creation_is_idempotent(ledger: Ledger) -> None:
    account = NewAccount(uuid.uuid4(), AccountKind.MERCHANT_PAYABLE, shards=4, name="Warung Bu Sri")
    assert ledger.create_accounts([account, account])[1].code is AccountResultCode.EXISTS
    assert ledger.create_accounts([account])[0].code is AccountResultCode.EXISTS
    changed = NewAccount(account.id, AccountKind.MERCHANT_PAYABLE, shards=8, name="Warung Bu Sri")
    assert (
        ledger.create_accounts([changed])[0].code is AccountResultCode.EXISTS_WITH_DIFFERENT_SHARDS
    )
    other_kind = NewAccount(
        account.id, AccountKind.OPERATOR_PAYABLE, shards=4, name="Warung Bu Sri"
    )
    assert (
        ledger.create_accounts([other_kind])[0].code is AccountResultCode.EXISTS_WITH_DIFFERENT_KIND
    )


def test_oversized_batch_is_refused_whole(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a, b = open_account(), open_account()
    batch = [Transfer.simple(uuid.uuid4(), a, b, 1, "test") for _ in range(MAX_BATCH_SIZE + 1)]
    with pytest.raises(BatchTooLargeError):
        ledger.submit(batch)
    assert ledger.transfers(account_id=a) == []


@both_backends
def test_closing_needs_an_empty_account_and_is_final(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a, b = open_account(), open_account()
    ledger.transfer(Transfer.simple(uuid.uuid4(), a, b, 10, "test"))
    with pytest.raises(Exception, match="account_not_empty"):
        ledger.set_status(b, AccountStatus.CLOSED)
    ledger.transfer(Transfer.simple(uuid.uuid4(), b, a, 10, "test"))
    ledger.set_status(b, AccountStatus.CLOSED)
    with pytest.raises(Exception, match="account_closed"):
        ledger.set_status(b, AccountStatus.OPEN)
