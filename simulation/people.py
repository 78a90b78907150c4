"""The cardholders: a synthetic population, deterministic for a seed, each with a virtual
JakartaOne card (`card_reader.card.VirtualCard`, personalized with the run's keys).

Real: where people live (the 2020 census population of each kota), which lines exist.
Approximations, labelled: the share of registered cards (30%), of commuters (75%) and
their line (TransJakarta 45%, KRL 38%, MRT 12%, LRT 5%: the published daily ridership
ranks, with MRT and LRT raised so that a small demo still rides them), the departure
times (a morning peak around 07:00 and an evening peak around 17:30), first loads
(Rp 50,000 to Rp 300,000) and how often people shop.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from card_reader.card import VirtualCard
from card_reader.card_state import (
    REGISTERED_MAX_BALANCE,
    UNREGISTERED_MAX_BALANCE,
    CardState,
    MemoryStore,
)
from card_reader.fares import LINES, Line, Station
from card_reader.keys import BackOfficeKeys, personalize
from card_reader.transport import InProcessTransport
from simulation.geography import KECAMATAN, KOTA_POPULATION, STATION_PLACE

REGISTERED_SHARE = 0.30
COMMUTER_SHARE = 0.75
LINE_SHARES = {"TJ-1": 0.45, "KRL-BOGOR": 0.38, "MRT-NS": 0.12, "LRT-JAKARTA": 0.05}
INTEGRATED_SHARE = 0.15  # commuters who ride MRT then TransJakarta (the JakLingko cap)
FIRST_LOADS = (50_000, 100_000, 150_000, 200_000, 300_000)
FIRST_LOAD_WEIGHTS = (0.20, 0.35, 0.20, 0.15, 0.10)


class SimClock:
    """The simulated time (Unix seconds) that gates and terminals read. A thread working on
    its own card may hold its own time (`local`)."""

    def __init__(self, now: int) -> None:
        self.now = now
        self._local = threading.local()

    def __call__(self) -> float:
        return float(getattr(self._local, "now", self.now))

    def local(self, now: int | None) -> None:
        """Hold `now` in this thread (None: follow the shared time again)."""
        if now is None:
            self._local.__dict__.pop("now", None)
        else:
            self._local.now = now


@dataclass(frozen=True, slots=True)
class Leg:
    line: Line
    origin: Station
    destination: Station


@dataclass
class Rider:
    index: int
    serial: bytes
    registered: bool
    kota: str
    kecamatan: str
    first_load: int
    legs: tuple[Leg, ...]  # the morning journey; the evening one is its reverse
    leave_s: int  # seconds after midnight WIB: morning departure
    return_s: int
    purchases: int
    card: VirtualCard
    transport: InProcessTransport
    card_id: str = ""
    tops_up: bool = True  # a holder tops up when low; a finder or a cloner never does

    @property
    def commuter(self) -> bool:
        return bool(self.legs)


def _station_of(line: Line, rng: random.Random, avoid: Station | None = None) -> Station:
    choices = [s for s in line.stations if s != avoid]
    return rng.choice(choices)


def _journey(rng: random.Random) -> tuple[Leg, ...]:
    if rng.random() < INTEGRATED_SHARE:
        mrt, tj = LINES["MRT-NS"], LINES["TJ-1"]
        # MRT from the south to Blok M, then the BRT north along Koridor 1.
        origin = rng.choice(mrt.stations[:5])
        blok_m = next(s for s in mrt.stations if s.name == "Blok M")
        tj_blok_m = tj.stations[0]
        return (Leg(mrt, origin, blok_m), Leg(tj, tj_blok_m, _station_of(tj, rng, tj_blok_m)))
    line = LINES[rng.choices(list(LINE_SHARES), list(LINE_SHARES.values()))[0]]
    origin = _station_of(line, rng)
    return (Leg(line, origin, _station_of(line, rng, origin)),)


def _clock_time(rng: random.Random, mean_h: float, sd_h: float, low_h: float, high_h: float) -> int:
    hours = min(high_h, max(low_h, rng.gauss(mean_h, sd_h)))
    return int(hours * 3600)


def make_population(
    count: int,
    rng: random.Random,
    authentication_master: bytes,
    back_office: BackOfficeKeys,
) -> list[Rider]:
    kota_names = list(KOTA_POPULATION)
    weights = list(KOTA_POPULATION.values())
    riders = []
    for index in range(count):
        serial = rng.getrandbits(64).to_bytes(8, "big")
        registered = rng.random() < REGISTERED_SHARE
        legs = _journey(rng) if rng.random() < COMMUTER_SHARE else ()
        if legs:
            kota, kecamatan = STATION_PLACE[legs[0].origin.name]  # may be outside DKI
        else:
            kota = rng.choices(kota_names, weights)[0]
            kecamatan = rng.choice(KECAMATAN[kota])
        state = CardState(
            serial=serial,
            keys=personalize(serial, authentication_master, back_office),
            balance=0,
            max_balance=REGISTERED_MAX_BALANCE if registered else UNREGISTERED_MAX_BALANCE,
        )
        card = VirtualCard(state, MemoryStore())
        riders.append(
            Rider(
                index=index,
                serial=serial,
                registered=registered,
                kota=kota,
                kecamatan=kecamatan,
                first_load=rng.choices(FIRST_LOADS, FIRST_LOAD_WEIGHTS)[0],
                legs=legs,
                leave_s=_clock_time(rng, 7.0, 0.8, 5.0, 10.5),
                return_s=_clock_time(rng, 17.5, 1.0, 15.0, 21.5),
                purchases=rng.choices((0, 1, 2, 3), (0.35, 0.40, 0.18, 0.07))[0],
                card=card,
                transport=InProcessTransport(card),
            )
        )
    return riders
