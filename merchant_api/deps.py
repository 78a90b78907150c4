"""Dependencies every handler may ask for, and the route options that govern them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from merchant_api.auth import Principal, Scope
from merchant_api.context import ApiContext
from merchant_api.errors import PROBLEM_MEDIA_TYPE, ApiError, ErrorCode
from merchant_api.middleware import IDEMPOTENCY_KEY, PRINCIPAL
from merchant_api.schemas.common import Problem

# Handlers take these as dependencies. A hot route may call them itself on its `request`:
# Litestar resolves two or more dependencies of one handler concurrently, in an anyio task
# group per request, which costs more than the lookups themselves.


def ctx_from(request: Request[Any, Any, Any]) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def principal_from(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal | None = request.scope["state"].get(PRINCIPAL)
    if principal is None:
        raise ApiError(401, ErrorCode.API_KEY_MISSING, "send Authorization: Bearer <api key>")
    return principal


def idempotency_key_from(request: Request[Any, Any, Any]) -> str:
    key: str | None = request.scope["state"].get(IDEMPOTENCY_KEY)
    if key is None:
        raise ApiError(
            400, ErrorCode.IDEMPOTENCY_KEY_MISSING, "every POST needs an Idempotency-Key header"
        )
    return key


DEPENDENCIES = {
    "ctx": Provide(ctx_from, sync_to_thread=False),
    "principal": Provide(principal_from, sync_to_thread=False),
    "idempotency_key": Provide(idempotency_key_from, sync_to_thread=False),
}


def scopes(allowed: frozenset[Scope], **extra: Any) -> dict[str, Any]:
    """Route options: the scopes a route admits (checked by AuthMiddleware)."""
    return {"scopes": allowed, **extra}


PUBLIC: dict[str, Any] = {"public": True}

_DESCRIPTIONS = {
    400: "The request is malformed (`request_invalid`, `idempotency_key_missing`, ...)",
    401: "No valid API key (`api_key_missing`, `api_key_invalid`, `api_key_revoked`, ...)",
    403: "The key's scope does not admit this route (`scope_insufficient`)",
    404: "No such object, or not the caller's (`not_found`)",
    409: "A conflict (`idempotency_request_in_flight`, ...)",
    413: "The body or batch is too large (`request_too_large`, `batch_too_large`)",
    422: "The request is well formed but refused; `code` names the broken rule",
    429: "Rate limited (`rate_limited`); see Retry-After",
    503: "The database is unavailable (`database_unavailable`); retry after Retry-After",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem answers a route can give."""
    wanted = sorted({400, 401, 403, 429, 503, *statuses})
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_MEDIA_TYPE,
        )
        for status in wanted
    }


# What handlers declare.
Ctx = NamedDependency[ApiContext]
Caller = NamedDependency[Principal]
IdempotencyKey = NamedDependency[str]
Limit = Annotated[int, QueryParameter(ge=1, le=100, description="Page size, 1 to 100")]
Cursor = Annotated[
    uuid.UUID | None, QueryParameter(description="An object id from a previous page")
]
