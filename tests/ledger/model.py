"""A plain in-memory ledger: what the real one must do, written as simply as possible.

The stateful test drives this model and the real ledger with the same requests and
demands the same result codes and the same balances after every step.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field

from ledger import (
    AccountStatus,
    BatchMode,
    PostPending,
    Request,
    ResultCode,
    Transfer,
    VoidPending,
)
from ledger.types import ExpirePending, Phase

Legs = tuple[tuple[uuid.UUID, int], ...]


@dataclass
class MAccount:
    dnec: bool
    cned: bool
    max_balance: int | None
    status: AccountStatus = AccountStatus.OPEN
    dp: int = 0
    cp: int = 0
    dpend: int = 0
    cpend: int = 0


@dataclass(frozen=True)
class MTransfer:
    phase: Phase
    kind: str
    pending_id: uuid.UUID | None
    linked_id: uuid.UUID | None
    timeout_s: int
    legs: Legs
    metadata: str
    timestamp_us: int = 0


@dataclass
class Model:
    accounts: dict[uuid.UUID, MAccount] = field(default_factory=dict)
    transfers: dict[uuid.UUID, MTransfer] = field(default_factory=dict)
    resolved: dict[uuid.UUID, Phase] = field(default_factory=dict)
    now_us: int = 0

    def pending_ids(self) -> list[uuid.UUID]:
        return [i for i, t in self.transfers.items() if t.phase is Phase.PENDING]

    def expired(self, pending: MTransfer) -> bool:
        return (
            pending.timeout_s > 0
            and self.now_us >= pending.timestamp_us + pending.timeout_s * 10**6
        )

    # --- one request ------------------------------------------------------------------

    def apply(self, request: Request) -> tuple[ResultCode, MTransfer | None]:
        """Decide `request`; on success record it and change balances."""
        wanted = self._wanted(request)
        if isinstance(wanted, ResultCode):
            return wanted, None
        prior = self.transfers.get(request.id)
        if prior is not None:
            return self._difference(wanted, prior) or ResultCode.EXISTS, prior
        if isinstance(request, Transfer):
            code = self._check_accounts(wanted.legs, require_open=True)
            if code:
                return code, None
            released: Legs = ()
        else:
            pending = self.transfers.get(request.pending_id)
            code = self._check_pending(request, pending)
            if code:
                return code, None
            assert pending is not None
            code = self._check_accounts(wanted.legs, require_open=isinstance(request, PostPending))
            if code:
                return code, None
            released = pending.legs
        code = self._move(wanted.phase, wanted.legs, released)
        if code:
            return code, None
        self.transfers[request.id] = wanted
        if wanted.pending_id:
            self.resolved[wanted.pending_id] = wanted.phase
        return ResultCode.OK, wanted

    def _wanted(self, request: Request) -> MTransfer | ResultCode:
        meta = json.dumps(request.metadata, sort_keys=True, separators=(",", ":"))
        if isinstance(request, Transfer):
            if any(p.amount <= 0 for p in request.postings):
                return ResultCode.AMOUNT_MUST_BE_POSITIVE
            phase = Phase.PENDING if request.pending else Phase.POSTED
            legs = tuple((p.account_id, p.signed_amount) for p in request.postings)
            return MTransfer(
                phase, request.kind, None, request.linked_id, request.timeout_s, legs, meta
            )
        pending = self.transfers.get(request.pending_id)
        kind = pending.kind if pending else ""
        if isinstance(request, PostPending):
            if request.postings is not None and any(p.amount <= 0 for p in request.postings):
                return ResultCode.AMOUNT_MUST_BE_POSITIVE
            if request.postings is None:
                legs = pending.legs if pending else ()
            else:
                legs = tuple((p.account_id, p.signed_amount) for p in request.postings)
            return MTransfer(Phase.POST_PENDING, kind, request.pending_id, None, 0, legs, meta)
        phase = Phase.VOID_PENDING if isinstance(request, VoidPending) else Phase.EXPIRE_PENDING
        return MTransfer(phase, kind, request.pending_id, None, 0, (), meta)

    @staticmethod
    def _difference(wanted: MTransfer, prior: MTransfer) -> ResultCode | None:
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
        if [(a, v > 0) for a, v in wanted.legs] != [(a, v > 0) for a, v in prior.legs]:
            return ResultCode.EXISTS_WITH_DIFFERENT_POSTINGS
        if wanted.legs != prior.legs:
            return ResultCode.EXISTS_WITH_DIFFERENT_AMOUNT
        if wanted.metadata != prior.metadata:
            return ResultCode.EXISTS_WITH_DIFFERENT_METADATA
        return None

    def _check_accounts(self, legs: Legs, *, require_open: bool) -> ResultCode | None:
        for account_id, _ in legs:
            account = self.accounts.get(account_id)
            if account is None:
                return ResultCode.ACCOUNT_NOT_FOUND
            if account.status is AccountStatus.CLOSED:
                return ResultCode.ACCOUNT_CLOSED
            if require_open and account.status is AccountStatus.FROZEN:
                return ResultCode.ACCOUNT_FROZEN
        return None

    def _check_pending(
        self, request: PostPending | VoidPending | ExpirePending, pending: MTransfer | None
    ) -> ResultCode | None:
        if pending is None:
            return ResultCode.PENDING_TRANSFER_NOT_FOUND
        if pending.phase is not Phase.PENDING:
            return ResultCode.PENDING_TRANSFER_NOT_PENDING
        resolution = self.resolved.get(request.pending_id)
        if resolution is Phase.POST_PENDING:
            return ResultCode.PENDING_TRANSFER_ALREADY_POSTED
        if resolution is Phase.VOID_PENDING:
            return ResultCode.PENDING_TRANSFER_ALREADY_VOIDED
        expired = self.expired(pending)
        if resolution is Phase.EXPIRE_PENDING or (
            expired and not isinstance(request, ExpirePending)
        ):
            return ResultCode.PENDING_TRANSFER_EXPIRED
        if isinstance(request, ExpirePending) and not expired:
            return ResultCode.PENDING_TRANSFER_NOT_EXPIRED
        if isinstance(request, PostPending) and request.postings is not None:
            held = dict(pending.legs)
            for posting in request.postings:
                amount = held.get(posting.account_id)
                if amount is None or (amount > 0) != (posting.signed_amount > 0):
                    return ResultCode.POST_POSTINGS_MUST_MATCH_PENDING
                if abs(posting.signed_amount) > abs(amount):
                    return ResultCode.POST_AMOUNT_EXCEEDS_PENDING
        return None

    def _move(self, phase: Phase, legs: Legs, released: Legs) -> ResultCode | None:
        after = {a: copy.copy(self.accounts[a]) for a, _ in (*released, *legs)}
        for a, amount in released:
            if amount > 0:
                after[a].dpend -= amount
            else:
                after[a].cpend += amount
        for a, amount in legs:
            acct = after[a]
            if phase in (Phase.POSTED, Phase.POST_PENDING):
                if amount > 0:
                    acct.dp += amount
                else:
                    acct.cp -= amount
            elif phase is Phase.PENDING:
                if amount > 0:
                    acct.dpend += amount
                else:
                    acct.cpend -= amount
        for acct in after.values():
            if acct.dnec and acct.dp + acct.dpend > acct.cp:
                return ResultCode.EXCEEDS_CREDITS
            if acct.cned and acct.cp + acct.cpend > acct.dp:
                return ResultCode.EXCEEDS_DEBITS
            if acct.max_balance is not None:
                held = (
                    acct.cp + acct.cpend - acct.dp if acct.dnec else acct.dp + acct.dpend - acct.cp
                )
                if held > acct.max_balance:
                    return ResultCode.EXCEEDS_MAX_BALANCE
        self.accounts.update(after)
        return None

    # --- batches ----------------------------------------------------------------------

    def apply_batch(self, requests: list[Request], mode: BatchMode) -> list[ResultCode]:
        if mode is BatchMode.INDEPENDENT:
            return [self.apply(r)[0] for r in requests]
        trial = copy.deepcopy(self)
        codes: list[ResultCode] = []
        for request in requests:
            code, _ = trial.apply(request)
            codes.append(code)
            if not code.succeeded:
                failed = len(codes) - 1
                return [
                    codes[failed] if i == failed else ResultCode.LINKED_EVENT_FAILED
                    for i in range(len(requests))
                ]
        self.accounts, self.transfers, self.resolved = (
            trial.accounts,
            trial.transfers,
            trial.resolved,
        )
        return codes
