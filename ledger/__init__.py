"""JakartaOne's double-entry ledger: the single source of truth for every rupiah.

Start with `Ledger` (ledger.service), the request types (ledger.types), the result codes
(ledger.codes) and docs/ledger.md. This package imports nothing else of JakartaOne's.
"""

from ledger.codes import AccountResultCode, BatchTooLargeError, LedgerError, ResultCode
from ledger.db import make_engine, run_read, run_write
from ledger.service import Ledger, MonotonicClock
from ledger.types import (
    Account,
    AccountKind,
    AccountStatus,
    BatchMode,
    ExpirePending,
    NewAccount,
    Phase,
    Posting,
    PostPending,
    RecordedTransfer,
    Request,
    Side,
    Transfer,
    TransferResult,
    VoidPending,
    credit,
    debit,
)

__all__ = [
    "Account",
    "AccountKind",
    "AccountResultCode",
    "AccountStatus",
    "BatchMode",
    "BatchTooLargeError",
    "ExpirePending",
    "Ledger",
    "LedgerError",
    "MonotonicClock",
    "NewAccount",
    "Phase",
    "PostPending",
    "Posting",
    "RecordedTransfer",
    "Request",
    "ResultCode",
    "Side",
    "Transfer",
    "TransferResult",
    "VoidPending",
    "credit",
    "debit",
    "make_engine",
    "run_read",
    "run_write",
]
