"""Random sequences of ledger operations against the in-memory model, on both backends.

After every step: each account's four balances equal the model's, and the verifier finds
every invariant holding (balanced transfers, bounds, exactly-once, pending resolved once,
guards in place, hashes and blocks intact, stored balances equal to the postings).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from unittest.mock import patch

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from msgspec import structs
from sqlalchemy.engine import Engine

import ledger.batch
from ledger import (
    AccountKind,
    AccountStatus,
    BatchMode,
    Ledger,
    LedgerError,
    MonotonicClock,
    NewAccount,
    PostPending,
    Request,
    ResultCode,
    Transfer,
    VoidPending,
    credit,
    debit,
    run_read,
)
from ledger.codes import AccountResultCode
from ledger.types import Phase
from ledger.verify import verify
from tests.conftest import both_backends
from tests.ledger.conftest import FakeTime
from tests.ledger.model import MAccount, Model

amounts = st.one_of(st.integers(1, 6_000), st.just(0))
kinds = st.sampled_from(["fare", "sale"])
metadata = st.sampled_from([{}, {"n": 1}, {"n": 2}])
MARGIN_US = 200_000


def machine_for(fresh_engines: Callable[[], Engine]) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        accounts = Bundle("accounts")

        def __init__(self) -> None:
            super().__init__()
            self.time = FakeTime()
            self.engine = fresh_engines()
            self.ledger = Ledger(self.engine, clock=MonotonicClock(self.time))
            self.model = Model(now_us=self.time.now_us)
            self.history: list[Request] = []

        def teardown(self) -> None:
            self.engine.dispose()

        # --- accounts -----------------------------------------------------------------

        @rule(
            target=accounts,
            bound=st.sampled_from(["none", "none", "no_overdraft", "no_overdraft_max", "mirror"]),
            shards=st.integers(1, 4),
        )
        def create_account(self, bound: str, shards: int) -> uuid.UUID:
            account_id = uuid.uuid4()
            dnec = bound in ("no_overdraft", "no_overdraft_max")
            cned = bound == "mirror"
            max_balance = 10_000 if bound == "no_overdraft_max" else None
            self.ledger.create_account(
                NewAccount(
                    account_id,
                    AccountKind.SUSPENSE,
                    debits_must_not_exceed_credits=dnec,
                    credits_must_not_exceed_debits=cned,
                    max_balance=max_balance,
                    shards=shards if bound == "none" else 1,
                )
            )
            self.model.accounts[account_id] = MAccount(dnec, cned, max_balance)
            return account_id

        @rule(account=accounts, status=st.sampled_from(list(AccountStatus)))
        def set_status(self, account: uuid.UUID, status: AccountStatus) -> None:
            m = self.model.accounts[account]
            expected: AccountResultCode | None = None
            if m.status is AccountStatus.CLOSED:
                expected = AccountResultCode.ACCOUNT_CLOSED
            elif status is AccountStatus.CLOSED and (m.dp != m.cp or m.dpend or m.cpend):
                expected = AccountResultCode.ACCOUNT_NOT_EMPTY
            try:
                self.ledger.set_status(account, status)
            except LedgerError as refused:
                assert refused.code == expected
            else:
                assert expected is None
                m.status = status

        # --- transfers ----------------------------------------------------------------

        @rule(
            data=st.data(),
            legs=st.integers(2, 3),
            pending=st.booleans(),
            timeout=st.sampled_from([0, 0, 1, 3]),
            unknown=st.integers(0, 9).map(lambda n: n == 0),
        )
        def transfer(
            self, data: st.DataObject, legs: int, pending: bool, timeout: int, unknown: bool
        ) -> None:
            self._submit([self._draw_transfer(data, legs, pending, timeout, unknown)])

        @rule(data=st.data(), partial=st.booleans())
        def post(self, data: st.DataObject, partial: bool) -> None:
            self._submit([self._draw_post(data, partial)])

        @rule(data=st.data())
        def void(self, data: st.DataObject) -> None:
            self._submit([VoidPending(uuid.uuid4(), self._draw_pending_id(data))])

        @rule(
            data=st.data(),
            mode=st.sampled_from(list(BatchMode)),
            size=st.integers(2, 5),
            first=st.integers(1, 6),
            part=st.integers(1, 6),
        )
        def batch(
            self, data: st.DataObject, mode: BatchMode, size: int, first: int, part: int
        ) -> None:
            """A batch, decided and written on PostgreSQL in parts: `first` requests, then
            each part twice the last, up to `part` (ledger.batch's FIRST_PART and
            PART_SIZE, 50 and 400 in production). A request may depend on one in an
            earlier part, already sent to the database but not yet answered."""
            requests: list[Request] = []
            for _ in range(size):
                choice = data.draw(st.sampled_from(["transfer", "post", "void", "retry"]))
                if choice == "transfer":
                    requests.append(
                        self._draw_transfer(data, 2, data.draw(st.booleans()), 0, False)
                    )
                elif choice == "post":
                    requests.append(self._draw_post(data, data.draw(st.booleans())))
                elif choice == "void":
                    requests.append(VoidPending(uuid.uuid4(), self._draw_pending_id(data)))
                elif self.history:
                    requests.append(data.draw(st.sampled_from(self.history)))
            if requests:
                with (
                    patch.object(ledger.batch, "FIRST_PART", first),
                    patch.object(ledger.batch, "PART_SIZE", part),
                ):
                    self._submit(requests, mode)

        @precondition(lambda self: bool(self.history))
        @rule(data=st.data(), mutate=st.booleans())
        def retry(self, data: st.DataObject, mutate: bool) -> None:
            """Re-submit an earlier request, identical or with one field changed."""
            request = data.draw(st.sampled_from(self.history))
            if mutate and isinstance(request, Transfer):
                field = data.draw(st.sampled_from(["amount", "kind", "metadata", "pending"]))
                if field == "amount" and len(request.postings) == 2:
                    bumped = tuple(
                        structs.replace(p, amount=p.amount + 1) for p in request.postings
                    )
                    request = structs.replace(request, postings=bumped)
                elif field == "kind":
                    request = structs.replace(request, kind="other")
                elif field == "metadata":
                    request = structs.replace(request, metadata={"n": 99})
                elif field == "pending":
                    request = structs.replace(request, pending=not request.pending, timeout_s=0)
            self._submit([request])

        @rule(seconds=st.sampled_from([0.5, 1, 2, 4]))
        def advance_time(self, seconds: float) -> None:
            self.time.advance(seconds)
            # Keep "now" well away from any pending expiry, so that expired or not is
            # never decided by the microseconds the monotonic clock adds.
            for t in self.model.transfers.values():
                if t.timeout_s:
                    boundary = t.timestamp_us + t.timeout_s * 10**6
                    if abs(self.time.now_us - boundary) < MARGIN_US:
                        self.time.now_us = boundary + MARGIN_US
            self.model.now_us = self.time.now_us

        @rule()
        def expire(self) -> None:
            due = {
                pid
                for pid, t in self.model.transfers.items()
                if t.phase is Phase.PENDING
                and pid not in self.model.resolved
                and self.model.expired(t)
            }
            results = self.ledger.expire_pending()
            assert {r.code for r in results} <= {ResultCode.OK}
            expired_ids = {self._pending_of(r.id) for r in results}
            assert expired_ids == due
            for pid in due:
                pending = self.model.transfers[pid]
                self.model._move(Phase.EXPIRE_PENDING, (), pending.legs)
                self.model.resolved[pid] = Phase.EXPIRE_PENDING

        # --- checks -------------------------------------------------------------------

        @invariant()
        def balances_match_model(self) -> None:
            actual = self.ledger.get_accounts(list(self.model.accounts))
            for account_id, m in self.model.accounts.items():
                a = actual[account_id]
                assert (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending) == (
                    m.dp,
                    m.cp,
                    m.dpend,
                    m.cpend,
                ), account_id
                assert a.status is m.status

        @invariant()
        def every_invariant_holds(self) -> None:
            report = run_read(self.engine, verify)
            assert report.ok, [str(v) for v in report.violations]

        @rule()
        def seal(self) -> None:
            self.ledger.seal()

        # --- helpers ------------------------------------------------------------------

        def _submit(self, requests: list[Request], mode: BatchMode = BatchMode.INDEPENDENT) -> None:
            results = self.ledger.submit(requests, mode)
            expected = self.model.apply_batch(requests, mode)
            assert [r.code for r in results] == expected, [r.detail for r in results]
            for request, result in zip(requests, results, strict=True):
                if result.code is ResultCode.OK:
                    recorded = self.model.transfers[request.id]
                    self.model.transfers[request.id] = replace(
                        recorded, timestamp_us=result.timestamp_us or 0
                    )
                self.history.append(request)

        def _draw_account(self, data: st.DataObject) -> uuid.UUID:
            known = list(self.model.accounts)
            return data.draw(st.sampled_from(known)) if known else uuid.uuid4()

        def _draw_transfer(
            self, data: st.DataObject, legs: int, pending: bool, timeout: int, unknown: bool
        ) -> Transfer:
            accounts: list[uuid.UUID] = []
            while len(accounts) < legs:
                candidate = uuid.uuid4() if unknown and not accounts else self._draw_account(data)
                if candidate in accounts:
                    candidate = uuid.uuid4()
                accounts.append(candidate)
            amount = data.draw(amounts)
            if legs == 2:
                postings = (debit(accounts[0], amount), credit(accounts[1], amount))
            else:
                part = amount // 2
                postings = (
                    debit(accounts[0], amount),
                    credit(accounts[1], part),
                    credit(accounts[2], amount - part),
                )
                if part == 0 or amount - part == 0:
                    postings = (debit(accounts[0], amount), credit(accounts[1], amount))
            return Transfer(
                uuid.uuid4(),
                postings,
                data.draw(kinds),
                pending=pending,
                timeout_s=timeout if pending else 0,
                metadata=data.draw(metadata),
            )

        def _draw_pending_id(self, data: st.DataObject) -> uuid.UUID:
            pendings = self.model.pending_ids()
            if pendings and data.draw(st.integers(0, 9)) > 0:
                return data.draw(st.sampled_from(pendings))
            return uuid.uuid4()

        def _draw_post(self, data: st.DataObject, partial: bool) -> PostPending:
            pending_id = self._draw_pending_id(data)
            pending = self.model.transfers.get(pending_id)
            if not partial or pending is None or len(pending.legs) != 2:
                return PostPending(uuid.uuid4(), pending_id)
            (debited, amount), (credited, _) = pending.legs
            part = data.draw(st.integers(1, abs(amount) + 1))
            return PostPending(
                uuid.uuid4(), pending_id, (debit(debited, part), credit(credited, part))
            )

        def _pending_of(self, expiry_id: uuid.UUID) -> uuid.UUID:
            recorded = self.ledger.get_transfer(expiry_id)
            assert recorded is not None and recorded.pending_id is not None
            return recorded.pending_id

    return LedgerMachine


@both_backends
def test_ledger_matches_model(fresh_engines: Callable[[], Engine], database_url: str) -> None:
    examples = 30 if database_url.startswith("postgresql") else 60
    run_state_machine_as_test(
        machine_for(fresh_engines),
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
