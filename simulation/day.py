"""The day: cards issued and loaded, then every tap and sale in time order at the real gates
and terminals, uploads every simulated hour, and the day's incidents (`incidents`).

Taps and sales run in this process, one at a time in simulated-time order (a card's state
decides its fare, so order matters); everything that reaches the back office goes over
HTTP, while the taps go on, as it does in a city where every gate and agent works on its
own:
- an hour's upload round runs in the background while the next hour's taps are made; the
  next round first waits for it (`upload_round`);
- a holder whose card falls below Rp 15,000 tops it up at an agent near home right after
  (`top_up_at_agent`), in a worker thread; the card's next tap or sale waits until the
  top-up is done (`_wait_for_card`), so no card is ever in two places at once;
- cards are issued in batches while the service desk writes the first loads of the batches
  already issued and its journal goes to the back office (`issue_cards`).
What happens is decided in this thread only, in simulated-time order, so the same seed
makes the same day, whatever the threads' timing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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

log = logging.getLogger(__name__)
HOUR = 3600
UPLOAD_EVERY_S = HOUR  # a round: the loaders send, the others when due (`upload_round`)
UPLOAD_WHEN_PENDING = 200
UPLOAD_AT_LEAST_EVERY_S = 3 * HOUR
FIRST_SERVICE_S = 5 * HOUR  # the first train and bus: 05:00 WIB
REFUND_SHARE = 0.004
TOP_UP_BELOW = 15_000
AGENT_FIRST_LOAD_SHARE = 0.15  # cards sold empty, first loaded with cash at an agent
PCSC_MAX_TAPS = 1_000  # through real PC/SC at most (each costs a few milliseconds)
ISSUING_THREADS = 2  # card batches in flight: the back office writes one at a time anyway
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
    # A card's top-up or credit load still running in a worker, by the card's chip memory
    # (a clone shares it). Only this thread reads and changes the dict.
    _card_work: dict[int, Future[None]] = field(default_factory=dict)
    # The upload round in flight, with the sales its devices deliver (to refund after it).
    _round: tuple[Future[None], list[Sale]] | None = None
    _terminal_locks: dict[int, threading.Lock] = field(default_factory=dict)
    # Each holder's purchases still to come today, in time order (rider index -> rupiah).
    _purchases: dict[int, list[int]] = field(default_factory=dict)
    _card_pool: ThreadPoolExecutor = field(init=False)
    _round_pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._card_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="card")
        self._round_pool = ThreadPoolExecutor(1, thread_name_prefix="upload-round")

    def close(self) -> None:
        """Stop the workers; what has not started yet never will."""
        self._card_pool.shutdown(wait=True, cancel_futures=True)
        self._round_pool.shutdown(wait=True, cancel_futures=True)

    def quiesce(self) -> None:
        """Wait for the upload round in flight (then make its refunds) and every card's
        work: nothing of the day is still moving."""
        self._finish_round()
        self.wait_for_cards()

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
            purchases: list[tuple[int, int]] = []
            for _ in range(rider.purchases):
                near = shops_by_kecamatan.get(rider.kecamatan)
                shop = self.rng.choice(
                    near if near and self.rng.random() < 0.6 else self.city.shops
                )
                low, high = shop.category.ticket
                amount = self.rng.randrange(low, high + 1, 500) if high > low else low
                when = self._shopping_time()
                self.at(when, partial(self.sell, rider, shop, amount))
                purchases.append((when, amount))
            if purchases:
                # Sorted as the events run: by time, then in the order they were scheduled.
                ordered = sorted(purchases, key=lambda p: p[0])
                planned = [a for _, a in ordered]
                self._purchases[rider.index] = planned
                if rider.card.state.balance < planned[0]:
                    # Half an hour before the first purchase (after every first load at an
                    # agent): spread over the day, not a burst at dawn that every early
                    # tap would wait behind.
                    when = max(FIRST_SERVICE_S - 60, ordered[0][0] - 1800)
                    self.at(when, partial(self._top_up_before_shopping, rider))

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

    def clock_text(self) -> str:
        """The simulated time of day, HH:MM WIB."""
        seconds = int(self.clock.now) - self.start_s
        return f"{seconds // HOUR:02d}:{seconds % HOUR // 60:02d} WIB"

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
        self.quiesce()  # the last refunds, their card credits loaded at the service desk
        self.upload_round(final=True)  # and the desk's journal with them
        self.quiesce()

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
        self._wait_for_card(rider)
        if rider.tops_up and rider.card.state.balance < TOP_UP_BELOW:
            self.top_up_at_agent(rider)  # the agent could not load it after its last tap
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
        self._top_up_when_low(rider)
        return result

    def sell(self, rider: Rider, shop: Shop, amount: int) -> None:
        assert shop.terminal is not None
        planned = self._purchases.get(rider.index)
        if planned:
            planned.pop(0)  # this one
        self._wait_for_card(rider)
        if rider.tops_up and rider.card.state.balance < amount:
            self.top_up_at_agent(rider, amount)
        channel, through_pcsc = self._channel(rider)
        try:
            with self._terminal_lock(shop):
                result = shop.terminal.charge(channel, amount)
        finally:
            close = getattr(channel.transport, "close", None)
            if through_pcsc and close is not None:
                close()
        self._top_up_when_low(rider)
        if not result.opened or result.certificate is None:
            self.tally.sales_refused[result.code] += 1
            return
        self.tally.sales += 1
        self.tally.sales_rupiah += amount
        self.sales_by_shop.setdefault(shop.id, []).append(result.certificate)
        if self.rng.random() < REFUND_SHARE:
            self.sales.append(Sale(rider, shop, result.certificate))

    # A card's work elsewhere ----------------------------------------------------------------

    def _terminal_lock(self, shop: Shop) -> threading.Lock:
        """A terminal serves one card at a time (a sale here, a top-up in a worker)."""
        return self._terminal_locks.setdefault(id(shop.terminal), threading.Lock())

    def _wait_for_card(self, rider: Rider) -> None:
        """The card's top-up or credit load at an agent or the desk, if still running, ends
        before the card is used again."""
        work = self._card_work.pop(id(rider.card.state), None)
        if work is not None:
            started = time.perf_counter()
            work.result()
            self.tally.card_wait_seconds += time.perf_counter() - started

    def wait_for_cards(self) -> None:
        for work in list(self._card_work.values()):
            work.result()
        self._card_work.clear()

    def _card_elsewhere(self, rider: Rider, work: Callable[[], object]) -> None:
        """`work` on the rider's card in a worker, at this simulated time."""
        self._wait_for_card(rider)
        at = int(self.clock())

        def run() -> None:
            self.clock.local(at)
            try:
                work()
            finally:
                self.clock.local(None)

        self._card_work[id(rider.card.state)] = self._card_pool.submit(run)

    def _top_up_before_shopping(self, rider: Rider) -> None:
        self._wait_for_card(rider)  # a top-up after a tap may still be running
        self._top_up_when_low(rider)

    def _top_up_when_low(self, rider: Rider) -> None:
        """A holder tops up at an agent as soon as the card holds less than Rp 15,000, or
        less than the next purchase they mean to make today (approximation: people know
        what they will buy)."""
        if not rider.tops_up:
            return
        planned = self._purchases.get(rider.index)
        next_purchase = planned[0] if planned else 0
        balance = rider.card.state.balance
        if balance < TOP_UP_BELOW or balance < next_purchase:
            at_least = next_purchase if balance < next_purchase else 0
            self._card_elsewhere(rider, partial(self.top_up_at_agent, rider, at_least))

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

        with self._terminal_lock(shop):
            rider.transport.tap()
            result = shop.terminal.load(ApduChannel(rider.transport), amount, cryptogram)
        if not result.opened:
            log.warning("%s load of Rp %d at %s not made: %s", channel, amount, shop.name,
                        result.code)  # fmt: skip
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
            self.tally.count_top_up(time.perf_counter() - started)

    def issue_cards(self, batch_size: int = 500) -> None:
        """The issuer's cards, in personalization batches (`POST /v1/card-batches`). Most
        are sold pre-loaded: the service desk's machine writes each card's first load
        (the batch answer's cryptogram for counter 0) and its journal confirms them, a
        batch's worth at a time while the next cards are issued. The rest are sold empty
        and loaded with cash at an agent near home before the first train, a few confirmed
        online at once, most in the agent terminal's next batch.

        Pipelined: the back office issues the next batches while this thread writes the
        first loads of the last one, the desk's journal goes out in the background, and
        the agents' loads run in the workers."""
        desk = self.city.service_desk
        assert desk is not None and desk.terminal is not None and desk.device is not None
        agent_loaded = {
            rider.index for rider in self.riders if self.rng.random() < AGENT_FIRST_LOAD_SHARE
        }
        # (online confirmation, minutes after 04:00) of each agent load, drawn up front so
        # that the day is the same whatever the threads' timing.
        agent_plans = {
            rider.index: (self.rng.random() < 0.2, self.rng.randrange(0, 3600))
            for rider in self.riders
            if rider.index in agent_loaded
        }
        chunks = [self.riders[i : i + batch_size] for i in range(0, len(self.riders), batch_size)]

        def issue(chunk: list[Rider]) -> list[tuple[Rider, dict[str, Any]]]:
            body = {"cards": [_card_body(r, r.index not in agent_loaded) for r in chunk]}
            answer = self.issuer.post("/v1/card-batches", body, f"cards-{chunk[0].serial.hex()}")
            return list(zip(chunk, answer["cards"], strict=True))

        self.clock.now = self.start_s + 4 * HOUR
        desk_uploads: list[Future[None]] = []
        with ThreadPoolExecutor(ISSUING_THREADS, thread_name_prefix="issue") as issuing:
            batches = [issuing.submit(issue, chunk) for chunk in chunks]
            try:
                for batch in batches:
                    for rider, card in batch.result():
                        rider.card_id = card["id"]
                        if card["cryptogram"] is not None:
                            self._desk_first_load(rider, card)
                        else:
                            online, offset = agent_plans[rider.index]
                            self._agent_first_load(rider, online, offset)
                        self.progress(1)
                    desk_uploads.append(self._round_pool.submit(upload, desk.device))
            except BaseException:
                for pending in batches:
                    pending.cancel()
                raise
        for done in desk_uploads:
            done.result()
        self.wait_for_cards()

    def _desk_first_load(self, rider: Rider, card: dict[str, Any]) -> None:
        desk = self.city.service_desk
        assert desk is not None and desk.terminal is not None
        cryptogram = bytes.fromhex(card["cryptogram"])
        with self._terminal_lock(desk):
            rider.transport.tap()
            result = desk.terminal.load(
                ApduChannel(rider.transport),
                card["load_amount"],
                lambda *_: cryptogram,
            )
        if result.opened:
            self.tally.load("bank_transfer", card["load_amount"])

    def _agent_first_load(self, rider: Rider, online: bool, offset: int) -> None:
        shop = self.agent_for(rider)
        assert shop.api is not None
        api = shop.api
        self.clock.now = self.start_s + 4 * HOUR + offset
        self._card_elsewhere(
            rider,
            partial(self.load, rider, shop, api, "agent_cash", rider.first_load,
                    f"first-load-{rider.index}", online),
        )  # fmt: skip
        self.clock.now = self.start_s + 4 * HOUR

    # Uploads and refunds ------------------------------------------------------------------

    def upload_round(self, final: bool = False) -> None:
        """The online devices send their journals, in a background round while the day goes
        on: the terminals that load cards every round and first (the service desk, the
        agents), then the other shops, then the gates, so that a load's credit certificate
        arrives before the card's later debits, which would otherwise settle the load by
        card evidence first and leave the credit quarantined (`credit_without_load`); the
        day's loads are confirmed online too. The others send when they hold a batch's
        worth or have not sent for three hours (and all at the end of the day).

        The previous round ends first (its refunds are made then), and every card's
        top-up: which devices are due is decided on what this thread made, so it is the
        same for a seed however fast the back office answers."""
        started = time.perf_counter()
        self.quiesce()
        now = int(self.clock())
        loaders = {s.device.code for s in self.city.shops if s.load_agent and s.device}
        if self.city.service_desk and self.city.service_desk.device:
            loaders.add(self.city.service_desk.device.code)

        def due(device: Device) -> bool:
            made = device.journal.stats().certificates - device.sent_through
            return (
                device.online
                and made > 0
                and (
                    final
                    or device.code in loaders
                    or made >= UPLOAD_WHEN_PENDING
                    or now - device.uploaded_at >= UPLOAD_AT_LEAST_EVERY_S
                )
            )

        devices = [d for d in self.city.devices() if due(d)]
        for device in devices:
            device.uploaded_at = now
            device.sent_through = device.journal.stats().certificates
        sending = {d.code for d in devices}
        delivered: list[Sale] = []
        waiting: list[Sale] = []
        for sale in self.sales:
            shop_device = sale.shop.device
            sent = shop_device is not None and shop_device.code in sending
            (delivered if sent else waiting).append(sale)
        self.sales = waiting
        waves: tuple[list[Device], ...] = (
            [d for d in devices if d.code in loaders],
            [d for d in devices if d.code not in loaders and not isinstance(d, GateDevice)],
            [d for d in devices if isinstance(d, GateDevice)],
        )
        refresh, self.refresh_hotlists = self.refresh_hotlists, False
        self._round = (self._round_pool.submit(self._deliver, waves, refresh), delivered)
        self.tally.upload_wait_seconds += time.perf_counter() - started

    def _deliver(self, waves: tuple[list[Device], ...], refresh_hotlists: bool) -> None:
        started = time.perf_counter()
        for wave in waves:
            parallel(upload, wave, self.threads)
        if refresh_hotlists:
            parallel(lambda d: d.uploader.refresh_hotlist(), list(self.city.gates.values()),
                     self.threads)  # fmt: skip
        self.tally.upload_seconds += time.perf_counter() - started

    def _finish_round(self) -> None:
        if self._round is None:
            return
        done, delivered = self._round
        self._round = None
        done.result()
        self._refunds(delivered)

    def _refunds(self, delivered: list[Sale]) -> None:
        """Merchants refund some of the sales their terminals have uploaded; the card
        credit is loaded at the service desk, in a worker."""
        for sale in delivered:
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
            self._card_elsewhere(
                sale.rider,
                partial(self.load_card_credit, sale.rider, refund["card_credit_id"], amount),
            )

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
