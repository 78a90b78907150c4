"""The published tables: their public keys, measures, rules, sources and the sums that tie
them together.

Each `TableSpec` says what a row means (its key fields), what it counts or sums (its
measures, all computed from one set of contributing rows), which disclosure rules guard it,
and which SQL over the prepared views (prepare.py) yields its contributing rows. Every table
also publishes `cards`, the distinct cards behind the row.

`equations` lists every place where the release lets a reader add cells up to another
published cell (a kota is the sum of its kecamatan, an hour the sum of its quarters, ...).
Complementary suppression (disclosure.py) works on these, so they must be complete: a sum
that holds in the data but is missing here is a way round suppression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.geography import (
    BRT_MODES,
    MODES,
    RAIL_MODES,
    Network,
    kecamatan_keys,
    kota_keys,
    mcc_group_keys,
)
from reconciliation.analytics.inputs import KINDS, LOAD_CHANNELS
from reconciliation.analytics.prepare import BALANCE_BANDS, REGISTERED, UNREGISTERED, Band

Key = tuple[str | int, ...]


class MeasureKind(StrEnum):
    COUNT = "count"  # rounded to count_rounding_base
    MONEY = "money"  # rupiah, rounded to amount_rounding_idr
    DISTANCE = "distance"  # summed in metres, published in whole km


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    kind: MeasureKind
    sql: str  # an aggregate over the table's contributing rows
    title: str
    description: str


@dataclass(frozen=True, slots=True)
class Dim:
    name: str
    type: str  # "string" or "integer" (Table Schema types)
    title: str
    description: str


@dataclass(frozen=True, slots=True)
class Rules:
    """Which magnitude rules guard a cell's sums (every cell has the distinct-card rule)."""

    merchants: bool = False  # >= min_merchants merchants, merchant dominance
    card_dominance: bool = False  # card dominance


@dataclass(frozen=True, slots=True)
class Derived:
    """A ratio computed from two published (already rounded) measures of the same row."""

    name: str
    numerator: str
    denominator: str
    multiplier: int
    title: str
    description: str


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    title: str
    description: str
    dims: tuple[Dim, ...]
    keys: tuple[Key, ...]
    source: str  # SQL: the dims, card, amount, merchant and the measures' columns
    measures: tuple[Measure, ...]
    rules: Callable[[Key], Rules] = field(default=lambda _k: Rules())
    derived: tuple[Derived, ...] = ()
    # Contributing rows one card-day can add to this table (DP sensitivity); None means
    # max_events_per_card_day.
    rows_per_card_day: int | None = None
    # DP: a per-cell bound on one card's money (balances: the band's top); None means
    # rows_per_card_day * max_amount_idr over the whole table.
    money_bound: Callable[[Key], int] | None = None
    # Cost order for complementary suppression: a higher priority is suppressed last.
    priority: int = 0
    constants: Callable[[Key], dict[str, str | int]] | None = None
    constant_fields: tuple[Dim, ...] = ()

    @property
    def has_money(self) -> bool:
        return any(m.kind is MeasureKind.MONEY for m in self.measures)


CellId = tuple[str, Key]


@dataclass(frozen=True, slots=True)
class Equation:
    """sum(left) == sum(right) for every additive measure; each side is cells of one table."""

    left: tuple[CellId, ...]
    right: tuple[CellId, ...]


def _d(name: str, title: str, description: str, type_: str = "string") -> Dim:
    return Dim(name, type_, title, description)


TRANSACTIONS = Measure(
    "transactions", MeasureKind.COUNT, "count(*)", "Transactions", "Number of transactions."
)
AMOUNT = Measure(
    "amount_idr", MeasureKind.MONEY, "sum(amount)", "Amount (IDR)", "Sum of amounts, rupiah."
)
TAPS = Measure("taps", MeasureKind.COUNT, "count(*)", "Taps", "Number of card taps at gates.")
TRIPS = Measure("trips", MeasureKind.COUNT, "count(*)", "Trips", "Number of trips.")
AVG_TICKET = Derived(
    "avg_ticket_idr",
    "amount_idr",
    "transactions",
    1,
    "Average ticket (IDR)",
    "amount_idr / transactions, from the published (rounded) values, whole rupiah.",
)

MODE = _d("mode", "Mode", "TJ (TransJakarta BRT), MRT, KRL (Commuter Line) or LRT.")
LINE = _d("line", "Line", "Line or corridor; (other) for a line outside the reference network.")
STATION = _d("station", "Station", "Station or stop; (other) outside the reference network.")
DIRECTION = _d(
    "direction", "Direction", "board (entry or flat-fare tap) or alight (rail exit tap)."
)
HOUR = _d("hour", "Hour", "Hour of the day in WIB (UTC+7), 0 to 23.", "integer")

MERCHANT_RULES = Rules(merchants=True, card_dominance=True)
CARD_RULES = Rules(card_dominance=True)


def _directions(mode: str) -> tuple[str, ...]:
    return ("board",) if mode in BRT_MODES else ("board", "alight")


def _intervals() -> tuple[str, ...]:
    return tuple(f"{q // 4:02d}:{(q % 4) * 15:02d}" for q in range(96))


def table_specs(config: ReleaseConfig) -> tuple[TableSpec, ...]:
    """Every table of the release, in publication order."""
    net = config.network
    transit_rules = CARD_RULES if config.transit_operators_public else MERCHANT_RULES
    purchases = "SELECT {dims}, card, amount, merchant FROM ev WHERE kind = 'purchase'"

    def spending(
        name: str, title: str, dims: tuple[Dim, ...], keys: tuple[Key, ...], cols: str
    ) -> TableSpec:
        return TableSpec(
            name=name,
            title=title,
            description=f"{title}: card purchases at merchants (transit fares, loads and "
            "refunds are in their own tables).",
            dims=dims,
            keys=keys,
            source=purchases.format(dims=cols),
            measures=(TRANSACTIONS, AMOUNT),
            rules=lambda _k: MERCHANT_RULES,
            derived=(AVG_TICKET,),
            priority=1,
        )

    station_keys = net.station_keys()
    line_keys = net.line_keys()
    taps_src = (
        "SELECT mode, line_k AS line, station_k AS station, {extra} direction, card, "
        "NULL::BIGINT AS amount, NULL::VARCHAR AS merchant FROM ev WHERE kind = 'transit' "
        f"AND NOT (mode IN ({', '.join(repr(m) for m in BRT_MODES)}) AND tap = 'exit')"
    )
    line_taps_src = (
        "SELECT mode, line_k AS line, {extra} direction, card, NULL::BIGINT AS amount, "
        "NULL::VARCHAR AS merchant FROM ev WHERE kind = 'transit' "
        f"AND NOT (mode IN ({', '.join(repr(m) for m in BRT_MODES)}) AND tap = 'exit')"
    )
    interval = _d("interval", "Interval", "Start of the 15-minute interval, WIB (HH:MM).")

    return (
        TableSpec(
            name="daily_totals",
            title="Daily totals by kind of transaction",
            description="All card transactions of the day by kind: transit fares, purchases, "
            "loads (top-ups) and refunds to cards.",
            dims=(_d("kind", "Kind", "transit, purchase, load or refund."),),
            keys=tuple((k,) for k in KINDS),
            source="SELECT kind, card, amount, merchant FROM ev",
            measures=(TRANSACTIONS, AMOUNT),
            rules=lambda k: (
                transit_rules
                if k[0] == "transit"
                else (CARD_RULES if k[0] == "load" else MERCHANT_RULES)
            ),
            derived=(AVG_TICKET,),
            priority=3,
        ),
        spending(
            "spending_by_mcc_group",
            "Spending by merchant category group",
            (
                _d(
                    "mcc_group",
                    "Merchant category group",
                    "Group of ISO 18245 merchant category codes (see the package description).",
                ),
            ),
            tuple((g,) for g in mcc_group_keys()),
            "mcc_group",
        ),
        spending(
            "spending_by_kota",
            "Spending by kota",
            (_d("kota", "Kota", "Kota administrasi (or kabupaten) of the merchant."),),
            tuple((k,) for k in kota_keys()),
            "kota_k AS kota",
        ),
        spending(
            "spending_by_kecamatan",
            "Spending by kecamatan",
            (
                _d("kota", "Kota", "Kota administrasi (or kabupaten) of the merchant."),
                _d("kecamatan", "Kecamatan", "Kecamatan (district) of the merchant."),
            ),
            kecamatan_keys(),
            "kota_k AS kota, kecamatan_k AS kecamatan",
        ),
        spending(
            "spending_by_hour",
            "Spending by hour",
            (HOUR,),
            tuple((h,) for h in range(24)),
            "hour",
        ),
        TableSpec(
            name="loads_by_channel",
            title="Loads (top-ups) by channel",
            description="Value loaded onto cards, by channel: agents (cash), bank transfer, "
            "refunds credited to cards, and balances moved from a replaced card.",
            dims=(_d("channel", "Channel", "agent, bank_transfer, refund or replacement."),),
            keys=tuple((c,) for c in LOAD_CHANNELS),
            source="SELECT load_channel AS channel, card, amount, merchant FROM ev "
            "WHERE kind = 'load'",
            measures=(
                Measure("loads", MeasureKind.COUNT, "count(*)", "Loads", "Number of loads."),
                AMOUNT,
            ),
            rules=lambda _k: CARD_RULES,
            derived=(
                Derived(
                    "avg_load_idr",
                    "amount_idr",
                    "loads",
                    1,
                    "Average load (IDR)",
                    "amount_idr / loads, from the published values, whole rupiah.",
                ),
            ),
            priority=1,
        ),
        TableSpec(
            name="ridership_station_15min",
            title="Ridership by station and 15 minutes",
            description="Card taps at each station's gates per 15-minute interval.",
            dims=(MODE, LINE, STATION, interval, DIRECTION),
            keys=tuple(
                (m, ln, s, i, d)
                for m, ln, s in station_keys
                for i in _intervals()
                for d in _directions(m)
            ),
            source=taps_src.format(
                extra="printf('%02d:%02d', quarter // 4, (quarter % 4) * 15) AS interval,"
            ),
            measures=(TAPS,),
        ),
        TableSpec(
            name="ridership_station_hour",
            title="Ridership by station and hour",
            description="Card taps at each station's gates per hour.",
            dims=(MODE, LINE, STATION, HOUR, DIRECTION),
            keys=tuple(
                (m, ln, s, h, d)
                for m, ln, s in station_keys
                for h in range(24)
                for d in _directions(m)
            ),
            source=taps_src.format(extra="hour,"),
            measures=(TAPS,),
            priority=1,
        ),
        TableSpec(
            name="ridership_line_hour",
            title="Ridership by line and hour",
            description="Card taps on each line per hour.",
            dims=(MODE, LINE, HOUR, DIRECTION),
            keys=tuple(
                (m, ln, h, d) for m, ln in line_keys for h in range(24) for d in _directions(m)
            ),
            source=line_taps_src.format(extra="hour,"),
            measures=(TAPS,),
            priority=2,
        ),
        TableSpec(
            name="ridership_line_day",
            title="Ridership by line for the day",
            description="Card taps on each line over the day.",
            dims=(MODE, LINE, DIRECTION),
            keys=tuple((m, ln, d) for m, ln in line_keys for d in _directions(m)),
            source=line_taps_src.format(extra=""),
            measures=(TAPS,),
            priority=3,
        ),
        TableSpec(
            name="od_rail",
            title="Rail origin-destination matrix (measured)",
            description="Rail trips from the entry station to the exit station, as measured "
            "by tap-in and tap-out. A trip is a rail exit tap; a trip with no tap-out is "
            "not in this table.",
            dims=(
                MODE,
                _d("origin", "Origin", "Entry station; (unknown) when the card had none."),
                _d("destination", "Destination", "Exit station."),
            ),
            keys=tuple((m, o, d) for m in RAIL_MODES for o in _od(net, m) for d in _od(net, m)),
            source="SELECT mode, entry_k AS origin, od_k AS destination, card, "
            "NULL::BIGINT AS amount, NULL::VARCHAR AS merchant FROM ev "
            "WHERE kind = 'transit' AND tap = 'exit' AND mode IN ('MRT', 'KRL', 'LRT')",
            measures=(TRIPS,),
        ),
        TableSpec(
            name="od_brt",
            title="BRT origin-destination matrix (destinations inferred)",
            description="TransJakarta trips from the boarding stop to an inferred "
            "destination: the stop of the same corridor nearest to the card's next tap of "
            "the day (trip chaining). (unknown) when no later tap lies within walking "
            "distance. Destinations are inferred, not measured.",
            dims=(
                MODE,
                _d("origin", "Origin", "Boarding stop."),
                _d("destination", "Destination (inferred)", "Inferred alighting stop."),
            ),
            keys=tuple((m, o, d) for m in BRT_MODES for o in _od(net, m) for d in _od(net, m)),
            source="SELECT mode, origin, destination, card, NULL::BIGINT AS amount, "
            "NULL::VARCHAR AS merchant FROM brt_trips",
            measures=(TRIPS,),
        ),
        TableSpec(
            name="transfers",
            title="Transfers between modes",
            description="Boardings within the transfer window of the card's previous ride, "
            "by the previous mode and this one.",
            dims=(
                _d("from_mode", "From mode", "Mode of the previous ride."),
                _d("to_mode", "To mode", "Mode boarded."),
            ),
            keys=tuple((a, b) for a in MODES for b in MODES),
            source="SELECT from_mode, to_mode, card, NULL::BIGINT AS amount, "
            "NULL::VARCHAR AS merchant FROM transfers_src",
            measures=(
                Measure("transfers", MeasureKind.COUNT, "count(*)", "Transfers", "Transfers."),
            ),
        ),
        TableSpec(
            name="fare_cap_use",
            title="Use of the JakLingko integrated-fare cap",
            description="Fares the integrated-fare cap (Rp 10,000 within 180 minutes across "
            "TransJakarta, MRT and LRT) reduced, by mode.",
            dims=(MODE,),
            keys=tuple((m,) for m in MODES),
            source="SELECT mode, card, NULL::BIGINT AS amount, NULL::VARCHAR AS merchant "
            "FROM ev WHERE kind = 'transit' AND fare_capped",
            measures=(
                Measure(
                    "capped_fares",
                    MeasureKind.COUNT,
                    "count(*)",
                    "Capped fares",
                    "Fare transactions the cap reduced.",
                ),
            ),
        ),
        TableSpec(
            name="fares_by_mode",
            title="Fares and distance by mode",
            description="Fare revenue, boardings and ride distance by mode. Rail distances "
            "are measured between tap-in and tap-out (fare tables); BRT distances are "
            "along the corridor to the inferred destination.",
            dims=(MODE,),
            keys=tuple((m,) for m in MODES),
            source="SELECT e.mode, e.card, e.amount, e.merchant, "
            "CAST(e.tap IN ('entry', 'flat') AS INTEGER) AS boarding, "
            "CASE WHEN e.tap = 'exit' THEN e.distance_m ELSE b.distance_m END AS dist "
            "FROM ev e LEFT JOIN brt_trips b ON b.event_id = e.event_id "
            "WHERE e.kind = 'transit'",
            measures=(
                TRANSACTIONS,
                Measure(
                    "trips",
                    MeasureKind.COUNT,
                    "sum(boarding)",
                    "Trips",
                    "Boardings (entry or flat-fare taps).",
                ),
                Measure(
                    "fare_idr", MeasureKind.MONEY, "sum(amount)", "Fares (IDR)", "Fares, rupiah."
                ),
                Measure(
                    "distance_km",
                    MeasureKind.DISTANCE,
                    "sum(dist)",
                    "Distance (km)",
                    "Sum of ride distances, whole km.",
                ),
                Measure(
                    "distance_trips",
                    MeasureKind.COUNT,
                    "count(dist)",
                    "Trips with a distance",
                    "Rides whose distance is known.",
                ),
            ),
            rules=lambda _k: transit_rules,
            derived=(
                Derived(
                    "avg_fare_idr",
                    "fare_idr",
                    "trips",
                    1,
                    "Average fare (IDR)",
                    "fare_idr / trips, from the published values, whole rupiah.",
                ),
                Derived(
                    "avg_distance_m",
                    "distance_km",
                    "distance_trips",
                    1000,
                    "Average distance (m)",
                    "distance_km * 1000 / distance_trips, from the published values.",
                ),
            ),
            constants=lambda k: {
                "distance_basis": "inferred (trip chaining)"
                if k[0] in BRT_MODES
                else "measured (tap-out)"
            },
            constant_fields=(
                _d("distance_basis", "Distance basis", "How the ride distance is known."),
            ),
            priority=2,
        ),
        TableSpec(
            name="card_mix",
            title="Card mix",
            description="Distinct cards by registration: cards that made a transaction "
            "today, and cards holding value at the end of the day.",
            dims=(
                _d("registration", "Registration", "registered or unregistered."),
                _d("population", "Population", "active today or holding value."),
            ),
            keys=tuple(
                (r, p)
                for r in (REGISTERED, UNREGISTERED)
                for p in ("active today", "holding value")
            ),
            source="SELECT DISTINCT registered AS registration, 'active today' AS population, "
            "card, NULL::BIGINT AS amount, NULL::VARCHAR AS merchant FROM ev "
            "UNION ALL SELECT registered, 'holding value', card, NULL, NULL FROM cards_c "
            "WHERE balance > 0",
            measures=(),
            rows_per_card_day=2,
            priority=2,
        ),
        TableSpec(
            name="balances_by_band",
            title="Balances held, by band",
            description="Cards and the value they hold at the end of the day, by balance band "
            "and registration (e-money held for cardholders).",
            dims=(
                _d("registration", "Registration", "registered or unregistered."),
                _d("band", "Balance band", "Balance band in rupiah."),
            ),
            keys=tuple((r, b.label) for r in (REGISTERED, UNREGISTERED) for b in BALANCE_BANDS),
            source="SELECT registered AS registration, band, card, balance AS amount, "
            "NULL::VARCHAR AS merchant FROM cards_c",
            measures=(
                Measure(
                    "balance_idr",
                    MeasureKind.MONEY,
                    "sum(amount)",
                    "Balance held (IDR)",
                    "Sum of card balances, rupiah.",
                ),
            ),
            rules=lambda _k: CARD_RULES,
            rows_per_card_day=1,
            money_bound=lambda k: _band(str(k[1])).high,
            constants=lambda k: {
                "band_min_idr": _band(str(k[1])).low,
                "band_max_idr": _band(str(k[1])).high,
            },
            constant_fields=(
                _d("band_min_idr", "Band minimum (IDR)", "Lowest balance in the band.", "integer"),
                _d(
                    "band_max_idr",
                    "Band maximum (IDR)",
                    "Highest balance in the band (the last band: the legal maximum).",
                    "integer",
                ),
            ),
        ),
    )


def _band(label: str) -> Band:
    return next(b for b in BALANCE_BANDS if b.label == label)


def _od(net: Network, mode: str) -> tuple[str, ...]:
    return net.od_keys(mode)


def equations(config: ReleaseConfig) -> tuple[Equation, ...]:
    """Every additive identity between published cells, in a fixed order."""
    net = config.network
    eqs: list[Equation] = []

    def add(left: list[CellId], right: list[CellId]) -> None:
        eqs.append(Equation(tuple(left), tuple(right)))

    purchase: list[CellId] = [("daily_totals", ("purchase",))]
    add(purchase, [("spending_by_mcc_group", (g,)) for g in mcc_group_keys()])
    add(purchase, [("spending_by_kota", (k,)) for k in kota_keys()])
    add(purchase, [("spending_by_hour", (h,)) for h in range(24)])
    for kota in kota_keys():
        add(
            [("spending_by_kota", (kota,))],
            [("spending_by_kecamatan", k) for k in kecamatan_keys() if k[0] == kota],
        )
    add([("daily_totals", ("load",))], [("loads_by_channel", (c,)) for c in LOAD_CHANNELS])
    add([("daily_totals", ("transit",))], [("fares_by_mode", (m,)) for m in MODES])

    station_keys = net.station_keys()
    line_keys = net.line_keys()
    for m, ln, s in station_keys:
        for d in _directions(m):
            for h in range(24):
                add(
                    [("ridership_station_hour", (m, ln, s, h, d))],
                    [
                        ("ridership_station_15min", (m, ln, s, f"{h:02d}:{q * 15:02d}", d))
                        for q in range(4)
                    ],
                )
    for m, ln in line_keys:
        for d in _directions(m):
            for h in range(24):
                add(
                    [("ridership_line_hour", (m, ln, h, d))],
                    [
                        ("ridership_station_hour", (m, ln, s, h, d))
                        for mm, lnn, s in station_keys
                        if (mm, lnn) == (m, ln)
                    ],
                )
            add(
                [("ridership_line_day", (m, ln, d))],
                [("ridership_line_hour", (m, ln, h, d)) for h in range(24)],
            )
    # Boardings per mode appear in fares_by_mode (trips) and in the line tables.
    for m in MODES:
        add(
            [("fares_by_mode", (m,))],
            [("ridership_line_day", (mm, ln, "board")) for mm, ln in line_keys if mm == m],
        )
    # An OD column (rail) or row (BRT) adds up to a station's day of alightings (boardings).
    for table, modes, direction in (
        ("od_rail", RAIL_MODES, "alight"),
        ("od_brt", BRT_MODES, "board"),
    ):
        for m in modes:
            names = _od(net, m)
            for s in names:
                cells: list[CellId] = [
                    (table, (m, o, s) if direction == "alight" else (m, s, o)) for o in names
                ]
                station_cells: list[CellId] = [
                    ("ridership_station_hour", (mm, ln, st, h, direction))
                    for mm, ln, st in station_keys
                    if mm == m and st == s
                    for h in range(24)
                ]
                if station_cells:
                    add(cells, station_cells)
    # Cards holding value are the cards of every band above zero.
    for r in (REGISTERED, UNREGISTERED):
        add(
            [("card_mix", (r, "holding value"))],
            [("balances_by_band", (r, b.label)) for b in BALANCE_BANDS if b.high > 0],
        )
    return tuple(eqs)
