"""Settlements and payouts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

import msgspec

from merchant_api.schemas.common import RequestBody


class SettlementCreate(RequestBody):
    """Settle one owner's closed business day (the nightly job does this for everyone)."""

    merchant_id: uuid.UUID
    business_date: date


class Settlement(msgspec.Struct, kw_only=True):
    """One owner's net settlement for the business dates after its previous settlement,
    up to and including `business_date` (WIB). net = gross - fees - refunds + carried_in;
    a negative net is carried into the next settlement instead of paid."""

    id: uuid.UUID
    object: Literal["settlement"] = "settlement"
    merchant_id: uuid.UUID
    business_date: str
    transaction_count: int
    gross_amount: int
    fee_amount: int
    refund_amount: int
    carried_in: int
    net_amount: int
    payout_amount: int
    transfer_id: uuid.UUID | None
    payout_id: uuid.UUID | None
    created_at: datetime


class Payout(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["payout"] = "payout"
    settlement_id: uuid.UUID
    merchant_id: uuid.UUID
    business_date: str
    amount: int
    bank_account: str
    status: Literal["instructed", "paid", "failed"]
    bank_reference: str | None
    created_at: datetime
    paid_at: datetime | None


class PayoutPaid(RequestBody):
    bank_reference: str = msgspec.field(default="")
