"""The request pipeline around every handler: observe, authenticate, de-duplicate.

Order (outermost first): `ObservabilityMiddleware` (request id, metrics, one log line),
`AuthMiddleware` (key, scope, rate limit), `IdempotencyMiddleware` (POST only).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
import msgspec
from litestar import Request, Response
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from merchant_api import idempotency
from merchant_api.auth import (
    FailureCounter,
    KeyCache,
    Principal,
    authenticate,
    load_key,
    needs_lookup,
    require_scope,
)
from merchant_api.context import ApiContext
from merchant_api.errors import PROBLEM_MEDIA_TYPE, ApiError, ErrorCode
from merchant_api.observability import LATENCY, REQUESTS
from merchant_api.ratelimit import RateLimiter

log = logging.getLogger("merchant_api.requests")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PRINCIPAL = "jakartaone_principal"
REQUEST_ID = "jakartaone_request_id"
IDEMPOTENCY_KEY = "jakartaone_idempotency_key"
# (api key id, Idempotency-Key, claim): the claim the request holds. A handler that
# completes the record in its own transaction sets IDEMPOTENCY_DONE when it has.
IDEMPOTENCY_CLAIM = "jakartaone_idempotency_claim"
IDEMPOTENCY_DONE = "jakartaone_idempotency_done"
# On a route with the option `claims_in_transaction`, the middleware does not claim the
# key: it leaves the ClaimRequest here for the handler, which claims it in the transaction
# that does the work (one commit for both) and sets IDEMPOTENCY_CLAIM if it won it.
IDEMPOTENCY_REQUEST = "jakartaone_idempotency_request"
# Guesses: a missing key guesses nothing and is not counted.
_AUTH_FAILURES = {
    ErrorCode.API_KEY_INVALID,
    ErrorCode.API_KEY_REVOKED,
    ErrorCode.API_KEY_EXPIRED,
}


@dataclass
class Gatekeeping:
    """Per-process state of the pipeline."""

    keys: KeyCache
    limiter: RateLimiter
    failures: FailureCounter
    claims: idempotency.ClaimBatcher


MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")


def json_depth(body: bytes) -> int:
    """How deep a JSON text nests (strings ignored); decoders recurse that deep."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_AT_FIELD = re.compile(r" - at `\$\.?([^`]*)`")


def check_body(handler: Any, body: bytes) -> None:
    """Refuse a POST body before any work: not UTF-8, nested past MAX_JSON_DEPTH, or (for
    a typed body) not its type under strict JSON rules. Litestar converts bodies leniently
    (1000.0 and "1000" would pass as the integer 1000, "true" as true); money and counts
    must come as JSON integers, so the strict decode here is what decides."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, ErrorCode.REQUEST_INVALID, "the body is not UTF-8") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(
            400,
            ErrorCode.REQUEST_INVALID,
            f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels",
        )
    field = handler.parsed_data_field
    body_type = field.annotation if field is not None else None
    if not body or not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)):
        return
    try:
        msgspec.json.decode(body, type=body_type, strict=True)
    except msgspec.ValidationError as error:
        message = str(error)
        at = _AT_FIELD.search(message)
        raise ApiError(
            400,
            ErrorCode.REQUEST_INVALID,
            "the request does not match the schema",
            errors=[{"field": at.group(1) if at else "", "message": message}],
        ) from None
    except msgspec.DecodeError:
        raise ApiError(400, ErrorCode.REQUEST_INVALID, "the body is not JSON") from None


def _method(scope: Scope) -> str:
    return cast("HTTPScope", scope)["method"]


def ctx_of(scope: Scope) -> ApiContext:
    ctx: ApiContext = scope["app"].state.ctx
    return ctx


def gatekeeping_of(scope: Scope) -> Gatekeeping:
    gate: Gatekeeping = scope["app"].state.gatekeeping
    return gate


# Request ids: random per process, then counted. os.urandom per request would hand the
# GIL to the coalescer's thread (getrandom releases it) and wait for it back.
_REQUEST_ID_PREFIX = os.urandom(8).hex()
_REQUEST_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_COUNTER):016x}"


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get(REQUEST_ID, ""))


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        given = Headers.from_scope(scope).get("x-request-id", "")
        request_id = given if given and _REQUEST_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})[REQUEST_ID] = request_id
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        try:
            try:
                await self.app(scope, receive, observed_send)
            except Exception as exc:
                # Answer here, inside the observed send, so that refusals made by the
                # middleware below (401, 429, ...) carry the request id and are counted.
                request = Request[Any, Any, Any](scope, receive)
                answer = scope["app"].state.exception_handler(request, exc)
                await answer.to_asgi_response(app=None, request=request)(
                    scope, receive, observed_send
                )
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = _method(scope)
            requests, latency = _metrics_for(method, route, status)
            requests.inc()
            latency.observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                principal = scope["state"].get(PRINCIPAL)
                log.info(
                    "request",
                    extra={
                        "fields": {
                            "request_id": request_id,
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                            "api_key": principal.prefix if principal else None,
                        }
                    },
                )


_METRIC_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _metrics_for(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of one (method, route template, status):
    looked up once per process (routes are templates, so there are few of them)."""
    found = _METRIC_CHILDREN.get((method, route, status))
    if found is None:
        found = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        _METRIC_CHILDREN[(method, route, status)] = found
    return found


class AuthMiddleware:
    """Authenticates the key, checks the route's scopes, then the key's rate limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        scopes = scope["route_handler"].opt.get("scopes")
        if scopes is None:  # public: create_app proves every /v1 route names its scopes
            await self.app(scope, receive, send)
            return
        if not scope["path"].isascii():
            # Every route is ASCII; only an id could match non-ASCII, and int() reads
            # fullwidth digits: one object must have one spelling, not look-alikes.
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such route")
        ctx, gate = ctx_of(scope), gatekeeping_of(scope)
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = gate.failures.blocked(client)
        if wait:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many failed authentications",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        header = Headers.from_scope(scope).get("authorization")
        try:
            prefix = needs_lookup(gate.keys, header)
            loaded = (
                await anyio.to_thread.run_sync(load_key, ctx, gate.keys, prefix)
                if prefix is not None
                else False
            )
            principal = authenticate(ctx, gate.keys, header, loaded)
        except ApiError as refusal:
            if refusal.code in _AUTH_FAILURES:
                gate.failures.record(client)
            raise
        require_scope(principal, scopes)
        decision = gate.limiter.take(principal.prefix)
        if not decision.allowed:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "rate limit for this API key exceeded",
                headers=decision.headers(),
            )
        scope["state"][PRINCIPAL] = principal
        await self.app(scope, receive, send)


class IdempotencyMiddleware:
    """Claims the Idempotency-Key of a POST, stores its answer, replays it to retries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or _method(scope) != "POST":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = scope["state"].get(PRINCIPAL)
        if principal is None:  # a public POST: nothing to de-duplicate against
            await self.app(scope, receive, send)
            return
        key = Headers.from_scope(scope).get("idempotency-key")
        if key is None:
            raise ApiError(
                400, ErrorCode.IDEMPOTENCY_KEY_MISSING, "every POST needs an Idempotency-Key header"
            )
        if not idempotency.valid_key(key):
            raise ApiError(
                400,
                ErrorCode.IDEMPOTENCY_KEY_INVALID,
                "Idempotency-Key: 1 to 255 printable ASCII characters",
            )
        ctx = ctx_of(scope)
        body = await Request[Any, Any, Any](scope, receive).body()
        check_body(scope["route_handler"], body)
        digest = idempotency.request_digest(
            _method(scope), scope["path"], scope.get("query_string", b""), body
        )
        stored = idempotency.stored_key(key)
        wanted = idempotency.ClaimRequest(principal.api_key_id, stored, digest)
        state = scope["state"]
        state[IDEMPOTENCY_KEY] = key
        if scope["route_handler"].opt.get("claims_in_transaction"):
            state[IDEMPOTENCY_REQUEST] = wanted
        else:
            outcome = await anyio.to_thread.run_sync(gatekeeping_of(scope).claims.claim, wanted)
            if isinstance(outcome, idempotency.Replay):
                answer = replayed(outcome.status, outcome.body)
                request = Request[Any, Any, Any](scope, receive)
                await answer.to_asgi_response(app=None, request=request)(scope, receive, send)
                return
            state[IDEMPOTENCY_CLAIM] = (principal.api_key_id, stored, outcome.claim)
        messages: list[Message] = []

        async def buffered_send(message: Message) -> None:
            messages.append(message)

        try:
            await self.app(scope, receive, buffered_send)
        except BaseException:
            if IDEMPOTENCY_CLAIM in state:
                await _quietly(
                    idempotency.release, ctx, principal, stored, state[IDEMPOTENCY_CLAIM][2]
                )
            raise
        status = next((m["status"] for m in messages if m["type"] == "http.response.start"), 500)
        claim = state.get(IDEMPOTENCY_CLAIM)
        if claim is None or state.get(IDEMPOTENCY_DONE):
            pass  # nothing claimed here, or stored with the change itself
        elif status < 500:
            response = b"".join(
                m.get("body", b"") for m in messages if m["type"] == "http.response.body"
            )
            response = _redacted(response, scope["route_handler"].opt.get("redact", ()))
            await _quietly(idempotency.complete, ctx, principal, stored, claim[2], status, response)
        else:
            await _quietly(idempotency.release, ctx, principal, stored, claim[2])
        for message in messages:
            await send(message)


async def _quietly(function: Any, ctx: ApiContext, principal: Principal, *args: Any) -> None:
    """Record or release an idempotency claim; a failure here must not change the answer
    (the lease expires and a retry converges on the same effect)."""
    try:
        await anyio.to_thread.run_sync(function, ctx.engine, principal.api_key_id, *args)
    except Exception:
        log.warning("idempotency record not updated", exc_info=True)


def _redacted(body: bytes, fields: tuple[str, ...]) -> bytes:
    """The answer as stored for replay: secrets shown once (a new API key, a webhook
    signing secret) are blanked, so that no secret is ever stored in clear."""
    if not fields:
        return body
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    if isinstance(decoded, dict):
        for name in fields:
            if name in decoded:
                decoded[name] = None
    return json.dumps(decoded, separators=(",", ":")).encode()


def replayed(status: int, body: bytes) -> Response[bytes]:
    """The stored answer of an earlier request with the same Idempotency-Key."""
    media = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    return Response(
        body, status_code=status, media_type=media, headers={"Idempotent-Replayed": "true"}
    )
