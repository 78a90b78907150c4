"""The break taxonomy, the break lifecycle, ageing buckets and the job's exit codes.

A *break* is one thing the books and the outside world disagree about. Every break has a
type from `BreakType` (a fixed list: reports, dashboards and auditors rely on the codes),
the check that found it (`Source`), the subject it concerns (a card, a terminal, a
merchant's report for a day, a payout, a load, the ledger itself), and amounts where money
is involved.

Lifecycle (`BreakStatus`), stated once here and enforced by `breaks.py` and by CHECK
constraints in migration 0003:
- NEW: found by tonight's run for the first time.
- AUTO_RESOLVED: a later run re-examined its subject and the disagreement is gone (late
  data arrived and matched).
- OPEN: still there on a later night (a NEW break that survives a night becomes OPEN).
- INVESTIGATING: a finance officer has taken it.
- RESOLVED: fixed by a compensating ledger transfer (never by editing history); the
  transfer id is recorded with the break (the database refuses RESOLVED without one).
- CLOSED: a resolved break whose subject a later run found in agreement, or closed by a
  finance officer after review.
An AUTO_RESOLVED or CLOSED break whose disagreement is found again is re-opened as OPEN
(the same break, with its history), never duplicated.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class BreakType(StrEnum):
    # The ledger itself
    LEDGER_INVARIANT_BROKEN = "LEDGER_INVARIANT_BROKEN"  # `ledger verify` found a violation
    DAY_NOT_SEALED = "DAY_NOT_SEALED"  # the day's transfers are not all in a journal block
    # Two sides of one record (ledger vs API records, merchant reports, bank statements)
    MISSING_IN_LEDGER = "MISSING_IN_LEDGER"
    MISSING_IN_EXTERNAL = "MISSING_IN_EXTERNAL"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    DUPLICATE_EXTERNAL = "DUPLICATE_EXTERNAL"
    DUPLICATE_LEDGER = "DUPLICATE_LEDGER"
    # Cards, from their certificates
    DUPLICATE_COUNTER = "DUPLICATE_COUNTER"  # two different certificates for one counter
    COUNTER_GAP = "COUNTER_GAP"
    COUNTER_REGRESSION = "COUNTER_REGRESSION"
    BALANCE_CHAIN_BROKEN = "BALANCE_CHAIN_BROKEN"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    SHADOW_BALANCE_MISMATCH = "SHADOW_BALANCE_MISMATCH"
    UNRESOLVED_LOAD = "UNRESOLVED_LOAD"
    QUARANTINED_INPUT = "QUARANTINED_INPUT"  # any other certificate the API could not apply
    # Gates
    MISSING_BATCH = "MISSING_BATCH"
    UNFINISHED_JOURNEY_NOT_CHARGED = "UNFINISHED_JOURNEY_NOT_CHARGED"


class Source(StrEnum):
    """Which check found a break."""

    LEDGER = "ledger"
    RECORDS = "records"  # the API's card transactions against the ledger's transfers
    CARDS = "cards"
    GATES = "gates"
    MERCHANT_REPORT = "merchant_report"
    BANK_STATEMENT = "bank_statement"
    SETTLEMENT = "settlement"


class BreakStatus(StrEnum):
    NEW = "NEW"
    AUTO_RESOLVED = "AUTO_RESOLVED"
    OPEN = "OPEN"
    INVESTIGATING = "INVESTIGATING"
    RESOLVED = "RESOLVED"
    CLOSED = "CLOSED"


# Statuses in which a break still needs someone: these make the job exit EXIT_BREAKS.
UNSETTLED = (BreakStatus.NEW, BreakStatus.OPEN, BreakStatus.INVESTIGATING)
# Transitions a finance officer may make (the nightly run makes the others).
MANUAL_TRANSITIONS = {
    (BreakStatus.NEW, BreakStatus.INVESTIGATING),
    (BreakStatus.OPEN, BreakStatus.INVESTIGATING),
    (BreakStatus.NEW, BreakStatus.RESOLVED),
    (BreakStatus.OPEN, BreakStatus.RESOLVED),
    (BreakStatus.INVESTIGATING, BreakStatus.RESOLVED),
    (BreakStatus.RESOLVED, BreakStatus.CLOSED),
}


class AgeBucket(StrEnum):
    """How long a break has been open, in business days since it was first found."""

    T1 = "T+1"  # found tonight or last night
    T3 = "T+3"  # 2 to 3 days
    T7 = "T+7"  # 4 to 7 days
    T30 = "T+30"  # 8 to 30 days
    OVER_30 = ">30d"


def age_bucket(days: int) -> AgeBucket:
    if days <= 1:
        return AgeBucket.T1
    if days <= 3:
        return AgeBucket.T3
    if days <= 7:
        return AgeBucket.T7
    if days <= 30:
        return AgeBucket.T30
    return AgeBucket.OVER_30


class ExitCode(IntEnum):
    AGREED = 0  # every check agrees, nothing is left unsettled
    FAILED = 3  # the job could not run to the end (nothing half-settled: see docs)
    BREAKS = 4  # the job ran; breaks are NEW, OPEN or INVESTIGATING
