"""Errors as RFC 9457 problem details, each with a stable `code`.

Where a ledger rule is what failed, the code is the ledger's own (`ledger.codes`), never
a synonym. The API's own codes are `ErrorCode`; docs/api.md tables every one of them with
its HTTP status. A problem body never holds a secret, an API key or a card serial.
"""

from __future__ import annotations

from enum import StrEnum

from ledger.codes import AccountResultCode, ResultCode

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:jakartaone:problem:"


class ErrorCode(StrEnum):
    # Authentication and authorization.
    API_KEY_MISSING = "api_key_missing"
    API_KEY_INVALID = "api_key_invalid"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"
    SCOPE_INSUFFICIENT = "scope_insufficient"
    # The request itself.
    REQUEST_INVALID = "request_invalid"
    REQUEST_TOO_LARGE = "request_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RATE_LIMITED = "rate_limited"
    IDEMPOTENCY_KEY_MISSING = "idempotency_key_missing"
    IDEMPOTENCY_KEY_INVALID = "idempotency_key_invalid"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_REQUEST_IN_FLIGHT = "idempotency_request_in_flight"
    # The service.
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL_ERROR = "internal_error"
    # Onboarding.
    MERCHANT_SUSPENDED = "merchant_suspended"
    MERCHANT_KIND_MISMATCH = "merchant_kind_mismatch"
    TERMINAL_CODE_TAKEN = "terminal_code_taken"
    # Cards.
    CARD_ALREADY_ISSUED = "card_already_issued"
    CARD_UNKNOWN = "card_unknown"
    CARD_BLOCKED = "card_blocked"
    CARD_NOT_BLOCKED = "card_not_blocked"
    CARD_REPLACED = "card_replaced"
    CARD_NOT_REGISTERED = "card_not_registered"
    CARD_ALREADY_REGISTERED = "card_already_registered"
    # Certificates and batches (quarantine reasons; a malformed certificate's reason is its
    # format reason, card_reader.certificate.CertificateFormatReason).
    MAC_INVALID = "mac_invalid"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    CREDIT_WITHOUT_LOAD = "credit_without_load"
    TERMINAL_UNKNOWN = "terminal_unknown"
    TERMINAL_NOT_OWNED = "terminal_not_owned"
    BATCH_SEQ_OUT_OF_RANGE = "batch_seq_out_of_range"
    BATCH_ID_MISMATCH = "batch_id_mismatch"
    BATCH_TOO_LARGE = "batch_too_large"
    # Load confirmations (card_reader.certificate.LoadVerification).
    NOT_A_CREDIT = "not_a_credit"
    COUNTER_MISMATCH = "counter_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    LOAD_CARD_MISMATCH = "load_card_mismatch"
    # Loads, refunds and credits.
    LOAD_NOT_PENDING = "load_not_pending"
    LOAD_CHANNEL_NOT_ALLOWED = "load_channel_not_allowed"
    MONTHLY_LOAD_LIMIT_EXCEEDED = "monthly_load_limit_exceeded"
    CARD_CREDIT_NOT_PENDING = "card_credit_not_pending"
    REFUND_EXCEEDS_TRANSACTION = "refund_exceeds_transaction"
    REFUND_NOT_ALLOWED = "refund_not_allowed"
    # Settlements.
    BUSINESS_DAY_NOT_CLOSED = "business_day_not_closed"
    # Webhook endpoints (merchant_api.webhook_guard).
    WEBHOOK_URL_SCHEME_NOT_ALLOWED = "webhook_url_scheme_not_allowed"
    WEBHOOK_URL_CREDENTIALS_NOT_ALLOWED = "webhook_url_credentials_not_allowed"
    WEBHOOK_URL_NOT_PUBLIC = "webhook_url_not_public"


Code = ErrorCode | ResultCode | AccountResultCode


class ApiError(Exception):
    """A refusal the client can act on: answered as problem+json with `status` and `code`.

    `detail` is for people and must never contain a secret or a card serial.
    """

    def __init__(
        self,
        status: int,
        code: Code | str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.code: str = code.value if isinstance(code, StrEnum) else str(code)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors
        super().__init__(f"{status} {self.code}: {detail}")


def not_found(what: str) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"no such {what}")


# The HTTP status for each ledger refusal that can reach a client.
_LEDGER_STATUS = {
    ResultCode.EXCEEDS_CREDITS: 422,
    ResultCode.EXCEEDS_DEBITS: 422,
    ResultCode.EXCEEDS_MAX_BALANCE: 422,
    ResultCode.ACCOUNT_FROZEN: 422,
    ResultCode.ACCOUNT_CLOSED: 422,
    ResultCode.PENDING_TRANSFER_ALREADY_POSTED: 409,
    ResultCode.PENDING_TRANSFER_ALREADY_VOIDED: 409,
    ResultCode.PENDING_TRANSFER_EXPIRED: 409,
}


def ledger_refusal(code: ResultCode | AccountResultCode, detail: str = "") -> ApiError:
    """A ledger refusal as the client sees it: the ledger's code, never a synonym."""
    status = _LEDGER_STATUS.get(code, 422) if isinstance(code, ResultCode) else 422
    if code.name.startswith("EXISTS_WITH_DIFFERENT"):
        status = 409
    return ApiError(status, code, detail)


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    request_id: str,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, object]:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = errors
    return body
