"""Cards and the hotlist (issuer staff; gates read the hotlist), and card credits."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from merchant_api.auth import ISSUER, TERMINAL_CALLERS, Scope
from merchant_api.deps import Caller, Ctx, Cursor, IdempotencyKey, Limit, problems, scopes
from merchant_api.schemas.cards import (
    Card,
    CardBatch,
    CardBatchCreate,
    CardBlock,
    CardCredit,
    CardIssue,
    CardRegister,
    CardReplace,
    Hotlist,
)
from merchant_api.schemas.common import Page
from merchant_api.services import card_batches, cards

CARD_READERS = frozenset({Scope.ISSUER_ADMIN, Scope.ANALYST})


class CardController(Controller):
    path = "/v1/cards"
    tags = ("Cards",)

    @post(
        "/",
        operation_id="issueCard",
        opt=scopes(ISSUER),
        responses=problems(409, 422),
        sync_to_thread=True,
        summary="Issue a card (its serial is never stored in clear)",
    )
    def issue(
        self,
        data: JSONBody[CardIssue],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Card:
        return cards.issue_card(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listCards",
        opt=scopes(CARD_READERS),
        responses=problems(),
        sync_to_thread=True,
    )
    def index(
        self,
        ctx: Ctx,
        limit: Limit = 10,
        starting_after: Cursor = None,
        ending_before: Cursor = None,
        status: FromQuery[Literal["active", "blocked", "replaced"] | None] = None,
    ) -> Page[Card]:
        return cards.list_cards(ctx, limit, starting_after, ending_before, status)

    @get(
        "/{card_id:uuid}",
        operation_id="getCard",
        opt=scopes(CARD_READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, card_id: FromPath[uuid.UUID], ctx: Ctx) -> Card:
        return cards.get_card(ctx, card_id)

    @post(
        "/{card_id:uuid}/register",
        operation_id="registerCard",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Register a card to its holder (its limit rises to Rp 20,000,000)",
    )
    def register(
        self, card_id: FromPath[uuid.UUID], data: JSONBody[CardRegister], ctx: Ctx
    ) -> Card:
        return cards.register_card(ctx, card_id, data)

    @post(
        "/{card_id:uuid}/block",
        operation_id="blockCard",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Block a card: it joins the hotlist",
    )
    def block(self, card_id: FromPath[uuid.UUID], data: JSONBody[CardBlock], ctx: Ctx) -> Card:
        return cards.block_card(ctx, card_id, data)

    @post(
        "/{card_id:uuid}/unblock",
        operation_id="unblockCard",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
    )
    def unblock(self, card_id: FromPath[uuid.UUID], ctx: Ctx) -> Card:
        return cards.unblock_card(ctx, card_id)

    @post(
        "/{card_id:uuid}/replace",
        operation_id="replaceCard",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Replace a blocked registered card; its balance follows to the new card",
    )
    def replace(
        self,
        card_id: FromPath[uuid.UUID],
        data: JSONBody[CardReplace],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Card:
        return cards.replace_card(ctx, principal, idempotency_key, card_id, data)


@get(
    "/v1/hotlist",
    operation_id="getHotlist",
    opt=scopes(TERMINAL_CALLERS),
    tags=("Cards",),
    responses=problems(),
    sync_to_thread=True,
    summary="The hotlist, whole or the change since a version (for gates)",
)
def get_hotlist(
    ctx: Ctx,
    since_version: Annotated[
        int, QueryParameter(ge=0, le=2**62, description="0: the whole list")
    ] = 0,
) -> Hotlist:
    return cards.hotlist(ctx, since_version)


@get(
    "/v1/card-credits",
    operation_id="listCardCredits",
    opt=scopes(TERMINAL_CALLERS),
    tags=("Cards",),
    responses=problems(),
    sync_to_thread=True,
    summary="Value waiting to load onto cards at their next tap (the terminals' action list)",
)
def list_card_credits(
    ctx: Ctx,
    limit: Limit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    status: FromQuery[Literal["pending", "loading", "loaded"] | None] = "pending",
    card_id: FromQuery[uuid.UUID | None] = None,
) -> Page[CardCredit]:
    return cards.list_card_credits(ctx, limit, starting_after, ending_before, status, card_id)


@post(
    "/v1/card-batches",
    operation_id="issueCardBatch",
    opt=scopes(ISSUER),
    tags=("Cards",),
    responses=problems(409, 422),
    sync_to_thread=True,
    summary="Issue up to 500 cards in one transaction, optionally pre-loaded",
)
def issue_card_batch(
    data: JSONBody[CardBatchCreate],
    ctx: Ctx,
    principal: Caller,
    idempotency_key: IdempotencyKey,
) -> CardBatch:
    return card_batches.issue_batch(ctx, principal, idempotency_key, data)
