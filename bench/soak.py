"""`python -m bench soak --minutes N [--json]`: the API under a traffic mix, with faults.

Starts `jakartaone serve` (2 workers) on a scratch PostgreSQL database, reached through a
TCP proxy this benchmark controls (the machine's PostgreSQL is never stopped). Client
threads then run for N minutes: gates uploading batches of taps, shop terminals submitting
sales, loads (create and confirm) and refunds, each request retried with its
Idempotency-Key until it gets a final answer. Meanwhile faults are injected at random
moments: SIGKILL of the whole server (then restarted on the same port), SIGKILL of one
worker (restarted by the server), and database connections cut for a few seconds.

At the end: `jakartaone ledger verify`, and the clients' log of 2xx answers reconciled
against the database. Last line on stdout:
{"minutes", "requests", "errors_5xx", "faults", "lost", "duplicated", "verify_ok", ...}
where errors_5xx counts 5xx answers other than the documented 503 `database_unavailable`
with Retry-After (those are counted in "unavailable_503"), and lost / duplicated count
acknowledged effects missing from, or doubled in, the ledger. Target: 0, 0, 0 and true.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import log
from bench.databases import scratch_database
from tests.api.live import LiveServer, start_server
from tests.reliability.faults import kill_whole_server, kill_worker, server_workers
from tests.reliability.proxy import TcpProxy, proxied
from tests.reliability.traffic import ClientLog, Traffic, ledger_verify, onboard, settle

LEASE_SECONDS = "5"


class Faults:
    """Picks and injects one fault at a time; counts what it did."""

    def __init__(self, server: LiveServer, proxy: TcpProxy, url: str, log_path: Path) -> None:
        self.server, self.proxy, self.url, self.log_path = server, proxy, url, log_path
        self.port = int(server.url.rsplit(":", 1)[1])
        self.done: Counter[str] = Counter()
        self.rng = random.Random()

    def inject(self) -> None:
        kind = self.rng.choice(["server_kill", "worker_kill", "db_cut"])
        if kind == "server_kill":
            kill_whole_server(self.server)
            self.server = self.restart()
        elif kind == "worker_kill":
            workers = server_workers(self.server)
            if not workers:
                return
            kill_worker(self.rng.choice(workers))
        else:
            self.proxy.cut()
            time.sleep(self.rng.uniform(1.0, 5.0))
            self.proxy.restore()
        self.done[kind] += 1
        log(f"fault {sum(self.done.values())}: {kind}")

    def restart(self) -> LiveServer:
        return start_server(
            self.url,
            self.log_path,
            workers=2,
            migrate=False,
            port=self.port,
            JAKARTAONE_API_IDEMPOTENCY_LEASE_SECONDS=LEASE_SECONDS,
        )


def soak(minutes: float, fault_every_s: float, cards: int) -> dict[str, Any]:
    with scratch_database("postgresql") as direct, tempfile.TemporaryDirectory() as folder:
        proxy, via_proxy = proxied(direct)
        log_path = Path(folder) / "server.log"
        server = start_server(
            via_proxy, log_path, workers=2, JAKARTAONE_API_IDEMPOTENCY_LEASE_SECONDS=LEASE_SECONDS
        )
        faults = Faults(server, proxy, via_proxy, log_path)
        try:
            clients = ClientLog()
            fleet = onboard(server.url, server.issuer_key(), clients, cards)
            traffic = Traffic(fleet, clients, shops=3, gates=2)
            log(f"traffic for {minutes} minute(s), a fault every ~{fault_every_s:.0f} s")
            started = time.monotonic()
            deadline = started + minutes * 60
            traffic.start()
            while time.monotonic() < deadline:
                time.sleep(min(faults.rng.expovariate(1 / fault_every_s), 3 * fault_every_s))
                if time.monotonic() >= deadline:
                    break
                faults.inject()
            proxy.restore()
            log("stopping the clients (each finishes its request)")
            traffic.stop()
            elapsed = (time.monotonic() - started) / 60
            outcome = settle(direct, faults.server.url, fleet, clients)
            verified = ledger_verify({**faults.server.env, "JAKARTAONE_DATABASE_URL": direct})
            for problem in [*outcome.lost, *outcome.duplicated, *outcome.half_written][:20]:
                log(f"  {problem}")
            for error in traffic.errors[:5]:
                log(f"  client error: {error!r}")
            for answer in clients.unexpected_5xx[:5]:
                log(f"  unexpected 5xx: {answer}")
            if verified.returncode != 0:
                log(verified.stdout + verified.stderr)
            return {
                "minutes": round(elapsed, 2),
                "requests": clients.requests,
                "errors_5xx": len(clients.unexpected_5xx),
                "faults": sum(faults.done.values()),
                "lost": len(outcome.lost),
                "duplicated": len(outcome.duplicated),
                "verify_ok": verified.returncode == 0 and not outcome.half_written,
                "half_written": len(outcome.half_written),
                "client_errors": len(traffic.errors),
                "unavailable_503": clients.unavailable_503,
                "connection_errors": clients.connection_errors,
                "server_kills": faults.done["server_kill"],
                "worker_kills": faults.done["worker_kill"],
                "db_cuts": faults.done["db_cut"],
                "debits": len(clients.debits),
                "loads": len(clients.loads),
                "refunds": len(clients.refunds),
            }
        finally:
            faults.server.stop()
            proxy.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every", type=float, default=20.0, help="Mean seconds.")
    parser.add_argument("--cards", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="Only the JSON line on stdout.")
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.fault_every, args.cards)
    if not args.json:
        for name, value in result.items():
            print(f"{name:>18}: {value}")
    print(json.dumps(result))
    clean = (
        result["lost"] == result["duplicated"] == result["errors_5xx"] == 0
        and result["verify_ok"]
        and result["client_errors"] == 0
    )
    return 0 if clean else 1
