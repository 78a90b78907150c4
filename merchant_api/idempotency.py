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
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from ledger import run_write
from ledger.db import is_sqlite
from ledger.pgarrays import column, columns
from merchant_api import schema
from merchant_api.bulk import pair_in
from merchant_api.errors import ApiError, ErrorCode
from merchant_api.wib import now_us

IDEMPOTENCY_NAMESPACE = uuid.UUID("9d3c1f0a-52b4-4c1e-8a8e-1f6f2e7b3c55")
MAX_KEY_LENGTH = 255


def valid_key(key: str) -> bool:
    """1 to 255 printable ASCII characters, no space (33 to 126)."""
    return (
        1 <= len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key
    )


def stored_key(key: str) -> str:
    """What the database keeps of an Idempotency-Key: its SHA-256 in hex. A client may put
    anything in a key (an order number, even a card serial); only its digest is stored.
    Objects a POST creates still take ids derived from the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


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


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    api_key_id: uuid.UUID
    key: str
    digest: bytes


def claim(
    engine: Engine, api_key_id: uuid.UUID, key: str, digest: bytes, lease_s: int
) -> Proceed | Replay:
    """Claim `key` for this request, or say what to answer instead (raises ApiError)."""
    outcome = claim_many(engine, [ClaimRequest(api_key_id, key, digest)], lease_s)[0]
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


def claim_many(
    engine: Engine, requests: list[ClaimRequest], lease_s: int
) -> list[Proceed | Replay | ApiError]:
    """Claim many keys in one transaction (concurrent requests' claims batched together):
    each request gets Proceed, Replay, or the ApiError to answer with."""
    return run_write(engine, lambda conn: claim_in(conn, requests, lease_s))


def claim_in(
    conn: Connection, requests: list[ClaimRequest], lease_s: int
) -> list[Proceed | Replay | ApiError]:
    """`claim_many` in the caller's write transaction, so that a handler can claim its keys
    in the transaction that does the work and store the answer there too: one commit for
    both. The claims commit or roll back with that work."""
    if not requests:  # a coalesced group whose requests carry no Idempotency-Key
        return []
    claims = Claims.prepare(requests, lease_s)
    return claims.settle(conn, insert_claims(conn, claims))


@dataclass(frozen=True, slots=True)
class Claims:
    """Claims about to be made together: each request's own claim id, and when its lease
    ends. They are made in two steps, so that the insert can travel with other statements
    (`merchant_api.services.certificate_store`): `insert_claims` (or `CLAIM_POSTGRESQL`
    with `postgresql_parameters`) says which claims won their keys, and `settle` says what
    every request gets.

    The keys are inserted in (API key, key) order: an insert that meets a key another
    transaction has inserted but not yet committed waits for it, and a fixed order means
    two transactions never wait for each other."""

    requests: list[ClaimRequest]
    mine: list[uuid.UUID]
    now: int
    until: int

    @classmethod
    def prepare(cls, requests: list[ClaimRequest], lease_s: int) -> Claims:
        now = now_us()
        return cls(requests, [uuid.uuid4() for _ in requests], now, now + lease_s * 1_000_000)

    def in_order(self) -> list[tuple[ClaimRequest, uuid.UUID]]:
        return sorted(
            zip(self.requests, self.mine, strict=True),
            key=lambda r: (r[0].api_key_id.int, r[0].key),
        )

    def postgresql_parameters(self) -> dict[str, Any]:
        in_order = self.in_order()
        return {
            "key_ids": column("uuid", [r.api_key_id for r, _ in in_order]),
            "keys": column("text", [r.key for r, _ in in_order]),
            "digests": column("bytea", [r.digest for r, _ in in_order]),
            "claims": column("uuid", [claim for _, claim in in_order]),
            "until": self.until,
            "now": self.now,
        }

    def settle(self, conn: Connection, won: set[uuid.UUID]) -> list[Proceed | Replay | ApiError]:
        """Each request's outcome, given the claims the insert returned (`won`): a key
        another request holds is read back (a replay, a reuse, a request in flight, or a
        lease expired and taken over here)."""
        t = schema.idempotency_keys
        won = set(won)
        requests, mine, now = self.requests, self.mine, self.now
        lost = {
            (r.api_key_id, r.key)
            for r, claim in zip(requests, mine, strict=True)
            if claim not in won
        }
        existing = (
            {
                (row.api_key_id, row.key): row
                for row in conn.execute(sa.select(t).where(pair_in(t.c.api_key_id, t.c.key, lost)))
            }
            if lost
            else {}
        )
        outcomes: list[Proceed | Replay | ApiError] = []
        for request, claim in zip(requests, mine, strict=True):
            if claim in won:
                outcomes.append(Proceed(claim))
                continue
            row = existing.get((request.api_key_id, request.key))
            if row is None:  # released between the insert and the read: try again later
                outcomes.append(_in_flight())
            elif row.request_digest != request.digest:
                outcomes.append(
                    ApiError(
                        422,
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "this Idempotency-Key was used with a different request",
                    )
                )
            elif row.response_status is not None:
                outcomes.append(Replay(row.response_status, bytes(row.response_body or b"")))
            elif row.locked_until_us > now or row.claim in won:
                outcomes.append(_in_flight())
            else:
                # The request that held the key died with its server: take the key over.
                taken = conn.execute(
                    sa.update(t)
                    .where(
                        t.c.api_key_id == request.api_key_id,
                        t.c.key == request.key,
                        t.c.claim == row.claim,
                        t.c.response_status.is_(None),
                    )
                    .values(claim=claim, locked_until_us=self.until)
                ).rowcount
                if taken == 1:
                    won.add(claim)
                    outcomes.append(Proceed(claim))
                else:
                    outcomes.append(_in_flight())
        return outcomes


def insert_claims(conn: Connection, claims: Claims) -> set[uuid.UUID]:
    """Insert the keys not held yet; returns the claims that won theirs."""
    if not is_sqlite(conn):
        won = conn.exec_driver_sql(CLAIM_POSTGRESQL, claims.postgresql_parameters()).scalars()
        return set(won)
    t = schema.idempotency_keys
    return {
        row.claim
        for row in conn.execute(
            sqlite_insert(t)
            .on_conflict_do_nothing(index_elements=[t.c.api_key_id, t.c.key])
            .returning(t.c.claim),
            [
                {
                    "api_key_id": r.api_key_id,
                    "key": r.key,
                    "request_digest": r.digest,
                    "claim": claim,
                    "locked_until_us": claims.until,
                    "created_us": claims.now,
                }
                for r, claim in claims.in_order()
            ],
        )
    }


# PostgreSQL (in psycopg's parameter style): the keys travel as arrays, so the statement's
# text (and its prepared plan) is the same however many there are; unnest keeps the arrays'
# (key) order.
CLAIM_POSTGRESQL = (
    "INSERT INTO idempotency_keys"
    " (api_key_id, key, request_digest, claim, locked_until_us, created_us)"
    " SELECT k.api_key_id, k.key, k.request_digest, k.claim, %(until)s, %(now)s"
    " FROM unnest(CAST(%(key_ids)s AS uuid[]), CAST(%(keys)s AS varchar[]),"
    " CAST(%(digests)s AS bytea[]), CAST(%(claims)s AS uuid[]))"
    " AS k(api_key_id, key, request_digest, claim)"
    " ON CONFLICT (api_key_id, key) DO NOTHING RETURNING claim"
)


# PostgreSQL: the answers as arrays, one statement for all of them (see CLAIM_POSTGRESQL).
COMPLETE_POSTGRESQL = (
    "UPDATE idempotency_keys k SET response_status = a.status, response_body = a.body"
    " FROM unnest(CAST(%(key_ids)s AS uuid[]), CAST(%(keys)s AS varchar[]),"
    " CAST(%(claims)s AS uuid[]), CAST(%(statuses)s AS integer[]), CAST(%(bodies)s AS bytea[]))"
    " AS a(api_key_id, key, claim, status, body)"
    " WHERE k.api_key_id = a.api_key_id AND k.key = a.key AND k.claim = a.claim"
    " AND k.response_status IS NULL"
)


class ClaimBatcher:
    """Claims of concurrent requests in a process, made together in one transaction by one
    thread (a request waits for its own outcome). Same answers as one at a time."""

    MAX_BATCH = 256

    def __init__(self, engine: Engine, lease_s: int) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self._queue: queue.Queue[tuple[ClaimRequest, _Waiter] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def claim(self, request: ClaimRequest) -> Proceed | Replay:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="jakartaone-claims", daemon=True
                )
                self._thread.start()
        waiter = _Waiter()
        self._queue.put((request, waiter))
        waiter.done.wait()
        if isinstance(waiter.outcome, BaseException):
            raise waiter.outcome
        assert waiter.outcome is not None
        return waiter.outcome

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            try:
                outcomes: list[Any] = claim_many(
                    self.engine, [request for request, _ in batch], self.lease_s
                )
            except BaseException as exc:
                outcomes = [exc] * len(batch)
            for (_, waiter), outcome in zip(batch, outcomes, strict=True):
                waiter.outcome = outcome
                waiter.done.set()


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Proceed | Replay | BaseException | None = None


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
    if not is_sqlite(conn):
        conn.exec_driver_sql(COMPLETE_POSTGRESQL, complete_parameters(done))
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


def complete_parameters(done: list[tuple[uuid.UUID, str, uuid.UUID, int, bytes]]) -> dict[str, Any]:
    """COMPLETE_POSTGRESQL's parameters for these answers."""
    key_ids, keys, claims, statuses, bodies = columns(
        ("uuid", "text", "uuid", "int4", "bytea"), done
    )
    return {
        "key_ids": key_ids,
        "keys": keys,
        "claims": claims,
        "statuses": statuses,
        "bodies": bodies,
    }


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
