"""Merchants' settlement reports against the ledger's records, per merchant and day.

Only merchants that sent a report for the day are examined. What each break proves:
- one-to-one (a report row naming terminal and sequence number): MISSING_IN_LEDGER (the
  merchant reports a sale the back office never recorded), AMOUNT_MISMATCH, and
  DUPLICATE_EXTERNAL (the report lists one sale twice);
- one-to-many (a report row with no sequence number: the terminal's total for the day
  against all of its recorded sales): AMOUNT_MISMATCH, or MISSING_IN_LEDGER when the
  back office recorded nothing for that terminal;
- MISSING_IN_EXTERNAL: a recorded sale the merchant's report does not cover;
- DUPLICATE_LEDGER: two recorded sales of the day claim one terminal sequence number.
"""

from __future__ import annotations

import duckdb

from reconciliation.nightly.extract import Column, load_rows
from reconciliation.nightly.findings import CheckResult, Finding
from reconciliation.nightly.statements import ReportRow
from reconciliation.nightly.taxonomy import BreakType, Source

REPORT_COLUMNS = (
    Column("merchant_id", "VARCHAR"),
    Column("terminal_code", "VARCHAR"),
    Column("terminal_seq", "BIGINT"),
    Column("amount", "BIGINT"),
)

_MATCH = """
WITH sales AS (
    SELECT merchant_id, terminal_code, terminal_seq, amount FROM tx
    WHERE business_date = $day AND kind = 'debit' AND amount > 0
      AND merchant_id IN (SELECT merchant_id FROM report)),
single AS (SELECT * FROM report WHERE terminal_seq IS NOT NULL),
totals AS (SELECT * FROM report WHERE terminal_seq IS NULL),
s_agg AS (
    SELECT merchant_id, terminal_code, terminal_seq, count(*) AS n, sum(amount) AS amount
    FROM sales GROUP BY ALL),
r_agg AS (
    SELECT merchant_id, terminal_code, terminal_seq, count(*) AS n, min(amount) AS amount
    FROM single GROUP BY ALL)
SELECT 'dup_report', merchant_id, terminal_code, terminal_seq, NULL, amount FROM r_agg WHERE n > 1
UNION ALL
SELECT 'dup_ledger', merchant_id, terminal_code, terminal_seq, amount, NULL FROM s_agg WHERE n > 1
UNION ALL
SELECT CASE WHEN s.n IS NULL THEN 'missing_ledger' ELSE 'amount' END,
       r.merchant_id, r.terminal_code, r.terminal_seq, s.amount, r.amount
FROM r_agg r LEFT JOIN s_agg s USING (merchant_id, terminal_code, terminal_seq)
WHERE s.n IS NULL OR (s.n = 1 AND s.amount <> r.amount)
UNION ALL
SELECT CASE WHEN s.amount IS NULL THEN 'missing_ledger' ELSE 'amount' END,
       t.merchant_id, t.terminal_code, NULL, s.amount, t.amount
FROM (SELECT merchant_id, terminal_code, sum(amount) AS amount FROM totals GROUP BY ALL) t
LEFT JOIN (SELECT merchant_id, terminal_code, sum(amount) AS amount FROM sales GROUP BY ALL) s
  USING (merchant_id, terminal_code)
WHERE s.amount IS NULL OR s.amount <> t.amount
UNION ALL
SELECT 'missing_external', s.merchant_id, s.terminal_code, s.terminal_seq, s.amount, NULL
FROM s_agg s
WHERE NOT EXISTS (SELECT 1 FROM single r WHERE r.merchant_id = s.merchant_id
                  AND r.terminal_code = s.terminal_code AND r.terminal_seq = s.terminal_seq)
  AND NOT EXISTS (SELECT 1 FROM totals t WHERE t.merchant_id = s.merchant_id
                  AND t.terminal_code = s.terminal_code)
"""

_KINDS = {
    "dup_report": (BreakType.DUPLICATE_EXTERNAL, "the report lists this sale more than once"),
    "dup_ledger": (BreakType.DUPLICATE_LEDGER, "two recorded sales share this sequence number"),
    "missing_ledger": (BreakType.MISSING_IN_LEDGER, "reported by the merchant, not recorded"),
    "amount": (BreakType.AMOUNT_MISMATCH, "the report and the ledger disagree on the amount"),
    "missing_external": (BreakType.MISSING_IN_EXTERNAL, "recorded, not in the merchant's report"),
}


def check_reports(duck: duckdb.DuckDBPyConnection, day: str, rows: list[ReportRow]) -> CheckResult:
    result = CheckResult(Source.MERCHANT_REPORT)
    todays = [r for r in rows if r.business_date == day]
    load_rows(
        duck,
        "report",
        REPORT_COLUMNS,
        [(r.merchant_id, r.terminal_code, r.terminal_seq, r.amount) for r in todays],
    )
    for merchant in {r.merchant_id for r in todays}:
        result.examined.add(report_subject(merchant, day))
    for what, merchant, terminal, seq, ledger_amount, report_amount in duck.execute(
        _MATCH, {"day": day}
    ).fetchall():
        kind, detail = _KINDS[what]
        reference = f"{terminal}#{seq}" if seq is not None else f"{terminal} total"
        result.findings.append(
            Finding(
                kind,
                Source.MERCHANT_REPORT,
                report_subject(merchant, day),
                f"{merchant}:{day}:{reference}",
                detail,
                merchant_id=merchant,
                terminal_code=terminal,
                reference=reference,
                ledger_amount=ledger_amount,
                external_amount=report_amount,
            )
        )
    return result


def report_subject(merchant: str, day: str) -> str:
    return f"report:{merchant}:{day}"
