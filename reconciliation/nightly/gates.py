"""Gate checks: uploaded batches against each terminal's sequence numbers, and journeys
that were tapped in and never tapped out.

What each break proves:
- MISSING_BATCH: a gate numbers every command it sends a card; its batches, ordered by
  sequence number, must follow one another with no hole. A hole is a batch the gate made
  and the back office never received (its certificates, and their money, are missing).
  So is a tail: certificates of the gate that other terminals forwarded (read from the
  cards' purse records) carrying sequence numbers beyond the gate's last batch prove the
  gate made a batch it has not sent (a gate cut off from the network).
- UNFINISHED_JOURNEY_NOT_CHARGED: a tap-in (rail entry) whose card's next transit tap
  neither closes the journey (an exit on the same line) nor charges it as the fare rules
  say (card_reader.fares: the maximum fare from the entry station, flagged
  `includes_unfinished_fare`, at the card's next tap anywhere). A tap-in with no later
  transit tap yet is not a break: the card has not been charged *yet*.
"""

from __future__ import annotations

import duckdb

from card_reader.fares import LINES_BY_CODE, MRT_MAX_FARE, maximum_fare_from
from reconciliation.nightly.extract import Column, load_rows
from reconciliation.nightly.findings import CheckResult, Finding, terminal_subject
from reconciliation.nightly.taxonomy import BreakType, Source


def check_batches(duck: duckdb.DuckDBPyConnection) -> CheckResult:
    result = CheckResult(Source.GATES)
    for (code,) in duck.execute("SELECT DISTINCT terminal_code FROM batches").fetchall():
        result.examined.add(terminal_subject(code))
    rows = duck.execute(
        """
        WITH b AS (
            SELECT terminal_code, merchant_id, first_seq, last_seq,
                   max(last_seq) OVER (PARTITION BY terminal_code ORDER BY first_seq, last_seq
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS covered
            FROM batches)
        SELECT terminal_code, merchant_id, covered + 1, first_seq - 1 FROM b
        WHERE first_seq > covered + 1 ORDER BY terminal_code, first_seq
        """
    ).fetchall()
    rows += duck.execute(
        """
        WITH own AS (
            SELECT terminal_code, any_value(merchant_id) AS merchant_id, max(last_seq) AS covered
            FROM batches GROUP BY terminal_code),
        seen AS (
            SELECT terminal_code, max(terminal_seq) AS seen FROM tx GROUP BY terminal_code)
        SELECT o.terminal_code, o.merchant_id, o.covered + 1, s.seen
        FROM own o JOIN seen s USING (terminal_code)
        WHERE s.seen > o.covered ORDER BY o.terminal_code
        """
    ).fetchall()
    for code, merchant, low, high in rows:
        result.findings.append(
            Finding(
                BreakType.MISSING_BATCH,
                Source.GATES,
                terminal_subject(code),
                f"{code}:{low}-{high}",
                f"sequence numbers {low} to {high} never uploaded",
                merchant_id=merchant,
                terminal_code=code,
                reference=f"{low}-{high}",
            )
        )
    return result


def _fare_table(duck: duckdb.DuckDBPyConnection) -> None:
    """The charge for a journey never tapped out, per (line, entry station)."""
    rows = [
        (line.code, station.code, maximum_fare_from(line, station))
        for line in LINES_BY_CODE.values()
        if line.distance_based
        for station in line.stations
    ]
    load_rows(
        duck,
        "unfinished_fares",
        (Column("line", "INTEGER"), Column("station", "INTEGER"), Column("fare", "BIGINT")),
        rows,
    )


def check_journeys(duck: duckdb.DuckDBPyConnection) -> CheckResult:
    _fare_table(duck)
    result = CheckResult(Source.GATES)
    # A station this back office does not know is charged the highest single fare
    # (card_reader.fares.unfinished_fare does the same on the gate).
    rows = duck.execute(
        f"""
        WITH taps AS (
            SELECT card_id, card_counter, amount, terminal_code,
                   journey->>'action' AS action,
                   (journey->>'line')::INTEGER AS line,
                   (journey->>'entry_station')::INTEGER AS entry_station,
                   (journey->>'includes_unfinished_fare')::BOOLEAN AS charges_unfinished
            FROM tx WHERE journey IS NOT NULL),
        paired AS (
            SELECT *, lead(card_counter) OVER w AS next_counter,
                   lead(action) OVER w AS next_action, lead(line) OVER w AS next_line,
                   lead(entry_station) OVER w AS next_entry,
                   lead(charges_unfinished) OVER w AS next_charges,
                   lead(amount) OVER w AS next_amount
            FROM taps WINDOW w AS (PARTITION BY card_id ORDER BY card_counter))
        SELECT p.card_id, p.card_counter, p.terminal_code, p.next_counter, p.next_amount,
               coalesce(f.fare, {MRT_MAX_FARE})
        FROM paired p LEFT JOIN unfinished_fares f
          ON f.line = p.line AND f.station = p.entry_station
        WHERE p.action = 'entry' AND p.next_counter IS NOT NULL
          AND NOT (p.next_action = 'exit' AND p.next_line = p.line
                   AND p.next_entry = p.entry_station)
          AND NOT (p.next_charges AND p.next_amount >= coalesce(f.fare, {MRT_MAX_FARE}))
        """
    ).fetchall()
    for (card_id,) in duck.execute("SELECT DISTINCT card_id FROM tx").fetchall():
        result.examined.add(journey_subject(card_id))
    for card_id, counter, terminal, next_counter, next_amount, fare in rows:
        result.findings.append(
            Finding(
                BreakType.UNFINISHED_JOURNEY_NOT_CHARGED,
                Source.GATES,
                journey_subject(card_id),
                f"{card_id}:{counter}",
                f"tap-in at counter {counter} never tapped out; the next tap (counter"
                f" {next_counter}) charged {next_amount}, the fare rules charge {fare} more",
                card_id=card_id,
                terminal_code=terminal,
                reference=str(counter),
                ledger_amount=next_amount,
                external_amount=fare,
            )
        )
    return result


def journey_subject(card_id: str) -> str:
    return f"journey:{card_id}"
