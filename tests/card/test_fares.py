"""Fares: modes, distances, the integrated cap, and incomplete journeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader.certificate import Certificate, Journey, JourneyAction, TransactionKind
from card_reader.fares import (
    INTEGRATION_CAP,
    LINES,
    FareConfigError,
    GateMode,
    TapOutcome,
    TapPlan,
    check_gate_mode,
    distance_fare,
    find_station,
    plan_tap,
    trip_fare,
)

WIB = timedelta(hours=7)


def at(hour: int, minute: int = 0) -> int:
    """A Unix time on 2 January 2025 at hour:minute Jakarta time."""
    return int((datetime(2025, 1, 2, hour, minute, tzinfo=UTC) - WIB).timestamp())


class Card:
    """The slice of a card the fare rules read: balance, journey and last certificate."""

    def __init__(self, balance: int = 100_000) -> None:
        self.balance = balance
        self.journey: Journey | None = None
        self.last: Certificate | None = None
        self.counter = 0

    def tap(self, line_name: str, station_name: str, mode: GateMode, now: int) -> TapPlan:
        line, station = find_station(line_name, station_name)
        plan = plan_tap(
            line, station, mode, balance=self.balance, journey=self.journey, last=self.last, now=now
        )
        if plan.outcome is TapOutcome.CHARGE:
            assert plan.journey is not None
            self.balance -= plan.amount
            self.journey = plan.journey
            self.counter += 1
            self.last = Certificate(
                bytes(8),
                self.counter,
                TransactionKind.DEBIT,
                plan.amount,
                self.balance,
                "G-1",
                self.counter,
                now,
                plan.journey,
                bytes(16),
            )
        return plan


def test_transjakarta_flat_and_early_morning() -> None:
    card = Card()
    assert card.tap("TJ-1", "Blok M", GateMode.FLAT, at(8)).amount == 3_500
    assert Card().tap("TJ-1", "Blok M", GateMode.FLAT, at(5, 0)).amount == 2_000
    assert Card().tap("TJ-1", "Kota", GateMode.FLAT, at(6, 59)).amount == 2_000
    assert Card().tap("TJ-1", "Kota", GateMode.FLAT, at(7, 0)).amount == 3_500
    assert Card().tap("TJ-1", "Kota", GateMode.FLAT, at(4, 59)).amount == 3_500


def test_lrt_is_flat() -> None:
    assert Card().tap("LRT-JAKARTA", "Velodrome", GateMode.FLAT, at(9)).amount == 5_000


def test_mrt_by_distance_between_3000_and_14000() -> None:
    mrt = LINES["MRT-NS"]
    by_name = {s.name: s for s in mrt.stations}
    assert trip_fare(mrt, by_name["Lebak Bulus"], by_name["Bundaran HI"]) == 14_000
    assert trip_fare(mrt, by_name["Lebak Bulus"], by_name["Fatmawati"]) == 4_000
    assert trip_fare(mrt, by_name["Blok M"], by_name["Blok M"]) == 3_000
    fares = [distance_fare(mrt, d) for d in range(0, 16_000, 100)]
    assert fares == sorted(fares) and min(fares) == 3_000 and max(fares) == 14_000


@pytest.mark.parametrize(
    ("distance", "fare"),
    [
        (0, 3_000),
        (25_000, 3_000),
        (25_001, 4_000),
        (35_000, 4_000),
        (35_001, 5_000),
        (54_800, 6_000),
    ],
)
def test_krl_first_25_km_then_per_10_km(distance: int, fare: int) -> None:
    assert distance_fare(LINES["KRL-BOGOR"], distance) == fare


def test_rail_entry_then_exit() -> None:
    card = Card(balance=20_000)
    entry = card.tap("KRL-BOGOR", "Jakarta Kota", GateMode.ENTRY, at(8))
    assert (entry.outcome, entry.amount) == (TapOutcome.CHARGE, 0)
    assert entry.journey is not None and entry.journey.action is JourneyAction.ENTRY
    exit_ = card.tap("KRL-BOGOR", "Bogor", GateMode.EXIT, at(9, 30))
    assert exit_.amount == 6_000 and card.balance == 14_000
    assert exit_.journey is not None
    assert (exit_.journey.entry_station, exit_.journey.exit_station) == (301, 313)
    assert exit_.journey.entry_time == at(8)


def test_rail_entry_needs_the_minimum_fare() -> None:
    card = Card(balance=2_999)
    plan = card.tap("MRT-NS", "Blok M", GateMode.ENTRY, at(8))
    assert (plan.outcome, plan.code) == (TapOutcome.REFUSE, "insufficient_funds")


def test_missing_tap_out_is_charged_at_the_next_tap() -> None:
    card = Card()
    card.tap("MRT-NS", "Lebak Bulus", GateMode.ENTRY, at(8))
    # Next morning the card enters again without ever having left.
    plan = card.tap("MRT-NS", "Lebak Bulus", GateMode.ENTRY, at(8) + 86_400)
    assert plan.amount == 14_000 and plan.unfinished == 14_000
    assert plan.journey is not None and plan.journey.includes_unfinished_fare
    # On a bus instead: the bus fare plus the unfinished rail journey.
    card2 = Card()
    card2.tap("KRL-BOGOR", "Manggarai", GateMode.ENTRY, at(8))
    plan2 = card2.tap("TJ-1", "Kota", GateMode.FLAT, at(12))
    # Manggarai to Bogor is 45.3 km: Rp 3,000 + 3 started 10 km beyond the first 25.
    assert (plan2.fare, plan2.unfinished) == (3_500, 6_000)


def test_tap_out_without_tap_in_pays_the_maximum_from_there() -> None:
    plan = Card().tap("MRT-NS", "Blok M", GateMode.EXIT, at(8))
    assert plan.amount == 9_000  # Blok M to Bundaran HI (8.7 km), the farther end
    assert plan.journey is not None and plan.journey.entry_station == 0


def test_repeated_taps_are_free_within_their_windows() -> None:
    card = Card()
    card.tap("MRT-NS", "Senayan", GateMode.ENTRY, at(8))
    assert card.tap("MRT-NS", "Senayan", GateMode.ENTRY, at(8, 15)).outcome is TapOutcome.FREE
    card.tap("MRT-NS", "Dukuh Atas", GateMode.EXIT, at(8, 30))
    assert card.tap("MRT-NS", "Dukuh Atas", GateMode.EXIT, at(8, 31)).code == "repeat_tap"
    late = card.tap("MRT-NS", "Dukuh Atas", GateMode.EXIT, at(8, 40))
    # No tap-in: the maximum from Dukuh Atas is Rp 13,000, but the 180-minute window has
    # Rp 6,000 paid already (Senayan to Dukuh Atas), so the cap leaves Rp 4,000.
    assert (late.outcome, late.fare, late.amount) == (TapOutcome.CHARGE, 4_000, 4_000)
    bus = Card()
    bus.tap("TJ-1", "GBK", GateMode.FLAT, at(10))
    assert bus.tap("TJ-1", "GBK", GateMode.FLAT, at(10, 1)).outcome is TapOutcome.FREE
    assert bus.tap("TJ-1", "GBK", GateMode.FLAT, at(10, 3)).amount == 3_500


def test_jaklingko_cap_within_180_minutes() -> None:
    card = Card()
    assert card.tap("TJ-1", "Blok M", GateMode.FLAT, at(8)).amount == 3_500
    card.tap("MRT-NS", "Lebak Bulus", GateMode.ENTRY, at(8, 30))
    exit_ = card.tap("MRT-NS", "Bundaran HI", GateMode.EXIT, at(9, 10))
    assert (exit_.amount, exit_.journey.chain_paid) == (6_500, 10_000)  # type: ignore[union-attr]
    assert card.tap("LRT-JAKARTA", "Velodrome", GateMode.FLAT, at(10, 30)).amount == 0
    assert card.tap("TJ-1", "Kota", GateMode.FLAT, at(11, 1)).amount == 3_500  # window over


def test_krl_is_outside_the_cap_but_does_not_break_the_window() -> None:
    card = Card()
    card.tap("TJ-1", "Monas", GateMode.FLAT, at(8))
    card.tap("KRL-BOGOR", "Juanda", GateMode.ENTRY, at(8, 20))
    assert card.tap("KRL-BOGOR", "Depok", GateMode.EXIT, at(9)).amount == 4_000  # 25.5 km
    assert card.tap("TJ-1", "Kota", GateMode.FLAT, at(10)).amount == 3_500
    card.tap("MRT-NS", "Blok M", GateMode.ENTRY, at(10, 20))
    assert card.tap("MRT-NS", "Bundaran HI", GateMode.EXIT, at(10, 50)).amount == 3_000


def test_config_errors_are_specific() -> None:
    with pytest.raises(FareConfigError) as info:
        find_station("MRT-NS", "Atlantis")
    assert info.value.code == "station_unknown"
    with pytest.raises(FareConfigError) as info:
        find_station("Monorail", "Blok M")
    assert info.value.code == "line_unknown"
    with pytest.raises(FareConfigError) as info:
        check_gate_mode(LINES["MRT-NS"], GateMode.FLAT)
    assert info.value.code == "gate_mode_invalid"
    with pytest.raises(FareConfigError):
        check_gate_mode(LINES["TJ-1"], GateMode.ENTRY)


taps = st.tuples(
    st.sampled_from(
        [
            (name, mode)
            for name, line in LINES.items()
            for mode in (
                (GateMode.ENTRY, GateMode.EXIT) if line.distance_based else (GateMode.FLAT,)
            )
        ]
    ),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=1, max_value=120),  # minutes since the previous tap
)


@settings(max_examples=200)
@given(st.lists(taps, min_size=1, max_size=12))
def test_any_day_of_taps_respects_balance_and_cap(day: list) -> None:  # type: ignore[type-arg]
    card = Card(balance=60_000)
    now = at(6)
    chains: dict[int, int] = {}
    first_legs: dict[int, int] = {}
    for (line_name, mode), index, minutes in day:
        now += minutes * 60
        line = LINES[line_name]
        station = line.stations[min(index, len(line.stations) - 1)]
        before = card.balance
        plan = card.tap(line_name, station.name, mode, now)
        assert plan.amount >= 0 and plan.fare >= 0 and plan.unfinished >= 0
        if plan.outcome is TapOutcome.CHARGE:
            assert plan.amount == plan.fare + plan.unfinished <= before
            assert card.balance == before - plan.amount
            journey = plan.journey
            assert journey is not None
            if line.mode.value != "krl" and journey.chain_start:
                first_legs.setdefault(journey.chain_start, plan.fare)
                chains[journey.chain_start] = chains.get(journey.chain_start, 0) + plan.fare
                assert journey.chain_paid == chains[journey.chain_start]
        else:
            assert card.balance == before
    assert all(paid <= max(INTEGRATION_CAP, first_legs[start]) for start, paid in chains.items())


def test_a_long_first_leg_pays_in_full_and_the_window_then_rides_free() -> None:
    card = Card()
    card.tap("MRT-NS", "Lebak Bulus", GateMode.ENTRY, at(7))
    assert card.tap("MRT-NS", "Bundaran HI", GateMode.EXIT, at(7, 35)).amount == 14_000
    assert card.tap("TJ-1", "Bundaran HI", GateMode.FLAT, at(7, 45)).amount == 0
    assert card.tap("TJ-1", "Kota", GateMode.FLAT, at(10, 36)).amount == 3_500  # 181 minutes
