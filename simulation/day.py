"""The day: cards issued and loaded, then every tap and sale in time order at the real gates
and terminals, uploads every simulated hour, and the day's incidents (`incidents`).

Taps and sales run in this process, one at a time in simulated-time order (a card's state
decides its fare, so order matters); everything that reaches the back office goes over
HTTP, in parallel where it can: card issuing, loads, the devices' batch uploads.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from card_reader.apdu import Ins
from card_reader.certificate import Certificate, serial_hash
from card_reader.fares import GateMode
from card_reader.terminal import TapResult
from card_reader.transport import ApduChannel, Transport
from simulation.city import City, Device, GateDevice, Shop
from simulation.http import Api, parallel
from simulation.people import Leg, Rider, SimClock
from simulation.tally import Tally

HOUR = 3600
UPLOAD_EVERY_S = HOUR  # a round: the loaders send, the others when due (`upload_round`)
UPLOAD_WHEN_PENDING = 200
UPLOAD_AT_LEAST_EVERY_S = 3 * HOUR
FIRST_SERVICE_S = 5 * HOUR  # the first train and bus: 05:00 WIB
REFUND_SHARE = 0.004
TOP_UP_BELOW = 15_000
AGENT_FIRST_LOAD_SHARE = 0.15  # cards sold empty, first loaded with cash at an agent
PCSC_MAX_TAPS = 1_000  # through real PC/SC at most (each costs a few milliseconds)
Event = tuple[int, int, Callable[[], object]]


@dataclass
class Sale:
    rider: Rider
    shop: Shop
    certificate: Certificate


@dataclass
class Day:
    """One business day: `start_s` is 00:00 WIB of it, in Unix seconds."""

    start_s: int
    city: City
    riders: list[Rider]
    issuer: Api
    rng: random.Random
    clock: SimClock
    tally: Tally
    threads: int
    pcsc: Callable[[Rider], Transport | None] | None = None
    pcsc_every: int = 0
    progress: Callable[[int], None] = lambda n: None
    events: list[Event] = field(default_factory=list)
    sales: list[Sale] = field(default_factory=list)  # to be refunded
    sales_by_shop: dict[str, list[Certificate]] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    refresh_hotlists: bool = False
    _agents: dict[str, list[Shop]] = field(default_factory=dict)  # by kecamatan; "" all

    # Scheduling ---------------------------------------------------------------------------

    def at(self, seconds_after_midnight: int, action: Callable[[], object]) -> None:
        heapq.heappush(
            self.events, (self.start_s + seconds_after_midnight, next(self._seq), action)
        )

    def schedule_riders(self) -> None:
        shops_by_kecamatan: dict[str, list[Shop]] = {}
        for shop in self.city.shops:
            shops_by_kecamatan.setdefault(shop.kecamatan, []).append(shop)
        for rider in self.riders:
            if rider.legs:
                self._schedule_journey(rider, rider.legs, rider.leave_s)
                back = tuple(Leg(leg.line, leg.destination, leg.origin) for leg in rider.legs)
                self._schedule_journey(rider, back[::-1], rider.return_s)
            for _ in range(rider.purchases):
                near = shops_by_kecamatan.get(rider.kecamatan)
                shop = self.rng.choice(
                    near if near and self.rng.random() < 0.6 else self.city.shops
                )
                low, high = shop.category.ticket
                amount = self.rng.randrange(low, high + 1, 500) if high > low else low
                when = self._shopping_time()
                self.at(when, partial(self.sell, rider, shop, amount))

    def _shopping_time(self) -> int:
        pick = self.rng.random()
        if pick < 0.30:
            hours = self.rng.gauss(12.5, 0.7)
        elif pick < 0.75:
            hours = self.rng.gauss(18.5, 1.5)
        else:
            hours = self.rng.uniform(8, 21)
        return int(min(22.5, max(6.0, hours)) * HOUR)

    def _schedule_journey(self, rider: Rider, legs: tuple[Leg, ...], leave_s: int) -> None:
        t = leave_s
        for leg in legs:
            hops = abs(leg.destination.code - leg.origin.code)
            ride_s = 120 + hops * 150 + self.rng.randrange(0, 120)
            if leg.line.distance_based:
                self.at(t, partial(self.tap, rider, self._gate(leg, True)))
                self.at(t + ride_s, partial(self.tap, rider, self._gate(leg, False)))
            else:
                self.at(t, partial(self.tap, rider, self._gate(leg, True)))
            t += ride_s + 180 + self.rng.randrange(0, 300)  # walking to the next leg

    def _gate(self, leg: Leg, boarding: bool) -> GateDevice:
        if not leg.line.distance_based:
            return self.city.gate(leg.line, leg.origin, GateMode.FLAT)
        if boarding:
            return self.city.gate(leg.line, leg.origin, GateMode.ENTRY)
        return self.city.gate(leg.line, leg.destination, GateMode.EXIT)

    # Running ------------------------------------------------------------------------------

    def run_until(self, end_s: int) -> None:
        """Every event before `end_s` (seconds after midnight), uploading each hour."""
        next_upload = self.start_s + FIRST_SERVICE_S + UPLOAD_EVERY_S
        end = self.start_s + end_s
        while self.events and self.events[0][0] < end:
            when, _, action = heapq.heappop(self.events)
            while when >= next_upload:
                self.clock.now = next_upload
                self.upload_round()
                next_upload += UPLOAD_EVERY_S
            self.clock.now = when
            action()
            self.progress(1)
        self.clock.now = end
        self.upload_round(final=True)

    def _channel(self, rider: Rider) -> tuple[ApduChannel, bool]:
        if (
            self.pcsc is not None
            and self.pcsc_every
            and self.tally.tap_count % self.pcsc_every == 0
            and self.tally.taps_pcsc < PCSC_MAX_TAPS
        ):
            transport = self.pcsc(rider)
            if transport is not None:
                return ApduChannel(transport), True
        rider.transport.tap()
        return ApduChannel(rider.transport), False

    def tap(self, rider: Rider, device: GateDevice) -> TapResult:
        assert device.gate is not None
        if rider.tops_up and rider.card.state.balance < TOP_UP_BELOW:
            self.top_up_at_agent(rider)
        channel, through_pcsc = self._channel(rider)
        try:
            result = device.gate.process(channel)
        finally:
            close = getattr(channel.transport, "close", None)
            if through_pcsc and close is not None:
                close()
        self.tally.taps[result.code] += 1
        self.tally.taps_pcsc += through_pcsc
        if result.certificate is not None:
            self.tally.fares_rupiah += result.certificate.amount
        return result

    def sell(self, rider: Rider, shop: Shop, amount: int) -> None:
        assert shop.terminal is not None
        if rider.tops_up and rider.card.state.balance < amount:
            self.top_up_at_agent(rider, amount)
        channel, through_pcsc = self._channel(rider)
        try:
            result = shop.terminal.charge(channel, amount)
        finally:
            close = getattr(channel.transport, "close", None)
            if through_pcsc and close is not None:
                close()
        if not result.opened or result.certificate is None:
            self.tally.sales_refused[result.code] += 1
            return
        self.tally.sales += 1
        self.tally.sales_rupiah += amount
        self.sales_by_shop.setdefault(shop.id, []).append(result.certificate)
        if self.rng.random() < REFUND_SHARE:
            self.sales.append(Sale(rider, shop, result.certificate))

    # Loads --------------------------------------------------------------------------------

    def load(
        self,
        rider: Rider,
        shop: Shop,
        api: Api,
        channel: str,
        amount: int,
        key: str,
        confirm_online: bool,
        **extra: Any,
    ) -> TapResult:
        """A top-up at `shop`'s terminal: the back office makes the cryptogram for the
        card's counter (POST /v1/loads), the card takes it, and the terminal confirms with
        the card's credit certificate, online or in its next batch."""
        assert shop.terminal is not None
        made: list[str] = []

        def cryptogram(serial: bytes, counter: int, value: int) -> bytes:
            body = {
                "card_id": rider.card_id,
                "amount": value,
                "channel": channel,
                "card_counter": counter,
                **extra,
            }
            answer = api.post("/v1/loads", body, key)
            made.append(answer["id"])
            return bytes.fromhex(answer["cryptogram"])

        rider.transport.tap()
        result = shop.terminal.load(ApduChannel(rider.transport), amount, cryptogram)
        if result.opened and result.certificate is not None:
            self.tally.load(channel, amount)
            if confirm_online:
                api.post(
                    f"/v1/loads/{made[0]}/confirm",
                    {"certificate": result.certificate.to_json()},
                    f"{key}-confirm",
                )
        return result

    def agent_for(self, rider: Rider) -> Shop:
        """The load agent near the holder's home (any agent if none is near)."""
        if not self._agents:
            agents = [s for s in self.city.shops if s.load_agent] or self.city.shops[:1]
            self._agents[""] = agents
            for shop in agents:
                self._agents.setdefault(shop.kecamatan, []).append(shop)
        choices = self._agents.get(rider.kecamatan) or self._agents[""]
        return choices[rider.index % len(choices)]

    def top_up_at_agent(self, rider: Rider, at_least: int = 0) -> None:
        shop = self.agent_for(rider)
        assert shop.api is not None
        amount = max(100_000, -(-at_least // 50_000) * 50_000)
        room = rider.card.state.max_balance - rider.card.state.balance
        if shop.load_agent and amount <= room:
            started = time.perf_counter()
            counter = rider.card.state.counter
            # Confirmed online at once: the agent's terminal is online for the cryptogram
            # anyway, and a credit certificate that waited for the next batch could arrive
            # after the card's later debits (forwarded by another shop uploading in the same
            # round), which settle the load by card evidence and leave the credit
            # quarantined as `credit_without_load`.
            key = f"topup-{rider.index}-{counter}"
            self.load(rider, shop, shop.api, "agent_cash", amount, key, True)
            self.tally.top_up_seconds += time.perf_counter() - started

    def issue_cards(self, batch_size: int = 500) -> None:
        """The issuer's cards, in personalization batches (`POST /v1/card-batches`). Most
        are sold pre-loaded: the service desk's machine writes each card's first load
        (the batch answer's cryptogram for counter 0) and its journal confirms them all in
        its next upload. The rest are sold empty and loaded with cash at an agent."""
        desk = self.city.service_desk
        assert desk is not None and desk.terminal is not None
        agent_loaded = {
            rider.index for rider in self.riders if self.rng.random() < AGENT_FIRST_LOAD_SHARE
        }
        chunks = [self.riders[i : i + batch_size] for i in range(0, len(self.riders), batch_size)]

        def issue(chunk: list[Rider]) -> list[tuple[Rider, dict[str, Any]]]:
            body = {"cards": [_card_body(r, r.index not in agent_loaded) for r in chunk]}
            answer = self.issuer.post("/v1/card-batches", body, f"cards-{chunk[0].serial.hex()}")
            return list(zip(chunk, answer["cards"], strict=True))

        issued = [pair for pairs in parallel(issue, chunks, self.threads) for pair in pairs]
        self.clock.now = self.start_s + 4 * HOUR
        for rider, card in issued:
            rider.card_id = card["id"]
            if card["cryptogram"] is not None:
                cryptogram = bytes.fromhex(card["cryptogram"])
                rider.transport.tap()
                result = desk.terminal.load(
                    ApduChannel(rider.transport),
                    card["load_amount"],
                    lambda *_, written=cryptogram: written,
                )
                if result.opened:
                    self.tally.load("bank_transfer", card["load_amount"])
            self.progress(1)
        self.agent_first_loads([r for r in self.riders if r.index in agent_loaded])

    def agent_first_loads(self, riders: list[Rider]) -> None:
        """Cards sold empty: loaded with cash at an agent near home before the first train,
        a few confirmed online at once, most in the agent terminal's next batch."""
        plans = [(r, self.rng.random() < 0.2, self.rng.randrange(0, 3600)) for r in riders]

        def work(plan: tuple[Rider, bool, int]) -> None:
            rider, online, offset = plan
            self.clock.local(self.start_s + 4 * HOUR + offset)
            shop = self.agent_for(rider)
            assert shop.api is not None
            self.load(rider, shop, shop.api, "agent_cash", rider.first_load,
                      f"first-load-{rider.index}", online)  # fmt: skip
            self.clock.local(None)

        parallel(work, plans, self.threads)

    # Uploads and refunds ------------------------------------------------------------------

    def upload_round(self, final: bool = False) -> None:
        """The online devices send their journals: the terminals that load cards every
        round and first (the service desk, the agents), then the other shops, then the
        gates, so that a load's credit certificate arrives before the card's later debits,
        which would otherwise settle the load by card evidence first and leave the credit
        quarantined (`credit_without_load`). The others send when they hold a batch's
        worth or have not sent for three hours (and all at the end of the day)."""
        started = time.perf_counter()
        now = int(self.clock())
        loaders = {s.device.code for s in self.city.shops if s.load_agent and s.device}
        if self.city.service_desk and self.city.service_desk.device:
            loaders.add(self.city.service_desk.device.code)

        def due(device: Device) -> bool:
            pending = device.journal.stats().pending
            return (
                device.online
                and pending > 0
                and (
                    final
                    or device.code in loaders
                    or pending >= UPLOAD_WHEN_PENDING
                    or now - device.uploaded_at >= UPLOAD_AT_LEAST_EVERY_S
                )
            )

        devices = [d for d in self.city.devices() if due(d)]
        for wave in (
            [d for d in devices if d.code in loaders],
            [d for d in devices if d.code not in loaders and not isinstance(d, GateDevice)],
            [d for d in devices if isinstance(d, GateDevice)],
        ):
            parallel(upload, wave, self.threads)
        for device in devices:
            device.uploaded_at = now
        if self.refresh_hotlists:
            parallel(lambda d: d.uploader.refresh_hotlist(), list(self.city.gates.values()),
                     self.threads)  # fmt: skip
            self.refresh_hotlists = False
        self._refunds()
        # The refunds' card credits were just loaded at the service desk: send them too.
        desk = self.city.service_desk.device if self.city.service_desk else None
        if desk is not None and desk.journal.stats().pending:
            upload(desk)
        self.tally.upload_seconds += time.perf_counter() - started

    def _refunds(self) -> None:
        """Merchants refund some of the sales their terminals have uploaded."""
        waiting: list[Sale] = []
        ready: list[Sale] = []
        for sale in self.sales:
            device = sale.shop.device
            uploaded = device is not None and device.journal.stats().pending == 0
            (ready if uploaded else waiting).append(sale)
        self.sales = waiting
        for sale in ready:
            api = sale.shop.api
            assert api is not None
            found = api.get("/v1/card-transactions", card_id=sale.rider.card_id, limit=100)["data"]
            match = [t for t in found if t["card_counter"] == sale.certificate.counter]
            if not match:
                continue
            amount = (
                sale.certificate.amount if self.rng.random() < 0.5 else sale.certificate.amount // 2
            )
            refund = api.post(
                "/v1/refunds",
                {"card_transaction_id": match[0]["id"], "amount": amount,
                 "reason": "customer returned the goods"},
                f"refund-{match[0]['id']}",
            )  # fmt: skip
            self.tally.refunds += 1
            self.tally.refunds_rupiah += amount
            self.load_card_credit(sale.rider, refund["card_credit_id"], amount)

    def load_card_credit(self, rider: Rider, credit_id: str, amount: int) -> None:
        """The card's next visit to the service desk loads its waiting credit."""
        desk = self.city.service_desk
        assert desk is not None
        self.load(rider, desk, self.issuer, "card_credit", amount, f"credit-{credit_id}", True,
                  card_credit_id=credit_id)  # fmt: skip


def upload(device: Device, attempts: int = 6) -> None:
    """The device's journal, all of it: a failed attempt (a timeout, a 503) is retried
    after a pause, as the uploader's own loop would after its backoff."""
    for attempt in range(attempts):
        if device.uploader.upload_pending().complete:
            return
        time.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"{device.code}: the journal could not be delivered")


def card_ref(rider: Rider) -> str:
    return serial_hash(rider.serial)


def _card_body(rider: Rider, preloaded: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"serial": rider.serial.hex(), "registered": rider.registered}
    if rider.registered:
        body["holder_reference"] = f"KYC-{rider.index:08d}"
    if preloaded:
        body["first_load"] = rider.first_load
    return body


def tear_next_debit(rider: Rider) -> None:
    """The card leaves the field after it committed the next DEBIT, before the answer."""
    rider.transport.tear_next(Ins.DEBIT, after_commit=True)
