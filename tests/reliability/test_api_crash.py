"""The API server is killed (SIGKILL) at random moments under traffic and restarted: no
acknowledged effect is lost or doubled, nothing is half-written, the ledger verifies."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.live import start_server
from tests.reliability.faults import kill_whole_server, kill_worker, server_workers
from tests.reliability.traffic import ClientLog, Traffic, ledger_verify, onboard, settle

pytestmark = pytest.mark.postgres

ROUNDS = 20
WHOLE_SERVER_EVERY = 7  # rounds 7 and 14 kill every process; the rest kill one worker
LEASE_S = "2"  # a dead request's Idempotency-Key is taken over after this


def test_sigkill_under_traffic_loses_and_doubles_nothing(
    make_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """Promise: every 2xx the clients got is in the ledger exactly once; every request
    retried with its Idempotency-Key (or batch id) converges to one effect; no record is
    left half-written; `jakartaone ledger verify` passes after 20 SIGKILLs of the running
    server (whole server or one worker) at random moments, each followed by a restart."""
    url = make_postgres_database()
    log_path = tmp_path / "server.log"
    server = start_server(
        url, log_path, workers=2, JAKARTAONE_API_IDEMPOTENCY_LEASE_SECONDS=LEASE_S
    )
    port = int(server.url.rsplit(":", 1)[1])
    log = ClientLog()
    fleet = onboard(server.url, server.issuer_key(), log, cards=20)
    traffic = Traffic(fleet, log, shops=3, gates=2)
    rng = random.Random()
    traffic.start()
    try:
        for round_no in range(1, ROUNDS + 1):
            time.sleep(rng.uniform(0.2, 1.2))
            if round_no % WHOLE_SERVER_EVERY == 0:
                kill_whole_server(server)
                server = start_server(
                    url,
                    log_path,
                    workers=2,
                    migrate=False,
                    port=port,
                    JAKARTAONE_API_IDEMPOTENCY_LEASE_SECONDS=LEASE_S,
                )
                continue
            workers = server_workers(server)
            assert workers, "the server runs no workers"
            kill_worker(rng.choice(workers))
            # The supervisor restarts the worker; wait until it serves again.
            deadline = time.monotonic() + 60
            while len(server_workers(server)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(1.0)
    finally:
        traffic.stop()
    try:
        assert not traffic.errors, traffic.errors
        assert not log.unexpected_5xx, log.unexpected_5xx[:5]
        assert log.connection_errors > 0, "the kills never hit a request"
        assert len(log.debits) > 50 and log.loads and log.refunds
        outcome = settle(url, server.url, fleet, log)
        assert outcome.lost == []
        assert outcome.duplicated == []
        assert outcome.half_written == []
        verified = ledger_verify(server.env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "all invariants hold" in verified.stdout
    finally:
        server.stop()
