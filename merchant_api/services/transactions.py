"""Card transactions submitted one at a time by terminals, gate batches, and reading them.

Guarantees:
- A single submission answers 201 with the transaction when posted, 200 with the recorded
  one when it is a duplicate, and 422 with the quarantine reason as `code` otherwise (the
  certificate is kept in quarantine all the same).
- A gate batch is decided and recorded in one transaction: whole or not at all. Its answer
  is stored with the batch, so a retry with the same batch id (and body) gets the same
  answer, from any API key of the same owner and after the Idempotency-Key record is gone.
  A batch id re-used for a different body is refused (409 `idempotency_key_reused`).
- Reads are filtered by owner: a merchant sees only transactions at its own terminals.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import run_read, run_write
from ledger.db import RetryTransaction
from merchant_api import idempotency, schema
from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.errors import ApiError, ErrorCode, not_found
from merchant_api.pagination import page
from merchant_api.schemas.cards import BatchAnswer, BatchItem, CardTransaction, GateBatch
from merchant_api.schemas.common import Page
from merchant_api.services import certificates, webhooks
from merchant_api.services.certificate_store import Writes, store_for
from merchant_api.wib import business_date, now_us, to_datetime

ct, gb = schema.card_transactions, schema.gate_batches


def transaction_out(row: Any) -> CardTransaction:
    return CardTransaction(
        id=row.id,
        card_id=row.card_id,
        card_counter=row.card_counter,
        kind=row.kind,
        amount=row.amount,
        fee=row.fee,
        net_amount=row.amount - row.fee,
        balance_after=row.balance_after,
        merchant_id=row.merchant_id,
        terminal_id=row.terminal_id,
        terminal_code=row.terminal_code,
        terminal_seq=row.terminal_seq,
        card_time=to_datetime(row.card_time_us),
        journey=json.loads(row.journey) if row.journey else None,
        refunded_amount=row.refunded_amount,
        transfer_id=row.transfer_id,
        batch_id=row.batch_id,
        business_date=row.business_date,
        created_at=to_datetime(row.created_us),
    )


def write(ctx: ApiContext, work: Any) -> Any:
    """`run_write`, also retrying when a concurrent writer inserted the same unique row
    first (the next attempt sees that row and answers from it)."""

    def guarded(conn: Connection) -> Any:
        try:
            return work(conn)
        except sa.exc.IntegrityError as exc:
            if not _unique_violation(exc):
                raise
            raise RetryTransaction("unique row inserted concurrently") from exc

    return run_write(ctx.engine, guarded)


def _unique_violation(exc: sa.exc.IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(exc.orig)


@dataclass(slots=True)
class Answer:
    """What one coalesced single submission gets: a response (status, JSON body), the
    stored answer of an earlier request with its Idempotency-Key (`replay`), or an error;
    and the claim it won on its Idempotency-Key, if it won one (`claim`), with whether its
    answer was stored with it in the same transaction (`stored`)."""

    response: tuple[int, bytes] | None = None
    replay: idempotency.Replay | None = None
    error: ApiError | None = None
    claim: uuid.UUID | None = None
    stored: bool = False


def submit_many(
    ctx: ApiContext,
    jobs: list[tuple[Principal, certificates.Submitted, idempotency.ClaimRequest | None]],
) -> list[Answer]:
    """Single submissions from many callers, in one transaction (merchant_api.coalesce).

    Each job's Idempotency-Key is claimed in this same transaction, before anything else
    (a retry gets `replay`, a key in flight or reused gets its ApiError, and nothing else
    happens for it); then the certificates are decided together. A posted (201) or
    duplicate (200) answer is stored with its claim here, so the change and its
    replayable answer commit together; a quarantined one is a 422 ApiError."""
    lease_s = ctx.limits.idempotency_lease_s
    wanted = [(i, claim) for i, (_, _, claim) in enumerate(jobs) if claim is not None]
    group = certificates.Group.of(
        ctx,
        [item for _, item, _ in jobs],
        [certificates.Caller(principal.api_key_id, principal.owner) for principal, _, _ in jobs],
    )

    def work(conn: Connection) -> list[Answer]:
        # Every read in one call and every write in another (one round trip each on
        # PostgreSQL, merchant_api.services.certificate_store); the claims go first.
        store = store_for(conn)
        answers = [Answer() for _ in jobs]
        claims = idempotency.Claims.prepare([c for _, c in wanted], lease_s) if wanted else None
        found = store.read(group.reads(claims, endpoints=True))
        claimed = claims.settle(conn, found.claimed) if claims is not None else []
        for (index, _), outcome in zip(wanted, claimed, strict=True):
            if isinstance(outcome, idempotency.Proceed):
                answers[index].claim = outcome.claim
            elif isinstance(outcome, idempotency.Replay):
                answers[index].replay = outcome
            else:
                answers[index].error = outcome
        go = [
            i for i, answer in enumerate(answers) if answer.replay is None and answer.error is None
        ]
        accepted = (
            certificates.decide(conn, ctx, group.only(go), found, "api", now_us())
            if go
            else certificates.Accepted([], [])
        )
        recorded: dict[uuid.UUID, Any] = {row.id: row for row in found.transactions}
        # A posted certificate answers with the row about to be written, and so does a
        # copy of it later in this group (a duplicate of nothing recorded yet).
        recorded.update((row["id"], SimpleNamespace(**row)) for row in accepted.transactions)
        done, events = [], []
        for index, d in zip(go, accepted.decided, strict=True):
            answer = answers[index]
            if d.outcome == "quarantined" or d.transaction_id is None:
                answer.error = ApiError(
                    422,
                    d.reason or "quarantined",
                    "the certificate was not posted; it is kept in quarantine",
                )
                continue
            out = transaction_out(recorded[d.transaction_id])
            status = 201 if d.outcome == "posted" else 200
            body = msgspec.json.encode(out)
            answer.response = (status, body)
            claim = jobs[index][2]
            if claim is not None and answer.claim is not None:
                done.append((claim.api_key_id, claim.key, answer.claim, status, body))
                answer.stored = True
            if d.outcome == "posted" and out.merchant_id is not None:
                events.append((out.merchant_id, "card_transaction.posted", _event_data(out)))
        event_rows, deliveries = webhooks.outbox_rows(events, found.endpoints)
        store.write(
            Writes(accepted.transactions, event_rows, deliveries, done),
            commit=True,  # nothing follows: the answers go out once this returns
        )
        return answers

    result: list[Answer] = write(ctx, work)
    return result


def _event_data(transaction: CardTransaction) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(transaction)
    return data


def submit_batch(
    ctx: ApiContext,
    principal: Principal,
    idempotency_key: str,
    batch: GateBatch,
    body_digest: bytes,
) -> tuple[int, BatchAnswer]:
    if idempotency_key != str(batch.batch_id):
        raise ApiError(422, ErrorCode.BATCH_ID_MISMATCH, "Idempotency-Key must equal batch_id")
    if len(batch.certificates) > ctx.limits.max_batch_certificates:
        raise ApiError(
            413,
            ErrorCode.BATCH_TOO_LARGE,
            f"at most {ctx.limits.max_batch_certificates} certificates per batch",
        )
    if batch.first_terminal_seq > batch.last_terminal_seq:
        raise ApiError(
            422, ErrorCode.BATCH_SEQ_OUT_OF_RANGE, "first_terminal_seq is after last_terminal_seq"
        )
    items = [certificates.parse(ctx, raw) for raw in batch.certificates]
    caller = certificates.Caller(
        principal.api_key_id,
        principal.owner,
        batch_id=batch.batch_id,
        batch_terminal_code=batch.terminal_id,
    )

    def work(conn: Connection) -> tuple[int, bytes]:
        stored = conn.execute(
            sa.select(gb.c.request_digest, gb.c.answer, gb.c.merchant_id).where(
                gb.c.id == batch.batch_id
            )
        ).first()
        if stored is not None:
            if not principal.can_see(stored.merchant_id):
                raise ApiError(
                    409,
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "this batch_id was used by another terminal owner",
                )
            if bytes(stored.request_digest) != body_digest:
                raise ApiError(
                    409,
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "this batch_id was used with a different body",
                )
            return 200, stored.answer.encode()
        now = now_us()
        decided = certificates.accept(conn, ctx, items, caller, "gate_batch", now)
        answer = BatchAnswer(
            batch_id=batch.batch_id,
            items=[
                BatchItem(terminal_seq=item.terminal_seq, outcome=d.outcome, reason=d.reason)
                for item, d in zip(items, decided, strict=True)
            ],
        )
        encoded = msgspec.json.encode(answer)
        terminal = conn.execute(
            sa.select(schema.terminals.c.id, schema.terminals.c.merchant_id).where(
                schema.terminals.c.terminal_code == batch.terminal_id
            )
        ).first()
        owner: uuid.UUID | None = terminal.merchant_id if terminal is not None else None
        counts = {
            o: sum(1 for d in decided if d.outcome == o)
            for o in ("posted", "duplicate", "quarantined")
        }
        if terminal is not None and owner is not None and principal.can_see(owner):
            conn.execute(
                sa.insert(gb).values(
                    id=batch.batch_id,
                    terminal_id=terminal.id,
                    merchant_id=owner,
                    api_key_id=principal.api_key_id,
                    first_terminal_seq=batch.first_terminal_seq,
                    last_terminal_seq=batch.last_terminal_seq,
                    item_count=len(items),
                    posted_count=counts["posted"],
                    duplicate_count=counts["duplicate"],
                    quarantined_count=counts["quarantined"],
                    request_digest=body_digest,
                    answer=encoded.decode(),
                    business_date=business_date(now),
                    received_us=now,
                )
            )
            webhooks.emit(
                conn,
                owner,
                "gate_batch.processed",
                {
                    "batch_id": str(batch.batch_id),
                    "terminal_id": batch.terminal_id,
                    "first_terminal_seq": batch.first_terminal_seq,
                    "last_terminal_seq": batch.last_terminal_seq,
                    **counts,
                },
            )
        return 201, encoded

    status, encoded = write(ctx, work)
    return status, msgspec.json.decode(encoded, type=BatchAnswer)


def get_transaction(
    ctx: ApiContext, principal: Principal, transaction_id: uuid.UUID
) -> CardTransaction:
    row = run_read(
        ctx.engine,
        lambda conn: conn.execute(sa.select(ct).where(ct.c.id == transaction_id)).first(),
    )
    if row is None or not principal.can_see(row.merchant_id):
        raise not_found("card transaction")
    return transaction_out(row)


def list_transactions(
    ctx: ApiContext,
    principal: Principal,
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
    *,
    terminal_id: uuid.UUID | None,
    card_id: uuid.UUID | None,
    created_gte: datetime | None,
    created_lt: datetime | None,
    business_date_: str | None,
) -> Page[CardTransaction]:
    where = []
    if principal.owner is not None:
        where.append(ct.c.merchant_id == principal.owner)
    if terminal_id is not None:
        where.append(ct.c.terminal_id == terminal_id)
    if card_id is not None:
        where.append(ct.c.card_id == card_id)
    if created_gte is not None:
        where.append(ct.c.created_us >= int(created_gte.timestamp() * 1_000_000))
    if created_lt is not None:
        where.append(ct.c.created_us < int(created_lt.timestamp() * 1_000_000))
    if business_date_ is not None:
        where.append(ct.c.business_date == business_date_)
    rows, more = run_read(
        ctx.engine, lambda conn: page(conn, ct, where, limit, starting_after, ending_before)
    )
    return Page(data=[transaction_out(r) for r in rows], has_more=more)
