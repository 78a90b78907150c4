"""PostgreSQL goes away under traffic (the API's connections to it are cut through a proxy
the test controls; the machine's shared PostgreSQL keeps running for everyone else)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.live import start_server
from tests.reliability.proxy import proxied
from tests.reliability.traffic import (
    POS_CODE,
    ClientLog,
    RetryingClient,
    Traffic,
    ledger_verify,
    onboard,
    settle,
    top_up,
)

pytestmark = pytest.mark.postgres


def test_database_outage_is_503_then_service_resumes_without_restart(
    make_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """Promise: while the database is unreachable every request that needs it is answered
    503 `database_unavailable` with Retry-After (never a 500, never a hang), nothing
    partial is written, and the same server process serves again as soon as the database
    is back; the clients' retries then converge: nothing lost, nothing doubled."""
    direct = make_postgres_database()
    proxy, via_proxy = proxied(direct)
    server = start_server(
        via_proxy, tmp_path / "server.log", workers=1, JAKARTAONE_API_IDEMPOTENCY_LEASE_SECONDS="2"
    )
    try:
        log = ClientLog()
        fleet = onboard(server.url, server.issuer_key(), log, cards=12)
        # The test's own card, loaded before the outage; no traffic thread touches it.
        card_id, card = fleet.cards.pop()
        loader = RetryingClient(server.url, fleet.issuer_key, log)
        top_up(loader, log, card_id, card)
        loader.close()
        traffic = Traffic(fleet, log, shops=2, gates=1)
        traffic.start()
        time.sleep(1.5)
        pid = server.process.pid
        proxy.cut()
        probe, issuer = (
            httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {k}"})
            for k in (fleet.merchant_key, fleet.issuer_key)
        )
        time.sleep(1.5)  # past the API key cache: authentication needs the database too
        answers = [issuer.get(f"/v1/cards/{card_id}") for _ in range(3)]
        sale = card.debit(1_000, POS_CODE, terminal_seq=card.counter + 1)
        answers.append(
            probe.post(
                "/v1/card-transactions",
                json=sale.to_json(),
                headers={"Idempotency-Key": f"outage-{sale.counter}"},
            )
        )
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "database_unavailable"
            assert int(answer.headers["retry-after"]) >= 1
        time.sleep(1.0)
        proxy.restore()
        deadline = time.monotonic() + 30
        while (back := issuer.get(f"/v1/cards/{card_id}")).status_code != 200:
            assert time.monotonic() < deadline, f"the API did not come back: {back.text}"
            time.sleep(0.2)
        assert server.process.poll() is None and server.process.pid == pid  # no restart
        retried = probe.post(
            "/v1/card-transactions",
            json=sale.to_json(),
            headers={"Idempotency-Key": f"outage-{sale.counter}"},
        )
        assert retried.status_code == 201, retried.text
        log.debits[(card_id, sale.counter)] = sale.amount
        fleet.cards.append((card_id, card))
        time.sleep(1.5)
        traffic.stop()
        probe.close()
        issuer.close()
        assert not traffic.errors, traffic.errors
        assert not log.unexpected_5xx, log.unexpected_5xx[:5]
        assert log.unavailable_503 > 0
        outcome = settle(direct, server.url, fleet, log)
        assert (outcome.lost, outcome.duplicated, outcome.half_written) == ([], [], [])
        verified = ledger_verify({**server.env, "JAKARTAONE_DATABASE_URL": direct})
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "database unavailable" in server.log.read_text()  # the operator sees why
    finally:
        server.stop()
        proxy.close()
