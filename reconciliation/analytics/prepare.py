"""DuckDB views over the pseudonymized inputs: public keys, trips, transfers, BRT chains.

Everything here runs inside the release's private DuckDB database. The views map raw input
values onto the public keys of `geography` (so no input string reaches the output), clip
each card-day when differential privacy is on, and derive the travel facts the tables need.

Derived facts (docs/privacy.md explains them to readers of the release):
- A boarding is a rail entry tap, a flat tap or a BRT tap; an alighting is a rail exit tap.
  BRT (TransJakarta) is tap-in only: its exit taps, if a gate records any, are not counted.
- A rail trip is an exit tap: its origin is `entry_station`, its destination the exit.
- A BRT destination is inferred by trip chaining: the stop of the boarded line nearest to
  the card's next transit tap of the same day, if that tap is within `chaining_walk_m` and
  is not at the boarding stop; otherwise UNKNOWN. Its ride distance is the distance along
  the line between the two stops (approximate station positions).
- A transfer is a boarding within `transfer_window_minutes` of the card's previous transit
  tap when that tap was an alighting or a flat-fare boarding (counted from the previous
  mode to this one).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.geography import (
    BRT_MODES,
    KOTA,
    OTHER,
    OUTSIDE_DKI,
    UNKNOWN,
    kecamatan_keys,
    mcc_group_of,
)

REGISTERED = "registered"
UNREGISTERED = "unregistered"


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def prepare(con: duckdb.DuckDBPyConnection, config: ReleaseConfig) -> None:
    """Create `ev` (keyed, clipped under DP), `brt_trips`, `transfers_src` and `cards_c`."""
    _reference_tables(con, config)
    dp = config.differential_privacy
    limit = f"WHERE n <= {config.max_events_per_card_day}" if dp else ""
    amount = f"LEAST(amount, {config.max_amount_idr})" if dp else "amount"
    distance = f"LEAST(distance_m, {config.max_distance_m})" if dp else "distance_m"
    con.execute(
        f"""
        CREATE TABLE ev AS
        WITH ranked AS (
            SELECT *, row_number() OVER (PARTITION BY card ORDER BY ts_us, event_id) AS n
            FROM ev_raw
        )
        SELECT
            r.event_id, r.card, r.ts_us, r.sod,
            CASE WHEN r.card_registered THEN '{REGISTERED}' ELSE '{UNREGISTERED}' END
                AS registered,
            CAST(r.sod // 3600 AS INTEGER) AS hour,
            CAST(r.sod // 900 AS INTEGER) AS quarter,
            r.kind, {amount} AS amount, r.merchant_id AS merchant,
            COALESCE(m.mcc_group, {_lit(UNKNOWN)}) AS mcc_group,
            CASE WHEN r.kota IS NULL THEN {_lit(UNKNOWN)}
                 WHEN r.kota IN {_in(KOTA)} THEN r.kota
                 ELSE {_lit(OUTSIDE_DKI)} END AS kota_k,
            CASE WHEN r.kota IS NULL THEN {_lit(UNKNOWN)}
                 WHEN r.kota NOT IN {_in(KOTA)} THEN {_lit(OUTSIDE_DKI)}
                 WHEN d.kecamatan IS NOT NULL THEN d.kecamatan
                 ELSE {_lit(UNKNOWN)} END AS kecamatan_k,
            r.mode, r.tap, r.station, r.line,
            CASE WHEN r.mode IS NULL THEN NULL
                 WHEN l.line IS NOT NULL THEN l.line ELSE {_lit(OTHER)} END AS line_k,
            CASE WHEN r.mode IS NULL THEN NULL
                 WHEN s.station IS NOT NULL THEN s.station ELSE {_lit(OTHER)} END AS station_k,
            -- The OD key of the tap's own station is its station key, so that an OD row
            -- or column adds up exactly to the station's taps (tables.equations).
            CASE WHEN r.mode IS NULL THEN NULL
                 WHEN s.station IS NOT NULL THEN s.station ELSE {_lit(OTHER)} END AS od_k,
            CASE WHEN r.entry_station IS NULL THEN {_lit(UNKNOWN)}
                 WHEN oe.station IS NOT NULL THEN oe.station ELSE {_lit(OTHER)} END AS entry_k,
            CASE WHEN r.tap = 'exit' THEN 'alight' ELSE 'board' END AS direction,
            {distance} AS distance_m, r.fare_capped, r.load_channel
        FROM ranked r
        LEFT JOIN mcc_ref m ON m.mcc = r.mcc
        LEFT JOIN district_ref d ON d.kota = r.kota AND d.kecamatan = r.kecamatan
        LEFT JOIN line_ref l ON l.mode = r.mode AND l.line = r.line
        LEFT JOIN station_ref s
            ON s.mode = r.mode AND s.line = r.line AND s.station = r.station
        LEFT JOIN od_ref oe ON oe.mode = r.mode AND oe.station = r.entry_station
        {limit}
        """
    )
    balance = "LEAST(balance, band_max)" if dp else "balance"
    con.execute(
        f"""
        CREATE TABLE cards_c AS
        SELECT c.card,
               CASE WHEN c.card_registered THEN '{REGISTERED}' ELSE '{UNREGISTERED}' END
                   AS registered,
               b.band, b.band_min, b.band_max, {balance} AS balance
        FROM cards_in c
        JOIN band_ref b ON c.balance >= b.band_min
            AND (c.balance <= b.band_max OR b.band_last)
        """
    )
    _brt_trips(con, config)
    _transfers(con, config)


def _reference_tables(con: duckdb.DuckDBPyConnection, config: ReleaseConfig) -> None:
    net = config.network
    mccs = [row[0] for row in con.execute("SELECT DISTINCT mcc FROM ev_raw").fetchall()]
    mccs = [m for m in mccs if m is not None]
    refs = {
        "mcc_ref": pa.table(
            {
                "mcc": pa.array(mccs, pa.int32()),
                "mcc_group": pa.array([mcc_group_of(m) for m in mccs], pa.string()),
            }
        ),
        "district_ref": pa.table(
            {
                "kota": [k for k, kc in kecamatan_keys() if kc not in (UNKNOWN, OUTSIDE_DKI)],
                "kecamatan": [kc for _, kc in kecamatan_keys() if kc not in (UNKNOWN, OUTSIDE_DKI)],
            }
        ),
        "line_ref": pa.table(
            {
                "mode": [ln.mode for ln in net.lines],
                "line": [ln.name for ln in net.lines],
            }
        ),
        "station_ref": pa.table(
            {
                "mode": [ln.mode for ln in net.lines for _ in ln.stations],
                "line": [ln.name for ln in net.lines for _ in ln.stations],
                "station": [s.name for ln in net.lines for s in ln.stations],
                "km": [s.km for ln in net.lines for s in ln.stations],
                "lat": [s.lat for ln in net.lines for s in ln.stations],
                "lon": [s.lon for ln in net.lines for s in ln.stations],
            }
        ),
        "band_ref": pa.table(
            {
                "band": [b.label for b in BALANCE_BANDS],
                "band_min": pa.array([b.low for b in BALANCE_BANDS], pa.int64()),
                "band_max": pa.array([b.high for b in BALANCE_BANDS], pa.int64()),
                "band_last": [b is BALANCE_BANDS[-1] for b in BALANCE_BANDS],
            }
        ),
    }
    for name, table in refs.items():
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")
    con.execute("CREATE TABLE od_ref AS SELECT DISTINCT mode, station FROM station_ref")


class Band:
    """A balance band: [low, high] rupiah; the last band is open above (DP clips at high)."""

    __slots__ = ("high", "label", "low")

    def __init__(self, label: str, low: int, high: int) -> None:
        self.label, self.low, self.high = label, low, high


# The last band's high is the largest balance a registered card may hold (Rp 20,000,000
# since July 2022); an unregistered card may hold at most Rp 2,000,000.
BALANCE_BANDS = (
    Band("0", 0, 0),
    Band("1-9,999", 1, 9_999),
    Band("10,000-49,999", 10_000, 49_999),
    Band("50,000-99,999", 50_000, 99_999),
    Band("100,000-249,999", 100_000, 249_999),
    Band("250,000-499,999", 250_000, 499_999),
    Band("500,000-999,999", 500_000, 999_999),
    Band("1,000,000-2,000,000", 1_000_000, 2_000_000),
    Band("over 2,000,000", 2_000_001, 20_000_000),
)


def _brt_trips(con: duckdb.DuckDBPyConnection, config: ReleaseConfig) -> None:
    # Metres per degree near Jakarta (6 deg S): an equirectangular approximation is far
    # inside the walking threshold's tolerance at city scale.
    con.execute(
        f"""
        CREATE TABLE brt_trips AS
        WITH seq AS (
            SELECT event_id, card, mode, line_k, station_k, od_k, direction, tap,
                   lead(mode) OVER w AS next_mode, lead(line) OVER w AS next_line,
                   lead(station) OVER w AS next_station
            FROM ev WHERE kind = 'transit'
            WINDOW w AS (PARTITION BY card ORDER BY ts_us, event_id)
        ),
        boardings AS (
            SELECT s.*, nx.lat AS next_lat, nx.lon AS next_lon, here.km AS origin_km
            FROM seq s
            LEFT JOIN station_ref nx
                ON nx.mode = s.next_mode AND nx.line = s.next_line
                AND nx.station = s.next_station
            LEFT JOIN station_ref here
                ON here.mode = s.mode AND here.line = s.line_k AND here.station = s.station_k
            WHERE s.mode IN {_in(BRT_MODES)} AND s.tap <> 'exit'
        ),
        nearest AS (
            SELECT b.event_id, st.station, st.km,
                   sqrt(pow((st.lat - b.next_lat) * 110574.0, 2)
                        + pow((st.lon - b.next_lon) * 110574.0 * cos(radians(st.lat)), 2))
                       AS walk_m,
                   row_number() OVER (
                       PARTITION BY b.event_id ORDER BY
                       pow((st.lat - b.next_lat) * 110574.0, 2)
                       + pow((st.lon - b.next_lon) * 110574.0 * cos(radians(st.lat)), 2),
                       st.km
                   ) AS rank
            FROM boardings b
            JOIN station_ref st ON st.mode = b.mode AND st.line = b.line_k
            WHERE b.next_lat IS NOT NULL
        )
        SELECT b.event_id, b.card, b.mode, b.od_k AS origin,
               CASE WHEN n.walk_m <= {config.chaining_walk_m} AND n.station <> b.station_k
                    THEN n.station ELSE {_lit(UNKNOWN)} END AS destination,
               CASE WHEN n.walk_m <= {config.chaining_walk_m} AND n.station <> b.station_k
                         AND b.origin_km IS NOT NULL
                    THEN LEAST(CAST(round(abs(n.km - b.origin_km) * 1000) AS INTEGER),
                               {config.max_distance_m})
                    END AS distance_m
        FROM boardings b
        LEFT JOIN nearest n ON n.event_id = b.event_id AND n.rank = 1
        """
    )


def _transfers(con: duckdb.DuckDBPyConnection, config: ReleaseConfig) -> None:
    window_us = config.transfer_window_minutes * 60 * 1_000_000
    con.execute(
        f"""
        CREATE TABLE transfers_src AS
        WITH seq AS (
            SELECT card, ts_us, mode, tap,
                   lag(mode) OVER w AS prev_mode, lag(tap) OVER w AS prev_tap,
                   lag(ts_us) OVER w AS prev_ts
            FROM ev WHERE kind = 'transit'
            WINDOW w AS (PARTITION BY card ORDER BY ts_us, event_id)
        )
        SELECT card, prev_mode AS from_mode, mode AS to_mode
        FROM seq
        WHERE tap IN ('entry', 'flat')
          AND (prev_tap IN ('exit', 'flat') OR prev_mode IN {_in(BRT_MODES)})
          AND ts_us - prev_ts <= {window_us}
          AND NOT (mode IN {_in(BRT_MODES)} AND tap = 'exit')
        """
    )
