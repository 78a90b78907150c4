"""`Ledger.create_accounts_in` and `Ledger.set_max_balance_in`: account changes that commit
or roll back together with the caller's own rows, in the caller's transaction."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Connection, Engine

from ledger import AccountKind, Ledger, LedgerError, NewAccount, run_write
from ledger.codes import AccountResultCode
from tests.conftest import both_backends


class BoomError(Exception):
    pass


def purse(account_id: uuid.UUID) -> NewAccount:
    return NewAccount(
        account_id,
        AccountKind.CARD_PURSE,
        debits_must_not_exceed_credits=True,
        max_balance=2_000_000,
    )


@both_backends
def test_accounts_created_in_a_rolled_back_transaction_do_not_exist(engine: Engine) -> None:
    ledger = Ledger(engine)
    account_id = uuid.uuid4()

    def work(conn: Connection) -> None:
        results = ledger.create_accounts_in(conn, [purse(account_id)])
        assert results[0].code is AccountResultCode.OK
        raise BoomError

    with pytest.raises(BoomError):
        run_write(engine, work)
    assert ledger.get_account(account_id) is None

    run_write(engine, lambda conn: ledger.create_accounts_in(conn, [purse(account_id)]))
    created = ledger.get_account(account_id)
    assert created is not None and created.max_balance == 2_000_000
    again = run_write(engine, lambda conn: ledger.create_accounts_in(conn, [purse(account_id)]))
    assert again[0].code is AccountResultCode.EXISTS


@both_backends
def test_set_max_balance_in_commits_with_the_caller(engine: Engine) -> None:
    ledger = Ledger(engine)
    account_id = uuid.uuid4()
    ledger.create_account(purse(account_id))

    def work(conn: Connection) -> None:
        ledger.set_max_balance_in(conn, account_id, 20_000_000)
        raise BoomError

    with pytest.raises(BoomError):
        run_write(engine, work)
    account = ledger.get_account(account_id)
    assert account is not None and account.max_balance == 2_000_000

    run_write(engine, lambda conn: ledger.set_max_balance_in(conn, account_id, 20_000_000))
    account = ledger.get_account(account_id)
    assert account is not None and account.max_balance == 20_000_000
    with pytest.raises(LedgerError) as refused:
        run_write(engine, lambda conn: ledger.set_max_balance_in(conn, account_id, 0))
    assert refused.value.code is AccountResultCode.MAX_BALANCE_MUST_BE_POSITIVE
