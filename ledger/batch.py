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

import gc
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.engine import Connection

from ledger.codes import ResultCode
from ledger.journal import canonical_metadata, content_hash
from ledger.rules import Problem, request_problem
from ledger.store import (
    AccountRow,
    BoundedRow,
    Reads,
    ShardDelta,
    Store,
    TransferRow,
    Writes,
    store_for,
)
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

T = TypeVar("T")

# (account_id, signed amount): debit positive, credit negative.
Leg = tuple[uuid.UUID, int]


# An account's four balance columns, or a change to them, in this order: debits_posted,
# credits_posted, debits_pending, credits_pending. Plain lists rather than objects: a
# 1,000-transfer batch makes thousands of them, and their construction was a tenth of
# the decision's CPU.
Columns = list[int]
DEBITS_POSTED, CREDITS_POSTED, DEBITS_PENDING, CREDITS_PENDING = range(4)


class Recorded(NamedTuple):
    """What the journal holds (or will hold, for this batch) under one transfer id.

    A named tuple rather than a frozen dataclass: one is made per request, and a frozen
    dataclass sets each of its eleven fields through object.__setattr__."""

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


# The batch's maps and sets are keyed by an id's `uuid.int`, not by the `uuid.UUID`:
# UUID.__hash__ and __eq__ are Python code, and a 1,000-transfer batch made about 30
# lookups per transfer with them. `int` is a slot, read in C, and hashes in C.
Key = int


@dataclass(slots=True)
class Loaded:
    """Everything a batch reads before it decides, keyed by `uuid.int`."""

    existing: dict[Key, Recorded]
    pendings: dict[Key, Recorded]
    resolutions: dict[Key, Phase]  # pending id -> phase of its resolution
    linked: set[Key]
    accounts: dict[Key, AccountRow]


@dataclass(slots=True)
class Outcome:
    """What the batch has decided so far, across its parts."""

    # One per request decided: its result code and transfer, or its refusal.
    decided: list[tuple[ResultCode, Recorded] | Refused] = field(default_factory=list)
    # One per applied transfer: its balance effects by account, and the pending transfer
    # whose reservation it makes or releases (None if it touches no pending columns).
    effects: list[tuple[dict[Key, Columns], Key | None]] = field(default_factory=list)
    needs_open: set[Key] = field(default_factory=set)
    # LINKED mode: the request that failed the batch (its index) and why.
    linked_failure: tuple[int, Refused] | None = None


class Refused(Exception):  # noqa: N818 - carries a result code, caught in this module
    def __init__(self, code: ResultCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail


def apply_batch(
    conn: Connection,
    requests: Sequence[Request],
    mode: BatchMode,
    clock: Callable[[], int],
    *,
    commit: bool = False,
) -> list[TransferResult]:
    """Decide and write `requests` in the caller's transaction; one result per request.

    With `commit`, the batch is the whole transaction: nothing follows it, and the store
    may commit with the batch's last write (`Store.write`)."""
    with _collector_paused():
        return _apply(conn, requests, mode, clock, commit)


def _apply(
    conn: Connection,
    requests: Sequence[Request],
    mode: BatchMode,
    clock: Callable[[], int],
    commit: bool,
) -> list[TransferResult]:
    if not requests:
        return []
    store = store_for(conn)
    # What each request says on its own is worked out while the database reads.
    loaded, drafts = _load(store, requests, lambda: [_draft(r) for r in requests])
    outcome = Outcome()
    # All or nothing: a linked batch is decided whole before anything of it is written.
    whole = mode is BatchMode.LINKED or not store.overlaps_writes
    first, size = (len(requests), len(requests)) if whole else (FIRST_PART, PART_SIZE)
    parts = _decided_parts(requests, drafts, mode, first, size, loaded, outcome, clock)
    # From here `parts` holds the decision's working state (the rows read, the drafts, the
    # balance effects), so that it is freed as soon as the last part is decided, while the
    # server writes that part, not after: about 1.3 ms of a 1,000-transfer batch.
    del loaded, drafts
    written = store.write(parts, overlapped=len(requests) > first, commit=commit)
    if outcome.linked_failure is not None:
        return _fail_linked(requests, *outcome.linked_failure)
    results = []
    for request, decision in zip(requests, outcome.decided, strict=True):
        if isinstance(decision, Refused):
            results.append(TransferResult(request.id, decision.code, decision.detail))
        else:
            code, recorded = decision
            seq = recorded.seq if recorded.seq is not None else written[recorded.id.int]
            results.append(TransferResult(request.id, code, "", seq, recorded.timestamp_us))
    return results


# Requests decided per part of an independent batch on PostgreSQL. Each part's writes go
# to the database while the next part is decided (see `Store.write`), so the client's
# decision and the server's writes overlap. The server waits for the first part only, so
# it is small; later parts are larger, because each part pays every statement's fixed
# cost. At 1,000-transfer batches (2026-11-29, ms per batch): one part 69; parts of 250
# 62, of 125 62, of 100 66, of 500 72; a first part of 50 then 250s, 61 and 62 where
# parts of 250 alone gave 68 and 65 in alternating runs. Each part then doubles, up to
# PART_SIZE: the server writes a transfer in about twice the client's time to decide
# one, so a part twice the last is decided while the last is written, where a first
# part of 50 followed by 250 left the server waiting. 50, 100, 200, 400 then 250 against
# 50 then 250s (2026-11-30, batches alternating between two databases in one process):
# 64.1 and 58.5 ms against 64.8 and 59.3.
FIRST_PART = 50
PART_SIZE = 400


def _decided_parts(
    requests: Sequence[Request],
    drafts: list[Draft],
    mode: BatchMode,
    first: int,
    size: int,
    loaded: Loaded,
    outcome: Outcome,
    clock: Callable[[], int],
) -> Iterator[Writes]:
    """Decide `requests` part by part (the first part of `first` requests, then each part
    twice the last, up to `size`), yielding each part's writes as soon as it is decided.

    The balance deltas of unbounded accounts and the recheck of their status are the last
    part's, summed over the whole batch: those rows are locked when they are updated, and
    updating them once, at the end, in (account, shard) order keeps the lock order of
    ledger.store and holds a hot account's row only from there to COMMIT."""
    in_batch: dict[Key, Recorded] = {}
    start, end = 0, min(first, len(requests))
    part = first
    while start < len(requests):
        applied: list[Recorded] = []
        first_effect = len(outcome.effects)
        for index in range(start, end):
            request = requests[index]
            try:
                recorded = _decide(request, drafts[index], loaded, in_batch, outcome, clock)
            except Refused as refusal:
                if mode is BatchMode.LINKED:
                    outcome.linked_failure = (index, refusal)
                    return
                outcome.decided.append(refusal)
                continue
            if recorded.seq is not None or recorded.id.int in in_batch:
                # Recorded before this batch, or earlier in it: the original result.
                outcome.decided.append((ResultCode.EXISTS, recorded))
            else:
                in_batch[recorded.id.int] = recorded
                applied.append(recorded)
                outcome.decided.append((ResultCode.OK, recorded))
        writes = _writes(applied, outcome, first_effect, loaded, last=end == len(requests))
        if writes is not None:
            yield writes
        part = min(2 * part, size)
        start, end = end, min(end + part, len(requests))
    # Every part is decided and handed to the store: only the results are left to make.
    outcome.effects.clear()


def _fail_linked(
    requests: Sequence[Request], failed_at: int, refusal: Refused
) -> list[TransferResult]:
    """All or nothing: the failing request keeps its code, every other one is refused too."""
    failed_id = requests[failed_at].id
    return [
        TransferResult(r.id, refusal.code, refusal.detail)
        if i == failed_at
        else TransferResult(r.id, ResultCode.LINKED_EVENT_FAILED, f"linked with {failed_id}")
        for i, r in enumerate(requests)
    ]


_pause_lock = threading.Lock()
_pauses = 0
_collector_was_enabled = False
# Young objects allocated and not yet freed: a 1,000-transfer batch holds tens of
# thousands at its peak and leaves about a thousand (its results) behind.
_MOST_DEFERRED = 1_000_000


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Run the body with Python's cyclic garbage collector paused.

    A 1,000-transfer batch allocates tens of thousands of small objects, and every
    700 allocations the collector walks the youngest ones looking for cycles, which
    cost 15 to 20% of the decision's CPU. The decision makes almost no cycles (only a
    refused request's exception, through its traceback), and those are collected at
    the next pass once the collector runs again: pausing postpones collection, it
    frees nothing late that would otherwise be freed early, except for these few.
    The pause covers the whole batch, its round trips included: resumed any earlier,
    the collector's first pass would walk every object the decision still holds
    (rows, columns, results), about 10 ms per 1,000 transfers; at the end of the batch
    nearly all of them have been freed by their reference counts. The count is shared
    by threads, so the collector resumes only when the last batch in progress has
    finished (and only if it was running before the first). Threads whose batches
    overlap without a break (the merchant API's handlers under load) would keep it
    paused for good, so a batch that starts after _MOST_DEFERRED young objects have
    piled up runs a full collection first.
    """
    global _pauses, _collector_was_enabled
    with _pause_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        elif _collector_was_enabled and gc.get_count()[0] > _MOST_DEFERRED:
            gc.collect()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()


# --- Reading -------------------------------------------------------------------------


def _load(
    store: Store, requests: Sequence[Request], meanwhile: Callable[[], T]
) -> tuple[Loaded, T]:
    """Everything the batch decides on, in as few round trips as the data allows, and what
    `meanwhile` returns, run while the first read is on the server (`Store.read`).

    The first read asks for the requests' own ids, their pending and linked transfers,
    and the accounts their postings name (the store locks the bounded ones). A second
    read follows only when the first found something it could not know to ask for: a
    retried request's pending transfer, or a pending transfer's accounts.
    """
    # Each map goes from `uuid.int` to the uuid: deduplicated without UUID.__hash__.
    request_ids = {r.id.int: r.id for r in requests}
    pending_ids = {r.pending_id.int: r.pending_id for r in requests if not isinstance(r, Transfer)}
    linked_ids = {
        r.linked_id.int: r.linked_id for r in requests if isinstance(r, Transfer) and r.linked_id
    }
    account_ids = {
        p.account_id.int: p.account_id
        for r in requests
        if isinstance(r, (Transfer, PostPending)) and r.postings
        for p in r.postings
    }
    transfers: dict[Key, Recorded] = {}
    resolutions: dict[Key, Phase] = {}
    accounts: dict[Key, AccountRow] = {}
    asked: set[Key] = set()
    reads = Reads(
        transfers=list((request_ids | pending_ids | linked_ids).values()),
        resolutions=list(pending_ids.values()),
        accounts=list(account_ids.values()),
    )
    found, done_meanwhile = store.read(reads, meanwhile)
    while True:
        transfers |= _recorded(found.transfers)
        resolutions |= {pid.int: Phase(phase) for pid, phase in found.resolutions}
        accounts |= {account.id.int: account for account in found.accounts}
        asked.update(a.int for a in reads.accounts)
        retried_pendings = {
            pid.int: pid
            for i in request_ids.keys() & transfers.keys()
            if (pid := transfers[i].pending_id) is not None
            and pid.int not in transfers
            and pid.int not in pending_ids
        }
        pending_ids |= retried_pendings
        leg_accounts = {
            a.int: a
            for i in pending_ids.keys() & transfers.keys()
            for a, _ in transfers[i].legs
            if a.int not in asked
        }
        reads = Reads(
            transfers=list(retried_pendings.values()),
            resolutions=list(retried_pendings.values()),
            accounts=list(leg_accounts.values()),
        )
        if not (reads.transfers or reads.accounts):
            break
        found, _ = store.read(reads, _nothing)
    existing = {i: transfers[i] for i in request_ids.keys() & transfers.keys()}
    pendings = {i: transfers[i] for i in pending_ids.keys() & transfers.keys()}
    loaded = Loaded(existing, pendings, resolutions, linked_ids.keys() & transfers.keys(), accounts)
    return loaded, done_meanwhile


def _nothing() -> None:
    return None


def _recorded(rows: list[tuple[Any, ...]]) -> dict[Key, Recorded]:
    """Transfers from store rows (one per leg, in seq and leg order)."""
    legs: dict[Key, list[Leg]] = defaultdict(list)
    first: dict[Key, tuple[Any, ...]] = {}
    for row in rows:
        first.setdefault(row[1].int, row)
        if row[11] is not None:
            legs[row[1].int].append((row[11], row[12]))
    return {
        tid: Recorded(
            id=row[1],
            kind=row[2],
            phase=Phase(row[3]),
            currency=row[4],
            pending_id=row[5],
            linked_id=row[6],
            timeout_s=row[7],
            metadata_json=row[8],
            timestamp_us=row[9],
            legs=tuple(legs[tid]),
            seq=row[0],
        )
        for tid, row in first.items()
    }


# --- Deciding ------------------------------------------------------------------------


class Draft(NamedTuple):
    """What a request says on its own, worked out before anything is read: the first rule
    it breaks (None if none), its metadata's canonical text, and its legs as signed
    amounts (None for a full post, which takes its pending transfer's legs)."""

    problem: Problem | None
    metadata_json: str
    legs: tuple[Leg, ...] | None


def _draft(request: Request) -> Draft:
    problem = request_problem(request)
    if problem:
        return Draft(problem, "", ())
    postings = request.postings if isinstance(request, (Transfer, PostPending)) else ()
    legs = None if postings is None else tuple((p.account_id, p.signed_amount) for p in postings)
    return Draft(None, canonical_metadata(request.metadata), legs)


def _decide(
    request: Request,
    draft: Draft,
    loaded: Loaded,
    in_batch: dict[Key, Recorded],
    outcome: Outcome,
    clock: Callable[[], int],
) -> Recorded:
    """The transfer `request` records, or Refused. Mutates bounded balances on success."""
    if draft.problem:
        raise Refused(*draft.problem)
    wanted = _intended(request, draft, loaded, in_batch, clock())
    key = request.id.int
    prior = loaded.existing.get(key) or in_batch.get(key)
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
        loaded.resolutions[wanted.pending_id.int] = wanted.phase
        reservation: Key | None = wanted.pending_id.int
    else:
        reservation = key if wanted.phase is Phase.PENDING else None
    outcome.effects.append((effects, reservation))
    return wanted


def _intended(
    request: Request,
    draft: Draft,
    loaded: Loaded,
    in_batch: dict[Key, Recorded],
    timestamp_us: int,
) -> Recorded:
    """The request in the journal's own terms (legs as signed amounts), stamped."""
    if isinstance(request, Transfer):
        legs = draft.legs or ()
        first = loaded.accounts.get(legs[0][0].int)
        phase = Phase.PENDING if request.pending else Phase.POSTED
        return Recorded(
            id=request.id,
            kind=request.kind,
            phase=phase,
            currency=first.currency if first else "",
            pending_id=None,
            linked_id=request.linked_id,
            timeout_s=request.timeout_s,
            metadata_json=draft.metadata_json,
            timestamp_us=timestamp_us,
            legs=legs,
        )
    pending_key = request.pending_id.int
    pending = loaded.pendings.get(pending_key) or in_batch.get(pending_key)
    if isinstance(request, PostPending):
        phase = Phase.POST_PENDING
        legs = draft.legs if draft.legs is not None else pending.legs if pending else ()
    else:
        phase = Phase.VOID_PENDING if isinstance(request, VoidPending) else Phase.EXPIRE_PENDING
        legs = ()
    return Recorded(
        id=request.id,
        kind=pending.kind if pending else "",
        phase=phase,
        currency=pending.currency if pending else "",
        pending_id=request.pending_id,
        linked_id=None,
        timeout_s=0,
        metadata_json=draft.metadata_json,
        timestamp_us=timestamp_us,
        legs=legs,
    )


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


def _check_transfer(request: Transfer, loaded: Loaded, in_batch: dict[Key, Recorded]) -> None:
    if request.linked_id is not None and not (
        request.linked_id.int in loaded.linked or request.linked_id.int in in_batch
    ):
        raise Refused(ResultCode.LINKED_TRANSFER_NOT_FOUND, f"no transfer {request.linked_id}")


def _check_accounts(
    wanted: Recorded, loaded: Loaded, outcome: Outcome, *, require_open: bool
) -> None:
    for leg, (account_id, _) in enumerate(wanted.legs):
        account = loaded.accounts.get(account_id.int)
        if account is None:
            raise Refused(ResultCode.ACCOUNT_NOT_FOUND, f"leg {leg}: no account {account_id}")
        if account.currency != wanted.currency:
            raise Refused(ResultCode.CURRENCIES_MUST_MATCH, f"leg {leg}: {account.currency}")
        if account.status is AccountStatus.CLOSED:
            raise Refused(ResultCode.ACCOUNT_CLOSED, f"leg {leg}: account {account_id}")
        if require_open and account.status is AccountStatus.FROZEN:
            raise Refused(ResultCode.ACCOUNT_FROZEN, f"leg {leg}: account {account_id}")
        if not account.bounded:
            outcome.needs_open.add(account_id.int)


def _pending_for(
    request: PostPending | VoidPending | ExpirePending,
    loaded: Loaded,
    in_batch: dict[Key, Recorded],
    clock: Callable[[], int],
) -> Recorded:
    pending_key = request.pending_id.int
    pending = loaded.pendings.get(pending_key) or in_batch.get(pending_key)
    if pending is None:
        raise Refused(ResultCode.PENDING_TRANSFER_NOT_FOUND, f"no transfer {request.pending_id}")
    if pending.phase is not Phase.PENDING:
        raise Refused(ResultCode.PENDING_TRANSFER_NOT_PENDING, f"{pending.id} is {pending.phase}")
    resolution = loaded.resolutions.get(pending_key)
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
        pending_legs = {account_id.int: amount for account_id, amount in pending.legs}
        for leg, posting in enumerate(request.postings):
            held = pending_legs.get(posting.account_id.int)
            if held is None or (held > 0) != (posting.signed_amount > 0):
                raise Refused(ResultCode.POST_POSTINGS_MUST_MATCH_PENDING, f"leg {leg}")
            if abs(posting.signed_amount) > abs(held):
                raise Refused(ResultCode.POST_AMOUNT_EXCEEDS_PENDING, f"leg {leg}")
    return pending


def _effects(phase: Phase, legs: Iterable[Leg], released: Iterable[Leg]) -> dict[Key, Columns]:
    """How a transfer changes each account's four balance columns."""
    effects: dict[Key, Columns] = {}
    for account_id, amount in released:
        key = account_id.int
        d = effects.get(key)
        if d is None:
            d = effects[key] = [0, 0, 0, 0]
        if amount > 0:
            d[DEBITS_PENDING] -= amount
        else:
            d[CREDITS_PENDING] += amount
    if phase is Phase.POSTED or phase is Phase.POST_PENDING:
        debits, credits = DEBITS_POSTED, CREDITS_POSTED
    elif phase is Phase.PENDING:
        debits, credits = DEBITS_PENDING, CREDITS_PENDING
    else:
        return effects
    for account_id, amount in legs:
        key = account_id.int
        d = effects.get(key)
        if d is None:
            d = effects[key] = [0, 0, 0, 0]
        if amount > 0:
            d[debits] += amount
        else:
            d[credits] -= amount
    return effects


def _check_bounds(effects: dict[Key, Columns], accounts: dict[Key, AccountRow]) -> None:
    """Invariant 2, decided. Keep this the one place a bound is judged in code.

    It runs on the working copies of locked rows, so what it approves is exactly what the
    transaction writes; the CHECK constraints on `accounts` judge the same rule again.
    Only after every touched account passes are the working copies changed.
    """
    updated: list[tuple[Columns, Columns]] = []
    for key, d in effects.items():
        account = accounts[key]
        if not account.bounded:
            continue
        account_id = account.id
        b = account.balance
        debits_posted = b[DEBITS_POSTED] + d[DEBITS_POSTED]
        credits_posted = b[CREDITS_POSTED] + d[CREDITS_POSTED]
        debits_pending = b[DEBITS_PENDING] + d[DEBITS_PENDING]
        credits_pending = b[CREDITS_PENDING] + d[CREDITS_PENDING]
        if max(debits_posted + debits_pending, credits_posted + credits_pending) > INT64_MAX:
            raise Refused(ResultCode.BALANCE_OVERFLOW, f"account {account_id}")
        if account.debits_must_not_exceed_credits and (
            debits_posted + debits_pending > credits_posted
        ):
            raise Refused(ResultCode.EXCEEDS_CREDITS, f"account {account_id}")
        if account.credits_must_not_exceed_debits and (
            credits_posted + credits_pending > debits_posted
        ):
            raise Refused(ResultCode.EXCEEDS_DEBITS, f"account {account_id}")
        if account.max_balance is not None:
            if account.debits_must_not_exceed_credits:
                held = credits_posted + credits_pending - debits_posted
            else:
                held = debits_posted + debits_pending - credits_posted
            if held > account.max_balance:
                raise Refused(ResultCode.EXCEEDS_MAX_BALANCE, f"account {account_id}")
        updated.append((b, [debits_posted, credits_posted, debits_pending, credits_pending]))
    for current, new in updated:
        current[:] = new


# --- Writing -------------------------------------------------------------------------


def _writes(
    applied: list[Recorded], outcome: Outcome, first_effect: int, loaded: Loaded, *, last: bool
) -> Writes | None:
    """The rows that write one part's applied transfers (None if there is nothing to write).

    `outcome.effects[first_effect:]` are this part's; the last part also carries the whole
    batch's unbounded deltas and status rechecks (see `_decided_parts`). Order matters:
    postings first (their transfer's insert trigger checks them), then balances, then the
    transfers, so that every writer holds a transaction id before it draws a seq
    (journal.sealing_horizon relies on that).
    """
    shard_deltas: list[ShardDelta] = []
    recheck: list[tuple[uuid.UUID, str]] = []
    if last and outcome.effects:  # something was applied in the batch
        shard_deltas = _shard_deltas(outcome.effects, loaded.accounts)
        recheck = [
            (account.id, account.status.value)
            for account in map(loaded.accounts.__getitem__, sorted(outcome.needs_open))
        ]
    if not applied and not shard_deltas and not recheck:
        return None
    return Writes(
        postings=[
            (t.id, leg, account_id, t.currency, amount)
            for t in applied
            for leg, (account_id, amount) in enumerate(t.legs)
        ],
        bounded=_bounded_rows(outcome.effects[first_effect:], loaded.accounts),
        shard_deltas=shard_deltas,
        recheck=recheck,
        transfers=[_transfer_row(t) for t in applied],
    )


def _transfer_row(t: Recorded) -> TransferRow:
    digest = content_hash(
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
    )
    return (
        t.id, t.kind, t.phase.value, t.currency, t.pending_id, t.linked_id, t.timeout_s,
        t.metadata_json, t.timestamp_us, digest,
    )  # fmt: skip


def _bounded_rows(
    effects: list[tuple[dict[Key, Columns], Key | None]], accounts: dict[Key, AccountRow]
) -> list[BoundedRow]:
    """New absolute balances of the bounded accounts these effects touch: their working
    copies, already checked by `_check_bounds`, for rows locked since the read."""
    touched = {key for effect, _ in effects for key in effect if accounts[key].bounded}
    rows = []
    for key in sorted(touched):
        account = accounts[key]
        b = account.balance
        rows.append((account.id, b[0], b[1], b[2], b[3]))
    return rows


def _shard_deltas(
    effects: list[tuple[dict[Key, Columns], Key | None]], accounts: dict[Key, AccountRow]
) -> list[ShardDelta]:
    """The batch's net change to each unbounded account's balance rows.

    Posted deltas go to one shard picked at random for this transaction; pending deltas go
    to the shard its pending transfer's id maps to, so that a reservation and its release
    always meet on the same row and no shard's pending column can go below zero.
    """
    posted: dict[Key, Columns] = {}
    pending: dict[tuple[Key, int], Columns] = {}
    for effect, reservation in effects:
        for key, d in effect.items():
            account = accounts[key]
            if account.bounded:
                continue
            total = posted.get(key)
            if total is None:
                total = posted[key] = [0, 0, 0, 0]
            total[DEBITS_POSTED] += d[DEBITS_POSTED]
            total[CREDITS_POSTED] += d[CREDITS_POSTED]
            if reservation is not None:
                shard_key = (key, reservation % account.shards)
                total = pending.get(shard_key)
                if total is None:
                    total = pending[shard_key] = [0, 0, 0, 0]
                total[DEBITS_PENDING] += d[DEBITS_PENDING]
                total[CREDITS_PENDING] += d[CREDITS_PENDING]
    spread: dict[tuple[Key, int], Columns] = pending
    for key, d in posted.items():
        shards = accounts[key].shards
        shard = random.randrange(shards) if shards > 1 else 0  # noqa: S311 - spreading only
        total = spread.get((key, shard))
        if total is None:
            spread[key, shard] = d
        else:
            total[DEBITS_POSTED] += d[DEBITS_POSTED]
            total[CREDITS_POSTED] += d[CREDITS_POSTED]
    # Sorted by (uuid.int, shard): the database's order of uuids is bytewise, as is int's.
    return [
        (accounts[key].id, shard, d[0], d[1], d[2], d[3])
        for (key, shard), d in sorted(spread.items(), key=_shard_key)
        if any(d)
    ]


def _shard_key(item: tuple[tuple[Key, int], Columns]) -> tuple[Key, int]:
    return item[0]
