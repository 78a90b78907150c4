"""The city's side of the demo: operators with their gates, merchants with their terminals,
made of the real gate and terminal code (`card_reader.terminal`) and onboarded over HTTP.

Each gate and terminal keeps its own journal and hotlist in a directory of its own and
uploads with the real offline-first uploader (`card_reader.uploader`) under its owner's key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from card_reader.backoffice import BackOfficeClient
from card_reader.fares import LINES, GateMode, Line, Station
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal
from card_reader.keys import Sam
from card_reader.terminal import Gate, MerchantTerminal
from card_reader.uploader import Uploader
from simulation.geography import (
    CATEGORIES,
    KECAMATAN,
    KOTA_POPULATION,
    OPERATORS,
    STATION_PLACE,
    Category,
)
from simulation.http import Api, parallel
from simulation.tally import CountingClient, Tally

Clock = Callable[[], float]
# Gate codes: operator, station code, I (tap-in), O (tap-out) or V (validator), number.
_MODE_LETTER = {GateMode.ENTRY: "I", GateMode.EXIT: "O", GateMode.FLAT: "V"}


@dataclass
class Device:
    """A gate or a terminal with its journal and uploader; `online` False keeps its journal
    at home (a gate cut off from the network)."""

    code: str
    owner_id: str
    journal: Journal
    uploader: Uploader
    online: bool = True
    uploaded_at: int = 0  # simulated time of its last upload
    sent_through: int = 0  # its journal's certificates when its last upload began


@dataclass
class GateDevice(Device):
    gate: Gate | None = None
    line: Line | None = None
    station: Station | None = None


@dataclass
class Shop:
    id: str
    name: str
    category: Category
    kota: str
    kecamatan: str
    load_agent: bool
    payout: str
    api: Api | None = None
    device: Device | None = None
    terminal: MerchantTerminal | None = None


@dataclass
class City:
    operators: dict[str, str] = field(default_factory=dict)  # line name -> operator id
    operator_names: dict[str, str] = field(default_factory=dict)  # operator id -> name
    gates: dict[tuple[str, int, GateMode], GateDevice] = field(default_factory=dict)
    shops: list[Shop] = field(default_factory=list)
    service_desk: Shop | None = None

    def devices(self) -> list[Device]:
        shops = [s.device for s in [*self.shops, self.service_desk] if s and s.device]
        return [*self.gates.values(), *shops]

    def gate(self, line: Line, station: Station, mode: GateMode) -> GateDevice:
        return self.gates[(line.name, station.code, mode)]


def _merchant_body(
    kind: str, name: str, mcc: str, kota: str, kecamatan: str, mdr: int, agent: bool, payout: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "mcc": mcc,
        "kota": kota,
        "kecamatan": kecamatan,
        "mdr_bps": mdr,
        "load_agent": agent,
        "payout_bank_account": payout,
    }


def _device(
    root: Path, code: str, client: BackOfficeClient
) -> tuple[Journal, HotlistStore, Uploader]:
    directory = root / code
    journal = Journal(directory, code)
    hotlist = HotlistStore(directory)
    return journal, hotlist, Uploader(journal, client, hotlist)


def onboard(
    issuer: Api,
    base_url: str,
    rng: random.Random,
    merchants: int,
    device_root: Path,
    sam: Sam,
    clock: Clock,
    tally: Tally,
    threads: int,
    progress: Callable[[int], None],
) -> City:
    """Operators, their gates and gate keys; merchants, their terminals and keys; the
    issuer's service desk (bank-transfer top-ups). All over HTTP, idempotently."""
    city = City()
    for operator in OPERATORS:
        body = _merchant_body(
            "operator",
            operator.name,
            operator.mcc,
            operator.kota,
            operator.kecamatan,
            operator.mdr_bps,
            False,
            f"{rng.randrange(10**9, 10**10)}",
        )
        answer = issuer.post("/v1/merchants", body, f"operator-{operator.code}")
        key = issuer.post(
            "/v1/api-keys",
            {"scope": "gate-operator", "merchant_id": answer["id"], "name": "gate fleet"},
            f"key-{operator.code}",
        )["key"]
        city.operator_names[answer["id"]] = operator.name
        for line_name in operator.lines:
            city.operators[line_name] = answer["id"]
            line = LINES[line_name]
            modes = (GateMode.ENTRY, GateMode.EXIT) if line.distance_based else (GateMode.FLAT,)
            for station in line.stations:
                for mode in modes:
                    code = f"{operator.code}-{station.code}-{_MODE_LETTER[mode]}1"
                    journal, hotlist, uploader = _device(
                        device_root, code, CountingClient(base_url, key, tally)
                    )
                    gate = Gate(code, line, station, mode, sam, journal, hotlist, clock)
                    city.gates[(line.name, station.code, mode)] = GateDevice(
                        code, answer["id"], journal, uploader, gate=gate, line=line, station=station
                    )

    def post_gate(device: GateDevice) -> None:
        assert device.line is not None and device.station is not None
        issuer.post(
            "/v1/terminals",
            {
                "terminal_code": device.code,
                "merchant_id": device.owner_id,
                "kind": "gate",
                "line": device.line.name,
                "station": device.station.name,
            },
            f"terminal-{device.code}",
        )

    parallel(post_gate, list(city.gates.values()), threads, progress)

    kota_names = list(KOTA_POPULATION)
    weights = list(KOTA_POPULATION.values())
    station_places = sorted({p for p in STATION_PLACE.values() if p[0] in KECAMATAN})
    plans = []
    for index in range(merchants):
        category = rng.choices(CATEGORIES, [c.share for c in CATEGORIES])[0]
        if rng.random() < 0.35:  # shops cluster around stations (assumption)
            kota, kecamatan = rng.choice(station_places)
        else:
            kota = rng.choices(kota_names, weights)[0]
            kecamatan = rng.choice(KECAMATAN[kota])
        agent = category.mcc == "5499" and rng.random() < 0.5
        name = f"{category.label} {kecamatan} {index + 1}"
        payout = f"{rng.randrange(10**9, 10**10)}"
        plans.append(Shop("", name, category, kota, kecamatan, agent, payout))
    desk = Shop("", "JakartaOne Service Desk", CATEGORIES[-1], "Jakarta Pusat", "Gambir", False, "")

    def post_shop(shop: Shop) -> Shop:
        mdr = 0 if shop is desk else shop.category.mdr_bps
        mcc = "6540" if shop is desk else shop.category.mcc  # stored-value loads
        body = _merchant_body(
            "merchant", shop.name, mcc, shop.kota, shop.kecamatan, mdr, shop.load_agent, shop.payout
        )
        answer = issuer.post("/v1/merchants", body, f"merchant-{shop.name}")
        shop.id = answer["id"]
        key = issuer.post(
            "/v1/api-keys",
            {"scope": "merchant", "merchant_id": shop.id, "name": "terminals"},
            f"key-{shop.name}",
        )["key"]
        code = f"POS-{shop.id[:8].upper()}"
        issuer.post(
            "/v1/terminals",
            {"terminal_code": code, "merchant_id": shop.id, "kind": "pos"},
            f"terminal-{code}",
        )
        shop.api = Api(base_url, key, pool=4)
        journal, hotlist, uploader = _device(
            device_root, code, CountingClient(base_url, key, tally)
        )
        shop.device = Device(code, shop.id, journal, uploader)
        shop.terminal = MerchantTerminal(code, sam, journal, hotlist, clock)
        return shop

    # Bodies are drawn above, in order, so the city is the same for a seed whatever the
    # threads' timing.
    city.shops = parallel(post_shop, plans, threads, progress)
    city.service_desk = post_shop(desk)
    return city
