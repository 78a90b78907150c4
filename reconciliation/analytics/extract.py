"""Reading one business day out of the ledger and merchant API database, as the release's
inputs (inputs.EVENTS_SCHEMA, inputs.CARDS_SCHEMA, inputs.Seal).

The day is a WIB (UTC+7) calendar day. Every reader streams: rows come from a server-side
cursor (`yield_per`) and leave as Arrow batches of `batch_rows`, so memory does not grow
with the day. The caller runs them all in one read transaction (`ledger.run_read`: one
snapshot on PostgreSQL), so the seal, the events and the balances describe the same state.

Events (`events_reader`), one per transaction the ledger accepted:
- Card-signed transactions (card_transactions) whose card time falls on the day, at any
  time the back office received them, from the day before the day on (business_date is
  the indexed receipt day; a terminal clock more than a day fast is a fault, not data):
  - a debit with a journey record is a transit tap (`journeys.transit_fields`);
  - a debit without one is a purchase, with its merchant's MCC, kota and kecamatan (the
    merchant's onboarded place: terminals carry no address of their own); a debit of
    Rp 0 without a journey moves no money and is not spending, so it is left out;
  - a credit is a load, its channel from its load (loads.channel): agent_cash -> agent,
    bank_transfer -> bank_transfer, and a card credit by its source: a merchant's refund
    -> refund, a replaced card's balance -> replacement.
- Transactions the card did not sign, dated by the ledger (transfers.timestamp_us):
  merchant refunds (kind refund: the value waits as a card credit until the card's next
  tap loads it, which is then a load of channel refund), and loads the ledger posted on
  later card evidence without their own credit certificate (dated when they were made).
Card ids are the back office's card UUIDs (never a serial); the release pseudonymizes
them before anything else sees them.

Cards (`cards_reader`): every card whose purse existed by the end of the day, with its
registration (as it is now: the API keeps no history of it) and the posted balance of its
shadow purse just after the day's last ledger transfer (`ledger.queries.posted_as_of`).

The seal (`day_seal`): the first journal block whose range covers the day's last transfer
and every transfer of the day's events (a tap uploaded late may be in a later block);
`day_not_sealed` if the journal has not sealed that far yet (run `jakartaone ledger seal`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from card_reader.certificate import CertificateFormatError, Journey
from ledger import AccountKind
from ledger import schema as ledger_schema
from ledger.db import is_sqlite
from ledger.journal import GENESIS_HASH
from ledger.queries import posted_as_of
from merchant_api import schema as api
from merchant_api.wib import day_bounds_us
from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.geography import Network
from reconciliation.analytics.inputs import CARDS_SCHEMA, EVENTS_SCHEMA, Seal
from reconciliation.analytics.journeys import network_line_names, transit_fields

BATCH_ROWS = 10_000
LOAD_CHANNELS = {"agent_cash": "agent", "bank_transfer": "bank_transfer"}
CREDIT_CHANNELS = {"refund": "refund", "replacement": "replacement"}

ct, cards, merchants, terminals = api.card_transactions, api.cards, api.merchants, api.terminals
loads, credits, refunds = api.loads, api.card_credits, api.refunds
transfers, blocks = ledger_schema.transfers, ledger_schema.journal_blocks


def _card_rows_of_day(day: dt.date) -> list[sa.ColumnElement[bool]]:
    start, end = day_bounds_us(day)
    received_from = (day - dt.timedelta(days=1)).isoformat()
    return [
        ct.c.business_date >= received_from,
        ct.c.card_time_us >= start,
        ct.c.card_time_us < end,
    ]


def day_seal(conn: Connection, day: dt.date) -> tuple[Seal, int]:
    """The day's seal (module docstring) and the seq of the day's last ledger transfer."""
    start, end = day_bounds_us(day)
    last_seq = conn.execute(
        sa.select(sa.func.max(transfers.c.seq)).where(
            transfers.c.timestamp_us >= start, transfers.c.timestamp_us < end
        )
    ).scalar_one()
    if last_seq is None:  # a day without transfers: the state is the last one before it
        last_seq = conn.execute(
            sa.select(transfers.c.seq)
            .where(transfers.c.timestamp_us < start)
            .order_by(transfers.c.timestamp_us.desc(), transfers.c.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
    events_seq = conn.execute(
        sa.select(sa.func.max(transfers.c.seq))
        .select_from(ct.join(transfers, transfers.c.id == ct.c.transfer_id))
        .where(*_card_rows_of_day(day))
    ).scalar_one()
    as_of = int(last_seq or 0)
    needed = max(as_of, int(events_seq or 0))
    if needed == 0:
        return Seal(0, 0, GENESIS_HASH.hex()), 0
    block = conn.execute(
        sa.select(blocks.c.block_no, blocks.c.last_seq, blocks.c.block_hash)
        .where(blocks.c.last_seq >= needed)
        .order_by(blocks.c.block_no)
        .limit(1)
    ).first()
    if block is None:
        raise ReleaseError(
            ReleaseErrorCode.DAY_NOT_SEALED,
            f"the journal is not sealed through seq {needed} yet (jakartaone ledger seal)",
        )
    return Seal(int(block.block_no), int(block.last_seq), bytes(block.block_hash).hex()), as_of


def events_reader(
    conn: Connection,
    day: dt.date,
    network: Network,
    failures: list[Exception] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> pa.RecordBatchReader:
    """The day's events as a stream of EVENTS_SCHEMA batches (module docstring).

    An error raised while the stream is read is also appended to `failures`: DuckDB, which
    pulls the stream, reports it as its own InvalidInputException and loses its type."""

    def rows() -> Iterator[dict[str, Any]]:
        yield from _card_signed(conn, day, network, batch_rows)
        yield from _refunds(conn, day, batch_rows)
        yield from _loads_on_evidence(conn, day, batch_rows)

    return pa.RecordBatchReader.from_batches(
        EVENTS_SCHEMA, _batches(rows(), EVENTS_SCHEMA, batch_rows, failures)
    )


def cards_reader(
    conn: Connection,
    day: dt.date,
    as_of_seq: int,
    failures: list[Exception] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> pa.RecordBatchReader:
    """Every card whose purse existed by the end of the day, with its balance then
    (`failures` as in `events_reader`)."""
    _, end = day_bounds_us(day)
    purse = posted_as_of(AccountKind.CARD_PURSE, as_of_seq)
    query = (
        sa.select(
            cards.c.id,
            cards.c.registered,
            (purse.c.credits_posted - purse.c.debits_posted).label("balance"),
        )
        .select_from(cards.join(purse, purse.c.id == cards.c.purse_account_id))
        .where(purse.c.created_at_us < end)
    )

    def rows() -> Iterator[dict[str, Any]]:
        for row in _stream(conn, query, batch_rows):
            yield {
                "card_id": str(row.id),
                "card_registered": row.registered,
                "balance": row.balance,
            }

    return pa.RecordBatchReader.from_batches(
        CARDS_SCHEMA, _batches(rows(), CARDS_SCHEMA, batch_rows, failures)
    )


def _stream(conn: Connection, query: sa.Select[Any], batch_rows: int) -> Iterator[Any]:
    if not is_sqlite(conn):
        # A server-side cursor is planned for its first rows by default (10 %), which picks
        # nested loops that are ruinous when every row is read, as here.
        conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
    yield from conn.execute(query.execution_options(yield_per=batch_rows))


def _batches(
    rows: Iterator[dict[str, Any]],
    schema: pa.Schema,
    batch_rows: int,
    failures: list[Exception] | None,
) -> Iterator[pa.RecordBatch]:
    chunk: list[dict[str, Any]] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) == batch_rows:
                yield pa.RecordBatch.from_pylist(chunk, schema=schema)
                chunk = []
        if chunk:
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)
    except Exception as exc:
        if failures is not None:
            failures.append(exc)
        raise


def _event(
    event_id: uuid.UUID,
    card_id: uuid.UUID,
    registered: bool,
    ts_us: int,
    kind: str,
    amount: int,
    balance_after: int | None,
    place: Any,
    **fields: Any,
) -> dict[str, Any]:
    """One EVENTS_SCHEMA row; `place` is a row with merchant_id, mcc, kota, kecamatan."""
    mcc = place.mcc if place is not None else None
    return {
        "event_id": str(event_id),
        "card_id": str(card_id),
        "card_registered": registered,
        "ts": ts_us,
        "kind": kind,
        "amount": amount,
        "merchant_id": str(place.merchant_id) if place is not None and place.merchant_id else None,
        "mcc": int(mcc) if mcc is not None and mcc.isdigit() else None,
        "kota": place.kota if place is not None else None,
        "kecamatan": place.kecamatan if place is not None else None,
        "fare_capped": False,
        "balance_after": balance_after,
        **fields,
    }


def _card_signed(
    conn: Connection, day: dt.date, network: Network, batch_rows: int
) -> Iterator[dict[str, Any]]:
    query = (
        sa.select(
            ct.c.id,
            ct.c.card_id,
            cards.c.registered,
            ct.c.card_time_us,
            ct.c.kind,
            ct.c.amount,
            ct.c.balance_after,
            ct.c.journey,
            ct.c.merchant_id,
            merchants.c.mcc,
            merchants.c.kota,
            merchants.c.kecamatan,
            terminals.c.line.label("terminal_line"),
            terminals.c.station.label("terminal_station"),
            loads.c.channel,
            credits.c.source.label("credit_source"),
        )
        .select_from(
            ct.join(cards, cards.c.id == ct.c.card_id)
            .outerjoin(merchants, merchants.c.id == ct.c.merchant_id)
            .outerjoin(terminals, terminals.c.id == ct.c.terminal_id)
            .outerjoin(loads, loads.c.id == ct.c.load_id)
            .outerjoin(credits, credits.c.id == loads.c.card_credit_id)
        )
        .where(*_card_rows_of_day(day))
        # Each card's transactions in counter order: a tap's fare can depend on the
        # journey record of the card's tap before it (journeys._capped).
        .order_by(ct.c.card_id, ct.c.card_counter)
    )
    line_names = network_line_names(network)
    card: uuid.UUID | None = None
    previous: Journey | None = None
    for row in _stream(conn, query, batch_rows):
        if row.card_id != card:
            card, previous = row.card_id, None
        common = (row.id, row.card_id, row.registered, row.card_time_us)
        if row.kind == "credit":
            yield _event(
                *common, "load", row.amount, row.balance_after, row, load_channel=_channel(row)
            )
            continue
        if row.journey is None:
            if row.amount > 0:
                yield _event(*common, "purchase", row.amount, row.balance_after, row)
            continue
        journey = _journey(row.journey, row.id)
        fields = transit_fields(
            journey,
            row.amount,
            row.card_time_us // 1_000_000,
            previous,
            line_names,
            row.terminal_line,
            row.terminal_station,
        )
        previous = journey
        yield _event(
            *common,
            "transit",
            row.amount,
            row.balance_after,
            row,
            mode=fields.mode,
            tap=fields.tap,
            line=fields.line,
            station=fields.station,
            entry_station=fields.entry_station,
            distance_m=fields.distance_m,
            fare_capped=fields.fare_capped,
        )


def _channel(row: Any) -> str:
    channel = (
        CREDIT_CHANNELS.get(row.credit_source)
        if row.channel == "card_credit"
        else LOAD_CHANNELS.get(row.channel)
    )
    if channel is None:
        raise ReleaseError(
            ReleaseErrorCode.RECORD_INVALID, f"load {row.id}: no known channel ({row.channel})"
        )
    return channel


def _journey(text: str, transaction_id: uuid.UUID) -> Journey:
    try:
        return Journey.from_json(json.loads(text))
    except (ValueError, CertificateFormatError) as exc:
        raise ReleaseError(
            ReleaseErrorCode.RECORD_INVALID,
            f"card transaction {transaction_id}: unreadable journey record",
        ) from exc


def _refunds(conn: Connection, day: dt.date, batch_rows: int) -> Iterator[dict[str, Any]]:
    start, end = day_bounds_us(day)
    query = (
        sa.select(
            refunds.c.id,
            refunds.c.card_id,
            cards.c.registered,
            transfers.c.timestamp_us,
            refunds.c.amount,
            refunds.c.merchant_id,
            merchants.c.mcc,
            merchants.c.kota,
            merchants.c.kecamatan,
        )
        .select_from(
            transfers.join(refunds, refunds.c.id == transfers.c.id)
            .join(cards, cards.c.id == refunds.c.card_id)
            .join(merchants, merchants.c.id == refunds.c.merchant_id)
        )
        .where(
            transfers.c.timestamp_us >= start,
            transfers.c.timestamp_us < end,
            transfers.c.kind == "refund",
        )
    )
    for row in _stream(conn, query, batch_rows):
        yield _event(
            row.id, row.card_id, row.registered, row.timestamp_us, "refund", row.amount, None, row
        )


def _loads_on_evidence(conn: Connection, day: dt.date, batch_rows: int) -> Iterator[dict[str, Any]]:
    start, end = day_bounds_us(day)
    agent = merchants.alias("agent")
    query = (
        sa.select(
            loads.c.id,
            loads.c.card_id,
            cards.c.registered,
            transfers.c.timestamp_us,
            loads.c.amount,
            loads.c.channel,
            credits.c.source.label("credit_source"),
            agent.c.id.label("merchant_id"),
            agent.c.mcc,
            agent.c.kota,
            agent.c.kecamatan,
        )
        .select_from(
            transfers.join(loads, loads.c.id == transfers.c.id)
            .join(cards, cards.c.id == loads.c.card_id)
            .outerjoin(credits, credits.c.id == loads.c.card_credit_id)
            .outerjoin(agent, agent.c.id == loads.c.agent_merchant_id)
        )
        .where(
            transfers.c.timestamp_us >= start,
            transfers.c.timestamp_us < end,
            transfers.c.kind == "card_load",
            loads.c.status == "posted",
            loads.c.card_transaction_id.is_(None),
        )
    )
    for row in _stream(conn, query, batch_rows):
        yield _event(
            row.id,
            row.card_id,
            row.registered,
            row.timestamp_us,
            "load",
            row.amount,
            None,
            row if row.merchant_id is not None else None,
            load_channel=_channel(row),
        )
