"""API keys, scopes and ownership: who may call which route, and on whose objects.

Guarantees:
- Every route names the scopes it admits (`opt={"scopes": ...}`); a route without scopes
  must say `public=True`. A key outside the route's scopes gets 403 `scope_insufficient`.
- A key is `jo_<prefix>_<secret>`; only SHA-256 of the secret is stored and it is compared
  in constant time. Revoked and expired keys are refused (401, each with its own code).
- merchant and gate-operator keys belong to one merchant or operator: every object they
  read or write is filtered by that owner, and another owner's object answers 404, exactly
  as a missing one would (its existence is not revealed).
- Bad keys are counted per client address; past the limit the address gets 429 before any
  key is looked up, so keys cannot be guessed at speed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa

from ledger import run_read
from merchant_api import schema
from merchant_api.context import ApiContext
from merchant_api.crypto import secret_matches, split_api_key
from merchant_api.errors import ApiError, ErrorCode
from merchant_api.wib import now_us


class Scope(StrEnum):
    MERCHANT = "merchant"
    GATE_OPERATOR = "gate-operator"
    ISSUER_ADMIN = "issuer-admin"
    ANALYST = "analyst"

    @property
    def has_owner(self) -> bool:
        return self in (Scope.MERCHANT, Scope.GATE_OPERATOR)


# The scopes routes admit, by what they do.
ISSUER = frozenset({Scope.ISSUER_ADMIN})
READERS = frozenset(Scope)
OWNERS = frozenset({Scope.MERCHANT, Scope.GATE_OPERATOR})
OWNERS_AND_ISSUER = frozenset({Scope.MERCHANT, Scope.GATE_OPERATOR, Scope.ISSUER_ADMIN})
TERMINAL_CALLERS = frozenset({Scope.MERCHANT, Scope.GATE_OPERATOR, Scope.ISSUER_ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: one API key, its scope and (for merchant and gate-operator) its owner."""

    api_key_id: uuid.UUID
    prefix: str
    scope: Scope
    merchant_id: uuid.UUID | None

    @property
    def owner(self) -> uuid.UUID | None:
        """The merchant or operator whose objects alone this key sees; None sees all."""
        return self.merchant_id if self.scope.has_owner else None

    def can_see(self, merchant_id: uuid.UUID | None) -> bool:
        return self.owner is None or self.owner == merchant_id


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    id: uuid.UUID
    secret_hash: bytes
    scope: Scope
    merchant_id: uuid.UUID | None
    expires_us: int | None
    revoked_us: int | None


@dataclass(slots=True)
class _CachedKey:
    trusted_until: float
    refresh_from: float
    record: _KeyRecord | None
    refreshing: bool = False


class KeyCache:
    """Keys looked up recently, each trusted for `ttl_s` seconds after its lookup (0 turns
    caching off): a revocation made on another process takes effect within that.

    Halfway through, the next request that uses a key looks it up again, alone, while the
    others go on with the record, which is still within its `ttl_s`. Under steady traffic
    an entry is refreshed before it expires, so requests never wait on lookups together.
    (Before, when an entry expired, every request in flight on the process found it so at
    once and each looked the key up: a stall of all of them every second, which was the
    API's p99 latency.)"""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _CachedKey] = {}
        self._lock = threading.Lock()

    def get(self, prefix: str) -> tuple[bool, _KeyRecord | None]:
        with self._lock:
            entry = self._entries.get(prefix)
        if entry is None or entry.trusted_until < self._clock():
            return False, None
        return True, entry.record

    def claim_lookup(self, prefix: str) -> bool:
        """Whether the caller must look the key up: it is not cached or no longer trusted,
        or it is due for its refresh and no one else is refreshing it (the caller now is,
        and must `put` the result or `release` the claim)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(prefix)
            if entry is None or entry.trusted_until < now:
                return True
            if entry.refresh_from <= now and not entry.refreshing:
                entry.refreshing = True
                return True
            return False

    def release(self, prefix: str) -> None:
        """Give up a refresh claimed by `claim_lookup` (its lookup failed)."""
        with self._lock:
            entry = self._entries.get(prefix)
            if entry is not None:
                entry.refreshing = False

    def put(self, prefix: str, record: _KeyRecord | None) -> None:
        if self.ttl_s <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[prefix] = _CachedKey(now + self.ttl_s, now + self.ttl_s / 2, record)

    def forget(self, prefix: str) -> None:
        with self._lock:
            self._entries.pop(prefix, None)


class FailureCounter:
    """Failed authentications per client address in a sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        if client not in self._failures:  # the usual case: no failure to count
            return 0.0
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - 60]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            if len(recent) < self.per_minute:
                return 0.0
            return max(0.1, recent[0] + 60 - now)

    def record(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            self._failures.setdefault(client, []).append(time.monotonic())


def _load_key(ctx: ApiContext, prefix: str) -> _KeyRecord | None:
    k = schema.api_keys
    row = run_read(
        ctx.engine,
        lambda conn: conn.execute(
            sa.select(
                k.c.id,
                k.c.secret_hash,
                k.c.scope,
                k.c.merchant_id,
                k.c.expires_us,
                k.c.revoked_us,
            ).where(k.c.prefix == prefix)
        ).first(),
    )
    if row is None:
        return None
    return _KeyRecord(
        row.id,
        row.secret_hash,
        Scope(row.scope),
        row.merchant_id,
        row.expires_us,
        row.revoked_us,
    )


def authenticate(
    ctx: ApiContext,
    cache: KeyCache,
    authorization: str | None,
    loaded: _KeyRecord | bool | None = False,
) -> Principal:
    """The principal for an `Authorization: Bearer <key>` header, or ApiError (401).

    `loaded` is the key's record when the caller already looked it up (False: not yet)."""
    if not authorization:
        raise ApiError(
            401,
            ErrorCode.API_KEY_MISSING,
            "send Authorization: Bearer <api key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = authorization.partition(" ")
    parts = split_api_key(token.strip()) if scheme.lower() == "bearer" else None
    if parts is None:
        raise ApiError(
            401,
            ErrorCode.API_KEY_INVALID,
            "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    prefix, secret = parts
    if loaded is not False:
        record = loaded if isinstance(loaded, _KeyRecord) else None
    else:
        cached, record = cache.get(prefix)
        if not cached:
            record = _load_key(ctx, prefix)
            cache.put(prefix, record)
    if record is None or not secret_matches(secret, record.secret_hash):
        raise ApiError(
            401,
            ErrorCode.API_KEY_INVALID,
            "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    now = now_us()
    if record.revoked_us is not None:
        raise ApiError(401, ErrorCode.API_KEY_REVOKED, "the API key was revoked")
    if record.expires_us is not None and record.expires_us <= now:
        raise ApiError(401, ErrorCode.API_KEY_EXPIRED, "the API key has expired")
    return Principal(record.id, prefix, record.scope, record.merchant_id)


def needs_lookup(cache: KeyCache, authorization: str | None) -> str | None:
    """The key prefix this request must look up in the database first (see
    `KeyCache.claim_lookup`), or None if the cache (or the header's shape alone) decides:
    lets the event loop skip a thread hop."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    parts = split_api_key(token.strip()) if scheme.lower() == "bearer" else None
    if parts is None or not cache.claim_lookup(parts[0]):
        return None
    return parts[0]


def load_key(ctx: ApiContext, cache: KeyCache, prefix: str) -> _KeyRecord | None:
    """Look the key up for a request that `needs_lookup` chose, and cache what it finds."""
    try:
        record = _load_key(ctx, prefix)
    except BaseException:
        cache.release(prefix)
        raise
    cache.put(prefix, record)
    return record


def require_scope(principal: Principal, scopes: frozenset[Scope]) -> None:
    if principal.scope not in scopes:
        allowed = ", ".join(sorted(s.value for s in scopes))
        raise ApiError(403, ErrorCode.SCOPE_INSUFFICIENT, f"this route needs scope {allowed}")
