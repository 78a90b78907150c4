"""The day's incidents, each planted at a known time on a known card or gate, so that the
night can be checked against them exactly:

- a registered card lost at lunch: a finder rides on it, the holder reports it, the issuer
  blocks and replaces it, the new card gets the old balance at the service desk, and the
  finder's next tap meets the hotlist (the chip is blocked at the gate);
- a rail tap-in gate cut off from the network from 07:30 (the one most journeys start at
  after that) that uploads only at night;
- a card pulled off a gate in the middle of its debit (the card committed, the gate never
  saw the answer): the holder taps again, the gate lets them through free and journals
  the torn certificate;
- a cloned card: a copy of one card's chip spends at one gate while the real card spends
  the same value at another, both with the same card counter.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter
from dataclasses import dataclass, field

from card_reader.card import VirtualCard
from card_reader.card_state import REGISTERED_MAX_BALANCE, CardState, MemoryStore
from card_reader.fares import LINES, GateMode
from card_reader.keys import BackOfficeKeys, personalize
from card_reader.transport import InProcessTransport
from simulation.day import HOUR, Day, tear_next_debit, upload
from simulation.people import Rider

MINUTE = 60


@dataclass
class Facts:
    """What was planted, for the summary and the tests."""

    lost_card_id: str = ""
    replacement_card_id: str = ""
    finder_taps: list[str] = field(default_factory=list)
    offline_gate: str = ""
    offline_certificates: int = 0
    torn_tap: list[str] = field(default_factory=list)
    clone_card_id: str = ""
    clone_counter: int = 0
    clone_taps: list[str] = field(default_factory=list)


def plant(day: Day, authentication_master: bytes, back_office: BackOfficeKeys) -> Facts:
    facts = Facts()
    commuters = [r for r in day.riders if r.commuter]
    registered = [r for r in commuters if r.registered] or commuters
    lost = registered[0]
    torn = next(r for r in commuters if r is not lost and r.legs[0].line.distance_based)
    cloned = next(r for r in commuters if r not in (lost, torn) and not r.registered)
    _lost_card(day, facts, lost, authentication_master, back_office)
    _offline_gate(day, facts)
    _torn_debit(day, facts, torn)
    _clone(day, facts, cloned)
    return facts


def _lost_card(
    day: Day, facts: Facts, rider: Rider, authentication_master: bytes, back_office: BackOfficeKeys
) -> None:
    tj = LINES["TJ-1"]
    finder = dataclasses.replace(
        rider, legs=(), tops_up=False
    )  # the old card, now in someone else's hand
    facts.lost_card_id = rider.card_id

    def finder_rides(station: int) -> None:
        day.quiesce()
        gate = day.city.gate(tj, tj.stations[station], GateMode.FLAT)
        facts.finder_taps.append(day.tap(finder, gate).code)

    def report_and_replace() -> None:
        day.quiesce()
        day.issuer.post(f"/v1/cards/{rider.card_id}/block", {"reason": "lost"}, "block-lost")
        serial = secrets.token_bytes(8)
        new = day.issuer.post(
            f"/v1/cards/{rider.card_id}/replace", {"serial": serial.hex()}, "replace-lost"
        )
        state = CardState(
            serial=serial,
            keys=personalize(serial, authentication_master, back_office),
            balance=0,
            max_balance=REGISTERED_MAX_BALANCE,
        )
        card = VirtualCard(state, MemoryStore())
        rider.serial, rider.card, rider.transport = serial, card, InProcessTransport(card)
        rider.card_id = facts.replacement_card_id = new["id"]
        day.refresh_hotlists = True
        credits = day.issuer.get("/v1/card-credits", card_id=new["id"])["data"]
        for credit in credits:
            day.load_card_credit(rider, credit["id"], credit["amount"])

    day.at(12 * HOUR + 30 * MINUTE, lambda: finder_rides(3))
    day.at(13 * HOUR, report_and_replace)
    day.at(15 * HOUR + 10 * MINUTE, lambda: finder_rides(8))


def _offline_gate(day: Day, facts: Facts) -> None:
    """The rail tap-in gate with the most journeys starting at it after the cut: each of
    its tap-ins travels on in the card to the exit gate, which forwards it, so the back
    office sees the gate's sequence numbers run past its last batch."""
    cut_at = 7 * HOUR + 30 * MINUTE
    boardings: Counter[tuple[str, int]] = Counter()
    for rider in day.riders:
        if not rider.legs:
            continue
        first, last = rider.legs[0], rider.legs[-1]
        for line, station, at in (
            (first.line, first.origin, rider.leave_s),
            (last.line, last.destination, rider.return_s),
        ):
            if line.distance_based and at > cut_at:
                boardings[(line.name, station.code)] += 1
    line_name, code = min(boardings, key=lambda k: (-boardings[k], k))
    busiest = LINES[line_name].station(code)
    assert busiest is not None
    device = day.city.gate(LINES[line_name], busiest, GateMode.ENTRY)
    facts.offline_gate = device.code

    def cut() -> None:
        # Its last upload goes out just before the link drops: the back office knows the
        # gate, and what it makes from now on is missing until the night.
        day.quiesce()
        if device.journal.stats().pending:
            upload(device)
        device.online = False
        facts.offline_certificates = device.journal.stats().certificates

    day.at(cut_at, cut)


def _torn_debit(day: Day, facts: Facts, rider: Rider) -> None:
    leg = rider.legs[0]
    gate = day.city.gate(leg.line, leg.origin, GateMode.ENTRY)
    exit_gate = day.city.gate(leg.line, leg.destination, GateMode.EXIT)

    def pulled() -> None:
        # A quick extra ride at midday: tap in, ride, and pull the card at the exit.
        day.quiesce()
        facts.torn_tap.append(day.tap(rider, gate).code)
        day.clock.now += 15 * MINUTE
        tear_next_debit(rider)
        facts.torn_tap.append(day.tap(rider, exit_gate).code)
        day.clock.now += 20  # the holder taps again
        facts.torn_tap.append(day.tap(rider, exit_gate).code)

    day.at(11 * HOUR, pulled)


def _clone(day: Day, facts: Facts, rider: Rider) -> None:
    tj = LINES["TJ-1"]
    facts.clone_card_id = rider.card_id

    def spend_twice() -> None:
        # The skimmer's copy: the same chip memory (keys, balance, counter) in another card.
        day.quiesce()
        copy = VirtualCard(rider.card.state, MemoryStore())
        clone = dataclasses.replace(
            rider, legs=(), tops_up=False, card=copy, transport=InProcessTransport(copy)
        )
        facts.clone_counter = rider.card.state.counter + 1
        monas = day.city.gate(tj, tj.stations[9], GateMode.FLAT)
        harmoni = day.city.gate(tj, tj.stations[10], GateMode.FLAT)
        facts.clone_taps.append(day.tap(clone, monas).code)
        facts.clone_taps.append(day.tap(rider, harmoni).code)

    day.at(14 * HOUR + 20 * MINUTE, spend_twice)
