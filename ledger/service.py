"""The ledger's front door: one `Ledger` per process, shared by threads.

Every write runs in one database transaction through `db.run_write`, which retries
transient conflicts, so a call either commits all it was asked to do or nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger import journal, queries, schema
from ledger.batch import apply_batch
from ledger.codes import AccountResultCode, BatchTooLargeError, LedgerError
from ledger.db import AnyRow, run_read, run_write
from ledger.rules import account_problem
from ledger.types import (
    MAX_BATCH_SIZE,
    Account,
    AccountResult,
    AccountStatus,
    BatchMode,
    ExpirePending,
    NewAccount,
    RecordedTransfer,
    Request,
    StatementLine,
    TransferResult,
)

# Expiry transfers get ids derived from the pending id, so that two sweepers racing over
# the same pending transfer produce the same id and the second one answers `exists`.
EXPIRY_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-4a8e-9b7c-0a4c1e5d2b91")


class MonotonicClock:
    """Microseconds since the Unix epoch, strictly increasing within the process."""

    def __init__(self, source: Callable[[], int] | None = None) -> None:
        self._source = source or (lambda: time.time_ns() // 1000)
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(self._source(), self._last + 1)
            return self._last


class Ledger:
    def __init__(self, engine: Engine, clock: Callable[[], int] | None = None) -> None:
        self.engine = engine
        self.clock = clock or MonotonicClock()

    # --- Accounts ----------------------------------------------------------------------

    def create_accounts(self, accounts: Sequence[NewAccount]) -> list[AccountResult]:
        """Create accounts; an identical re-creation answers `exists`."""
        if len(accounts) > MAX_BATCH_SIZE:
            raise BatchTooLargeError(f"{len(accounts)} accounts; at most {MAX_BATCH_SIZE}")
        return run_write(self.engine, lambda conn: self._create_accounts(conn, accounts))

    def create_accounts_in(
        self, conn: Connection, accounts: Sequence[NewAccount]
    ) -> list[AccountResult]:
        """Like `create_accounts`, inside a write transaction the caller runs (via
        `db.run_write`), so that a service can commit its own rows with the accounts."""
        if len(accounts) > MAX_BATCH_SIZE:
            raise BatchTooLargeError(f"{len(accounts)} accounts; at most {MAX_BATCH_SIZE}")
        return self._create_accounts(conn, accounts)

    def create_account(self, account: NewAccount) -> None:
        result = self.create_accounts([account])[0]
        if not result.code.succeeded:
            raise LedgerError(result.code, result.detail)

    def _create_accounts(
        self, conn: Connection, accounts: Sequence[NewAccount]
    ) -> list[AccountResult]:
        a = schema.accounts
        ids = {acc.id for acc in accounts}
        existing = (
            {row.id: row for row in conn.execute(sa.select(a).where(a.c.id.in_(ids)))}
            if ids
            else {}
        )
        results, rows, shard_rows = [], [], []
        created: dict[uuid.UUID, NewAccount] = {}
        for acc in accounts:
            problem = account_problem(acc)
            if problem:
                results.append(AccountResult(acc.id, *problem))
                continue
            prior = existing.get(acc.id)
            before = created.get(acc.id)
            if prior is not None or before is not None:
                difference = _account_difference(acc, prior, before)
                code = difference or AccountResultCode.EXISTS
                results.append(AccountResult(acc.id, code))
                continue
            created[acc.id] = acc
            rows.append(
                {
                    "id": acc.id,
                    "kind": acc.kind.value,
                    "currency": acc.currency,
                    "debits_must_not_exceed_credits": acc.debits_must_not_exceed_credits,
                    "credits_must_not_exceed_debits": acc.credits_must_not_exceed_debits,
                    "max_balance": acc.max_balance,
                    "shards": acc.shards,
                    "name": acc.name,
                    "status": AccountStatus.OPEN.value,
                    "version": 0,
                    "created_at_us": self.clock(),
                }
            )
            shard_rows += [{"account_id": acc.id, "shard": k} for k in range(1, acc.shards)]
            results.append(AccountResult(acc.id, AccountResultCode.OK))
        if rows:
            conn.execute(sa.insert(a), rows)
        if shard_rows:
            conn.execute(sa.insert(schema.account_balance_shards), shard_rows)
        return results

    def set_status(self, account_id: uuid.UUID, status: AccountStatus) -> None:
        """Freeze, unfreeze or close an account. Closing is final and needs a zero balance."""
        run_write(self.engine, lambda conn: self._set_status(conn, account_id, status))

    def _set_status(self, conn: Connection, account_id: uuid.UUID, status: AccountStatus) -> None:
        current = self._lock_account(conn, account_id)
        if current.status is AccountStatus.CLOSED:
            raise LedgerError(AccountResultCode.ACCOUNT_CLOSED, str(account_id))
        if status is AccountStatus.CLOSED and (
            current.debits_posted != current.credits_posted
            or current.debits_pending
            or current.credits_pending
        ):
            raise LedgerError(AccountResultCode.ACCOUNT_NOT_EMPTY, str(account_id))
        a = schema.accounts
        conn.execute(
            sa.update(a)
            .where(a.c.id == account_id)
            .values(status=status.value, version=a.c.version + 1)
        )

    def set_max_balance(self, account_id: uuid.UUID, max_balance: int) -> None:
        """Raise or lower a bounded account's maximum (registering a card raises it)."""
        run_write(self.engine, lambda conn: self._set_max_balance(conn, account_id, max_balance))

    def set_max_balance_in(self, conn: Connection, account_id: uuid.UUID, max_balance: int) -> None:
        """Like `set_max_balance`, inside the caller's write transaction (`db.run_write`)."""
        self._set_max_balance(conn, account_id, max_balance)

    def _set_max_balance(self, conn: Connection, account_id: uuid.UUID, max_balance: int) -> None:
        current = self._lock_account(conn, account_id)
        if max_balance <= 0:
            raise LedgerError(AccountResultCode.MAX_BALANCE_MUST_BE_POSITIVE, str(max_balance))
        if not (current.debits_must_not_exceed_credits or current.credits_must_not_exceed_debits):
            raise LedgerError(AccountResultCode.MAX_BALANCE_REQUIRES_BALANCE_FLAG, str(account_id))
        held = (
            current.credits_posted + current.credits_pending - current.debits_posted
            if current.debits_must_not_exceed_credits
            else current.debits_posted + current.debits_pending - current.credits_posted
        )
        if held > max_balance:
            raise LedgerError(AccountResultCode.MAX_BALANCE_BELOW_BALANCE, f"holds {held}")
        a = schema.accounts
        conn.execute(
            sa.update(a)
            .where(a.c.id == account_id)
            .values(max_balance=max_balance, version=a.c.version + 1)
        )

    def _lock_account(self, conn: Connection, account_id: uuid.UUID) -> Account:
        """Lock the account row and all its shards, then read it whole."""
        a, s = schema.accounts, schema.account_balance_shards
        found = conn.execute(sa.select(a.c.id).where(a.c.id == account_id).with_for_update())
        if found.first() is None:
            raise LedgerError(AccountResultCode.ACCOUNT_NOT_FOUND, str(account_id))
        conn.execute(
            sa.select(s.c.shard)
            .where(s.c.account_id == account_id)
            .order_by(s.c.shard)
            .with_for_update()
        ).all()
        return queries.accounts_by_id(conn, [account_id])[account_id]

    def get_account(self, account_id: uuid.UUID) -> Account | None:
        return self.get_accounts([account_id]).get(account_id)

    def get_accounts(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
        return run_read(self.engine, lambda conn: queries.accounts_by_id(conn, ids))

    # --- Transfers ---------------------------------------------------------------------

    def submit(
        self, requests: Sequence[Request], mode: BatchMode = BatchMode.INDEPENDENT
    ) -> list[TransferResult]:
        """Apply a batch in one transaction; one result per request, in order."""
        if len(requests) > MAX_BATCH_SIZE:
            raise BatchTooLargeError(f"{len(requests)} requests; at most {MAX_BATCH_SIZE}")
        if not requests:
            return []
        # The batch is the whole transaction: its last write may carry the COMMIT.
        return run_write(
            self.engine,
            lambda conn: apply_batch(conn, requests, mode, self.clock, commit=True),
        )

    def submit_in(
        self, conn: Connection, requests: Sequence[Request], mode: BatchMode = BatchMode.INDEPENDENT
    ) -> list[TransferResult]:
        """Like `submit`, inside a write transaction the caller runs (via `db.run_write`),
        so that a service can commit its own rows together with the transfers."""
        if len(requests) > MAX_BATCH_SIZE:
            raise BatchTooLargeError(f"{len(requests)} requests; at most {MAX_BATCH_SIZE}")
        return apply_batch(conn, requests, mode, self.clock)

    def transfer(self, request: Request) -> TransferResult:
        """Apply one request; raises LedgerError with the exact code if it is refused."""
        result = self.submit([request])[0]
        if not result.code.succeeded:
            raise LedgerError(result.code, result.detail)
        return result

    def expire_pending(self, limit: int = 1000) -> list[TransferResult]:
        """Record the expiry of pending transfers whose timeout has passed."""
        now = self.clock()
        due = run_read(self.engine, lambda conn: queries.expired_pending_ids(conn, now, limit))
        requests: list[Request] = [
            ExpirePending(uuid.uuid5(EXPIRY_NAMESPACE, str(pending_id)), pending_id)
            for pending_id in due
        ]
        return self.submit(requests) if requests else []

    def get_transfer(self, transfer_id: uuid.UUID) -> RecordedTransfer | None:
        found = self.transfers(ids=[transfer_id], limit=1)
        return found[0] if found else None

    def transfers(self, **filters: object) -> list[RecordedTransfer]:
        """See `queries.transfers` for the filters."""
        return run_read(self.engine, lambda conn: queries.transfers(conn, **filters))  # type: ignore[arg-type]

    def statement(
        self, account_id: uuid.UUID, after_seq: int = 0, limit: int = 100
    ) -> list[StatementLine]:
        return run_read(
            self.engine, lambda conn: queries.statement(conn, account_id, after_seq, limit)
        )

    def balance_as_of(self, account_id: uuid.UUID, seq: int) -> queries.Balances:
        """The account's four balance columns just after transfer `seq` was applied."""
        found = run_read(
            self.engine,
            lambda conn: queries.balances_from_postings(conn, [account_id], as_of_seq=seq),
        )
        return found.get(account_id, queries.Balances())

    # --- Journal -----------------------------------------------------------------------

    def seal(self) -> journal.Block | None:
        """Seal every committed transfer not yet in a block; see ledger.journal."""
        with self.engine.connect() as conn:
            horizon = journal.sealing_horizon(conn)
            conn.rollback()
        return run_write(self.engine, lambda conn: journal.seal(conn, self.clock(), horizon))

    def head(self) -> journal.Block | None:
        return run_read(self.engine, journal.last_block)


def _account_difference(
    wanted: NewAccount, prior: AnyRow | None, before: NewAccount | None
) -> AccountResultCode | None:
    if before is not None:
        have = before
    else:
        assert prior is not None
        m = prior._mapping
        have = NewAccount(
            id=m["id"],
            kind=m["kind"],
            currency=m["currency"],
            debits_must_not_exceed_credits=m["debits_must_not_exceed_credits"],
            credits_must_not_exceed_debits=m["credits_must_not_exceed_debits"],
            max_balance=m["max_balance"],
            shards=m["shards"],
            name=m["name"],
        )
    if wanted.kind != have.kind:
        return AccountResultCode.EXISTS_WITH_DIFFERENT_KIND
    if wanted.currency != have.currency:
        return AccountResultCode.EXISTS_WITH_DIFFERENT_CURRENCY
    if (wanted.debits_must_not_exceed_credits, wanted.credits_must_not_exceed_debits) != (
        have.debits_must_not_exceed_credits,
        have.credits_must_not_exceed_debits,
    ):
        return AccountResultCode.EXISTS_WITH_DIFFERENT_FLAGS
    if wanted.shards != have.shards:
        return AccountResultCode.EXISTS_WITH_DIFFERENT_SHARDS
    if wanted.name != have.name:
        return AccountResultCode.EXISTS_WITH_DIFFERENT_NAME
    return None
