"""Checks that need no database: the shape of a request (the "bad input" rules).

Each function returns the first broken rule as a (code, detail) pair, or None.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from ledger.codes import AccountResultCode, ResultCode
from ledger.journal import canonical_metadata
from ledger.types import (
    ID_INT_MAX,
    MAX_AMOUNT,
    MAX_METADATA_BYTES,
    MAX_POSTINGS,
    MAX_SHARDS,
    MAX_TIMEOUT_SECONDS,
    NewAccount,
    Posting,
    PostPending,
    Request,
    Side,
    Transfer,
)

Problem = tuple[ResultCode, str]

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")


def id_problem(value: uuid.UUID) -> ResultCode | None:
    if value.int == 0:
        return ResultCode.ID_MUST_NOT_BE_ZERO
    if value.int == ID_INT_MAX:
        return ResultCode.ID_MUST_NOT_BE_INT_MAX
    return None


def metadata_problem(metadata: Any) -> Problem | None:
    if metadata == {}:
        return None
    if not isinstance(metadata, dict):
        return ResultCode.METADATA_INVALID, "metadata must be a JSON object"
    bad = _first_non_json_value(metadata)
    if bad:
        return ResultCode.METADATA_INVALID, bad
    if len(canonical_metadata(metadata).encode()) > MAX_METADATA_BYTES:
        return ResultCode.METADATA_TOO_LARGE, f"metadata exceeds {MAX_METADATA_BYTES} bytes"
    return None


def _first_non_json_value(value: Any, depth: int = 0) -> str | None:
    # Floats are refused: money is never a float, and a float has no single text form.
    if depth > 8:
        return "metadata nests deeper than 8 levels"
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if abs(value) < 2**63 else "metadata integers must fit in 64 bits"
    if isinstance(value, float):
        return "metadata must not hold floats" if math.isfinite(value) else "metadata NaN"
    if isinstance(value, list):
        return next((p for v in value if (p := _first_non_json_value(v, depth + 1))), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "metadata keys must be strings"
        return next((p for v in value.values() if (p := _first_non_json_value(v, depth + 1))), None)
    return f"metadata cannot hold {type(value).__name__}"


def postings_problem(postings: tuple[Posting, ...]) -> Problem | None:
    if len(postings) < 2:
        return ResultCode.POSTINGS_TOO_FEW, "a transfer needs at least two postings"
    if len(postings) > MAX_POSTINGS:
        return ResultCode.POSTINGS_TOO_MANY, f"at most {MAX_POSTINGS} postings"
    debits = credits = 0
    for leg, posting in enumerate(postings):
        amount = posting.amount
        if not isinstance(amount, int) or isinstance(amount, bool):
            return ResultCode.AMOUNT_MUST_BE_POSITIVE, f"leg {leg}: amount must be an integer"
        if amount <= 0:
            return ResultCode.AMOUNT_MUST_BE_POSITIVE, f"leg {leg}: amount {amount}"
        if amount > MAX_AMOUNT:
            return ResultCode.AMOUNT_EXCEEDS_MAXIMUM, f"leg {leg}: amount above {MAX_AMOUNT}"
        if (code := id_problem(posting.account_id)) is not None:
            return code, f"leg {leg}: account id"
        if posting.side is Side.DEBIT:
            debits += amount
        elif posting.side is Side.CREDIT:
            credits += amount
    # Two legs (nearly every transfer) need one comparison, not a set of hashed uuids.
    if (
        postings[0].account_id == postings[1].account_id
        if len(postings) == 2
        else len({p.account_id for p in postings}) != len(postings)
    ):
        return ResultCode.ACCOUNTS_MUST_BE_DIFFERENT, "an account appears in two postings"
    if debits != credits:
        return ResultCode.TRANSFER_UNBALANCED, f"debits {debits} != credits {credits}"
    return None


def request_problem(request: Request) -> Problem | None:
    """The first rule `request` breaks on its own, before anything is read."""
    if (code := id_problem(request.id)) is not None:
        return code, "transfer id"
    if (meta := metadata_problem(request.metadata)) is not None:
        return meta
    if isinstance(request, Transfer):
        if not isinstance(request.kind, str) or not KIND_PATTERN.fullmatch(request.kind):
            return ResultCode.KIND_INVALID, "kind must be 1-32 characters of a-z, 0-9, _"
        if request.timeout_s and not request.pending:
            return ResultCode.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER, "timeout on posted transfer"
        if not 0 <= request.timeout_s <= MAX_TIMEOUT_SECONDS:
            return ResultCode.TIMEOUT_INVALID, f"timeout must be 0..{MAX_TIMEOUT_SECONDS} s"
        if request.linked_id is not None:
            if request.linked_id == request.id:
                return ResultCode.LINKED_ID_MUST_DIFFER, "a transfer cannot link to itself"
            if (code := id_problem(request.linked_id)) is not None:
                return code, "linked id"
        return postings_problem(request.postings)
    if (code := id_problem(request.pending_id)) is not None:
        return code, "pending id"
    if isinstance(request, PostPending) and request.postings is not None:
        return postings_problem(request.postings)
    return None


def account_problem(account: NewAccount) -> tuple[AccountResultCode, str] | None:
    if account.id.int == 0:
        return AccountResultCode.ID_MUST_NOT_BE_ZERO, "account id"
    if account.id.int == ID_INT_MAX:
        return AccountResultCode.ID_MUST_NOT_BE_INT_MAX, "account id"
    if not CURRENCY_PATTERN.fullmatch(account.currency):
        return AccountResultCode.CURRENCY_INVALID, f"currency {account.currency!r}"
    if account.debits_must_not_exceed_credits and account.credits_must_not_exceed_debits:
        return AccountResultCode.FLAGS_ARE_MUTUALLY_EXCLUSIVE, "both balance flags set"
    if account.max_balance is not None:
        if account.max_balance <= 0:
            return AccountResultCode.MAX_BALANCE_MUST_BE_POSITIVE, str(account.max_balance)
        if not (account.debits_must_not_exceed_credits or account.credits_must_not_exceed_debits):
            return AccountResultCode.MAX_BALANCE_REQUIRES_BALANCE_FLAG, "max_balance needs a flag"
    if not 1 <= account.shards <= MAX_SHARDS:
        return AccountResultCode.SHARDS_OUT_OF_RANGE, f"shards must be 1..{MAX_SHARDS}"
    bounded = (
        account.debits_must_not_exceed_credits
        or account.credits_must_not_exceed_debits
        or account.max_balance is not None
    )
    if account.shards > 1 and bounded:
        return AccountResultCode.SHARDS_REQUIRE_UNBOUNDED_ACCOUNT, "a bounded account has 1 shard"
    if len(account.name) > 128:
        return AccountResultCode.NAME_TOO_LONG, "name longer than 128 characters"
    return None
