"""The issuer's chart of accounts as the API uses it, and the Bank Indonesia limits.

Guarantees:
- The issuer's own accounts have fixed ids (uuid5 of their role), so every process finds
  the same accounts and creating them again answers `exists`.
- A card's purse is a CARD_PURSE account that can never go below zero
  (debits_must_not_exceed_credits) and never holds more than the BI limit for its card
  (`max_balance`, counting pending loads). Each merchant and operator has one payable.
- Fees: `mdr_fee` is the one place a fee is computed.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from ledger import AccountKind, Ledger, NewAccount

CHART_NAMESPACE = uuid.UUID("0b8f5a1e-7c37-4f0e-9d55-3a7c2f1e9b40")

# Bank Indonesia (PBI 20/6/2018; PADG 24/7/2022): balance held and monthly incoming.
UNREGISTERED_MAX_BALANCE = 2_000_000
REGISTERED_MAX_BALANCE = 20_000_000
UNREGISTERED_MONTHLY_INCOMING = 20_000_000
REGISTERED_MONTHLY_INCOMING = 40_000_000

# Hot accounts that every fare or sale touches get balance shards (see docs/ledger.md).
HOT_SHARDS = 16


def _issuer_account(role: str) -> uuid.UUID:
    return uuid.uuid5(CHART_NAMESPACE, f"issuer:{role}")


FEE_REVENUE = _issuer_account("fee_revenue")
ISSUER_FLOAT = _issuer_account("issuer_float")
AGENT_RECEIVABLE = _issuer_account("agent_receivable")
CARD_CREDIT_CLEARING = _issuer_account("card_credit_clearing")
SETTLEMENT_BANK = _issuer_account("settlement_bank")
SUSPENSE = _issuer_account("suspense")

# Loads are rare next to fares and sales: their funding accounts need no balance shards.
ISSUER_ACCOUNTS = (
    NewAccount(FEE_REVENUE, AccountKind.FEE_REVENUE, shards=HOT_SHARDS, name="Fee revenue"),
    NewAccount(ISSUER_FLOAT, AccountKind.ISSUER_FLOAT, name="Issuer float"),
    NewAccount(AGENT_RECEIVABLE, AccountKind.AGENT_RECEIVABLE, name="Agent cash"),
    NewAccount(
        CARD_CREDIT_CLEARING, AccountKind.CARD_CREDIT_CLEARING, name="Card credits waiting to load"
    ),
    NewAccount(SETTLEMENT_BANK, AccountKind.SETTLEMENT_BANK, name="Settlement bank"),
    NewAccount(SUSPENSE, AccountKind.SUSPENSE, name="Suspense"),
)


def ensure_issuer_accounts(ledger: Ledger) -> None:
    """Create the issuer's accounts if they are missing (safe to run in every process)."""
    for attempt in range(3):
        try:
            for result in ledger.create_accounts(ISSUER_ACCOUNTS):
                if not result.code.succeeded:
                    raise RuntimeError(f"issuer account {result.id}: {result.code.value}")
            return
        except sa.exc.IntegrityError:
            # Two processes starting at once may race on the first insert; the loser
            # sees the winner's rows on its next attempt.
            if attempt == 2:
                raise


def purse_account(card_id: uuid.UUID, registered: bool) -> NewAccount:
    return NewAccount(
        uuid.uuid5(CHART_NAMESPACE, f"purse:{card_id}"),
        AccountKind.CARD_PURSE,
        debits_must_not_exceed_credits=True,
        max_balance=max_balance(registered),
        name="Card purse",
    )


def payable_account(merchant_id: uuid.UUID, operator: bool) -> NewAccount:
    """A merchant's or operator's payable: every sale or fare credits it, so it is sharded
    (a busy supermarket chain takes hundreds of card payments a second)."""
    kind = AccountKind.OPERATOR_PAYABLE if operator else AccountKind.MERCHANT_PAYABLE
    return NewAccount(
        uuid.uuid5(CHART_NAMESPACE, f"payable:{merchant_id}"),
        kind,
        shards=HOT_SHARDS,
        name="Operator payable" if operator else "Merchant payable",
    )


def max_balance(registered: bool) -> int:
    return REGISTERED_MAX_BALANCE if registered else UNREGISTERED_MAX_BALANCE


def monthly_incoming_limit(registered: bool) -> int:
    return REGISTERED_MONTHLY_INCOMING if registered else UNREGISTERED_MONTHLY_INCOMING


def mdr_fee(amount: int, mdr_bps: int) -> int:
    """The merchant discount fee on `amount`: `mdr_bps` basis points, in whole rupiah,
    rounded half up (Rp 0.5 and above rounds to the next rupiah). Integer arithmetic only.
    Never more than the amount itself."""
    return min(amount, (amount * mdr_bps + 5_000) // 10_000)
