"""Merchants, terminals and API keys (issuer staff), readable by their owners."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from merchant_api.auth import ISSUER, READERS
from merchant_api.deps import Caller, Ctx, Cursor, IdempotencyKey, Limit, problems, scopes
from merchant_api.middleware import gatekeeping_of
from merchant_api.schemas.common import Page
from merchant_api.schemas.onboarding import (
    ApiKey,
    ApiKeyCreate,
    Balance,
    Merchant,
    MerchantCreate,
    MerchantUpdate,
    Terminal,
    TerminalCreate,
)
from merchant_api.services import onboarding


class MerchantController(Controller):
    path = "/v1/merchants"
    tags = ("Merchants",)

    @post(
        "/",
        operation_id="createMerchant",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Onboard a merchant or transit operator",
    )
    def create(
        self,
        data: JSONBody[MerchantCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Merchant:
        return onboarding.create_merchant(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listMerchants",
        opt=scopes(READERS),
        responses=problems(),
        sync_to_thread=True,
        summary="List merchants and operators (owners see only themselves)",
    )
    def index(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 10,
        starting_after: Cursor = None,
        ending_before: Cursor = None,
        kind: FromQuery[Literal["merchant", "operator"] | None] = None,
    ) -> Page[Merchant]:
        return onboarding.list_merchants(ctx, principal, limit, starting_after, ending_before, kind)

    @get(
        "/{merchant_id:uuid}",
        operation_id="getMerchant",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, merchant_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Merchant:
        return onboarding.get_merchant(ctx, principal, merchant_id)

    @post(
        "/{merchant_id:uuid}",
        operation_id="updateMerchant",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Change a merchant's name, fee, status or payout account",
    )
    def update(
        self,
        merchant_id: FromPath[uuid.UUID],
        data: JSONBody[MerchantUpdate],
        ctx: Ctx,
        principal: Caller,
    ) -> Merchant:
        return onboarding.update_merchant(ctx, principal, merchant_id, data)

    @get(
        "/{merchant_id:uuid}/balance",
        operation_id="getMerchantBalance",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
        summary="What the issuer owes it now",
    )
    def balance(self, merchant_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Balance:
        return onboarding.merchant_balance(ctx, principal, merchant_id)


class TerminalController(Controller):
    path = "/v1/terminals"
    tags = ("Terminals",)

    @post(
        "/",
        operation_id="createTerminal",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Register a terminal or gate for its owner",
    )
    def create(
        self,
        data: JSONBody[TerminalCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Terminal:
        return onboarding.create_terminal(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listTerminals",
        opt=scopes(READERS),
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
        merchant_id: FromQuery[uuid.UUID | None] = None,
    ) -> Page[Terminal]:
        return onboarding.list_terminals(
            ctx, principal, limit, starting_after, ending_before, merchant_id
        )

    @get(
        "/{terminal_id:uuid}",
        operation_id="getTerminal",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, terminal_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Terminal:
        return onboarding.get_terminal(ctx, principal, terminal_id)

    @post(
        "/{terminal_id:uuid}/retire",
        operation_id="retireTerminal",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
    )
    def retire(self, terminal_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Terminal:
        return onboarding.retire_terminal(ctx, principal, terminal_id)


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ("API keys",)

    @post(
        "/",
        operation_id="createApiKey",
        opt=scopes(ISSUER, redact=("key",)),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Issue an API key; its secret `key` is shown in this answer only",
    )
    def create(
        self,
        data: JSONBody[ApiKeyCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> ApiKey:
        return onboarding.create_api_key(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listApiKeys",
        opt=scopes(ISSUER),
        responses=problems(),
        sync_to_thread=True,
    )
    def index(
        self,
        ctx: Ctx,
        limit: Limit = 10,
        starting_after: Cursor = None,
        ending_before: Cursor = None,
        merchant_id: FromQuery[uuid.UUID | None] = None,
    ) -> Page[ApiKey]:
        return onboarding.list_api_keys(ctx, limit, starting_after, ending_before, merchant_id)

    @get(
        "/{api_key_id:uuid}",
        operation_id="getApiKey",
        opt=scopes(ISSUER),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, api_key_id: FromPath[uuid.UUID], ctx: Ctx) -> ApiKey:
        return onboarding.get_api_key(ctx, api_key_id)

    @post(
        "/{api_key_id:uuid}/revoke",
        operation_id="revokeApiKey",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
    )
    def revoke(
        self, api_key_id: FromPath[uuid.UUID], ctx: Ctx, request: Request[Any, Any, Any]
    ) -> ApiKey:
        """Revoked at once in this process, and in every other within the key cache time."""
        revoked = onboarding.revoke_api_key(ctx, api_key_id)
        gatekeeping_of(request.scope).keys.forget(revoked.prefix)
        return revoked
