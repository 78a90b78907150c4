"""Events, webhook endpoints and delivery from a durable outbox.

Guarantees:
- An event is written in the same transaction as the change it describes, with one
  delivery row per matching endpoint: if the change commits, its deliveries exist.
- Delivery is at least once: a delivery is retried with exponential backoff (base doubling,
  with jitter, capped at 6 hours) until the endpoint answers 2xx, for up to
  `MAX_ATTEMPTS` attempts; the event id (`JakartaOne-Event-Id`, and `id` in the body) lets
  the receiver drop repeats. Several server processes may deliver at once: a delivery is
  leased before it is sent (SKIP LOCKED on PostgreSQL), so each attempt is made once.
- Every delivery is signed: `JakartaOne-Signature: t=<unix seconds>,v1=<hex>` where
  v1 = HMAC-SHA256(secret, "<t>.<body>"). While a rotated-out secret is still valid, a
  second `v1=` made with it follows. Receivers reject a `t` outside their tolerance window
  (5 minutes recommended) and compare in constant time (docs/api.md, "Webhooks").
- Signing secrets are shown once, stored sealed (AES-GCM), never logged.
- Requests go only where `merchant_api.webhook_guard` allows: an endpoint's URL is checked
  when it is registered or changed, and again at every attempt, which connects to the
  address that check resolved. Redirects are never followed: a 3xx is a failed attempt.
  A refused attempt is recorded on its delivery (`last_error` = the refusal's code, no
  status code): refused by the URL's text alone (scheme, credentials, a literal address)
  the delivery fails at once, since no retry could succeed; refused by what the name
  resolves to now, or unresolvable, it is retried like any failed attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import run_read, run_write
from ledger.db import is_sqlite
from merchant_api import schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, not_found
from merchant_api.idempotency import derived_id
from merchant_api.observability import WEBHOOKS
from merchant_api.pagination import page
from merchant_api.schemas.common import Page
from merchant_api.schemas.webhooks import (
    Event,
    SecretRotation,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from merchant_api.webhook_guard import (
    Target,
    WebhookUrlError,
    check_registration,
    delivery_target,
)
from merchant_api.wib import now_us, to_datetime

log = logging.getLogger("merchant_api.webhooks")

SIGNATURE_HEADER = "JakartaOne-Signature"
EVENT_ID_HEADER = "JakartaOne-Event-Id"
MAX_ATTEMPTS = 20
MAX_BACKOFF_S = 6 * 3600
LEASE_S = 60
_SEALING_PURPOSE = "webhook-secret"

e, w, d = schema.events, schema.webhook_endpoints, schema.webhook_deliveries


# --- Events --------------------------------------------------------------------------


def outbox_rows(
    wanted: list[tuple[uuid.UUID, str, dict[str, Any]]], endpoints: Sequence[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events (merchant, type, data) as rows, and one delivery row for each with every
    endpoint of its merchant that wants it; the caller read `endpoints` (id, merchant_id,
    events: the enabled ones, at least of these merchants) and inserts both in the
    transaction of the change (`merchant_api.services.certificate_store`)."""
    now = now_us()
    events = [
        {
            "id": uuid.uuid4(),
            "merchant_id": merchant_id,
            "type": type_,
            "data": json.dumps(data, separators=(",", ":"), sort_keys=True),
            "created_us": now,
        }
        for merchant_id, type_, data in wanted
    ]
    deliveries = [
        {
            "event_id": row["id"],
            "endpoint_id": endpoint.id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_us": now,
        }
        for row in events
        for endpoint in endpoints
        if endpoint.merchant_id == row["merchant_id"]
        and _wants(json.loads(endpoint.events), str(row["type"]))
    ]
    return events, deliveries


def emit(conn: Connection, merchant_id: uuid.UUID, type_: str, data: dict[str, Any]) -> uuid.UUID:
    """Record an event and queue it for every enabled endpoint that wants it."""
    event_id = uuid.uuid4()
    now = now_us()
    conn.execute(
        sa.insert(e).values(
            id=event_id,
            merchant_id=merchant_id,
            type=type_,
            data=json.dumps(data, separators=(",", ":"), sort_keys=True),
            created_us=now,
        )
    )
    endpoints = conn.execute(
        sa.select(w.c.id, w.c.events).where(w.c.merchant_id == merchant_id, w.c.status == "enabled")
    ).all()
    rows = [
        {
            "event_id": event_id,
            "endpoint_id": row.id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_us": now,
        }
        for row in endpoints
        if _wants(json.loads(row.events), type_)
    ]
    if rows:
        conn.execute(sa.insert(d), rows)
    return event_id


def _wants(wanted: list[str], type_: str) -> bool:
    return "*" in wanted or type_ in wanted


def event_out(row: Any) -> Event:
    return Event(
        id=row.id,
        type=row.type,
        merchant_id=row.merchant_id,
        created_at=to_datetime(row.created_us),
        data=json.loads(row.data),
    )


def _event_body(row: Any) -> bytes:
    event = event_out(row)
    return json.dumps(
        {
            "id": str(event.id),
            "object": "event",
            "type": event.type,
            "merchant_id": str(event.merchant_id),
            "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
            "data": event.data,
        },
        separators=(",", ":"),
    ).encode()


def get_event(ctx: ApiContext, principal: Principal, event_id: uuid.UUID) -> Event:
    row = run_read(
        ctx.engine, lambda conn: conn.execute(sa.select(e).where(e.c.id == event_id)).first()
    )
    if row is None or not principal.can_see(row.merchant_id):
        raise not_found("event")
    return event_out(row)


def list_events(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    type_: str | None,
) -> Page[Event]:
    where = []
    if principal.owner is not None:
        where.append(e.c.merchant_id == principal.owner)
    if type_ is not None:
        where.append(e.c.type == type_)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, e, where, limit, starting_after, ending_before)
    )
    return Page(data=[event_out(r) for r in rows], has_more=more)


# --- Endpoints -----------------------------------------------------------------------


def _new_secret() -> str:
    return "whsec_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def endpoint_out(row: Any, secret: str | None = None) -> WebhookEndpoint:
    expires = row.previous_secret_expires_us
    return WebhookEndpoint(
        id=row.id,
        merchant_id=row.merchant_id,
        url=row.url,
        events=json.loads(row.events),
        status=row.status,
        created_at=to_datetime(row.created_us),
        previous_secret_expires_at=to_datetime(expires) if expires is not None else None,
        secret=secret,
    )


def _check_url(ctx: ApiContext, url: str) -> None:
    try:
        check_registration(url, ctx.webhook_allow_private_networks)
    except WebhookUrlError as refused:
        if refused.code == ErrorCode.REQUEST_INVALID:
            raise ApiError(
                400,
                refused.code,
                refused.detail,
                errors=[{"field": "url", "message": refused.detail}],
            ) from None
        raise ApiError(422, refused.code, refused.detail) from None


def create_endpoint(
    ctx: ApiContext, principal: Principal, idempotency_key: str, data: WebhookEndpointCreate
) -> WebhookEndpoint:
    _check_url(ctx, data.url)
    merchant_id = principal.owner or data.merchant_id
    if merchant_id is None:
        raise ApiError(422, ErrorCode.REQUEST_INVALID, "issuer-admin keys must name merchant_id")
    if principal.owner is not None and data.merchant_id not in (None, principal.owner):
        raise not_found("merchant")
    endpoint_id = derived_id(principal.api_key_id, idempotency_key, "webhook_endpoint")
    secret = _new_secret()

    def work(conn: Connection) -> tuple[Any, str | None]:
        existing = conn.execute(sa.select(w).where(w.c.id == endpoint_id)).first()
        if existing is not None:
            return existing, None
        found = conn.execute(
            sa.select(schema.merchants.c.id).where(schema.merchants.c.id == merchant_id)
        ).first()
        if found is None:
            raise not_found("merchant")
        conn.execute(
            sa.insert(w).values(
                id=endpoint_id,
                merchant_id=merchant_id,
                url=data.url,
                events=json.dumps(sorted(set(data.events))),
                secret_sealed=ctx.secrets.seal(_SEALING_PURPOSE, secret.encode()),
                status="enabled",
                created_us=now_us(),
            )
        )
        return conn.execute(sa.select(w).where(w.c.id == endpoint_id)).one(), secret

    row, shown = run_write(ctx.engine, work)
    return endpoint_out(row, shown)


def _visible_endpoint(conn: Connection, principal: Principal, endpoint_id: uuid.UUID) -> Any:
    row = conn.execute(sa.select(w).where(w.c.id == endpoint_id)).first()
    if row is None or not principal.can_see(row.merchant_id):
        raise not_found("webhook endpoint")
    return row


def get_endpoint(ctx: ApiContext, principal: Principal, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    return endpoint_out(
        run_read(ctx.engine, lambda conn: _visible_endpoint(conn, principal, endpoint_id))
    )


def list_endpoints(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
) -> Page[WebhookEndpoint]:
    where = [w.c.merchant_id == principal.owner] if principal.owner is not None else []
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, w, where, limit, starting_after, ending_before)
    )
    return Page(data=[endpoint_out(r) for r in rows], has_more=more)


def update_endpoint(
    ctx: ApiContext, principal: Principal, endpoint_id: uuid.UUID, data: WebhookEndpointUpdate
) -> WebhookEndpoint:
    changes: dict[str, Any] = {}
    if data.url is not None:
        _check_url(ctx, data.url)
        changes["url"] = data.url
    if data.events is not None:
        changes["events"] = json.dumps(sorted(set(data.events)))
    if data.status is not None:
        changes["status"] = data.status

    def work(conn: Connection) -> Any:
        _visible_endpoint(conn, principal, endpoint_id)
        if changes:
            conn.execute(sa.update(w).where(w.c.id == endpoint_id).values(**changes))
        return conn.execute(sa.select(w).where(w.c.id == endpoint_id)).one()

    return endpoint_out(run_write(ctx.engine, work))


def rotate_secret(
    ctx: ApiContext, principal: Principal, endpoint_id: uuid.UUID, data: SecretRotation
) -> WebhookEndpoint:
    secret = _new_secret()

    def work(conn: Connection) -> Any:
        row = _visible_endpoint(conn, principal, endpoint_id)
        conn.execute(
            sa.update(w)
            .where(w.c.id == endpoint_id)
            .values(
                secret_sealed=ctx.secrets.seal(_SEALING_PURPOSE, secret.encode()),
                previous_secret_sealed=row.secret_sealed if data.previous_valid_for_s else None,
                previous_secret_expires_us=(
                    now_us() + data.previous_valid_for_s * 1_000_000
                    if data.previous_valid_for_s
                    else None
                ),
            )
        )
        return conn.execute(sa.select(w).where(w.c.id == endpoint_id)).one()

    return endpoint_out(run_write(ctx.engine, work), secret)


# --- Delivery ------------------------------------------------------------------------


def signature_header(body: bytes, secrets_: list[str], timestamp: int) -> str:
    parts = [f"t={timestamp}"]
    for secret in secrets_:
        mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        parts.append(f"v1={mac.hexdigest()}")
    return ",".join(parts)


def backoff_s(attempts: int, base_s: float) -> float:
    """Seconds before attempt `attempts + 1`: base * 2^(attempts-1), jittered, capped."""
    delay = min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1))
    return float(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not secrecy


def _claim_due(ctx: ApiContext, limit: int) -> list[Any]:
    def work(conn: Connection) -> list[Any]:
        now = now_us()
        query = (
            sa.select(d.c.seq, d.c.event_id, d.c.endpoint_id, d.c.attempts)
            .where(d.c.status == "pending", d.c.next_attempt_us <= now)
            .order_by(d.c.next_attempt_us)
            .limit(limit)
        )
        if not is_sqlite(conn):
            query = query.with_for_update(skip_locked=True)
        due = conn.execute(query).all()
        if due:
            conn.execute(
                sa.update(d)
                .where(d.c.seq.in_([row.seq for row in due]))
                .values(next_attempt_us=now + LEASE_S * 1_000_000)
            )
        return list(due)

    return run_write(ctx.engine, work)


def delivery_client(ctx: ApiContext) -> httpx.Client:
    """The HTTP client deliveries go through. It ignores the environment (`trust_env`):
    a proxy from HTTP(S)_PROXY or ALL_PROXY would make the connection the guard did not
    check, and credentials from ~/.netrc would be sent to merchants' endpoints."""
    return httpx.Client(timeout=ctx.webhook_timeout_s, follow_redirects=False, trust_env=False)


def deliver_due(ctx: ApiContext, client: httpx.Client, limit: int = 50) -> int:
    """Attempt every delivery that is due (up to `limit`); returns how many were tried."""
    due = _claim_due(ctx, limit)
    for delivery in due:
        _attempt(ctx, client, delivery)
    return len(due)


def _attempt(ctx: ApiContext, client: httpx.Client, delivery: Any) -> None:
    def load(conn: Connection) -> tuple[Any, Any]:
        event = conn.execute(sa.select(e).where(e.c.id == delivery.event_id)).one()
        endpoint = conn.execute(sa.select(w).where(w.c.id == delivery.endpoint_id)).one()
        return event, endpoint

    event, endpoint = run_read(ctx.engine, load)
    status_code: int | None = None
    error: str | None = None
    refusal: WebhookUrlError | None = None
    try:
        target = delivery_target(endpoint.url, ctx.webhook_allow_private_networks)
    except WebhookUrlError as refused:
        # The endpoint id, never the URL: merchants put tokens in query strings.
        log.warning(
            "webhook delivery refused",
            extra={"fields": {"endpoint_id": str(endpoint.id), "code": refused.code}},
        )
        refusal, error = refused, refused.code
    else:
        try:
            status_code = _post(ctx, client, target, event, endpoint).status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
    attempts = delivery.attempts + 1
    delivered = status_code is not None and 200 <= status_code < 300
    WEBHOOKS.labels("delivered" if delivered else "refused" if refusal else "failed").inc()
    if delivered:
        values: dict[str, Any] = {"status": "delivered", "delivered_us": now_us()}
    elif (
        (refusal is not None and refusal.permanent)
        or attempts >= MAX_ATTEMPTS
        or endpoint.status != "enabled"
    ):
        values = {"status": "failed"}
    else:
        next_at = now_us() + int(backoff_s(attempts, ctx.webhook_backoff_s) * 1_000_000)
        values = {"next_attempt_us": next_at}
    values.update(attempts=attempts, last_status_code=status_code, last_error=error)
    run_write(
        ctx.engine,
        lambda conn: conn.execute(sa.update(d).where(d.c.seq == delivery.seq).values(**values)),
    )


def _post(
    ctx: ApiContext, client: httpx.Client, target: Target, event: Any, endpoint: Any
) -> httpx.Response:
    """POST the signed event to the checked address. The Host header and the TLS server
    name stay the endpoint's own name. `Connection: close`, because the client's pool
    knows a connection by address only: a kept-alive connection whose TLS certificate was
    checked for one merchant's name must never carry a request for another name at the
    same address."""
    body = _event_body(event)
    keys = [ctx.secrets.unseal(_SEALING_PURPOSE, endpoint.secret_sealed).decode()]
    if (
        endpoint.previous_secret_sealed is not None
        and (endpoint.previous_secret_expires_us or 0) > now_us()
    ):
        keys.append(ctx.secrets.unseal(_SEALING_PURPOSE, endpoint.previous_secret_sealed).decode())
    headers = {
        "Host": target.host_header,
        "Connection": "close",
        "Content-Type": "application/json",
        "User-Agent": "JakartaOne-Webhooks/1",
        EVENT_ID_HEADER: str(event.id),
        SIGNATURE_HEADER: signature_header(body, keys, int(time.time())),
    }
    return client.post(
        target.url,
        content=body,
        headers=headers,
        extensions={"sni_hostname": target.server_name},
        follow_redirects=False,  # whatever the caller's client was built with
    )
