"""From the journey record a gate wrote on the card to the release's transit fields.

A transit tap's certificate carries the journey record (card_reader.certificate.Journey):
mode, action, a line code and station codes in the numbering of docs/card-protocol.md
("Lines and stations"). `transit_fields` turns it into the transit columns of
inputs.EVENTS_SCHEMA:

- mode: TJ, MRT, KRL or LRT; tap: entry, exit, or flat (a boarding at a flat-fare gate).
- line, station: names in the release's network (`geography`). A card line is matched to
  the network line of the same mode with the same stations, so both lists stay the one
  place their names are written. A line code the fares module does not know, or whose
  mode differs from the record's, is passed on as the gate's onboarded line and station
  (terminals.line, terminals.station); the release counts names it does not know under
  (other).
- entry_station and distance_m, on a rail exit that closes a journey: the station tapped in
  at, and the distance between the two stations on the fare tables (card_reader.fares).
- fare_capped: the JakLingko cap reduced this tap's own fare, that is the fare the gate
  charged for this ride is below the fare the tables give for it. The amount of a tap
  flagged `includes_unfinished_fare` also charges an earlier journey never tapped out; its
  share is the maximum fare from that journey's entry station, found in the card's
  previous journey record (`previous`). Without that record (it was on another day) the
  tap counts as not capped: the table can only under-count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from card_reader.certificate import Journey, JourneyAction, TransitMode
from card_reader.fares import (
    INTEGRATED_MODES,
    LINES_BY_CODE,
    flat_fare,
    maximum_fare_from,
    trip_fare,
    unfinished_fare,
)
from card_reader.fares import Line as CardLine
from reconciliation.analytics.geography import Network

MODE_KEYS = {
    TransitMode.TRANSJAKARTA: "TJ",
    TransitMode.MRT: "MRT",
    TransitMode.KRL: "KRL",
    TransitMode.LRT: "LRT",
}
TAP_KEYS = {JourneyAction.ENTRY: "entry", JourneyAction.EXIT: "exit", JourneyAction.BOARD: "flat"}


@dataclass(frozen=True, slots=True)
class TransitFields:
    mode: str
    tap: str
    line: str | None
    station: str | None
    entry_station: str | None
    distance_m: int | None
    fare_capped: bool


def network_line_names(network: Network) -> dict[int, str]:
    """Card line code -> the name of the network line with the same mode and stations
    (computed once per release and passed to `transit_fields`)."""
    names: dict[int, str] = {}
    for code, card_line in LINES_BY_CODE.items():
        stations = tuple(s.name for s in card_line.stations)
        for line in network.lines:
            if line.mode == MODE_KEYS[card_line.mode] and (
                tuple(s.name for s in line.stations) == stations
            ):
                names[code] = line.name
    return names


def transit_fields(
    journey: Journey,
    amount: int,
    timestamp: int,
    previous: Journey | None,
    line_names: Mapping[int, str],
    terminal_line: str | None,
    terminal_station: str | None,
) -> TransitFields:
    """The transit columns of one tap (module docstring); `timestamp` in Unix seconds."""
    mode = MODE_KEYS[journey.mode]
    tap = TAP_KEYS[journey.action]
    card_line = LINES_BY_CODE.get(journey.line)
    if card_line is None or card_line.mode is not journey.mode:
        return TransitFields(mode, tap, terminal_line, terminal_station, None, None, False)
    here_code = journey.exit_station if tap == "exit" else journey.entry_station
    here = card_line.station(here_code)
    entry = card_line.station(journey.entry_station) if tap == "exit" else None
    line = line_names.get(card_line.code, card_line.name)
    distance = abs(here.position_m - entry.position_m) if here and entry else None
    return TransitFields(
        mode,
        tap,
        line,
        here.name if here else terminal_station,
        entry.name if entry else None,
        distance,
        _capped(card_line, journey, amount, timestamp, previous),
    )


def _capped(
    line: CardLine, journey: Journey, amount: int, timestamp: int, previous: Journey | None
) -> bool:
    """Whether the integrated-fare cap charged this ride less than its tariff fare."""
    if line.mode not in INTEGRATED_MODES or journey.action is JourneyAction.ENTRY:
        return False
    own = amount
    if journey.includes_unfinished_fare:
        if previous is None or previous.action is not JourneyAction.ENTRY:
            return False
        own -= unfinished_fare(previous)
    if journey.action is JourneyAction.BOARD:
        tariff = flat_fare(line, timestamp)
    else:
        here = line.station(journey.exit_station)
        entry = line.station(journey.entry_station)
        if here is None:
            return False
        tariff = trip_fare(line, entry, here) if entry else maximum_fare_from(line, here)
    return own < tariff
