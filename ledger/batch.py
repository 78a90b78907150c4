"""Applying a batch of requests in one database transaction: invariants 1 to 4.

Guarantees:
1. Every applied transfer balances (debits equal credits, one currency, 2 to 16 legs), and
   a batch is applied whole or not at all: every write of a batch commits together.
2. Bounds: an account with debits_must_not_exceed_credits never has
   debits_posted + debits_pending > credits_posted, its mirror likewise, and an account
   with max_balance never holds more, counting pending credits (pending debits for a
   debit-side bound). Checked in `_check_bounds` against balances read under a row lock,
   and again by CHECK constraints on the accounts table.
3. Exactly once: a request whose id is already recorded is not applied again. Identical
   content answers `exists` with the original seq and timestamp; different content
   answers the first differing field as `exists_with_different_<field>`.
4. A pending transfer is resolved once (posted for at most its legs' amounts, voided, or
   expired after its timeout); the unique index on transfers.pending_id backs this up.

Concurrency. Bounded accounts (card purses) are locked with SELECT ... FOR UPDATE in id
order before anything is decided. Unbounded accounts are never read for a decision, so
they are never locked up front: their deltas are added at the end, to one randomly
chosen balance shard per account and transaction, in (account, shard) order. Writers to a
hot account therefore meet only when they pick the same shard, and then only for the
moment between that UPDATE and COMMIT. Account status is re-read after those updates,
because a concurrent close takes every shard's lock: whoever is second sees the first.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import schema
from ledger.codes import ResultCode
from ledger.db import AnyRow, RetryTransaction, is_sqlite
from ledger.journal import canonical_metadata, content_hash
from ledger.rules import request_problem
from ledger.types import (
    AccountStatus,
    BatchMode,
    ExpirePending,
    Phase,
    PostPending,
    Request,
    Transfer,
    TransferResult,
    VoidPending,
)

INT64_MAX = 2**63 - 1

# (account_id, signed amount): debit positive, credit negative.
Leg = tuple[uuid.UUID, int]


@dataclass(slots=True)
class Balance:
    """A working copy of one bounded account's balance during a batch (locked rows only)."""

    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: uuid.UUID
    currency: str
    status: AccountStatus
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    max_balance: int | None
    shards: int
    balance: Balance

    @property
    def bounded(self) -> bool:
        return (
            self.debits_must_not_exceed_credits
            or self.credits_must_not_exceed_debits
            or self.max_balance is not None
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the journal holds (or will hold, for this batch) under one transfer id."""

    id: uuid.UUID
    kind: str
    phase: Phase
    currency: str
    pending_id: uuid.UUID | None
    linked_id: uuid.UUID | None
    timeout_s: int
    metadata_json: str
    timestamp_us: int
    legs: tuple[Leg, ...]
    seq: int | None = None


@dataclass(slots=True)
class Deltas:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


@dataclass(slots=True)
class Loaded:
    """Everything a batch reads before it decides."""

    existing: dict[uuid.UUID, Recorded]
    pendings: dict[uuid.UUID, Recorded]
    resolutions: dict[uuid.UUID, Phase]  # pending id -> phase of its resolution
    linked: set[uuid.UUID]
    accounts: dict[uuid.UUID, AccountRow]


@dataclass(slots=True)
class Outcome:
    applied: list[Recorded] = field(default_factory=list)
    # One per applied transfer: its balance effects, and the pending transfer whose
    # reservation it makes or releases (None if it touches no pending columns).
    effects: list[tuple[dict[uuid.UUID, Deltas], uuid.UUID | None]] = field(default_factory=list)
    needs_open: set[uuid.UUID] = field(default_factory=set)


class Refused(Exception):  # noqa: N818 - carries a result code, caught in this module
    def __init__(self, code: ResultCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail


def apply_batch(
    conn: Connection,
    requests: Sequence[Request],
    mode: BatchMode,
    clock: Callable[[], int],
    bounded_cache: dict[uuid.UUID, bool],
) -> list[TransferResult]:
    """Decide and write `requests` in the caller's transaction; one result per request."""
    loaded = _load(conn, requests, bounded_cache)
    results: list[TransferResult] = []
    outcome = Outcome()
    in_batch: dict[uuid.UUID, Recorded] = {}
    for request in requests:
        try:
            recorded = _decide(request, loaded, in_batch, outcome, clock)
        except Refused as refusal:
            results.append(TransferResult(request.id, refusal.code, refusal.detail))
            if mode is BatchMode.LINKED:
                return _fail_linked(requests, results)
            continue
        if recorded.seq is not None or recorded.id in in_batch:
            # Already recorded (before this batch, or earlier in it): the original result.
            results.append(TransferResult(request.id, ResultCode.EXISTS, "", recorded.seq))
            continue
        in_batch[recorded.id] = recorded
        outcome.applied.append(recorded)
        results.append(TransferResult(request.id, ResultCode.OK))
    seqs = _write(conn, outcome, loaded)
    return [_with_record(r, in_batch, loaded.existing, seqs) for r in results]


def _fail_linked(
    requests: Sequence[Request], results: list[TransferResult]
) -> list[TransferResult]:
    """All or nothing: the failing request keeps its code, every other one is refused too."""
    failed_at = len(results) - 1
    failed = results[failed_at]
    return [
        failed
        if i == failed_at
        else TransferResult(r.id, ResultCode.LINKED_EVENT_FAILED, f"linked with {failed.id}")
        for i, r in enumerate(requests)
    ]


def _with_record(
    result: TransferResult,
    in_batch: dict[uuid.UUID, Recorded],
    existing: dict[uuid.UUID, Recorded],
    seqs: dict[uuid.UUID, int],
) -> TransferResult:
    if not result.code.succeeded:
        return result
    recorded = existing.get(result.id) or in_batch[result.id]
    seq = recorded.seq if recorded.seq is not None else seqs[result.id]
    return replace(result, seq=seq, timestamp_us=recorded.timestamp_us)


# --- Reading -------------------------------------------------------------------------


def _load(
    conn: Connection, requests: Sequence[Request], bounded_cache: dict[uuid.UUID, bool]
) -> Loaded:
    ids = {r.id for r in requests}
    existing = _load_transfers(conn, ids)
    pending_ids = {r.pending_id for r in requests if not isinstance(r, Transfer)}
    pending_ids |= {t.pending_id for t in existing.values() if t.pending_id is not None}
    pendings = _load_transfers(conn, pending_ids)
    resolutions = _load_resolutions(conn, set(pendings))
    linked_ids = {r.linked_id for r in requests if isinstance(r, Transfer) and r.linked_id}
    linked = _existing_ids(conn, linked_ids) if linked_ids else set()
    account_ids = {p.account_id for r in requests if isinstance(r, Transfer) for p in r.postings}
    account_ids |= {
        p.account_id
        for r in requests
        if isinstance(r, PostPending) and r.postings
        for p in r.postings
    }
    account_ids |= {a for t in pendings.values() for a, _ in t.legs}
    accounts = _load_accounts(conn, account_ids, bounded_cache)
    return Loaded(existing, pendings, resolutions, linked, accounts)


def _load_transfers(conn: Connection, ids: set[uuid.UUID]) -> dict[uuid.UUID, Recorded]:
    if not ids:
        return {}
    t, p = schema.transfers, schema.postings
    rows = conn.execute(
        sa.select(t, p.c.leg, p.c.account_id, p.c.amount)
        .select_from(t.outerjoin(p, p.c.transfer_id == t.c.id))
        .where(t.c.id.in_(ids))
        .order_by(t.c.seq, p.c.leg)
    ).all()
    legs: dict[uuid.UUID, list[Leg]] = defaultdict(list)
    first: dict[uuid.UUID, AnyRow] = {}
    for row in rows:
        first.setdefault(row.id, row)
        if row.account_id is not None:
            legs[row.id].append((row.account_id, row.amount))
    return {
        tid: Recorded(
            id=tid,
            kind=row.kind,
            phase=Phase(row.phase),
            currency=row.currency,
            pending_id=row.pending_id,
            linked_id=row.linked_id,
            timeout_s=row.timeout_s,
            metadata_json=row.metadata,
            timestamp_us=row.timestamp_us,
            legs=tuple(legs[tid]),
            seq=row.seq,
        )
        for tid, row in first.items()
    }


def _load_resolutions(conn: Connection, pending_ids: set[uuid.UUID]) -> dict[uuid.UUID, Phase]:
    if not pending_ids:
        return {}
    t = schema.transfers
    rows = conn.execute(sa.select(t.c.pending_id, t.c.phase).where(t.c.pending_id.in_(pending_ids)))
    return {row.pending_id: Phase(row.phase) for row in rows}


def _existing_ids(conn: Connection, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    t = schema.transfers
    return set(conn.execute(sa.select(t.c.id).where(t.c.id.in_(ids))).scalars())


def _load_accounts(
    conn: Connection, ids: set[uuid.UUID], bounded_cache: dict[uuid.UUID, bool]
) -> dict[uuid.UUID, AccountRow]:
    """Read the named accounts, locking the bounded ones (in id order, against deadlock)."""
    if not ids:
        return {}
    a = schema.accounts
    columns = (
        a.c.id,
        a.c.currency,
        a.c.status,
        a.c.debits_must_not_exceed_credits,
        a.c.credits_must_not_exceed_debits,
        a.c.max_balance,
        a.c.shards,
        a.c.debits_posted,
        a.c.credits_posted,
        a.c.debits_pending,
        a.c.credits_pending,
    )
    found: dict[uuid.UUID, AccountRow] = {}
    if is_sqlite(conn):
        # BEGIN IMMEDIATE already holds the database's one writer lock.
        unlocked, to_lock = ids, set()
    else:
        to_lock = {i for i in ids if bounded_cache.get(i) is True}
        unlocked = ids - to_lock
    if unlocked:
        for row in conn.execute(sa.select(*columns).where(a.c.id.in_(unlocked))):
            account = _account_row(row)
            bounded_cache[account.id] = account.bounded
            if account.bounded and not is_sqlite(conn):
                to_lock.add(account.id)
            else:
                found[account.id] = account
    if to_lock:
        locked = conn.execute(
            sa.select(*columns).where(a.c.id.in_(to_lock)).order_by(a.c.id).with_for_update()
        )
        for row in locked:
            found[row.id] = _account_row(row)
    return found


def _account_row(row: AnyRow) -> AccountRow:
    m = row._mapping
    return AccountRow(
        id=m["id"],
        currency=m["currency"],
        status=AccountStatus(m["status"]),
        debits_must_not_exceed_credits=m["debits_must_not_exceed_credits"],
        credits_must_not_exceed_debits=m["credits_must_not_exceed_debits"],
        max_balance=m["max_balance"],
        shards=m["shards"],
        balance=Balance(
            m["debits_posted"], m["credits_posted"], m["debits_pending"], m["credits_pending"]
        ),
    )


# --- Deciding ------------------------------------------------------------------------


def _decide(
    request: Request,
    loaded: Loaded,
    in_batch: dict[uuid.UUID, Recorded],
    outcome: Outcome,
    clock: Callable[[], int],
) -> Recorded:
    """The transfer `request` records, or Refused. Mutates bounded balances on success."""
    problem = request_problem(request)
    if problem:
        raise Refused(*problem)
    wanted = _intended(request, loaded, in_batch)
    prior = loaded.existing.get(request.id) or in_batch.get(request.id)
    if prior is not None:
        difference = _first_difference(wanted, prior)
        if difference:
            raise Refused(difference, f"transfer {request.id} was recorded differently")
        return prior
    if isinstance(request, Transfer):
        _check_transfer(request, loaded, in_batch)
        _check_accounts(wanted, loaded, outcome, require_open=True)
        effects = _effects(wanted.phase, wanted.legs, ())
    else:
        pending = _pending_for(request, loaded, in_batch, clock)
        _check_accounts(wanted, loaded, outcome, require_open=isinstance(request, PostPending))
        effects = _effects(wanted.phase, wanted.legs, pending.legs)
    _check_bounds(effects, loaded.accounts)
    if wanted.pending_id is not None:
        loaded.resolutions[wanted.pending_id] = wanted.phase
    reservation = wanted.pending_id or (request.id if wanted.phase is Phase.PENDING else None)
    outcome.effects.append((effects, reservation))
    return replace(wanted, timestamp_us=clock())


def _intended(request: Request, loaded: Loaded, in_batch: dict[uuid.UUID, Recorded]) -> Recorded:
    """The request in the journal's own terms (legs as signed amounts), without a time."""
    meta = canonical_metadata(request.metadata)
    if isinstance(request, Transfer):
        legs = tuple((p.account_id, p.signed_amount) for p in request.postings)
        accounts = [loaded.accounts.get(a) for a, _ in legs]
        currency = accounts[0].currency if accounts and accounts[0] else ""
        phase = Phase.PENDING if request.pending else Phase.POSTED
        return Recorded(
            request.id,
            request.kind,
            phase,
            currency,
            None,
            request.linked_id,
            request.timeout_s,
            meta,
            0,
            legs,
        )
    pending = loaded.pendings.get(request.pending_id) or in_batch.get(request.pending_id)
    kind = pending.kind if pending else ""
    currency = pending.currency if pending else ""
    if isinstance(request, PostPending):
        if request.postings is None:
            legs = pending.legs if pending else ()
        else:
            legs = tuple((p.account_id, p.signed_amount) for p in request.postings)
        return Recorded(
            request.id,
            kind,
            Phase.POST_PENDING,
            currency,
            request.pending_id,
            None,
            0,
            meta,
            0,
            legs,
        )
    phase = Phase.VOID_PENDING if isinstance(request, VoidPending) else Phase.EXPIRE_PENDING
    return Recorded(request.id, kind, phase, currency, request.pending_id, None, 0, meta, 0, ())


def _first_difference(wanted: Recorded, prior: Recorded) -> ResultCode | None:
    if wanted.phase != prior.phase:
        return ResultCode.EXISTS_WITH_DIFFERENT_PHASE
    if wanted.pending_id != prior.pending_id:
        return ResultCode.EXISTS_WITH_DIFFERENT_PENDING_ID
    if wanted.phase in (Phase.POSTED, Phase.PENDING) and wanted.kind != prior.kind:
        return ResultCode.EXISTS_WITH_DIFFERENT_KIND
    if wanted.linked_id != prior.linked_id:
        return ResultCode.EXISTS_WITH_DIFFERENT_LINKED_ID
    if wanted.timeout_s != prior.timeout_s:
        return ResultCode.EXISTS_WITH_DIFFERENT_TIMEOUT
    shape = [(a, amount > 0) for a, amount in wanted.legs]
    if shape != [(a, amount > 0) for a, amount in prior.legs]:
        return ResultCode.EXISTS_WITH_DIFFERENT_POSTINGS
    if wanted.legs != prior.legs:
        return ResultCode.EXISTS_WITH_DIFFERENT_AMOUNT
    if wanted.metadata_json != prior.metadata_json:
        return ResultCode.EXISTS_WITH_DIFFERENT_METADATA
    return None


def _check_transfer(request: Transfer, loaded: Loaded, in_batch: dict[uuid.UUID, Recorded]) -> None:
    if request.linked_id is not None and not (
        request.linked_id in loaded.linked or request.linked_id in in_batch
    ):
        raise Refused(ResultCode.LINKED_TRANSFER_NOT_FOUND, f"no transfer {request.linked_id}")


def _check_accounts(
    wanted: Recorded, loaded: Loaded, outcome: Outcome, *, require_open: bool
) -> None:
    for leg, (account_id, _) in enumerate(wanted.legs):
        account = loaded.accounts.get(account_id)
        if account is None:
            raise Refused(ResultCode.ACCOUNT_NOT_FOUND, f"leg {leg}: no account {account_id}")
        if account.currency != wanted.currency:
            raise Refused(ResultCode.CURRENCIES_MUST_MATCH, f"leg {leg}: {account.currency}")
        if account.status is AccountStatus.CLOSED:
            raise Refused(ResultCode.ACCOUNT_CLOSED, f"leg {leg}: account {account_id}")
        if require_open and account.status is AccountStatus.FROZEN:
            raise Refused(ResultCode.ACCOUNT_FROZEN, f"leg {leg}: account {account_id}")
        if not account.bounded:
            outcome.needs_open.add(account_id)


def _pending_for(
    request: PostPending | VoidPending | ExpirePending,
    loaded: Loaded,
    in_batch: dict[uuid.UUID, Recorded],
    clock: Callable[[], int],
) -> Recorded:
    pending = loaded.pendings.get(request.pending_id) or in_batch.get(request.pending_id)
    if pending is None:
        raise Refused(ResultCode.PENDING_TRANSFER_NOT_FOUND, f"no transfer {request.pending_id}")
    if pending.phase is not Phase.PENDING:
        raise Refused(ResultCode.PENDING_TRANSFER_NOT_PENDING, f"{pending.id} is {pending.phase}")
    resolution = loaded.resolutions.get(pending.id)
    if resolution is Phase.POST_PENDING:
        raise Refused(ResultCode.PENDING_TRANSFER_ALREADY_POSTED, str(pending.id))
    if resolution is Phase.VOID_PENDING:
        raise Refused(ResultCode.PENDING_TRANSFER_ALREADY_VOIDED, str(pending.id))
    expires_at = pending.timestamp_us + pending.timeout_s * 1_000_000
    expired = pending.timeout_s > 0 and clock() >= expires_at
    if resolution is Phase.EXPIRE_PENDING or (expired and not isinstance(request, ExpirePending)):
        raise Refused(ResultCode.PENDING_TRANSFER_EXPIRED, str(pending.id))
    if isinstance(request, ExpirePending) and not expired:
        raise Refused(ResultCode.PENDING_TRANSFER_NOT_EXPIRED, str(pending.id))
    if isinstance(request, PostPending) and request.postings is not None:
        pending_legs = dict(pending.legs)
        for leg, posting in enumerate(request.postings):
            held = pending_legs.get(posting.account_id)
            if held is None or (held > 0) != (posting.signed_amount > 0):
                raise Refused(ResultCode.POST_POSTINGS_MUST_MATCH_PENDING, f"leg {leg}")
            if abs(posting.signed_amount) > abs(held):
                raise Refused(ResultCode.POST_AMOUNT_EXCEEDS_PENDING, f"leg {leg}")
    return pending


def _effects(phase: Phase, legs: Iterable[Leg], released: Iterable[Leg]) -> dict[uuid.UUID, Deltas]:
    """How a transfer changes each account's four balance columns."""
    effects: dict[uuid.UUID, Deltas] = defaultdict(Deltas)
    for account_id, amount in released:
        if amount > 0:
            effects[account_id].debits_pending -= amount
        else:
            effects[account_id].credits_pending += amount
    if phase in (Phase.POSTED, Phase.POST_PENDING):
        for account_id, amount in legs:
            if amount > 0:
                effects[account_id].debits_posted += amount
            else:
                effects[account_id].credits_posted -= amount
    elif phase is Phase.PENDING:
        for account_id, amount in legs:
            if amount > 0:
                effects[account_id].debits_pending += amount
            else:
                effects[account_id].credits_pending -= amount
    return effects


def _check_bounds(effects: dict[uuid.UUID, Deltas], accounts: dict[uuid.UUID, AccountRow]) -> None:
    """Invariant 2, decided. Keep this the one place a bound is judged in code.

    It runs on the working copies of locked rows, so what it approves is exactly what the
    transaction writes; the CHECK constraints on `accounts` judge the same rule again.
    Only after every touched account passes are the working copies changed.
    """
    updated: list[tuple[Balance, Balance]] = []
    for account_id, d in effects.items():
        account = accounts[account_id]
        if not account.bounded:
            continue
        b = account.balance
        new = Balance(
            b.debits_posted + d.debits_posted,
            b.credits_posted + d.credits_posted,
            b.debits_pending + d.debits_pending,
            b.credits_pending + d.credits_pending,
        )
        if (
            max(new.debits_posted + new.debits_pending, new.credits_posted + new.credits_pending)
            > INT64_MAX
        ):
            raise Refused(ResultCode.BALANCE_OVERFLOW, f"account {account_id}")
        if account.debits_must_not_exceed_credits and (
            new.debits_posted + new.debits_pending > new.credits_posted
        ):
            raise Refused(ResultCode.EXCEEDS_CREDITS, f"account {account_id}")
        if account.credits_must_not_exceed_debits and (
            new.credits_posted + new.credits_pending > new.debits_posted
        ):
            raise Refused(ResultCode.EXCEEDS_DEBITS, f"account {account_id}")
        if account.max_balance is not None:
            if account.debits_must_not_exceed_credits:
                held = new.credits_posted + new.credits_pending - new.debits_posted
            else:
                held = new.debits_posted + new.debits_pending - new.credits_posted
            if held > account.max_balance:
                raise Refused(ResultCode.EXCEEDS_MAX_BALANCE, f"account {account_id}")
        updated.append((b, new))
    for current, new in updated:
        current.debits_posted, current.credits_posted = new.debits_posted, new.credits_posted
        current.debits_pending, current.credits_pending = new.debits_pending, new.credits_pending


# --- Writing -------------------------------------------------------------------------


def _write(conn: Connection, outcome: Outcome, loaded: Loaded) -> dict[uuid.UUID, int]:
    """Write the applied transfers; returns their seqs.

    Order matters: postings first (their transfer's insert trigger checks them), then
    balances, then the transfers, so that every writer holds a transaction id before it
    draws a seq (journal.sealing_horizon relies on that).
    """
    applied = outcome.applied
    if not applied:
        return {}
    posting_rows = [
        {"transfer_id": t.id, "leg": leg, "account_id": a, "currency": t.currency, "amount": amt}
        for t in applied
        for leg, (a, amt) in enumerate(t.legs)
    ]
    if posting_rows:
        conn.execute(sa.insert(schema.postings), posting_rows)
    _write_balances(conn, outcome.effects, loaded.accounts)
    _recheck_status(conn, outcome.needs_open, loaded.accounts)
    transfer_rows = [_transfer_row(t) for t in applied]
    inserted = conn.execute(
        sa.insert(schema.transfers).returning(
            schema.transfers.c.id, schema.transfers.c.seq, sort_by_parameter_order=True
        ),
        transfer_rows,
    )
    return {row.id: row.seq for row in inserted}


def _transfer_row(t: Recorded) -> dict[str, object]:
    return {
        "id": t.id,
        "kind": t.kind,
        "phase": t.phase.value,
        "currency": t.currency,
        "pending_id": t.pending_id,
        "linked_id": t.linked_id,
        "timeout_s": t.timeout_s,
        "metadata": t.metadata_json,
        "timestamp_us": t.timestamp_us,
        "content_hash": content_hash(
            id=t.id,
            kind=t.kind,
            phase=t.phase.value,
            currency=t.currency,
            pending_id=t.pending_id,
            linked_id=t.linked_id,
            timeout_s=t.timeout_s,
            metadata_json=t.metadata_json,
            timestamp_us=t.timestamp_us,
            postings=[(leg, a, amount) for leg, (a, amount) in enumerate(t.legs)],
        ),
    }


def _write_balances(
    conn: Connection,
    effects: list[tuple[dict[uuid.UUID, Deltas], uuid.UUID | None]],
    accounts: dict[uuid.UUID, AccountRow],
) -> None:
    """Write the batch's net change to each balance row.

    A bounded account's single row gets its new absolute values (it is locked). An
    unbounded account's posted deltas go to one shard picked at random for this
    transaction; its pending deltas go to the shard its pending transfer's id maps to, so
    that a reservation and its release always meet on the same row and no shard's pending
    column can go below zero.
    """
    touched_bounded: set[uuid.UUID] = set()
    unbounded: dict[tuple[uuid.UUID, int | None], Deltas] = defaultdict(Deltas)
    for effect, reservation in effects:
        for account_id, d in effect.items():
            account = accounts[account_id]
            if account.bounded:
                touched_bounded.add(account_id)
                continue
            _add(unbounded[account_id, None], replace(d, debits_pending=0, credits_pending=0))
            if reservation is not None:
                pending_shard = reservation.int % account.shards
                pending_part = Deltas(0, 0, d.debits_pending, d.credits_pending)
                _add(unbounded[account_id, pending_shard], pending_part)
    spread: dict[tuple[uuid.UUID, int], Deltas] = defaultdict(Deltas)
    for (account_id, shard), d in unbounded.items():
        if shard is None:
            shard = random.randrange(accounts[account_id].shards)  # noqa: S311 - spreading only
        _add(spread[account_id, shard], d)
    shard_updates = sorted(
        ((account_id, shard, d) for (account_id, shard), d in spread.items() if d != Deltas()),
        key=lambda u: (u[0], u[1]),
    )
    a, s = schema.accounts, schema.account_balance_shards
    bounded_rows = [
        {
            "b_id": account_id,
            "b_dp": accounts[account_id].balance.debits_posted,
            "b_cp": accounts[account_id].balance.credits_posted,
            "b_dpend": accounts[account_id].balance.debits_pending,
            "b_cpend": accounts[account_id].balance.credits_pending,
        }
        for account_id in sorted(touched_bounded)
    ]
    if bounded_rows:
        conn.execute(
            sa.update(a)
            .where(a.c.id == sa.bindparam("b_id"))
            .values(
                debits_posted=sa.bindparam("b_dp"),
                credits_posted=sa.bindparam("b_cp"),
                debits_pending=sa.bindparam("b_dpend"),
                credits_pending=sa.bindparam("b_cpend"),
                version=a.c.version + 1,
            ),
            bounded_rows,
        )
    row0 = [_delta_params(i, d) for i, shard, d in shard_updates if shard == 0]
    rows_n = [{**_delta_params(i, d), "b_shard": shard} for i, shard, d in shard_updates if shard]
    if row0:
        conn.execute(
            _increment(a, a.c.id == sa.bindparam("b_id")).values(version=a.c.version + 1), row0
        )
    if rows_n:
        condition = sa.and_(
            s.c.account_id == sa.bindparam("b_id"), s.c.shard == sa.bindparam("b_shard")
        )
        conn.execute(_increment(s, condition), rows_n)


def _add(total: Deltas, d: Deltas) -> None:
    total.debits_posted += d.debits_posted
    total.credits_posted += d.credits_posted
    total.debits_pending += d.debits_pending
    total.credits_pending += d.credits_pending


def _delta_params(account_id: uuid.UUID, d: Deltas) -> dict[str, object]:
    return {
        "b_id": account_id,
        "b_dp": d.debits_posted,
        "b_cp": d.credits_posted,
        "b_dpend": d.debits_pending,
        "b_cpend": d.credits_pending,
    }


def _increment(table: sa.Table, condition: sa.ColumnElement[bool]) -> sa.Update:
    c = table.c
    return (
        sa.update(table)
        .where(condition)
        .values(
            debits_posted=c.debits_posted + sa.bindparam("b_dp"),
            credits_posted=c.credits_posted + sa.bindparam("b_cp"),
            debits_pending=c.debits_pending + sa.bindparam("b_dpend"),
            credits_pending=c.credits_pending + sa.bindparam("b_cpend"),
        )
    )


def _recheck_status(
    conn: Connection, needs_open: set[uuid.UUID], accounts: dict[uuid.UUID, AccountRow]
) -> None:
    """Retry the batch if an unbounded account changed status while we wrote to it.

    We hold the shard rows we updated; a status change takes all of an account's shard
    rows first. So either it committed before our UPDATEs and this read sees it, or it
    waits for our commit and is ordered after us.
    """
    if not needs_open or is_sqlite(conn):
        return
    a = schema.accounts
    statuses = conn.execute(sa.select(a.c.id, a.c.status).where(a.c.id.in_(needs_open)))
    for account_id, status in statuses:
        if status != accounts[account_id].status.value:
            raise RetryTransaction(f"account {account_id} became {status}")
