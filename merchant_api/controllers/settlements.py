"""Settlements and payouts (read by owners; made by the nightly job or issuer staff)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from merchant_api.auth import ISSUER, READERS
from merchant_api.deps import Caller, Ctx, Cursor, Limit, problems, scopes
from merchant_api.schemas.common import Page
from merchant_api.schemas.settlements import Payout, PayoutPaid, Settlement, SettlementCreate
from merchant_api.services import settlements


class SettlementController(Controller):
    path = "/v1/settlements"
    tags = ("Settlements",)

    @post(
        "/",
        operation_id="createSettlement",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        sync_to_thread=True,
        summary="Settle one owner's closed business day (idempotent)",
    )
    def create(self, data: JSONBody[SettlementCreate], ctx: Ctx) -> Settlement:
        return settlements.settle(ctx.engine, ctx.ledger, data.merchant_id, data.business_date)

    @get(
        "/",
        operation_id="listSettlements",
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
        business_date: FromQuery[date | None] = None,
    ) -> Page[Settlement]:
        return settlements.list_settlements(
            ctx,
            principal,
            limit,
            starting_after,
            ending_before,
            merchant_id,
            business_date.isoformat() if business_date else None,
        )

    @get(
        "/{settlement_id:uuid}",
        operation_id="getSettlement",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(
        self, settlement_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller
    ) -> Settlement:
        return settlements.get_settlement(ctx, principal, settlement_id)


class PayoutController(Controller):
    path = "/v1/payouts"
    tags = ("Settlements",)

    @get(
        "/",
        operation_id="listPayouts",
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
        status: FromQuery[Literal["instructed", "paid", "failed"] | None] = None,
    ) -> Page[Payout]:
        return settlements.list_payouts(
            ctx, principal, limit, starting_after, ending_before, status
        )

    @get(
        "/{payout_id:uuid}",
        operation_id="getPayout",
        opt=scopes(READERS),
        responses=problems(404),
        sync_to_thread=True,
    )
    def retrieve(self, payout_id: FromPath[uuid.UUID], ctx: Ctx, principal: Caller) -> Payout:
        return settlements.get_payout(ctx, principal, payout_id)

    @post(
        "/{payout_id:uuid}/mark-paid",
        operation_id="markPayoutPaid",
        opt=scopes(ISSUER),
        responses=problems(404, 409, 422),
        status_code=200,
        sync_to_thread=True,
        summary="Record that the bank paid this payout",
    )
    def mark_paid(
        self, payout_id: FromPath[uuid.UUID], data: JSONBody[PayoutPaid], ctx: Ctx
    ) -> Payout:
        return settlements.mark_payout_paid(ctx.engine, payout_id, data.bank_reference)
