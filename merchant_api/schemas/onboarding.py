"""Merchants and transit operators, their terminals, and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from merchant_api.schemas.common import Mcc, Money, Name, RequestBody, ShortText, TerminalCode

MdrBps = Annotated[
    int, msgspec.Meta(ge=0, le=1000, description="Fee on each sale, in basis points (0-10%)")
]
BankAccount = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{0,64}$")]


class MerchantCreate(RequestBody):
    """A merchant (shop, service) or a transit operator (its gates take fares).

    Constraints: mcc is four digits (ISO 18245); mdr_bps 0 to 1000; kota and kecamatan name
    the DKI Jakarta district (free text, 1-64 characters)."""

    kind: Literal["merchant", "operator"]
    name: Name
    mcc: Mcc
    kota: ShortText
    kecamatan: ShortText
    mdr_bps: MdrBps
    load_agent: bool = False
    payout_bank_account: BankAccount = ""


class MerchantUpdate(RequestBody):
    name: Name | None = None
    mdr_bps: MdrBps | None = None
    status: Literal["active", "suspended"] | None = None
    load_agent: bool | None = None
    payout_bank_account: BankAccount | None = None


class Merchant(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["merchant"] = "merchant"
    kind: Literal["merchant", "operator"]
    name: str
    mcc: str
    kota: str
    kecamatan: str
    mdr_bps: int
    load_agent: bool
    payout_bank_account: str
    status: Literal["active", "suspended"]
    payable_account_id: uuid.UUID
    created_at: datetime


class Balance(msgspec.Struct, kw_only=True):
    """What the issuer owes a merchant or operator now (its payable account)."""

    object: Literal["balance"] = "balance"
    merchant_id: uuid.UUID
    currency: str
    available: Money
    pending: Money


class TerminalCreate(RequestBody):
    """A terminal bound to one owner. A gate names its line and station."""

    terminal_code: TerminalCode
    merchant_id: uuid.UUID
    kind: Literal["pos", "gate"]
    line: ShortText | None = None
    station: ShortText | None = None


class Terminal(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["terminal"] = "terminal"
    terminal_code: str
    merchant_id: uuid.UUID
    kind: Literal["pos", "gate"]
    line: str | None
    station: str | None
    status: Literal["active", "retired"]
    created_at: datetime


Scope = Literal["merchant", "gate-operator", "issuer-admin", "analyst"]


class ApiKeyCreate(RequestBody):
    """merchant keys belong to a merchant, gate-operator keys to an operator; issuer-admin
    and analyst keys to no one."""

    scope: Scope
    merchant_id: uuid.UUID | None = None
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""
    expires_at: datetime | None = None


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key. `key` (the secret) appears only in the answer that created it."""

    id: uuid.UUID
    object: Literal["api_key"] = "api_key"
    prefix: str
    scope: Scope
    merchant_id: uuid.UUID | None
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    key: str | None = None
