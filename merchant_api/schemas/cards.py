"""Cards, the hotlist, card transactions, gate batches, loads, refunds and card credits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from merchant_api.schemas.common import Amount, RequestBody, TerminalCode

Serial = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-fA-F]{16}$", description="The card serial, 8 bytes in hex"),
]
CardRef = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{64}$",
        description="The card's public reference: serial_hash (docs/card-protocol.md)",
    ),
]
HolderReference = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, description="The KYC record's reference")
]
U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
CertificateJson = Annotated[
    dict[str, Any],
    msgspec.Meta(description="A certificate in its JSON form (docs/card-protocol.md)"),
]


class CardIssue(RequestBody):
    """Issue a card: its serial is stored only as a keyed hash and sealed, never in clear.
    A registered card names its holder's KYC reference and may hold Rp 20,000,000."""

    serial: Serial
    registered: bool = False
    holder_reference: HolderReference | None = None


MAX_CARD_BATCH = 500


class CardBatchItem(RequestBody):
    """One card of a personalization batch. `first_load` sells it pre-loaded: a pending
    bank-transfer load for counter 0, whose cryptogram the answer carries for the
    personalization machine to write; the card's credit certificate confirms it."""

    serial: Serial
    registered: bool = False
    holder_reference: HolderReference | None = None
    first_load: Amount | None = None


class CardBatchCreate(RequestBody):
    """A personalization bureau's batch: up to 500 cards, issued in one transaction (all
    or none)."""

    cards: Annotated[list[CardBatchItem], msgspec.Meta(min_length=1, max_length=MAX_CARD_BATCH)]


class IssuedCard(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    card_ref: str
    registered: bool
    load_id: uuid.UUID | None
    load_amount: int | None
    cryptogram: str | None


class CardBatch(msgspec.Struct, kw_only=True):
    """The cards issued, in the order asked, each with its first load's cryptogram (for
    card counter 0) while that load is pending."""

    object: Literal["card_batch"] = "card_batch"
    cards: list[IssuedCard]


class CardRegister(RequestBody):
    holder_reference: HolderReference


class CardBlock(RequestBody):
    reason: Literal["lost", "stolen", "fraud", "damaged", "other"]


class CardReplace(RequestBody):
    """Replace a blocked registered card: the new card's serial."""

    serial: Serial


class Card(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["card"] = "card"
    card_ref: str
    status: Literal["active", "blocked", "replaced"]
    registered: bool
    holder_reference: str | None
    purse_account_id: uuid.UUID
    balance: int
    pending_loads: int
    replaces_card_id: uuid.UUID | None
    replaced_by_card_id: uuid.UUID | None
    blocked_at: datetime | None
    block_reason: str | None
    created_at: datetime


class Hotlist(msgspec.Struct, kw_only=True):
    """Blocked cards by `card_ref`. With `full`, `blocked` is the whole list; otherwise it
    is the change since `since_version`: add `blocked`, remove `unblocked`."""

    version: int
    blocked: list[str]
    unblocked: list[str]
    full: bool


class CardTransaction(msgspec.Struct, kw_only=True):
    """A card-signed transaction the back office accepted (one per card and counter)."""

    id: uuid.UUID
    object: Literal["card_transaction"] = "card_transaction"
    card_id: uuid.UUID
    card_counter: int
    kind: Literal["debit", "credit"]
    amount: int
    fee: int
    net_amount: int
    balance_after: int
    merchant_id: uuid.UUID | None
    terminal_id: uuid.UUID | None
    terminal_code: str
    terminal_seq: int
    card_time: datetime
    journey: dict[str, Any] | None
    refunded_amount: int
    transfer_id: uuid.UUID | None
    batch_id: uuid.UUID | None
    business_date: str
    created_at: datetime


class GateBatch(RequestBody):
    """A gate's (or an offline terminal's) journal upload. `batch_id` equals the
    Idempotency-Key. Each certificate is kept: posted, duplicate or quarantined."""

    batch_id: uuid.UUID
    terminal_id: TerminalCode
    first_terminal_seq: U32
    last_terminal_seq: U32
    certificates: Annotated[list[CertificateJson], msgspec.Meta(min_length=1)]


class BatchItem(msgspec.Struct, kw_only=True):
    terminal_seq: int | None
    outcome: Literal["posted", "duplicate", "quarantined"]
    reason: str | None


class BatchAnswer(msgspec.Struct, kw_only=True):
    batch_id: uuid.UUID
    items: list[BatchItem]


LoadChannel = Literal["agent_cash", "bank_transfer", "card_credit"]


class LoadCreate(RequestBody):
    """Ask to load value on a card. Name the card by `card_id` or `card_ref`; give the
    card's counter as the top-up terminal read it (the cryptogram is bound to it).
    card_credit loads carry a pending refund or replacement credit (`card_credit_id`)."""

    amount: Amount
    channel: LoadChannel
    card_counter: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFE)]
    card_id: uuid.UUID | None = None
    card_ref: CardRef | None = None
    card_credit_id: uuid.UUID | None = None
    agent_merchant_id: uuid.UUID | None = None


class LoadConfirm(RequestBody):
    """The card's credit certificate for this load."""

    certificate: CertificateJson


class Load(msgspec.Struct, kw_only=True):
    """A load. `resolution`: `confirmed` (its credit certificate), `card_evidence` (the
    card's later certificates), `nightly`. `card_transaction_id`: its own credit
    certificate, once recorded, even when it came after card evidence posted the load."""

    id: uuid.UUID
    object: Literal["load"] = "load"
    card_id: uuid.UUID
    amount: int
    channel: LoadChannel
    card_counter: int
    status: Literal["pending", "posted", "voided"]
    resolution: str | None
    cryptogram: str | None
    card_credit_id: uuid.UUID | None
    agent_merchant_id: uuid.UUID | None
    card_transaction_id: uuid.UUID | None
    created_at: datetime
    resolved_at: datetime | None


class RefundCreate(RequestBody):
    """Refund part or all of a debit. Refunds of one transaction never add up to more
    than its amount. The value goes back to the card at its next tap (a card credit)."""

    card_transaction_id: uuid.UUID
    amount: Amount
    reason: Annotated[str, msgspec.Meta(max_length=128)] = ""


class Refund(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["refund"] = "refund"
    card_transaction_id: uuid.UUID
    merchant_id: uuid.UUID
    card_id: uuid.UUID
    amount: int
    reason: str
    card_credit_id: uuid.UUID
    status: Literal["pending", "loading", "loaded"]
    business_date: str
    created_at: datetime


class CardCredit(msgspec.Struct, kw_only=True):
    """Value waiting to be loaded onto a card at its next tap (the terminals' action
    list): load it with channel card_credit and this id."""

    id: uuid.UUID
    object: Literal["card_credit"] = "card_credit"
    card_id: uuid.UUID
    card_ref: str
    source: Literal["refund", "replacement"]
    amount: int
    status: Literal["pending", "loading", "loaded"]
    load_id: uuid.UUID | None
    created_at: datetime
