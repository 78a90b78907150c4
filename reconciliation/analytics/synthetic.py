"""A deterministic synthetic business day for tests, the demo and benchmarks.

`synthetic_day(day, cards=2000, seed=0)` gives inputs in the release's contract
(inputs.EVENTS_SCHEMA, inputs.CARDS_SCHEMA, a Seal) built from the domain facts: the real
lines and stations of the reference network, the kota and kecamatan of DKI Jakarta, real
MCCs, the fare rules of 2024-2025 and morning and evening peaks. The same (day, cards, seed)
always gives the same rows.

Approximations, labelled: the population mix (commuters, occasional riders, shoppers), the
travel times, ticket sizes per MCC, MRT fares (Rp 2,000 + Rp 1,000 per station, between
Rp 3,000 and Rp 14,000) and the integrated-fare cap applied per leg (a fully covered leg
still pays Rp 500, since every recorded transaction moves money).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from reconciliation.analytics.geography import (
    KECAMATAN_BY_KOTA,
    REFERENCE_NETWORK,
    Line,
    Station,
)
from reconciliation.analytics.inputs import CARDS_SCHEMA, EVENTS_SCHEMA, WIB_OFFSET_US, Seal

# MCC: (weight among purchases, median ticket in rupiah)
MCC_PROFILE: dict[int, tuple[int, int]] = {
    5499: (25, 25_000),
    5411: (15, 60_000),
    5814: (15, 40_000),
    5812: (12, 75_000),
    5912: (6, 55_000),
    5311: (5, 200_000),
    5541: (5, 120_000),
    4121: (3, 45_000),
    4814: (3, 50_000),
    7523: (3, 5_000),
    4784: (2, 15_000),
    4900: (2, 150_000),
    7832: (2, 50_000),
    8062: (1, 250_000),
    9399: (1, 30_000),
}
OPERATOR_MCC = {"TJ": 4131, "MRT": 4111, "KRL": 4112, "LRT": 4111}
CAP_MODES = ("TJ", "MRT", "LRT")
CAP_IDR = 10_000


@dataclass(frozen=True, slots=True)
class SyntheticDay:
    day: dt.date
    events: pa.Table
    cards: pa.Table
    seal: Seal


@dataclass
class _Card:
    card_id: str
    registered: bool
    balance: int


def fare(line: Line, a: Station, b: Station, sod: int) -> int:
    """The fare of a ride from a to b on line, leaving at sod (seconds after midnight)."""
    if line.mode == "TJ":
        return 2_000 if 5 * 3600 <= sod < 7 * 3600 else 3_500
    if line.mode == "LRT":
        return 5_000
    if line.mode == "KRL":
        km = abs(b.km - a.km)
        return 3_000 + 1_000 * max(0, math.ceil((km - 25) / 10))
    stops = abs(line.stations.index(b) - line.stations.index(a))
    return min(14_000, max(3_000, 2_000 + 1_000 * stops))


def synthetic_day(day: dt.date, cards: int = 2000, seed: int = 0) -> SyntheticDay:
    # Synthetic test data, not security: a seeded, reproducible generator is the point.
    rng = random.Random(f"jakartaone-synthetic|{day.isoformat()}|{cards}|{seed}")  # noqa: S311
    gen = _Generator(day, rng, seed)
    population = [
        _Card(f"card-{seed}-{i:07d}", rng.random() < 0.35, rng.choice([0, 0, 20_000, 50_000]))
        for i in range(cards)
    ]
    for card in population:
        gen.card_day(card)
    return gen.finish(population)


def events_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """An events table from dicts (missing optional columns are null)."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in EVENTS_SCHEMA}
    cols["fare_capped"] = [bool(v) for v in cols["fare_capped"]]
    return pa.table(
        {
            name: pa.array(values, type=EVENTS_SCHEMA.field(name).type)
            for name, values in cols.items()
        },
        schema=EVENTS_SCHEMA,
    )


def cards_table(rows: Sequence[tuple[str, bool, int]]) -> pa.Table:
    return pa.table(
        {
            "card_id": pa.array([r[0] for r in rows], pa.string()),
            "card_registered": pa.array([r[1] for r in rows], pa.bool_()),
            "balance": pa.array([r[2] for r in rows], pa.int64()),
        },
        schema=CARDS_SCHEMA,
    )


def ts_of(day: dt.date, sod: int) -> dt.datetime:
    """The UTC instant of `sod` seconds after midnight WIB on `day`."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return midnight + dt.timedelta(microseconds=sod * 1_000_000 - WIB_OFFSET_US)


class _Generator:
    def __init__(self, day: dt.date, rng: random.Random, seed: int) -> None:
        self.day, self.rng, self.seed = day, rng, seed
        self.rows: list[dict[str, Any]] = []
        self.lines = REFERENCE_NETWORK.lines
        kecamatans = [(k, kc) for k, kcs in KECAMATAN_BY_KOTA.items() for kc in kcs]
        station_places = [(s.kota, s.kecamatan) for ln in self.lines for s in ln.stations]
        self.merchants: list[tuple[str, int, str, str]] = []
        mccs = list(MCC_PROFILE)
        weights = [MCC_PROFILE[m][0] for m in mccs]
        n_merchants = 400
        for i in range(n_merchants):
            # Most merchants sit near stations (busy districts); the rest anywhere in DKI.
            kota, kec = rng.choice(station_places if rng.random() < 0.6 else kecamatans)
            self.merchants.append((f"merchant-{i:05d}", rng.choices(mccs, weights)[0], kota, kec))

    def emit(self, card: _Card, sod: int, kind: str, amount: int, **fields: Any) -> None:
        if kind in ("load", "refund"):
            card.balance += amount
        else:
            card.balance -= amount
        self.rows.append(
            {
                "card_id": card.card_id,
                "card_registered": card.registered,
                "sod": sod,
                "kind": kind,
                "amount": amount,
                "balance_after": card.balance,
                "fare_capped": False,
                **fields,
            }
        )

    def ensure(self, card: _Card, need: int, sod: int) -> None:
        """Top the card up before it would run short (agents near stations, or the bank)."""
        if card.balance >= need:
            return
        limit = 20_000_000 if card.registered else 2_000_000
        amount = min(self.rng.choice([50_000, 100_000, 100_000, 200_000]), limit - card.balance)
        channel = "bank_transfer" if self.rng.random() < 0.3 else "agent"
        kota, kec = self.rng.choice([(m[2], m[3]) for m in self.merchants[:40]])
        self.emit(
            card,
            max(60, sod - self.rng.randint(120, 1800)),
            "load",
            max(amount, need - card.balance),
            load_channel=channel,
            merchant_id="agent-network" if channel == "agent" else None,
            kota=kota if channel == "agent" else None,
            kecamatan=kec if channel == "agent" else None,
        )

    def ride(self, card: _Card, line: Line, a: Station, b: Station, sod: int, paid: int) -> int:
        """One ride; returns the new sod and the fare paid. The cap applies to `paid`."""
        normal = fare(line, a, b, sod)
        capped = False
        if line.mode in CAP_MODES and paid and paid + normal > CAP_IDR:
            normal, capped = max(500, CAP_IDR - paid), True
        self.ensure(card, normal + 20_000, sod)
        common = {
            "merchant_id": f"operator-{line.mode}",
            "mcc": OPERATOR_MCC[line.mode],
            "mode": line.mode,
            "line": line.name,
        }
        minutes = 4 + abs(b.km - a.km) / 30 * 60
        if line.mode == "TJ":
            self.emit(
                card,
                sod,
                "transit",
                normal,
                station=a.name,
                tap="flat",
                kota=a.kota,
                kecamatan=a.kecamatan,
                fare_capped=capped,
                **common,
            )
            return sod + int(minutes * 60 * 1.4)
        self.emit(
            card,
            sod,
            "transit",
            0,
            station=a.name,
            tap="entry",
            kota=a.kota,
            kecamatan=a.kecamatan,
            **common,
        )
        end = sod + int(minutes * 60)
        if self.rng.random() < 0.01 or end >= 86_340:
            return end  # no tap-out (the gate rules charge it later)
        self.emit(
            card,
            end,
            "transit",
            normal,
            station=b.name,
            tap="exit",
            kota=b.kota,
            kecamatan=b.kecamatan,
            entry_station=a.name,
            distance_m=round(abs(b.km - a.km) * 1000),
            fare_capped=capped,
            **common,
        )
        return end

    def journey(self, card: _Card, legs: list[tuple[Line, Station, Station]], sod: int) -> int:
        paid = 0
        start = sod
        for line, a, b in legs:
            before = card.balance
            sod = self.ride(card, line, a, b, sod, paid if sod - start < 180 * 60 else 0)
            paid += max(0, before - card.balance) if line.mode in CAP_MODES else 0
            sod += self.rng.randint(180, 600)  # walk to the next platform
        return sod

    def commute_legs(self) -> list[tuple[Line, Station, Station]]:
        rng = self.rng
        mrt, tj, krl, lrt = self.lines
        pattern = rng.choices(
            ["krl", "tj", "mrt", "mrt+tj", "krl+tj", "lrt"], [30, 25, 20, 10, 10, 5]
        )[0]

        def pair(line: Line) -> tuple[Line, Station, Station]:
            a, b = rng.sample(list(line.stations), 2)
            return (line, a, b)

        if pattern == "mrt+tj":
            a = rng.choice(mrt.stations[:6])
            da_mrt = next(s for s in mrt.stations if s.name == "Dukuh Atas")
            da_tj = next(s for s in tj.stations if s.name == "Dukuh Atas")
            b = rng.choice(tj.stations[7:])
            return [(mrt, a, da_mrt), (tj, da_tj, b)]
        if pattern == "krl+tj":
            a = rng.choice(krl.stations[5:])
            juanda = next(s for s in krl.stations if s.name == "Juanda")
            harmoni = next(s for s in tj.stations if s.name == "Harmoni")
            b = rng.choice(tj.stations[:10])
            return [(krl, a, juanda), (tj, harmoni, b)]
        return [pair({"krl": krl, "tj": tj, "mrt": mrt, "lrt": lrt}[pattern])]

    def purchase(self, card: _Card, near: tuple[str, str] | None) -> None:
        rng = self.rng
        candidates = [m for m in self.merchants if near and (m[2], m[3]) == near]
        merchant_id, mcc, kota, kec = rng.choice(candidates or self.merchants)
        peak = rng.choices([(8, 0.6), (12.5, 0.7), (19, 1.2), (15, 3.5)], [2, 3, 3, 2])[0]
        sod = int(min(max(rng.gauss(peak[0], peak[1]) * 3600, 6 * 3600), 22.5 * 3600))
        median = MCC_PROFILE[mcc][1]
        amount = max(1_000, int(median * math.exp(rng.gauss(0, 0.5)) / 500) * 500)
        self.ensure(card, amount, sod)
        common = {"merchant_id": merchant_id, "mcc": mcc, "kota": kota, "kecamatan": kec}
        self.emit(card, sod, "purchase", amount, **common)
        if rng.random() < 0.01:
            self.emit(card, min(sod + 3600, 86_000), "refund", amount // 2 or 1, **common)

    def card_day(self, card: _Card) -> None:
        rng = self.rng
        role = rng.random()
        near: tuple[str, str] | None = None
        if role < 0.55:  # commuter: out in the morning peak, back in the evening
            legs = self.commute_legs()
            out = int(rng.gauss(7.3, 0.8) * 3600)
            self.journey(card, legs, min(max(out, 5 * 3600), 10 * 3600))
            back = [(ln, b, a) for ln, a, b in reversed(legs)]
            ret = int(rng.gauss(17.8, 1.0) * 3600)
            self.journey(card, back, min(max(ret, 15 * 3600), 21 * 3600))
            near = (legs[-1][2].kota, legs[-1][2].kecamatan)
        elif role < 0.8:  # occasional rider
            line = rng.choice(self.lines)
            a, b = rng.sample(list(line.stations), 2)
            self.journey(card, [(line, a, b)], int(rng.uniform(9, 20) * 3600))
            near = (b.kota, b.kecamatan)
        for _ in range(rng.choices([0, 1, 2, 3], [30, 40, 20, 10])[0]):
            self.purchase(card, near if rng.random() < 0.5 else None)
        if rng.random() < 0.02:
            self.emit(card, int(rng.uniform(8, 20) * 3600), "load", 25_000, load_channel="refund")

    def finish(self, population: list[_Card]) -> SyntheticDay:
        # The generator emits rides in time order but purchases and loads out of order;
        # recompute each card's balance chain in time order, opening the day with enough
        # value that it never goes below zero.
        rows = sorted(self.rows, key=lambda r: (r["sod"], r["card_id"], r["kind"]))
        low: dict[str, int] = {c.card_id: 0 for c in population}
        level: dict[str, int] = {c.card_id: 0 for c in population}
        for r in rows:
            level[r["card_id"]] += r["amount"] if r["kind"] in ("load", "refund") else -r["amount"]
            low[r["card_id"]] = min(low[r["card_id"]], level[r["card_id"]])
        start = {c.card_id: max(-low[c.card_id], c.balance - level[c.card_id]) for c in population}
        running = dict(start)
        out: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            delta = r["amount"] if r["kind"] in ("load", "refund") else -r["amount"]
            running[r["card_id"]] += delta
            sod = r.pop("sod")
            out.append(
                {
                    **r,
                    "event_id": f"ev-{self.day:%Y%m%d}-{self.seed}-{i:08d}",
                    "ts": ts_of(self.day, sod),
                    "balance_after": running[r["card_id"]],
                }
            )
        cards = cards_table([(c.card_id, c.registered, running[c.card_id]) for c in population])
        digest = hashlib.sha256(f"{self.day}|{self.seed}|{len(out)}".encode()).hexdigest()
        seal = Seal(block_no=self.day.toordinal() % 100_000, last_seq=len(out), block_hash=digest)
        return SyntheticDay(self.day, events_table(out), cards, seal)
