"""The API's card-transaction records against the ledger's transfers: the core matching.

Every debit certificate the API accepted with a value was posted as one ledger transfer
whose id is the record's `transfer_id` (merchant_api.services.certificates), moving exactly
the certificate's amount out of the card's purse. (A credit certificate's `transfer_id` is
its load's posting, which the loads check answers for.) What each break proves:
- MISSING_IN_LEDGER: a record of the day says it was posted, and the ledger has no such
  transfer.
- AMOUNT_MISMATCH: the transfer moved a different amount out of the purse than the
  certificate says.
- MISSING_IN_EXTERNAL: a card-debit or fare transfer of the day that no card-transaction
  record explains (money moved without a card's signature behind it).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from reconciliation.nightly.findings import CheckResult, Finding
from reconciliation.nightly.taxonomy import BreakType, Source

# The matching itself; the benchmark times it bare as the ceiling.
MATCH_SQL = """
SELECT coalesce(r.transfer_id, l.transfer_id) AS transfer_id, r.id AS record_id,
       r.card_id, r.merchant_id, r.terminal_code, r.amount AS record_amount,
       l.amount AS ledger_amount, l.timestamp_us
FROM (SELECT * FROM tx WHERE business_date = $day AND transfer_id IS NOT NULL
      AND kind = 'debit') r
FULL OUTER JOIN ledger_tx l ON l.transfer_id = r.transfer_id
WHERE r.transfer_id IS NULL OR l.transfer_id IS NULL OR r.amount <> l.amount
"""


def check_records(
    duck: duckdb.DuckDBPyConnection,
    day: str,
    day_bounds_us: tuple[int, int],
    recorded_elsewhere: Callable[[list[str]], set[str]],
) -> CheckResult:
    """`recorded_elsewhere(transfer_ids)` answers which of these transfers have a record on
    another business day (a transfer just before midnight whose record fell after it)."""
    start, end = day_bounds_us
    result = CheckResult(Source.RECORDS)
    result.examined.add(records_subject(day))
    rows = duck.execute(MATCH_SQL, {"day": day}).fetchall()
    other_day = [
        t for t, record, *_, ts in rows if record is None and ts is not None and start <= ts < end
    ]
    explained = recorded_elsewhere(other_day) if other_day else set()
    for transfer_id, record_id, card_id, merchant, terminal, r_amount, l_amount, ts in rows:
        common = {
            "card_id": card_id,
            "merchant_id": merchant,
            "terminal_code": terminal,
            "reference": transfer_id,
            "ledger_amount": l_amount,
            "external_amount": r_amount,
        }
        if record_id is None:
            if not start <= ts < end or transfer_id in explained:
                continue
            kind, detail = BreakType.MISSING_IN_EXTERNAL, "transfer with no card record"
        elif l_amount is None:
            kind, detail = BreakType.MISSING_IN_LEDGER, "card record with no ledger transfer"
        else:
            kind, detail = BreakType.AMOUNT_MISMATCH, "purse debit differs from the certificate"
        result.findings.append(
            Finding(kind, Source.RECORDS, records_subject(day), transfer_id, detail, **common)
        )
    return result


def records_subject(day: str) -> str:
    return f"records:{day}"
