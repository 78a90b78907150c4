"""Lines, stations and fares: what a tap costs, decided offline from the card alone.

Fares (2024-2025, shared/domain-facts.md):
- TransJakarta: Rp 3,500 flat; Rp 2,000 from 05:00 to 07:00 (Jakarta time).
- MRT Jakarta: by distance, Rp 3,000 to Rp 14,000.
- KRL Commuter Line: Rp 3,000 for the first 25 km, plus Rp 1,000 per further 10 km or part.
- LRT Jakarta: Rp 5,000 flat.
- JakLingko integration: within 180 minutes of its first leg, a journey across
  TransJakarta, MRT and LRT (not KRL) is charged at most Rp 10,000 in total. The first
  leg pays its own fare in full; each further leg in the window pays only what keeps the
  total at Rp 10,000, so nothing once the total has reached it.

Approximations, labelled as such:
- Station distances are approximate kilometre posts (to about 0.5 km), not the operators'
  official fare tables. End to end: MRT about 16 km, KRL Bogor line about 55 km.
- MRT's distance formula is JakartaOne's fit to the published range: Rp 3,000 plus
  Rp 1,000 per started 1.35 km beyond the first 1 km, at most Rp 14,000 (Lebak Bulus to
  Bundaran HI comes out at Rp 14,000, Lebak Bulus to Fatmawati at Rp 4,000).
- JakLingko's own tariff (Rp 2,500 + Rp 250 per km) is not applied: TransJakarta and LRT
  legs carry no distance. Each leg is charged its mode fare and the Rp 10,000 cap applies
  to the sum within the 180-minute window.

Rules for incomplete journeys (JakartaOne's, stated once here):
- Tap-in (MRT, KRL) charges nothing but needs at least the line's minimum fare on the card.
- A journey never tapped out is charged the maximum fare from its entry station, at the
  card's next tap anywhere (the journey record's `includes_unfinished_fare` flag says so).
- A tap-out without a tap-in on that line is charged the maximum fare from the exit station.
- Repeated taps are not charged twice: a tap-in at the station the card entered less than
  20 minutes ago, and a tap-out or a boarding repeated at the same station within
  2 minutes, open the gate without a debit. This is also how a tap torn by a card pulled
  too early is resolved at the next gate. (The cost: a card passed back over a barrier
  within those windows gets one person through free.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from card_reader.certificate import Certificate, Journey, JourneyAction, TransitMode

JAKARTA_UTC_OFFSET = 7 * 3600  # WIB, no daylight saving
INTEGRATION_WINDOW_SECONDS = 180 * 60
INTEGRATION_CAP = 10_000
INTEGRATED_MODES = frozenset({TransitMode.TRANSJAKARTA, TransitMode.MRT, TransitMode.LRT})
RE_ENTRY_WINDOW_SECONDS = 20 * 60
REPEAT_WINDOW_SECONDS = 2 * 60
CLOCK_SKEW_SECONDS = 5

TRANSJAKARTA_FARE = 3_500
TRANSJAKARTA_EARLY_FARE = 2_000  # 05:00 to 07:00
LRT_FARE = 5_000
MRT_MIN_FARE, MRT_MAX_FARE = 3_000, 14_000
KRL_BASE_FARE = 3_000


class GateMode(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    FLAT = "flat"


class FareConfigError(ValueError):
    """An unknown line or station, or a gate mode the line does not use."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class Station:
    code: int
    name: str
    line_code: int
    position_m: int  # approximate distance from the line's first station, in metres


@dataclass(frozen=True, slots=True)
class Line:
    code: int
    name: str
    mode: TransitMode
    stations: tuple[Station, ...]

    @property
    def distance_based(self) -> bool:
        return self.mode in (TransitMode.MRT, TransitMode.KRL)

    def station(self, code: int) -> Station | None:
        for station in self.stations:
            if station.code == code:
                return station
        return None


def _line(code: int, name: str, mode: TransitMode, stops: list[tuple[str, int]]) -> Line:
    stations = tuple(
        Station(code * 100 + index, station_name, code, position)
        for index, (station_name, position) in enumerate(stops, start=1)
    )
    return Line(code, name, mode, stations)


# Station codes are line code * 100 + position on the line (docs/card-protocol.md).
LINES: dict[str, Line] = {
    line.name: line
    for line in (
        _line(
            1,
            "TJ-1",
            TransitMode.TRANSJAKARTA,
            [
                ("Blok M", 0),
                ("Masjid Agung", 1_000),
                ("Bundaran Senayan", 2_200),
                ("GBK", 3_000),
                ("Polda Metro Jaya", 3_900),
                ("Dukuh Atas", 6_300),
                ("Bundaran HI", 7_200),
                ("Sarinah", 7_900),
                ("Bank Indonesia", 8_500),
                ("Monas", 9_200),
                ("Harmoni", 10_300),
                ("Kota", 13_000),
            ],
        ),
        _line(
            2,
            "MRT-NS",
            TransitMode.MRT,
            [
                ("Lebak Bulus", 0),
                ("Fatmawati", 1_900),
                ("Cipete Raya", 3_500),
                ("Haji Nawi", 4_600),
                ("Blok A", 5_800),
                ("Blok M", 7_000),
                ("ASEAN", 7_800),
                ("Senayan", 9_000),
                ("Istora", 10_000),
                ("Bendungan Hilir", 11_300),
                ("Setiabudi", 12_400),
                ("Dukuh Atas", 13_500),
                ("Bundaran HI", 15_700),
            ],
        ),
        _line(
            3,
            "KRL-BOGOR",
            TransitMode.KRL,
            [
                ("Jakarta Kota", 0),
                ("Juanda", 4_000),
                ("Gondangdia", 6_200),
                ("Cikini", 7_400),
                ("Manggarai", 9_500),
                ("Tebet", 11_000),
                ("Cawang", 12_600),
                ("Duren Kalibata", 14_300),
                ("Pasar Minggu", 17_800),
                ("Lenteng Agung", 21_600),
                ("Universitas Pancasila", 22_600),
                ("Depok", 29_500),
                ("Bogor", 54_800),
            ],
        ),
        # LRT Jakarta phase 1 (flat fare, so positions only order the stations).
        _line(
            4,
            "LRT-JAKARTA",
            TransitMode.LRT,
            [
                ("Pegangsaan Dua", 0),
                ("Boulevard Utara", 1_000),
                ("Boulevard Selatan", 2_000),
                ("Pulomas", 3_000),
                ("Equestrian", 4_000),
                ("Velodrome", 5_000),
            ],
        ),
    )
}
LINES_BY_CODE = {line.code: line for line in LINES.values()}


def find_station(line_name: str, station_name: str) -> tuple[Line, Station]:
    """The line and station named (case-insensitive)."""
    line = next((ln for ln in LINES.values() if ln.name.lower() == line_name.lower()), None)
    if line is None:
        raise FareConfigError("line_unknown", f"{line_name!r}; lines: {', '.join(LINES)}")
    for station in line.stations:
        if station.name.lower() == station_name.lower():
            return line, station
    names = ", ".join(s.name for s in line.stations)
    raise FareConfigError("station_unknown", f"{station_name!r} on {line.name}; stations: {names}")


def check_gate_mode(line: Line, mode: GateMode) -> None:
    if line.distance_based and mode is GateMode.FLAT:
        raise FareConfigError("gate_mode_invalid", f"{line.name} is charged by distance")
    if not line.distance_based and mode is not GateMode.FLAT:
        raise FareConfigError("gate_mode_invalid", f"{line.name} has a flat fare")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def jakarta_hour(timestamp: int) -> int:
    return ((timestamp + JAKARTA_UTC_OFFSET) // 3600) % 24


def flat_fare(line: Line, timestamp: int) -> int:
    if line.mode is TransitMode.TRANSJAKARTA:
        return TRANSJAKARTA_EARLY_FARE if 5 <= jakarta_hour(timestamp) < 7 else TRANSJAKARTA_FARE
    if line.mode is TransitMode.LRT:
        return LRT_FARE
    raise FareConfigError("gate_mode_invalid", f"{line.name} is charged by distance")


def distance_fare(line: Line, distance_m: int) -> int:
    if line.mode is TransitMode.MRT:
        steps = _ceil_div(max(0, distance_m - 1_000), 1_350)
        return min(MRT_MAX_FARE, MRT_MIN_FARE + 1_000 * steps)
    if line.mode is TransitMode.KRL:
        return KRL_BASE_FARE + 1_000 * _ceil_div(max(0, distance_m - 25_000), 10_000)
    raise FareConfigError("gate_mode_invalid", f"{line.name} has a flat fare")


def trip_fare(line: Line, entry: Station, exit_: Station) -> int:
    return distance_fare(line, abs(exit_.position_m - entry.position_m))


def minimum_fare(line: Line) -> int:
    return distance_fare(line, 0)


def maximum_fare_from(line: Line, station: Station) -> int:
    return max(trip_fare(line, station, other) for other in line.stations)


def unfinished_fare(journey: Journey) -> int:
    """What an open journey costs when it is never tapped out."""
    line = LINES_BY_CODE.get(journey.line)
    station = line.station(journey.entry_station) if line else None
    if line is None or station is None or not line.distance_based:
        # Written by a terminal that knows a line or station this one does not: charge
        # the highest single fare of any line rather than nothing.
        return MRT_MAX_FARE
    return maximum_fare_from(line, station)


class TapOutcome(StrEnum):
    CHARGE = "charge"  # debit `amount` and write `journey`, then open
    FREE = "free"  # open without a debit (a repeated tap)
    REFUSE = "refuse"  # keep the gate shut


@dataclass(frozen=True, slots=True)
class TapPlan:
    outcome: TapOutcome
    code: str  # ok, repeat_tap, insufficient_funds
    amount: int = 0
    fare: int = 0  # this tap's own fare after the integration cap
    unfinished: int = 0  # the fare of an earlier journey never tapped out
    journey: Journey | None = None


def _is_repeat(
    line: Line,
    station: Station,
    mode: GateMode,
    journey: Journey | None,
    last: Certificate | None,
    now: int,
) -> bool:
    if journey is None or journey.line != line.code:
        return False
    if mode is GateMode.ENTRY:
        age = now - journey.entry_time
        return (
            journey.action is JourneyAction.ENTRY
            and journey.entry_station == station.code
            and -CLOCK_SKEW_SECONDS <= age <= RE_ENTRY_WINDOW_SECONDS
        )
    if mode is GateMode.FLAT:
        age = now - journey.entry_time
        return (
            journey.action is JourneyAction.BOARD
            and journey.entry_station == station.code
            and -CLOCK_SKEW_SECONDS <= age <= REPEAT_WINDOW_SECONDS
        )
    if journey.action is not JourneyAction.EXIT or journey.exit_station != station.code:
        return False
    # The journey record has no exit time; the certificate that wrote it does.
    if last is None or last.journey != journey:
        return False
    return -CLOCK_SKEW_SECONDS <= now - last.timestamp <= REPEAT_WINDOW_SECONDS


def plan_tap(
    line: Line,
    station: Station,
    mode: GateMode,
    *,
    balance: int,
    journey: Journey | None,
    last: Certificate | None,
    now: int,
) -> TapPlan:
    """What this tap costs and what the card's journey record becomes."""
    if _is_repeat(line, station, mode, journey, last, now):
        return TapPlan(TapOutcome.FREE, "repeat_tap")
    open_journey = journey if journey and journey.action is JourneyAction.ENTRY else None
    closes = mode is GateMode.EXIT and open_journey is not None and open_journey.line == line.code
    entry_station = line.station(open_journey.entry_station) if closes and open_journey else None
    unfinished = unfinished_fare(open_journey) if open_journey and not closes else 0

    if mode is GateMode.FLAT:
        base = flat_fare(line, now)
    elif mode is GateMode.ENTRY:
        base = 0
    elif entry_station is not None:
        base = trip_fare(line, entry_station, station)
    else:
        base = maximum_fare_from(line, station)  # tap-out without a tap-in

    fare, chain_start, chain_paid = _integrate(line, mode, base, journey, open_journey, closes, now)
    amount = fare + unfinished
    needed = amount + (minimum_fare(line) if mode is GateMode.ENTRY else 0)
    if balance < needed:
        return TapPlan(TapOutcome.REFUSE, "insufficient_funds", amount, fare, unfinished)

    action = {
        GateMode.ENTRY: JourneyAction.ENTRY,
        GateMode.EXIT: JourneyAction.EXIT,
        GateMode.FLAT: JourneyAction.BOARD,
    }[mode]
    if mode is GateMode.EXIT:
        entry_code = entry_station.code if entry_station else 0
        entry_time = open_journey.entry_time if closes and open_journey else 0
        exit_code = station.code
    else:
        entry_code, entry_time, exit_code = station.code, now, 0
    new_journey = Journey(
        mode=line.mode,
        action=action,
        line=line.code,
        entry_station=entry_code,
        exit_station=exit_code,
        entry_time=entry_time,
        chain_start=chain_start,
        chain_paid=chain_paid,
        includes_unfinished_fare=unfinished > 0,
    )
    return TapPlan(TapOutcome.CHARGE, "ok", amount, fare, unfinished, new_journey)


def _integrate(
    line: Line,
    mode: GateMode,
    base: int,
    journey: Journey | None,
    open_journey: Journey | None,
    closes: bool,
    now: int,
) -> tuple[int, int, int]:
    """The JakLingko cap: (fare to charge, chain_start, chain_paid) after this tap."""
    previous_start = journey.chain_start if journey else 0
    previous_paid = journey.chain_paid if journey else 0
    if line.mode not in INTEGRATED_MODES:
        return base, previous_start, previous_paid  # KRL: outside, the window carries on
    active = previous_start > 0 and 0 <= now - previous_start <= INTEGRATION_WINDOW_SECONDS
    if active:
        fare = min(base, max(0, INTEGRATION_CAP - previous_paid))
        return fare, previous_start, previous_paid + fare
    if mode is GateMode.ENTRY:
        return base, 0, 0  # a tap-in opens no window: the journey's first leg is its exit
    # The first leg of a window pays its own fare in full (a long MRT ride costs more than
    # the cap); the window starts when that leg started.
    start = open_journey.entry_time if closes and open_journey else now
    return base, start, base
