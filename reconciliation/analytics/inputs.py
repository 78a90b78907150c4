"""The input contract of a release, and loading it into DuckDB under pseudonyms.

The extraction from the ledger database (written elsewhere) hands the release three things
for one business day in Jakarta time (WIB, UTC+7): `events` and `cards` as Arrow data
(a pyarrow Table, a RecordBatchReader or a DuckDB relation: anything with the Arrow C stream
interface) matching EVENTS_SCHEMA and CARDS_SCHEMA, and the day's `Seal`.

Guarantees:
- The internal card id never enters DuckDB: each batch is streamed through Python, where
  `card_id` is replaced by its pseudonym, HMAC-SHA256(release key, card_id) truncated to
  16 bytes, before the batch is handed on. Pseudonyms live only in the in-process DuckDB
  database (and its spill directory, deleted when the release ends); nothing per card is
  ever written to the output.
- Every rule below is checked before anything is computed; a broken one raises
  `ReleaseError` with its own code and the release writes nothing.

Constraints on `events` (one row per transaction the ledger accepted: card-signed ones,
and the few the card did not sign, merchant refunds and loads posted on card evidence):
- event_id unique, not null; card_id, card_registered, ts, kind, amount, fare_capped not
  null (`null_in_required_column`). balance_after is the card's balance after a
  card-signed transaction, null where the card signed nothing.
- ts falls on the release day in WIB (`event_outside_day`).
- kind in KINDS (`kind_invalid`).
- amount > 0; a transit tap may carry 0: a rail entry tap (rail fares are charged at the
  exit) and a leg the integrated-fare cap covers in full (`amount_not_positive`).
- kind "transit": mode in MODES and tap in TAPS; a non-null mode or tap elsewhere must be
  one of those values too (`transit_fields_invalid`).
- kind "load": load_channel in LOAD_CHANNELS; a non-null load_channel must be one of those
  on any row (`load_channel_invalid`).
- distance_m and balance_after >= 0 (`negative_value`).
Constraints on `cards`: card_id unique and not null (`card_duplicate`,
`null_in_required_column`); balance >= 0 (`negative_value`).
Constraints on the seal: block_no >= 0, last_seq >= 0, block_hash 64 hex digits
(`seal_invalid`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import duckdb
import pyarrow as pa

from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.geography import MODES

KINDS = ("transit", "purchase", "load", "refund")
TAPS = ("entry", "exit", "flat")
LOAD_CHANNELS = ("agent", "bank_transfer", "refund", "replacement")
WIB_OFFSET_US = 7 * 3600 * 1_000_000
DAY_US = 24 * 3600 * 1_000_000
MIN_KEY_BYTES = 32
PSEUDONYM_BYTES = 16

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("card_registered", pa.bool_(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("amount", pa.int64(), nullable=False),
        pa.field("merchant_id", pa.string()),
        pa.field("mcc", pa.int32()),
        pa.field("kota", pa.string()),
        pa.field("kecamatan", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("line", pa.string()),
        pa.field("station", pa.string()),
        pa.field("tap", pa.string()),
        pa.field("entry_station", pa.string()),
        pa.field("distance_m", pa.int32()),
        pa.field("fare_capped", pa.bool_(), nullable=False),
        pa.field("load_channel", pa.string()),
        pa.field("balance_after", pa.int64()),
    ]
)

CARDS_SCHEMA = pa.schema(
    [
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("card_registered", pa.bool_(), nullable=False),
        pa.field("balance", pa.int64(), nullable=False),
    ]
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Seal:
    """The day's ledger seal: the head of the journal's hash chain after the day.

    Constraints: block_no >= 0; last_seq >= 0; block_hash is 64 lower-case hex digits.
    """

    block_no: int
    last_seq: int
    block_hash: str

    def check(self) -> None:
        if self.block_no < 0 or self.last_seq < 0 or not _HEX64.match(self.block_hash):
            raise ReleaseError(
                ReleaseErrorCode.SEAL_INVALID,
                "block_no and last_seq must be >= 0 and block_hash 64 lower-case hex digits",
            )


class ArrowStream(Protocol):
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...


def pseudonymizer(key: bytes) -> dict[str, bytes]:
    """A cache card_id -> pseudonym, filled by `_pseudonymize`; lives only for one release."""
    if len(key) < MIN_KEY_BYTES:
        raise ReleaseError(
            ReleaseErrorCode.KEY_TOO_SHORT, f"the release key needs at least {MIN_KEY_BYTES} bytes"
        )
    return {}


def _pseudonym(key: bytes, card_id: str) -> bytes:
    return hmac.new(key, card_id.encode("utf-8"), hashlib.sha256).digest()[:PSEUDONYM_BYTES]


def _reader(data: ArrowStream, expected: pa.Schema, what: str) -> pa.RecordBatchReader:
    reader = pa.RecordBatchReader.from_stream(data)
    got = reader.schema
    for f in expected:
        idx = got.get_field_index(f.name)
        if idx < 0:
            raise ReleaseError(ReleaseErrorCode.SCHEMA_MISMATCH, f"{what}: column {f.name} missing")
        if not got.field(idx).type.equals(f.type):
            raise ReleaseError(
                ReleaseErrorCode.SCHEMA_MISMATCH,
                f"{what}: column {f.name} is {got.field(idx).type}, expected {f.type}",
            )
    return reader


def _pseudonymize(
    reader: pa.RecordBatchReader, key: bytes, cache: dict[str, bytes], columns: list[str]
) -> pa.RecordBatchReader:
    """The same batches with card_id replaced by `card` (the pseudonym), other columns kept."""
    out_schema = pa.schema(
        [pa.field("card", pa.binary(PSEUDONYM_BYTES))]
        + [reader.schema.field(c) for c in columns if c != "card_id"]
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            ids = batch.column(batch.schema.get_field_index("card_id")).to_pylist()
            cards: list[bytes | None] = []
            for card_id in ids:
                if card_id is None:
                    cards.append(None)
                    continue
                ps = cache.get(card_id)
                if ps is None:
                    ps = cache[card_id] = _pseudonym(key, card_id)
                cards.append(ps)
            arrays = [pa.array(cards, type=pa.binary(PSEUDONYM_BYTES))]
            arrays += [batch.column(batch.schema.get_field_index(c)) for c in columns[1:]]
            yield pa.RecordBatch.from_arrays(arrays, schema=out_schema)

    return pa.RecordBatchReader.from_batches(out_schema, batches())


def load_inputs(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    events: ArrowStream,
    cards: ArrowStream,
    key: bytes,
) -> None:
    """Create tables `ev_raw` and `cards_in` in `con` (pseudonymized), then check them."""
    cache = pseudonymizer(key)
    ev_cols = ["card_id", *(f.name for f in EVENTS_SCHEMA if f.name != "card_id")]
    ev = _pseudonymize(_reader(events, EVENTS_SCHEMA, "events"), key, cache, ev_cols)
    con.register("ev_stream", ev)
    day_start_us = _day_start_us(day)
    # ts is kept as UTC microseconds and `sod`, seconds since local (WIB) midnight: plain
    # integer arithmetic, so no time-zone database (a DuckDB extension) is needed.
    con.execute(
        f"""
        CREATE TABLE ev_raw AS
        SELECT * EXCLUDE (ts),
               epoch_us(ts) AS ts_us,
               CAST((epoch_us(ts) + {WIB_OFFSET_US} - {day_start_us}) // 1000000 AS BIGINT)
                   AS sod
        FROM ev_stream
        """
    )
    con.unregister("ev_stream")
    cd_cols = ["card_id", "card_registered", "balance"]
    cd = _pseudonymize(_reader(cards, CARDS_SCHEMA, "cards"), key, cache, cd_cols)
    con.register("cards_stream", cd)
    con.execute("CREATE TABLE cards_in AS SELECT * FROM cards_stream")
    con.unregister("cards_stream")
    cache.clear()
    _check(con)


def _day_start_us(day: dt.date) -> int:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return (midnight - epoch) // dt.timedelta(microseconds=1)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _check(con: duckdb.DuckDBPyConnection) -> None:
    """Every row rule of the contract, as one count per rule; the first broken one raises."""
    required = [
        "event_id",
        "card",
        "card_registered",
        "kind",
        "amount",
        "fare_capped",
        "ts_us",
    ]
    rules: list[tuple[ReleaseErrorCode, str, str]] = [
        (
            ReleaseErrorCode.NULL_IN_REQUIRED_COLUMN,
            " OR ".join(f"{c} IS NULL" for c in required),
            "events: a required column is null",
        ),
        (
            ReleaseErrorCode.EVENT_OUTSIDE_DAY,
            f"sod < 0 OR sod >= {DAY_US // 1_000_000}",
            "events: a ts outside the release day (WIB)",
        ),
        (ReleaseErrorCode.KIND_INVALID, f"kind NOT IN {_in(KINDS)}", "events: unknown kind"),
        (
            ReleaseErrorCode.AMOUNT_NOT_POSITIVE,
            "amount < 0 OR (amount = 0 AND kind <> 'transit')",
            "events: amount must be > 0 (0 only on a transit tap)",
        ),
        (
            ReleaseErrorCode.TRANSIT_FIELDS_INVALID,
            f"(kind = 'transit' AND (mode IS NULL OR tap IS NULL)) "
            f"OR mode NOT IN {_in(MODES)} OR tap NOT IN {_in(TAPS)}",
            f"events: transit rows need mode in {MODES} and tap in {TAPS}",
        ),
        (
            ReleaseErrorCode.LOAD_CHANNEL_INVALID,
            f"(kind = 'load' AND load_channel IS NULL) OR load_channel NOT IN {_in(LOAD_CHANNELS)}",
            f"events: loads need load_channel in {LOAD_CHANNELS}",
        ),
        (
            ReleaseErrorCode.NEGATIVE_VALUE,
            "distance_m < 0 OR balance_after < 0",
            "events: distance_m and balance_after must be >= 0",
        ),
    ]
    for code, predicate, message in rules:
        (bad,) = _one(con, f"SELECT count(*) FROM ev_raw WHERE {predicate}")
        if bad:
            raise ReleaseError(code, f"{message} ({bad} rows)")
    (dups,) = _one(con, "SELECT count(*) - count(DISTINCT event_id) FROM ev_raw")
    if dups:
        raise ReleaseError(ReleaseErrorCode.EVENT_ID_DUPLICATE, f"events: {dups} repeated ids")
    nulls, dups, negative = _one(
        con,
        "SELECT count(*) FILTER (card IS NULL OR card_registered IS NULL OR balance IS NULL),"
        " count(*) - count(DISTINCT card), count(*) FILTER (balance < 0) FROM cards_in",
    )
    if nulls:
        raise ReleaseError(ReleaseErrorCode.NULL_IN_REQUIRED_COLUMN, "cards: null values")
    if dups:
        raise ReleaseError(ReleaseErrorCode.CARD_DUPLICATE, f"cards: {dups} repeated card ids")
    if negative:
        raise ReleaseError(ReleaseErrorCode.NEGATIVE_VALUE, "cards: a negative balance")


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None
    return tuple(int(v or 0) for v in row)
