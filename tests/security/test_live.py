"""The real server (`jakartaone serve`, two worker processes, PostgreSQL, logging at
DEBUG) under attack over real HTTP: 1,000+ schemathesis-generated requests, a brute force
on keys from one client address while another is served, and a full flow whose logs,
answers and database are then searched for every secret and card serial it handled."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import sqlalchemy as sa

from ledger import make_engine
from tests.api.cards import SimulatedCard
from tests.api.live import (
    TEST_API_SECRET,
    TEST_CERTIFICATE_MASTER,
    TEST_LOAD_MASTER,
    LiveServer,
    start_server,
)
from tests.api.test_schemathesis import CHECKS, headers, run_every_operation
from tests.security.api import assert_problem

# One server (one database) for the module: its tests stay in one xdist worker.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("security-live")]
GENERATED_CASES = 1_000


@pytest.fixture(scope="module")
def live(
    make_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str, str]]:
    url = make_postgres_database()
    server = start_server(
        url,
        tmp_path_factory.mktemp("security-live") / "server.log",
        workers=2,
        JAKARTAONE_LOG_LEVEL="DEBUG",
        # The generated requests all use one key; its bucket is not what they test.
        JAKARTAONE_API_RATE_PER_SECOND="100000",
        JAKARTAONE_API_RATE_BURST="100000",
    )
    try:
        yield server, server.issuer_key(), url
    finally:
        server.stop()


class Api:
    """One key talking to the live server; keeps every answer for the secret scan."""

    answers: list[httpx.Response]

    def __init__(self, base: str, key: str, answers: list[httpx.Response]) -> None:
        self.key = key
        self.http = httpx.Client(base_url=base, timeout=30)
        self.answers = answers

    def _keep(self, answer: httpx.Response) -> httpx.Response:
        self.answers.append(answer)
        return answer

    def get(self, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return self._keep(self.http.get(path, params=params, headers=headers))

    def post(self, path: str, body: Any, idempotency_key: str | None = None) -> httpx.Response:
        sent = headers(self.key)
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        return self._keep(self.http.post(path, json=body, headers=sent))

    def ok(self, answer: httpx.Response) -> Any:
        assert answer.status_code in (200, 201), answer.text
        return answer.json()


def test_a_thousand_generated_requests_never_break_the_server_or_the_schema(
    live: tuple[LiveServer, str, str],
) -> None:
    """Promise: 1,000+ requests generated from the OpenAPI document by schemathesis, sent
    over HTTP to the running server, never get a 5xx, and every answer matches the
    document (status, content type, body)."""
    server, key, _ = live
    session = requests.Session()
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    ran = run_every_operation(
        schema,
        lambda case: case.call_and_validate(
            base_url=server.url, session=session, headers=headers(key), checks=CHECKS
        ),
        examples=24,
    )
    assert ran >= GENERATED_CASES, ran


def readable(value: object) -> str:
    """A stored value as text to search: bytes both as hex (a raw serial or key) and as
    UTF-8 (a JSON answer kept for replay)."""
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        return raw.hex() + " " + raw.decode("utf-8", "replace")
    return str(value)


def test_a_brute_force_on_keys_is_stopped_for_its_address_only(
    live: tuple[LiveServer, str, str],
) -> None:
    """Promise: guessing keys from one client address gets 30 answers (per server
    process; one kept-alive connection stays with one) before every further request from
    it is 429, a valid key included; a client at another address is served."""
    server, key, _ = live
    prefix = key.split("_")[1]
    attacker = httpx.Client(
        base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30
    )
    bystander = httpx.Client(
        base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=30
    )
    statuses = [
        attacker.get(
            "/v1/merchants", headers={"Authorization": f"Bearer jo_{prefix}_{uuid.uuid4().hex}"}
        ).status_code
        for _ in range(45)
    ]
    assert statuses == [401] * 30 + [429] * 15
    blocked = attacker.get("/v1/merchants", headers={"Authorization": f"Bearer {key}"})
    assert_problem(blocked, 429, "rate_limited")
    assert int(blocked.headers["Retry-After"]) >= 1
    served = bystander.get("/v1/merchants", headers={"Authorization": f"Bearer {key}"})
    assert served.status_code == 200, served.text


def test_no_secret_or_serial_leaks_from_a_full_flow(
    live: tuple[LiveServer, str, str],
) -> None:
    """Promise: after a full flow (onboarding, keys, a webhook secret, cards issued,
    registered, loaded, spent at a gate and a shop, refunded, blocked; and refusals:
    wrong and revoked keys, forged certificates, bodies carrying a serial), the server's
    DEBUG log, every answer and every table hold no API key or secret part, no webhook
    secret, no master or root key, no per-card key and no card serial in clear (a key or
    secret appears only in the one answer that creates it)."""
    server, key, url = live
    answers: list[httpx.Response] = []
    issuer = Api(server.url, key, answers)
    merchant = issuer.ok(
        issuer.post(
            "/v1/merchants",
            {
                "kind": "merchant",
                "name": "Toko Rahasia",
                "mcc": "5411",
                "kota": "Jakarta Pusat",
                "kecamatan": "Gambir",
                "mdr_bps": 70,
            },
        )
    )
    operator = issuer.ok(
        issuer.post(
            "/v1/merchants",
            {
                "kind": "operator",
                "name": "LRT Jakarta",
                "mcc": "4111",
                "kota": "Jakarta Timur",
                "kecamatan": "Pulo Gadung",
                "mdr_bps": 40,
            },
        )
    )
    for code, owner, kind in (("SEC-POS", merchant, "pos"), ("SEC-GATE", operator, "gate")):
        issuer.ok(
            issuer.post(
                "/v1/terminals", {"terminal_code": code, "merchant_id": owner["id"], "kind": kind}
            )
        )
    created_keys = [
        issuer.ok(issuer.post("/v1/api-keys", body))
        for body in (
            {"scope": "merchant", "merchant_id": merchant["id"]},
            {"scope": "gate-operator", "merchant_id": operator["id"]},
            {"scope": "analyst"},
        )
    ]
    shown_once = {answer.text for answer in answers[-3:]}
    shop, gate, analyst = (Api(server.url, made["key"], answers) for made in created_keys)
    hook = shop.ok(
        shop.post("/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/h", "events": ["*"]})
    )
    shown_once.add(answers[-1].text)

    cards = [SimulatedCard() for _ in range(3)]
    for index, card in enumerate(cards):
        body: dict[str, Any] = {"serial": card.serial_hex, "registered": index == 0}
        if index == 0:
            body["holder_reference"] = "kyc-rahasia"
        # A careless client names the request by the serial: only its digest is kept.
        made = issuer.ok(issuer.post("/v1/cards", body, f"issue-{card.serial_hex}"))
        again = issuer.post("/v1/cards", body, f"issue-{card.serial_hex}")
        assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == made
        load = issuer.ok(
            issuer.post(
                "/v1/loads",
                {"card_id": made["id"], "amount": 40_000, "channel": "bank_transfer",
                 "card_counter": 0},
            )
        )  # fmt: skip
        credit = card.credit(40_000, bytes.fromhex(load["cryptogram"]), "SEC-POS")
        issuer.ok(issuer.post(f"/v1/loads/{load['id']}/confirm", {"certificate": credit.to_json()}))
        sale = shop.ok(shop.post("/v1/card-transactions", card.debit(9_000, "SEC-POS").to_json()))
        batch_id = str(uuid.uuid4())
        gate_answer = gate.http.post(
            "/v1/gate-batches",
            json={
                "batch_id": batch_id,
                "terminal_id": "SEC-GATE",
                "first_terminal_seq": 1,
                "last_terminal_seq": 1,
                "certificates": [card.debit(3_500, "SEC-GATE").to_json()],
            },
            headers={"Authorization": f"Bearer {gate.key}", "Idempotency-Key": batch_id},
        )
        answers.append(gate_answer)
        assert gate_answer.status_code in (200, 201), gate_answer.text
        shop.ok(shop.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 1_000}))
        # Refusals that carry the serial or the keys.
        assert_problem(shop.post("/v1/card-transactions", {**sale, "mac": "00" * 16}))
        forged = {**card.debit(1, "SEC-POS").to_json(), "mac": "ab" * 16}
        assert_problem(shop.post("/v1/card-transactions", forged), 422, "mac_invalid")
        assert_problem(issuer.post("/v1/cards", {**body, "serial": card.serial_hex.upper()}))
        assert_problem(issuer.post("/v1/cards", {"serial": card.serial_hex, "extra": 1}))
        assert_problem(issuer.post("/v1/cards", {"serial": card.serial_hex + "\n"}))
    issuer.ok(issuer.post(f"/v1/cards/{made['id']}/block", {"reason": "stolen"}))
    for reader in (issuer, analyst, shop):
        for path in (
            "/v1/cards",
            "/v1/card-transactions",
            "/v1/loads",
            "/v1/refunds",
            "/v1/events",
            "/v1/card-credits",
            "/v1/api-keys",
            "/v1/webhook-endpoints",
        ):
            reader.get(path, limit=100)  # fmt: skip
    wrong = Api(server.url, key[:-4] + "AAAA", answers)
    assert_problem(wrong.get("/v1/merchants"), 401, "api_key_invalid")
    issuer.ok(issuer.post(f"/v1/api-keys/{created_keys[2]['id']}/revoke", {}))
    time.sleep(1.2)  # the other worker trusts a key it looked up for up to 1 s
    assert_problem(analyst.get("/v1/merchants"), 401)
    assert hook["secret"].startswith("whsec_")

    secrets = {
        "root key": TEST_API_SECRET,
        "certificate master key": TEST_CERTIFICATE_MASTER,
        "load master key": TEST_LOAD_MASTER,
        "webhook secret": hook["secret"],
    }
    for token in [key, *(made["key"] for made in created_keys)]:
        secrets[f"api key {token[:19]}"] = token
        secrets[f"api key secret {token[:19]}"] = token.split("_", 2)[2]
    for card in cards:
        secrets[f"serial {card.serial_hex[-4:]}"] = card.serial_hex
        for role in ("authentication", "certificate", "load"):
            secrets[f"{role} key of {card.serial_hex[-4:]}"] = getattr(card.keys, role).hex()

    log = server.log.read_text(errors="replace")
    assert log.count('"message":"request"') >= len(answers)  # every request was logged
    bodies = [a.text for a in answers if a.text not in shown_once]
    errors = [a.text for a in answers if a.status_code >= 400]
    assert len(errors) >= 15
    engine = make_engine(url)
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        dump = "\n".join(
            readable(value)
            for table in list(tables)
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
            for value in row
        )
    engine.dispose()
    places = {"server log": log, "answers": "\n".join(bodies), "database": dump}
    leaks = [
        (name, place)
        for name, secret in secrets.items()
        for place, text in places.items()
        if re.search(re.escape(secret), text, flags=re.IGNORECASE)
    ]
    assert not leaks, leaks
    # The scan can find what it looks for: the answers that show a key once do hold it.
    assert any(created_keys[0]["key"] in text for text in shown_once)
