"""The auditors' export is accepted by beancount's own checker, and `jakartaone ledger
verify` answers with its exit code."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from beancount import loader
from sqlalchemy.engine import Engine

from ledger import AccountKind, Ledger, PostPending, Transfer, credit, debit
from ledger.export_beancount import account_name
from tests.conftest import both_backends


def _day_of_business(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> dict[str, uuid.UUID]:
    accounts = {
        "bank": open_account(AccountKind.ISSUER_FLOAT),
        "card": open_account(AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True),
        "shop": open_account(AccountKind.MERCHANT_PAYABLE, shards=4, name='Toko "Maju" Jaya'),
        "fees": open_account(AccountKind.FEE_REVENUE, shards=4),
    }
    ledger.transfer(
        Transfer.simple(uuid.uuid4(), accounts["bank"], accounts["card"], 50_000, "load")
    )
    sale = (
        debit(accounts["card"], 20_000),
        credit(accounts["shop"], 19_700),
        credit(accounts["fees"], 300),
    )
    ledger.transfer(Transfer(uuid.uuid4(), sale, "sale", metadata={"terminal": "T-1"}))
    hold = uuid.uuid4()
    ledger.transfer(
        Transfer.simple(hold, accounts["card"], accounts["shop"], 3_000, "sale", pending=True)
    )
    ledger.transfer(
        PostPending(
            uuid.uuid4(), hold, (debit(accounts["card"], 2_000), credit(accounts["shop"], 2_000))
        )
    )
    return accounts


@both_backends
def test_beancount_export_checks_clean(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID], tmp_path: Path
) -> None:
    accounts = _day_of_business(ledger, open_account)
    out = tmp_path / "ledger.beancount"
    url = engine.url.render_as_string(False)
    command = [sys.executable, "-m", "jakartaone.cli", "--database-url", url]
    command += ["ledger", "export", "--format", "beancount", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    entries, errors, _ = loader.load_file(str(out))
    assert errors == []
    balances = {e.account: e.amount.number for e in entries if type(e).__name__ == "Balance"}
    card = account_name(AccountKind.CARD_PURSE, accounts["card"])
    shop = account_name(AccountKind.MERCHANT_PAYABLE, accounts["shop"])
    assert balances[card] == -28_000  # a liability: credits exceed debits
    assert balances[shop] == -21_700
    assert len([e for e in entries if type(e).__name__ == "Transaction"]) == 3


@both_backends
def test_verify_command_exit_codes(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    _day_of_business(ledger, open_account)
    url = engine.url.render_as_string(False)
    command = [sys.executable, "-m", "jakartaone.cli", "--database-url", url, "ledger", "verify"]
    ok = subprocess.run(command, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "all invariants hold" in ok.stdout
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE accounts SET debits_posted = debits_posted + 7 WHERE kind = 'issuer_float'"
            )
        )
    broken = subprocess.run(command, capture_output=True, text=True, check=False)
    assert broken.returncode == 1
    assert "balance_mismatch" in broken.stderr and "currency_imbalance" in broken.stderr
