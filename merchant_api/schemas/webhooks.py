"""Webhook endpoints and events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from merchant_api.schemas.common import RequestBody

EventType = Literal[
    "card_transaction.posted",
    "gate_batch.processed",
    "refund.created",
    "refund.loaded",
    "load.posted",
    "settlement.created",
    "payout.paid",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

# Any absolute URL passes the schema, so that a wrong scheme gets its own code from the
# guard (merchant_api.webhook_guard), which decides everything else about where it points.
Url = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2048,
        pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s]+$",
        description="An https URL whose host is, and resolves only to, public addresses",
    ),
]


class WebhookEndpointCreate(RequestBody):
    """Where to send events. `events` lists the types wanted, or ["*"] for all.
    issuer-admin keys name the merchant; merchant and gate-operator keys make their own."""

    url: Url
    events: Annotated[list[EventType | Literal["*"]], msgspec.Meta(min_length=1, max_length=16)]
    merchant_id: uuid.UUID | None = None


class WebhookEndpointUpdate(RequestBody):
    url: Url | None = None
    events: (
        Annotated[list[EventType | Literal["*"]], msgspec.Meta(min_length=1, max_length=16)] | None
    ) = None
    status: Literal["enabled", "disabled"] | None = None


class SecretRotation(RequestBody):
    """Make a new signing secret. The old one keeps signing too (a second `v1=`) for
    `previous_valid_for_s` seconds, so receivers can switch without losing events."""

    previous_valid_for_s: Annotated[int, msgspec.Meta(ge=0, le=7 * 86400)] = 86400


class WebhookEndpoint(msgspec.Struct, kw_only=True):
    """`secret` (whsec_...) appears only in the answers that create or rotate it."""

    id: uuid.UUID
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    merchant_id: uuid.UUID
    url: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    created_at: datetime
    previous_secret_expires_at: datetime | None
    secret: str | None = None


class Event(msgspec.Struct, kw_only=True):
    """Something that happened to a merchant's objects. `id` de-duplicates deliveries."""

    id: uuid.UUID
    object: Literal["event"] = "event"
    type: str
    merchant_id: uuid.UUID
    created_at: datetime
    data: dict[str, Any]
