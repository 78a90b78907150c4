"""The client side of the fault tests and the soak: gates uploading batches, shop terminals
submitting sales, loads and refunds, all against a live `jakartaone serve`.

Every request is retried with the same Idempotency-Key (and a gate batch with the same
batch id) until it gets a final answer: through refused connections while the server is
dead, 503 while the database is away, 409 while a dead server's claim is still leased.
Every 2xx is written to the clients' log; `reconcile` then holds that log against the
database: each acknowledged effect must be there exactly once.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from ledger import make_engine, queries
from ledger import schema as ledger_schema
from merchant_api import idempotency, schema
from tests.api.cards import SimulatedCard
from tests.api.live import BIN

POS_CODE = "SOAK-POS-1"
GATE_CODE = "SOAK-GATE-1"
LOAD_AMOUNT = 100_000
IN_FLIGHT = "idempotency_request_in_flight"


class GaveUpError(RuntimeError):
    """A request got no final answer before the client's deadline."""


@dataclass
class ClientLog:
    """What the clients saw, shared by every client thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    # 5xx answers other than the documented 503 database_unavailable with Retry-After.
    unexpected_5xx: list[str] = field(default_factory=list)
    unavailable_503: int = 0
    # Acknowledged effects: what a 2xx said is now in the ledger.
    debits: dict[tuple[uuid.UUID, int], int] = field(default_factory=dict)  # -> amount
    loads: dict[uuid.UUID, int] = field(default_factory=dict)  # load id -> amount
    refunds: dict[uuid.UUID, int] = field(default_factory=dict)  # refund id -> amount
    refusals: list[str] = field(default_factory=list)  # final 4xx: code and path
    # Idempotency-Key -> (API key, path, body, answer) of every POST answered 2xx.
    acknowledged: dict[str, tuple[str, str, Any, Any]] = field(default_factory=dict)

    def answered(self, response: httpx.Response) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                if _documented_unavailable(response):
                    self.unavailable_503 += 1
                else:
                    self.unexpected_5xx.append(f"{response.status_code} {response.text[:200]}")

    def failed_to_connect(self) -> None:
        with self.lock:
            self.connection_errors += 1


def _documented_unavailable(response: httpx.Response) -> bool:
    if response.status_code != 503 or "retry-after" not in response.headers:
        return False
    try:
        return bool(response.json().get("code") == "database_unavailable")
    except ValueError:
        return False


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return ""


class RetryingClient:
    """POSTs that are retried, with the same key and body, until a final answer."""

    def __init__(self, base: str, api_key: str, log: ClientLog, deadline_s: float = 180) -> None:
        self.http = httpx.Client(
            base_url=base, timeout=15, headers={"Authorization": f"Bearer {api_key}"}
        )
        self.log = log
        self.api_key = api_key
        self.deadline_s = deadline_s

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """The final answer's JSON (2xx); raises `Refused` for a final 4xx."""
        headers = {"Idempotency-Key": key} if key is not None else {}
        deadline = time.monotonic() + self.deadline_s
        pause = 0.05
        while True:
            if time.monotonic() > deadline:
                raise GaveUpError(f"{method} {path} got no final answer")
            try:
                response = self.http.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                self.log.failed_to_connect()
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            self.log.answered(response)
            status = response.status_code
            if (
                status >= 500
                or status == 429
                or (status == 409 and _problem_code(response) == IN_FLIGHT)
            ):
                wait = float(response.headers.get("retry-after", pause))
                time.sleep(min(wait, 2.0) * random.uniform(0.5, 1.0))
                pause = min(pause * 2, 1.0)
                continue
            if status >= 400:
                raise Refused(status, _problem_code(response), path)
            answer = response.json()
            if key is not None:
                with self.log.lock:
                    self.log.acknowledged[key] = (self.api_key, path, body, answer)
            return answer


class Refused(Exception):  # noqa: N818 - a final answer, not a fault
    def __init__(self, status: int, code: str, path: str) -> None:
        self.status, self.code, self.path = status, code, path
        super().__init__(f"{status} {code} on {path}")


@dataclass
class Fleet:
    """The parties of the traffic: one shop with a POS, one operator with a gate."""

    base: str
    issuer_key: str
    merchant_key: str
    gate_key: str
    merchant_id: str
    cards: list[tuple[uuid.UUID, SimulatedCard]]


def onboard(base: str, issuer_key: str, log: ClientLog, cards: int) -> Fleet:
    issuer = RetryingClient(base, issuer_key, log)
    try:

        def post(path: str, body: dict[str, Any]) -> Any:
            return issuer.request("POST", path, body, key=str(uuid.uuid4()))

        merchant = post(
            "/v1/merchants",
            {
                "kind": "merchant",
                "name": "Warung Soak",
                "mcc": "5499",
                "kota": "Jakarta Selatan",
                "kecamatan": "Kebayoran Baru",
                "mdr_bps": 70,
            },
        )["id"]
        operator = post(
            "/v1/merchants",
            {
                "kind": "operator",
                "name": "Soak Transit",
                "mcc": "4111",
                "kota": "Jakarta Pusat",
                "kecamatan": "Menteng",
                "mdr_bps": 50,
            },
        )["id"]
        post("/v1/terminals", {"terminal_code": POS_CODE, "merchant_id": merchant, "kind": "pos"})
        post(
            "/v1/terminals",
            {
                "terminal_code": GATE_CODE,
                "merchant_id": operator,
                "kind": "gate",
                "line": "Soak",
                "station": "One",
            },
        )
        merchant_key = post("/v1/api-keys", {"scope": "merchant", "merchant_id": merchant})["key"]
        gate_key = post("/v1/api-keys", {"scope": "gate-operator", "merchant_id": operator})["key"]
        issued = []
        for _ in range(cards):
            card = SimulatedCard()
            issued.append((uuid.UUID(post("/v1/cards", {"serial": card.serial_hex})["id"]), card))
    finally:
        issuer.close()
    return Fleet(base, issuer_key, merchant_key, gate_key, merchant, issued)


def top_up(issuer: RetryingClient, log: ClientLog, card_id: uuid.UUID, card: SimulatedCard) -> None:
    """A load, both phases, each retried with its own key until final."""
    load = issuer.request(
        "POST",
        "/v1/loads",
        {
            "card_id": str(card_id),
            "amount": LOAD_AMOUNT,
            "channel": "bank_transfer",
            "card_counter": card.counter,
        },
        key=f"load-{card_id}-{card.counter}",
    )
    credit = card.credit(LOAD_AMOUNT, bytes.fromhex(load["cryptogram"]), POS_CODE)
    issuer.request(
        "POST",
        f"/v1/loads/{load['id']}/confirm",
        {"certificate": credit.to_json()},
        key=f"confirm-{load['id']}",
    )
    with log.lock:
        log.loads[uuid.UUID(load["id"])] = LOAD_AMOUNT


class Traffic:
    """Client threads until `stop()`: each owns some cards (a card is in one place at a
    time) and loops over loads, sales, refunds (shops) or batches of taps (gates)."""

    def __init__(self, fleet: Fleet, log: ClientLog, shops: int = 3, gates: int = 2) -> None:
        self.fleet = fleet
        self.log = log
        self._stop = threading.Event()
        self._gate_seq = 0
        self._seq_lock = threading.Lock()
        self.errors: list[BaseException] = []
        owners = shops + gates
        self._threads = [
            threading.Thread(
                target=self._guard,
                args=(self._shop if n < shops else self._gate, fleet.cards[n::owners]),
                name=f"traffic-{n}",
                daemon=True,
            )
            for n in range(owners)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 240) -> None:
        """Let every thread finish its current operation (retrying until final)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if any(t.is_alive() for t in self._threads):
            self.errors.append(GaveUpError("a client thread did not finish"))

    def _guard(self, loop: Any, cards: list[tuple[uuid.UUID, SimulatedCard]]) -> None:
        try:
            loop(cards)
        except BaseException as exc:
            self.errors.append(exc)

    def wait_for_progress(self, answers: int, timeout: float = 180) -> None:
        """Return once the clients have had `answers` more 2xx answers (so that a fault
        lands while traffic flows, however slow the machine)."""
        target = len(self.log.acknowledged) + answers
        deadline = time.monotonic() + timeout
        while len(self.log.acknowledged) < target:
            if time.monotonic() > deadline or self.errors:
                raise GaveUpError(f"no progress: {self.errors or 'no answers'}")
            time.sleep(0.02)

    def _next_gate_seq(self) -> int:
        with self._seq_lock:
            self._gate_seq += 1
            return self._gate_seq

    def _shop(self, cards: list[tuple[uuid.UUID, SimulatedCard]]) -> None:
        rng = random.Random()
        issuer = RetryingClient(self.fleet.base, self.fleet.issuer_key, self.log)
        shop = RetryingClient(self.fleet.base, self.fleet.merchant_key, self.log)
        sales = 0
        try:
            while not self._stop.is_set():
                card_id, card = rng.choice(cards)
                amount = rng.randrange(1_000, 20_000, 500)
                if card.balance < amount:
                    top_up(issuer, self.log, card_id, card)
                    continue
                cert = card.debit(amount, POS_CODE, terminal_seq=card.counter + 1)
                sale = shop.request(
                    "POST",
                    "/v1/card-transactions",
                    cert.to_json(),
                    key=f"sale-{card.serial_hex}-{cert.counter}",
                )
                with self.log.lock:
                    self.log.debits[(card_id, cert.counter)] = amount
                sales += 1
                if sales % 5 == 0:  # every fifth sale is partly refunded
                    part = rng.randrange(500, amount + 1, 500)
                    refund = shop.request(
                        "POST",
                        "/v1/refunds",
                        {"card_transaction_id": sale["id"], "amount": part, "reason": "soak"},
                        key=f"refund-{sale['id']}",
                    )
                    with self.log.lock:
                        self.log.refunds[uuid.UUID(refund["id"])] = part
        finally:
            issuer.close()
            shop.close()

    def _gate(self, cards: list[tuple[uuid.UUID, SimulatedCard]]) -> None:
        rng = random.Random()
        issuer = RetryingClient(self.fleet.base, self.fleet.issuer_key, self.log)
        gate = RetryingClient(self.fleet.base, self.fleet.gate_key, self.log)
        try:
            while not self._stop.is_set():
                taps: list[tuple[uuid.UUID, Any]] = []
                for card_id, card in rng.sample(cards, k=min(len(cards), rng.randint(1, 8))):
                    if card.balance < 3_500:
                        top_up(issuer, self.log, card_id, card)
                    taps.append((card_id, card.debit(3_500, GATE_CODE, self._next_gate_seq())))
                seqs = [cert.terminal_seq for _, cert in taps]
                batch_id = str(uuid.uuid4())
                answer = gate.request(
                    "POST",
                    "/v1/gate-batches",
                    {
                        "batch_id": batch_id,
                        "terminal_id": GATE_CODE,
                        "first_terminal_seq": min(seqs),
                        "last_terminal_seq": max(seqs),
                        "certificates": [cert.to_json() for _, cert in taps],
                    },
                    key=batch_id,
                )
                with self.log.lock:
                    for (card_id, cert), item in zip(taps, answer["items"], strict=True):
                        if item["outcome"] in ("posted", "duplicate"):
                            self.log.debits[(card_id, cert.counter)] = cert.amount
                        else:
                            self.log.refusals.append(f"gate item {item['reason']}")
        finally:
            issuer.close()
            gate.close()


@dataclass
class Reconciliation:
    lost: list[str]
    duplicated: list[str]
    half_written: list[str]
    # Keys of acknowledged requests whose answer is not stored with the key (the change
    # committed, then storing the answer failed): a retry must converge on the same effect.
    unstored_answers: list[str]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.half_written)


def reconcile(database_url: str, fleet: Fleet, log: ClientLog) -> Reconciliation:
    """The clients' 2xx log against the database: every acknowledged debit, load and
    refund is there exactly once; nothing else of ours is; nothing is left half-done;
    each card's chip balance is its ledger purse balance."""
    ct, ld, rf = schema.card_transactions, schema.loads, schema.refunds
    lost: list[str] = []
    duplicated: list[str] = []
    half: list[str] = []
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            debits = Counter(
                (row.card_id, row.card_counter)
                for row in conn.execute(
                    sa.select(ct.c.card_id, ct.c.card_counter).where(ct.c.kind == "debit")
                )
            )
            debit_transfers = Counter(
                row.transfer_id
                for row in conn.execute(
                    sa.select(ct.c.transfer_id).where(ct.c.transfer_id.is_not(None))
                )
            )
            transfer_ids = {row.id for row in conn.execute(sa.select(ledger_schema.transfers.c.id))}
            loads = {row.id: row for row in conn.execute(sa.select(ld))}
            refunds = {row.id: row for row in conn.execute(sa.select(rf))}
            open_claims = [
                row.key
                for row in conn.execute(
                    sa.select(schema.idempotency_keys.c.key).where(
                        schema.idempotency_keys.c.response_status.is_(None)
                    )
                )
            ]
            balances = _purse_balances(conn, [card_id for card_id, _ in fleet.cards])
    finally:
        engine.dispose()
    for key in log.debits:
        if debits[key] == 0:
            lost.append(f"debit {key}")
    for key, count in debits.items():
        if count > 1:
            duplicated.append(f"debit {key} x{count}")
        elif key not in log.debits:
            duplicated.append(f"debit {key} never acknowledged")
    for transfer_id, count in debit_transfers.items():
        if count > 1:
            duplicated.append(f"transfer {transfer_id} shared by {count} transactions")
        if transfer_id not in transfer_ids:
            half.append(f"card transaction's transfer {transfer_id} missing")
    for load_id in log.loads:
        row = loads.get(load_id)
        if row is None:
            lost.append(f"load {load_id}")
        elif row.status != "posted":
            half.append(f"load {load_id} acknowledged as confirmed but {row.status}")
    for load_id, row in loads.items():
        if load_id not in log.loads and row.status == "posted":
            duplicated.append(f"load {load_id} posted but never acknowledged")
    for refund_id in log.refunds:
        if refund_id not in refunds:
            lost.append(f"refund {refund_id}")
    for refund_id in refunds:
        if refund_id not in log.refunds:
            duplicated.append(f"refund {refund_id} never acknowledged")
    # The database keeps each Idempotency-Key as its digest.
    acknowledged = {idempotency.stored_key(key): key for key in log.acknowledged}
    unstored = [acknowledged[key] for key in open_claims if key in acknowledged]
    half += [
        f"Idempotency-Key digest {key}: no final answer"
        for key in open_claims
        if key not in acknowledged
    ]
    for card_id, card in fleet.cards:
        if balances.get(card_id, 0) != card.balance:
            what = lost if balances.get(card_id, 0) < card.balance else duplicated
            what.append(f"card {card_id}: chip {card.balance}, ledger {balances.get(card_id)}")
    return Reconciliation(lost, duplicated, half, unstored)


def settle(database_url: str, base: str, fleet: Fleet, log: ClientLog) -> Reconciliation:
    """Reconcile; retry every acknowledged request whose answer was not stored with its
    key (as its client would, had the answer been lost) and check it converges on the same
    object; then reconcile again: the retries must have changed nothing."""
    first = reconcile(database_url, fleet, log)
    diverged = retry_acknowledged(base, log, first.unstored_answers)
    final = reconcile(database_url, fleet, log)
    final.half_written += diverged + [
        f"Idempotency-Key {key}: still no stored answer after a retry"
        for key in final.unstored_answers
    ]
    return final


def retry_acknowledged(base: str, log: ClientLog, keys: list[str]) -> list[str]:
    """Send each acknowledged request under `keys` again, as a client that never got its
    answer would; returns how any retry failed to converge on the first answer's object."""
    diverged = []
    for key in keys:
        api_key, path, body, first = log.acknowledged[key]
        client = RetryingClient(base, api_key, ClientLog())
        try:
            again = client.request("POST", path, body, key=key)
        except Refused as refusal:
            diverged.append(f"{key}: first 2xx, then {refusal}")
            continue
        finally:
            client.close()
        if _identity(again) != _identity(first):
            diverged.append(f"{key}: {_identity(first)} then {_identity(again)}")
    return diverged


def _identity(answer: Any) -> Any:
    """What a retry must reproduce: the object's id, or a batch's per-item outcomes."""
    if "items" in answer:
        return [
            (item["terminal_seq"], item["outcome"] != "quarantined") for item in answer["items"]
        ]
    return answer.get("id")


def _purse_balances(conn: sa.Connection, card_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Each card's posted purse balance in the ledger."""
    cards = schema.cards
    purses = {
        row.purse_account_id: row.id
        for row in conn.execute(
            sa.select(cards.c.id, cards.c.purse_account_id).where(cards.c.id.in_(card_ids))
        )
    }
    accounts = queries.accounts_by_id(conn, list(purses))
    return {purses[account_id]: account.balance for account_id, account in accounts.items()}


def ledger_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`jakartaone ledger verify` as an operator runs it."""
    return subprocess.run(
        [str(BIN / "jakartaone"), "ledger", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
