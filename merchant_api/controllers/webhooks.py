"""Webhook endpoints and events (owners manage their own; issuer staff any)."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from merchant_api.auth import OWNERS_AND_ISSUER, READERS
from merchant_api.deps import Caller, Ctx, Cursor, IdempotencyKey, Limit, problems, scopes
from merchant_api.schemas.common import Page
from merchant_api.schemas.webhooks import (
    Event,
    EventType,
    SecretRotation,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from merchant_api.services import webhooks

# The OpenAPI description of the routes that take a URL (docs/api.md, "Webhooks").
_URL_RULES = (
    "The URL must be https, carry no user name or password, and name a host that is, or"
    " resolves only to, addresses on the public internet. Refusals are 422 with `code`"
    " `webhook_url_scheme_not_allowed` (not https), `webhook_url_credentials_not_allowed`"
    " (user:password@ in the URL) or `webhook_url_not_public` (loopback, private, link-local"
    " including 169.254.169.254, shared 100.64.0.0/10, multicast, reserved or unspecified"
    " addresses, and their IPv6 equivalents). The same check runs again at every delivery,"
    " which connects only to the address it checked and never follows redirects."
)


class WebhookEndpointController(Controller):
    path = "/v1/webhook-endpoints"
    tags = ("Webhooks",)

    @post(
        "/",
        operation_id="createWebhookEndpoint",
        opt=scopes(OWNERS_AND_ISSUER, redact=("secret",)),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Register an endpoint; its signing secret is shown once",
        description=_URL_RULES,
    )
    def create(
        self,
        data: JSONBody[WebhookEndpointCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> WebhookEndpoint:
        return webhooks.create_endpoint(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listWebhookEndpoints",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(),
        sync_to_thread=True,
    )
    def index(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 10,
        starting_after: Cursor = None,
        ending_before: Cursor = None,
    ) -> Page[WebhookEndpoint]:
        return webhooks.list_endpoints(ctx, principal, limit, starting_after, ending_before)

    @get(
        "/{endpoint_id:uuid}",
        operation_id="getWebhookEndpoint",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(
        self, endpoint_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller
    ) -> WebhookEndpoint:
        return webhooks.get_endpoint(ctx, principal, endpoint_id)

    @post(
        "/{endpoint_id:uuid}",
        operation_id="updateWebhookEndpoint",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Change an endpoint's URL, events or status",
        description=_URL_RULES,
    )
    def update(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[WebhookEndpointUpdate],
        ctx: Ctx,
        principal: Caller,
    ) -> WebhookEndpoint:
        return webhooks.update_endpoint(ctx, principal, endpoint_id, data)

    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        operation_id="rotateWebhookSecret",
        opt=scopes(OWNERS_AND_ISSUER, redact=("secret",)),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="A new signing secret (shown once); the old one signs too for a while",
    )
    def rotate(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[SecretRotation],
        ctx: Ctx,
        principal: Caller,
    ) -> WebhookEndpoint:
        return webhooks.rotate_secret(ctx, principal, endpoint_id, data)


class EventController(Controller):
    path = "/v1/events"
    tags = ("Webhooks",)

    @get(
        "/",
        operation_id="listEvents",
        opt=scopes(READERS),
        responses=problems(),
        sync_to_thread=True,
        summary="Re-read events (the same ids webhooks carried)",
    )
    def index(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 10,
        starting_after: Cursor = None,
        ending_before: Cursor = None,
        type: FromQuery[EventType | None] = None,
    ) -> Page[Event]:
        return webhooks.list_events(ctx, principal, limit, starting_after, ending_before, type)

    @get(
        "/{event_id:uuid}",
        operation_id="getEvent",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, event_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Event:
        return webhooks.get_event(ctx, principal, event_id)
