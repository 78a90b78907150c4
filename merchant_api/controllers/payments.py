"""Card transactions, gate batches, loads and refunds."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody

from merchant_api.auth import OWNERS_AND_ISSUER, READERS, TERMINAL_CALLERS
from merchant_api.coalesce import Job
from merchant_api.deps import (
    Caller,
    Ctx,
    Cursor,
    IdempotencyKey,
    Limit,
    ctx_from,
    idempotency_key_from,
    principal_from,
    problems,
    scopes,
)
from merchant_api.middleware import (
    IDEMPOTENCY_CLAIM,
    IDEMPOTENCY_DONE,
    IDEMPOTENCY_REQUEST,
    replayed,
)
from merchant_api.schemas.cards import (
    BatchAnswer,
    CardTransaction,
    CertificateJson,
    GateBatch,
    Load,
    LoadConfirm,
    LoadCreate,
    Refund,
    RefundCreate,
)
from merchant_api.schemas.common import Page
from merchant_api.services import certificates, loads, transactions


def _also_200(model: type, description: str) -> dict[int, ResponseSpec]:
    return {200: ResponseSpec(data_container=model, description=description)}


class CardTransactionController(Controller):
    path = "/v1/card-transactions"
    tags = ("Card transactions",)

    @post(
        "/",
        operation_id="createCardTransaction",
        opt=scopes(TERMINAL_CALLERS, claims_in_transaction=True),
        responses={
            **problems(404, 409, 413, 422),
            201: ResponseSpec(data_container=CardTransaction, description="Posted"),
            **_also_200(CardTransaction, "Already recorded: the same certificate"),
        },
        summary="Submit one card-signed debit certificate from a terminal",
    )
    async def create(
        self, data: JSONBody[CertificateJson], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """The body is the certificate's JSON form (docs/card-protocol.md). 201: posted
        (a load's credit certificate arriving after card evidence posted the load too:
        recorded, moving no money); 200: the same certificate was recorded before; 422:
        quarantined, `code` says why (`mac_invalid`, `conflicting_duplicate`,
        `card_blocked`, `terminal_not_owned`, `exceeds_credits`, `credit_without_load`, or
        the certificate's format reason)."""
        state = request.scope["state"]
        wanted = state.get(IDEMPOTENCY_REQUEST)
        job = Job(principal_from(request), certificates.parse(ctx_from(request), data), wanted)
        # No thread is held while it waits: the coalescer's thread does the database work.
        answer = await request.app.state.coalescer.submit(job)
        if wanted is not None and answer.claim is not None:
            # Claimed in the work's transaction; the middleware completes the record
            # unless the answer was stored there too.
            state[IDEMPOTENCY_CLAIM] = (wanted.api_key_id, wanted.key, answer.claim)
            state[IDEMPOTENCY_DONE] = answer.stored
        if answer.error is not None:
            raise answer.error
        if answer.replay is not None:
            return replayed(answer.replay.status, answer.replay.body)
        assert answer.response is not None
        status, body = answer.response
        return Response(body, status_code=status, media_type="application/json")

    @get(
        "/",
        operation_id="listCardTransactions",
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
        terminal_id: FromQuery[uuid.UUID | None] = None,
        card_id: FromQuery[uuid.UUID | None] = None,
        created_gte: FromQuery[datetime | None] = None,
        created_lt: FromQuery[datetime | None] = None,
        business_date: FromQuery[date | None] = None,
    ) -> Page[CardTransaction]:
        return transactions.list_transactions(
            ctx,
            principal,
            limit,
            starting_after,
            ending_before,
            terminal_id=terminal_id,
            card_id=card_id,
            created_gte=created_gte,
            created_lt=created_lt,
            business_date_=business_date.isoformat() if business_date else None,
        )

    @get(
        "/{transaction_id:uuid}",
        operation_id="getCardTransaction",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(
        self, transaction_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller
    ) -> CardTransaction:
        return transactions.get_transaction(ctx, principal, transaction_id)


@post(
    "/v1/gate-batches",
    operation_id="uploadGateBatch",
    opt=scopes(TERMINAL_CALLERS),
    tags=("Gate batches",),
    responses={
        **problems(404, 409, 413, 422),
        **_also_200(BatchAnswer, "A retry: the answer the batch got first"),
    },
    sync_to_thread=True,
    summary="Upload a gate's journal batch (idempotent per batch_id)",
)
def upload_gate_batch(
    data: JSONBody[GateBatch], request: Request[Any, Any, Any]
) -> Response[BatchAnswer]:
    """Every certificate is answered in order: posted, duplicate, or quarantined with its
    reason. The batch is recorded whole or not at all."""
    digest = hashlib.sha256(msgspec.json.encode(data)).digest()
    status, answer = transactions.submit_batch(
        ctx_from(request), principal_from(request), idempotency_key_from(request), data, digest
    )
    return Response(answer, status_code=status)


class LoadController(Controller):
    path = "/v1/loads"
    tags = ("Loads",)

    @post(
        "/",
        operation_id="createLoad",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Start a load: a pending transfer to the card and its load cryptogram",
    )
    def create(
        self,
        data: JSONBody[LoadCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Load:
        return loads.create_load(ctx, principal, idempotency_key, data)

    @post(
        "/{load_id:uuid}/confirm",
        operation_id="confirmLoad",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Confirm a load with the card's credit certificate",
    )
    def confirm(
        self, load_id: FromPath[uuid.UUID], data: JSONBody[LoadConfirm], ctx: Ctx, principal: Caller
    ) -> Load:
        """200 with the load: posted by its credit certificate, or, for a load card evidence
        posted already, its certificate recorded now (nothing moves); again 200 for the same
        certificate. 409 `load_not_pending` for any other certificate of a settled load;
        422 for one that does not confirm this load. Every refused one is quarantined."""
        return loads.confirm_load(ctx, principal, load_id, data)

    @get(
        "/",
        operation_id="listLoads",
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
        card_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[Literal["pending", "posted", "voided"] | None] = None,
    ) -> Page[Load]:
        return loads.list_loads(
            ctx, principal, limit, starting_after, ending_before, card_id, status
        )

    @get(
        "/{load_id:uuid}",
        operation_id="getLoad",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, load_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Load:
        return loads.get_load(ctx, principal, load_id)


class RefundController(Controller):
    path = "/v1/refunds"
    tags = ("Refunds",)

    @post(
        "/",
        operation_id="createRefund",
        opt=scopes(OWNERS_AND_ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Refund part or all of a card debit",
    )
    def create(
        self,
        data: JSONBody[RefundCreate],
        ctx: Ctx,
        principal: Caller,
        idempotency_key: IdempotencyKey,
    ) -> Refund:
        return loads.create_refund(ctx, principal, idempotency_key, data)

    @get(
        "/",
        operation_id="listRefunds",
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
        card_transaction_id: FromQuery[uuid.UUID | None] = None,
    ) -> Page[Refund]:
        return loads.list_refunds(
            ctx, principal, limit, starting_after, ending_before, card_transaction_id
        )

    @get(
        "/{refund_id:uuid}",
        operation_id="getRefund",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, refund_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Refund:
        return loads.get_refund(ctx, principal, refund_id)
