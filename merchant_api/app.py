"""The Litestar application: routes, the request pipeline, problem answers, OpenAPI.

`create_app(ctx)` builds one application for one process. Errors of every kind leave as
RFC 9457 problem+json; a database that cannot be reached is 503 `database_unavailable`
with Retry-After, never a 500 and never a partial write (every write is one transaction).
"""

from __future__ import annotations

import gc
import logging
from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
from litestar import Litestar, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from openapi_ui_bundles import swagger_ui

from merchant_api.auth import FailureCounter, KeyCache
from merchant_api.coalesce import Coalescer
from merchant_api.context import ApiContext
from merchant_api.controllers import cards, onboarding, payments, settlements, system, webhooks
from merchant_api.deps import DEPENDENCIES, PUBLIC
from merchant_api.errors import PROBLEM_MEDIA_TYPE, ApiError, ErrorCode, problem_body
from merchant_api.idempotency import ClaimBatcher
from merchant_api.middleware import (
    AuthMiddleware,
    Gatekeeping,
    IdempotencyMiddleware,
    ObservabilityMiddleware,
    request_id_of,
)
from merchant_api.observability import DATABASE_UNAVAILABLE
from merchant_api.ratelimit import RateLimiter
from merchant_api.worker import BackgroundWorker

log = logging.getLogger("merchant_api.errors")

API_VERSION = "1.0.0"
_UI_ASSETS = "/schema/assets"


def create_app(ctx: ApiContext) -> Litestar:
    route_handlers: list[Any] = [
        system.health,
        system.ready,
        system.metrics,
        onboarding.MerchantController,
        onboarding.TerminalController,
        onboarding.ApiKeyController,
        cards.CardController,
        cards.get_hotlist,
        cards.list_card_credits,
        cards.issue_card_batch,
        payments.CardTransactionController,
        payments.upload_gate_batch,
        payments.LoadController,
        payments.RefundController,
        settlements.SettlementController,
        settlements.PayoutController,
        webhooks.WebhookEndpointController,
        webhooks.EventController,
        create_static_files_router(
            path=_UI_ASSETS,
            directories=[swagger_ui.static_path],
            opt=PUBLIC,
            include_in_schema=False,
        ),
    ]
    worker = BackgroundWorker(ctx)
    coalescer = Coalescer(ctx)
    claims = ClaimBatcher(ctx.engine, ctx.limits.idempotency_lease_s)

    def start_worker() -> None:
        if ctx.run_background:
            worker.start()
        # What start-up built (routes, schemas, the OpenAPI document) lives as long as the
        # worker: frozen, the garbage collector stops re-scanning it in every full
        # collection, each of which holds up every request in flight.
        gc.collect()
        gc.freeze()

    app = Litestar(
        route_handlers=route_handlers,
        on_startup=[start_worker],
        on_shutdown=[worker.stop, coalescer.stop, claims.stop],
        dependencies=DEPENDENCIES,
        middleware=[ObservabilityMiddleware, AuthMiddleware, IdempotencyMiddleware],
        exception_handlers={Exception: handle_exception},
        openapi_config=_openapi_config(),
        request_max_body_size=ctx.limits.max_body_bytes,
        logging_config=None,
    )
    _check_every_route_is_guarded(app)
    app.state.ctx = ctx
    app.state.coalescer = coalescer
    app.state.exception_handler = handle_exception
    app.state.gatekeeping = Gatekeeping(
        keys=KeyCache(ctx.limits.api_key_cache_s),
        limiter=RateLimiter(ctx.limits.rate_per_second, ctx.limits.rate_burst),
        failures=FailureCounter(ctx.limits.auth_failures_per_minute),
        claims=claims,
    )
    return app


def _check_every_route_is_guarded(app: Litestar) -> None:
    """A /v1 route without scopes would be public: refuse to start rather than serve it."""
    for route in app.routes:
        if not route.path.startswith("/v1"):
            continue
        for handler in getattr(route, "route_handlers", []):
            methods = set(getattr(handler, "http_methods", ())) - {"OPTIONS", "HEAD"}
            if methods and "scopes" not in handler.opt:
                raise RuntimeError(f"route {route.path} names no scopes")


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="JakartaOne merchant API",
        version=API_VERSION,
        description=(
            "Card transactions, gate batches, loads, refunds, cards, settlements and webhooks"
            " for JakartaOne, Jakarta's city card. Money is integer rupiah. Every POST needs"
            " an Idempotency-Key. Errors are RFC 9457 problem+json with a stable `code`."
            " See docs/api.md."
        ),
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{_UI_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{_UI_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{_UI_ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f'<link rel="icon" href="{_UI_ASSETS}/favicon-32x32.png">',
            )
        ],
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key: `Authorization: Bearer jo_<prefix>_<secret>`",
                )
            }
        ),
        security=[{"ApiKey": []}],
        use_handler_docstrings=True,
    )


def _problem(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response[Any]:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = problem_body(
        status,
        code,
        title,
        detail,
        request.scope.get("path", ""),
        request_id_of(request.scope),
        errors,
    )
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _database_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.TimeoutError):
        return True  # the pool could not hand out a connection in time
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    return False


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ApiError):
        return _problem(request, exc.status, exc.code, exc.detail, exc.headers, exc.errors)
    if isinstance(exc, ValidationException):
        errors = [
            {"field": str(item.get("key", "")), "message": str(item.get("message", ""))}
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        return _problem(
            request,
            400,
            ErrorCode.REQUEST_INVALID.value,
            "the request does not match the schema",
            errors=errors or None,
        )
    if isinstance(exc, UnicodeDecodeError):
        return _problem(request, 400, ErrorCode.REQUEST_INVALID.value, "the body is not UTF-8")
    if isinstance(exc, RecursionError):
        return _problem(request, 400, ErrorCode.REQUEST_INVALID.value, "the JSON nests too deeply")
    if isinstance(exc, NotFoundException):
        return _problem(request, 404, ErrorCode.NOT_FOUND.value, "no such route")
    if isinstance(exc, MethodNotAllowedException):
        return _problem(
            request,
            405,
            ErrorCode.METHOD_NOT_ALLOWED.value,
            "this route does not take that method",
            exc.headers,
        )
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return _problem(
                request, 413, ErrorCode.REQUEST_TOO_LARGE.value, "the request body is too large"
            )
        code = ErrorCode.REQUEST_INVALID if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
        return _problem(
            request, exc.status_code, code.value, "the request was refused", exc.headers
        )
    if _database_unreachable(exc):
        DATABASE_UNAVAILABLE.inc()
        log.warning(
            "database unavailable",
            extra={
                "fields": {"request_id": request_id_of(request.scope), "error": type(exc).__name__}
            },
        )
        return _problem(
            request,
            503,
            ErrorCode.DATABASE_UNAVAILABLE.value,
            "the database is unavailable; nothing was changed, retry later",
            {"Retry-After": "2"},
        )
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"fields": {"request_id": request_id_of(request.scope)}},
    )
    return _problem(request, 500, ErrorCode.INTERNAL_ERROR.value, "an internal error occurred")
