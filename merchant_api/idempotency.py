"""Idempotency-Key: a retried POST replays the first answer instead of acting twice.

Guarantees (docs/api.md, "Idempotency"):
- Every POST needs an `Idempotency-Key` (1 to 255 printable ASCII characters). Keys are
  scoped to the API key that sent them: two callers never collide.
- The first request with a key claims it; the answer it gets (any status below 500) is
  stored with the key and replayed, byte for byte, to every retry with the same method,
  path and body (`Idempotent-Replayed: true`).
- The same key with a different method, path or body is refused: 422
  `idempotency_key_reused`. A retry while the first request is still running: 409
  `idempotency_request_in_flight`.
- A 5xx answer (the database was down, say) is not stored: the key is released and a retry
  runs the request again. A request whose server died holds the key only for the lease
  (`Limits.idempotency_lease_s`); after that a retry takes the key over and runs again.
  Every operation is itself idempotent by its natural key (ids derive from the
  Idempotency-Key, transfer ids from card and counter), so a run repeated after a crash
  converges to the one effect.
- Records are kept at least 48 hours (`Limits.idempotency_retention_s`), then swept.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger import run_read, run_write
from merchant_api import schema
from merchant_api.errors import ApiError, ErrorCode
from merchant_api.wib import now_us

IDEMPOTENCY_NAMESPACE = uuid.UUID("9d3c1f0a-52b4-4c1e-8a8e-1f6f2e7b3c55")
MAX_KEY_LENGTH = 255


def valid_key(key: str) -> bool:
    return 1 <= len(key) <= MAX_KEY_LENGTH and all(33 <= ord(ch) <= 126 for ch in key)


def request_digest(method: str, path: str, query: bytes, body: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


def derived_id(api_key_id: uuid.UUID, key: str, purpose: str) -> uuid.UUID:
    """The id of the object a POST creates: the same for every retry with the same key."""
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{api_key_id}:{purpose}:{key}")


@dataclass(frozen=True, slots=True)
class Proceed:
    claim: uuid.UUID


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: bytes


def claim(
    engine: Engine, api_key_id: uuid.UUID, key: str, digest: bytes, lease_s: int
) -> Proceed | Replay:
    """Claim `key` for this request, or say what to answer instead."""
    for _ in range(3):
        outcome = _try_claim(engine, api_key_id, key, digest, lease_s)
        if outcome is not None:
            return outcome
    raise _in_flight()


def _try_claim(
    engine: Engine, api_key_id: uuid.UUID, key: str, digest: bytes, lease_s: int
) -> Proceed | Replay | None:
    t = schema.idempotency_keys
    mine = uuid.uuid4()
    now = now_us()
    until = now + lease_s * 1_000_000
    try:
        run_write(
            engine,
            lambda conn: conn.execute(
                sa.insert(t).values(
                    api_key_id=api_key_id,
                    key=key,
                    request_digest=digest,
                    claim=mine,
                    locked_until_us=until,
                    created_us=now,
                )
            ),
        )
        return Proceed(mine)
    except sa.exc.IntegrityError:
        pass
    row = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(t).where(t.c.api_key_id == api_key_id, t.c.key == key)
        ).first(),
    )
    if row is None:
        return None  # released a moment ago: claim it afresh
    if row.request_digest != digest:
        raise ApiError(
            422,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used with a different request",
        )
    if row.response_status is not None:
        return Replay(row.response_status, bytes(row.response_body or b""))
    if row.locked_until_us > now:
        raise _in_flight()
    stale = row.claim
    taken = run_write(
        engine,
        lambda conn: (
            conn.execute(
                sa.update(t)
                .where(
                    t.c.api_key_id == api_key_id,
                    t.c.key == key,
                    t.c.claim == stale,
                    t.c.response_status.is_(None),
                )
                .values(claim=mine, locked_until_us=until)
            ).rowcount
        ),
    )
    return Proceed(mine) if taken == 1 else None


def _in_flight() -> ApiError:
    return ApiError(
        409,
        ErrorCode.IDEMPOTENCY_REQUEST_IN_FLIGHT,
        "a request with this Idempotency-Key is still being processed",
        headers={"Retry-After": "1"},
    )


def complete(
    engine: Engine, api_key_id: uuid.UUID, key: str, mine: uuid.UUID, status: int, body: bytes
) -> None:
    t = schema.idempotency_keys
    run_write(
        engine,
        lambda conn: conn.execute(
            sa.update(t)
            .where(
                t.c.api_key_id == api_key_id,
                t.c.key == key,
                t.c.claim == mine,
                t.c.response_status.is_(None),
            )
            .values(response_status=status, response_body=body)
        ),
    )


def complete_in(conn: Connection, done: list[tuple[uuid.UUID, str, uuid.UUID, int, bytes]]) -> None:
    """Store answers in the caller's transaction (the one that made the change), so that
    the change and its replayable answer commit together. (api key, key, claim, status,
    body) each; a claim taken over meanwhile is left alone."""
    if not done:
        return
    t = schema.idempotency_keys
    conn.execute(
        sa.update(t)
        .where(
            t.c.api_key_id == sa.bindparam("b_key_id"),
            t.c.key == sa.bindparam("b_key"),
            t.c.claim == sa.bindparam("b_claim"),
            t.c.response_status.is_(None),
        )
        .values(response_status=sa.bindparam("b_status"), response_body=sa.bindparam("b_body")),
        [
            {"b_key_id": key_id, "b_key": key, "b_claim": claim, "b_status": status, "b_body": body}
            for key_id, key, claim, status, body in done
        ],
    )


def release(engine: Engine, api_key_id: uuid.UUID, key: str, mine: uuid.UUID) -> None:
    t = schema.idempotency_keys
    run_write(
        engine,
        lambda conn: conn.execute(
            sa.delete(t).where(
                t.c.api_key_id == api_key_id,
                t.c.key == key,
                t.c.claim == mine,
                t.c.response_status.is_(None),
            )
        ),
    )


def sweep(engine: Engine, retention_s: int) -> int:
    """Delete records older than the retention period; returns how many went."""
    t = schema.idempotency_keys
    horizon = now_us() - retention_s * 1_000_000
    return int(
        run_write(
            engine,
            lambda conn: (
                conn.execute(
                    sa.delete(t).where(t.c.created_us < horizon, t.c.response_status.is_not(None))
                ).rowcount
            ),
        )
    )
