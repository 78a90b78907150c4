"""Result codes: every way a ledger request can fail has exactly one name.

Each request in a batch gets one `ResultCode`. `OK` and `EXISTS` are successes (`EXISTS`
means an identical request with the same id was already applied; the original result is
returned). Every other code is a refusal, and a refused request changes nothing.

The codes are stable strings: the HTTP API reports them as its problem `code`, the docs
table them (docs/ledger.md), and clients may match on them.
"""

from __future__ import annotations

from enum import StrEnum


class ResultCode(StrEnum):
    OK = "ok"
    EXISTS = "exists"

    # Bad input, detected before the database is read.
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    ID_MUST_NOT_BE_INT_MAX = "id_must_not_be_int_max"
    POSTINGS_TOO_FEW = "postings_too_few"
    POSTINGS_TOO_MANY = "postings_too_many"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    AMOUNT_EXCEEDS_MAXIMUM = "amount_exceeds_maximum"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    TRANSFER_UNBALANCED = "transfer_unbalanced"
    KIND_INVALID = "kind_invalid"
    METADATA_INVALID = "metadata_invalid"
    METADATA_TOO_LARGE = "metadata_too_large"
    TIMEOUT_INVALID = "timeout_invalid"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    LINKED_ID_MUST_DIFFER = "linked_id_must_differ"

    # Accounts a transfer names.
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    CURRENCIES_MUST_MATCH = "currencies_must_match"

    # Balance bounds (invariant 2).
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"
    EXCEEDS_MAX_BALANCE = "exceeds_max_balance"
    BALANCE_OVERFLOW = "balance_overflow"

    # Links between transfers.
    LINKED_TRANSFER_NOT_FOUND = "linked_transfer_not_found"

    # Idempotency (invariant 3): the id exists with different content.
    EXISTS_WITH_DIFFERENT_PHASE = "exists_with_different_phase"
    EXISTS_WITH_DIFFERENT_KIND = "exists_with_different_kind"
    EXISTS_WITH_DIFFERENT_POSTINGS = "exists_with_different_postings"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_LINKED_ID = "exists_with_different_linked_id"
    EXISTS_WITH_DIFFERENT_TIMEOUT = "exists_with_different_timeout"
    EXISTS_WITH_DIFFERENT_METADATA = "exists_with_different_metadata"

    # Two-phase transfers (invariant 4).
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    PENDING_TRANSFER_NOT_EXPIRED = "pending_transfer_not_expired"
    POST_POSTINGS_MUST_MATCH_PENDING = "post_postings_must_match_pending"
    POST_AMOUNT_EXCEEDS_PENDING = "post_amount_exceeds_pending"

    # Batches.
    LINKED_EVENT_FAILED = "linked_event_failed"

    @property
    def succeeded(self) -> bool:
        return self in (ResultCode.OK, ResultCode.EXISTS)


class AccountResultCode(StrEnum):
    """Outcomes of creating and changing accounts."""

    OK = "ok"
    EXISTS = "exists"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    ID_MUST_NOT_BE_INT_MAX = "id_must_not_be_int_max"
    CURRENCY_INVALID = "currency_invalid"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    MAX_BALANCE_MUST_BE_POSITIVE = "max_balance_must_be_positive"
    MAX_BALANCE_REQUIRES_BALANCE_FLAG = "max_balance_requires_balance_flag"
    SHARDS_OUT_OF_RANGE = "shards_out_of_range"
    SHARDS_REQUIRE_UNBOUNDED_ACCOUNT = "shards_require_unbounded_account"
    NAME_TOO_LONG = "name_too_long"
    EXISTS_WITH_DIFFERENT_KIND = "exists_with_different_kind"
    EXISTS_WITH_DIFFERENT_CURRENCY = "exists_with_different_currency"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_SHARDS = "exists_with_different_shards"
    EXISTS_WITH_DIFFERENT_NAME = "exists_with_different_name"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_NOT_EMPTY = "account_not_empty"
    MAX_BALANCE_BELOW_BALANCE = "max_balance_below_balance"

    @property
    def succeeded(self) -> bool:
        return self in (AccountResultCode.OK, AccountResultCode.EXISTS)


class LedgerError(Exception):
    """A single-request call was refused; `code` names the broken rule exactly."""

    def __init__(self, code: ResultCode | AccountResultCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code.value}: {detail}" if detail else code.value)


class BatchTooLargeError(ValueError):
    """A batch holds more requests than `MAX_BATCH_SIZE`; nothing was applied."""
