"""`jakartaone serve` on PostgreSQL with two workers, over real HTTP: the documented curl
examples run as written, concurrent identical requests make one effect, webhooks are
delivered by the server's own outbox worker, metrics add up across workers."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from card_reader.certificate import Journey, JourneyAction, TransitMode
from jakartaone.migrate import upgrade
from ledger import make_engine
from merchant_api import schema
from tests.api.cards import SimulatedCard
from tests.api.live import BIN, ROOT, LiveServer, server_environment, start_server
from tests.api.receiver import Receiver

pytestmark = pytest.mark.postgres
DOCS = ROOT / "docs" / "api.md"


@pytest.fixture(scope="module")
def live(
    make_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str, str]]:
    url = make_postgres_database()
    server = start_server(url, tmp_path_factory.mktemp("live") / "server.log", workers=2)
    try:
        yield server, server.issuer_key(), url
    finally:
        server.stop()


class Client:
    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )

    def post(self, path: str, body: Any, key: str | None = None) -> httpx.Response:
        return self.http.post(
            path, json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())}
        )


def test_the_documented_examples_run(live: tuple[LiveServer, str, str], tmp_path: Path) -> None:
    server, key, _ = live
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) >= 6
    card = SimulatedCard(serial=bytes.fromhex("0123456789abcdef"))
    entry = Journey(
        TransitMode.MRT, JourneyAction.ENTRY, line=1, entry_station=6, entry_time=1_735_700_000
    )
    tap_in = card.debit(0, "MRT-BLM-01", 1, timestamp=1_735_700_000, journey=entry)
    again = card.debit(0, "MRT-BLM-01", 2, timestamp=1_735_703_600, journey=entry)
    (tmp_path / "tap-in.json").write_text(json.dumps(tap_in.to_json()))
    (tmp_path / "batch.json").write_text(
        json.dumps(
            {
                "batch_id": str(uuid.uuid4()),
                "terminal_id": "MRT-BLM-01",
                "first_terminal_seq": 1,
                "last_terminal_seq": 2,
                "certificates": [tap_in.to_json(), again.to_json()],
            }
        )
    )
    script = "set -euo pipefail\n" + "\necho\n".join(blocks)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "API": server.url, "KEY": key},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answers = json_stream(done.stdout)
    kinds = [a.get("object") for a in answers]
    assert {"terminal", "card", "load", "card_transaction", "list", "balance"} <= set(kinds)
    batch = next(a for a in answers if "items" in a)
    assert [i["outcome"] for i in batch["items"]] == ["duplicate", "posted"]
    hotlist = next(a for a in answers if "blocked" in a)
    assert hotlist == {"version": 0, "blocked": [], "unblocked": [], "full": True}
    assert card.serial_hex not in done.stdout or '"serial"' not in done.stdout


def json_stream(text: str) -> list[Any]:
    """Every JSON value in `text`, which holds them back to back (curl adds no newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def test_two_concurrent_identical_posts_make_one_effect(live: tuple[LiveServer, str, str]) -> None:
    server, key, url = live
    issuer = Client(server.url, key)
    body = {
        "kind": "merchant",
        "name": "Kopi Kenangan",
        "mcc": "5814",
        "kota": "Jakarta Pusat",
        "kecamatan": "Tanah Abang",
        "mdr_bps": 80,
    }
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        client = Client(server.url, key)
        barrier.wait()
        answers.append(client.post("/v1/merchants", body, key="race-kopi"))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses
    created = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(created) == 1
    engine = make_engine(url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(schema.merchants)
            .where(schema.merchants.c.name == "Kopi Kenangan")
        ).scalar_one()
    assert count == 1
    assert issuer.post("/v1/merchants", body, key="race-kopi").json()["id"] in created

    # The same certificate from eight terminals' retries at once: posted exactly once.
    merchant = next(iter(created))
    issuer.post(
        "/v1/terminals", {"terminal_code": "KOPI-1", "merchant_id": merchant, "kind": "pos"}
    )
    card = SimulatedCard()
    card_id = issuer.post("/v1/cards", {"serial": card.serial_hex}).json()["id"]
    load = issuer.post(
        "/v1/loads",
        {"card_id": card_id, "amount": 30_000, "channel": "bank_transfer", "card_counter": 0},
    ).json()
    credit = card.credit(30_000, bytes.fromhex(load["cryptogram"]), "KOPI-1")
    assert (
        issuer.post(
            f"/v1/loads/{load['id']}/confirm", {"certificate": credit.to_json()}
        ).status_code
        == 200
    )
    sale = card.debit(25_000, "KOPI-1").to_json()
    results: list[int] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        client = Client(server.url, key)
        barrier.wait()
        results.append(client.post("/v1/card-transactions", sale).status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] * 7 + [201], results
    balance = issuer.http.get(f"/v1/cards/{card_id}").json()["balance"]
    assert balance == 5_000
    with engine.connect() as conn:
        transfers = conn.execute(
            sa.text("SELECT count(*) FROM transfers WHERE kind = 'card_debit'")
        ).scalar_one()
    engine.dispose()
    assert transfers == 1


def test_the_servers_own_worker_delivers_webhooks(live: tuple[LiveServer, str, str]) -> None:
    server, key, _ = live
    issuer = Client(server.url, key)
    merchant = issuer.post(
        "/v1/merchants",
        {
            "kind": "merchant",
            "name": "Bakmi GM",
            "mcc": "5812",
            "kota": "Jakarta Barat",
            "kecamatan": "Kebon Jeruk",
            "mdr_bps": 100,
        },
    ).json()["id"]
    receiver = Receiver()
    try:
        hook = issuer.post(
            "/v1/webhook-endpoints",
            {"url": receiver.start(), "events": ["*"], "merchant_id": merchant},
        ).json()
        receiver.secrets = [hook["secret"]]
        issuer.post(
            "/v1/terminals", {"terminal_code": "BAKMI-1", "merchant_id": merchant, "kind": "pos"}
        )
        card = SimulatedCard()
        card_id = issuer.post("/v1/cards", {"serial": card.serial_hex}).json()["id"]
        load = issuer.post(
            "/v1/loads",
            {"card_id": card_id, "amount": 10_000, "channel": "bank_transfer", "card_counter": 0},
        ).json()
        credit = card.credit(10_000, bytes.fromhex(load["cryptogram"]), "BAKMI-1")
        issuer.post(f"/v1/loads/{load['id']}/confirm", {"certificate": credit.to_json()})
        sale = issuer.post("/v1/card-transactions", card.debit(7_500, "BAKMI-1").to_json()).json()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not receiver.received:
            time.sleep(0.1)
        assert [r["body"]["data"]["id"] for r in receiver.received] == [sale["id"]]
        assert receiver.rejected == 0
    finally:
        receiver.stop()


def test_metrics_add_up_every_worker(live: tuple[LiveServer, str, str]) -> None:
    server, key, _ = live
    client = Client(server.url, key)
    for _ in range(20):
        assert client.http.get("/v1/merchants").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    total = sum(
        float(v)
        for v in re.findall(
            r"jakartaone_http_requests_total"
            r'\{method="GET",route="/v1/merchants",status="200"\} (\S+)',
            text,
        )
    )
    assert total >= 20


def test_serve_refuses_to_start_without_its_secrets_or_schema(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    env = server_environment(url)
    unmigrated = subprocess.run(
        [str(BIN / "jakartaone"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unmigrated.returncode != 0 and "db upgrade" in unmigrated.stderr
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    del env["JAKARTAONE_API_SECRET_KEY"]
    no_secret = subprocess.run(
        [str(BIN / "jakartaone"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_secret.returncode != 0 and "JAKARTAONE_API_SECRET_KEY" in no_secret.stderr
