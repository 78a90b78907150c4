"""`python -m bench api [--json]`: the merchant API under load, over loopback HTTP.

Starts `jakartaone serve` on a scratch PostgreSQL database (2 workers), onboards a
merchant, a gate operator with a gate per batch and 6,000 pre-loaded cards (not timed), then
measures:
- single card-transaction submissions at concurrency 32 (each a real card-signed
  certificate, verified, posted to the ledger and committed before the answer);
- gate batches of 500 certificates, each from its own gate (two uploads in flight);
- the same load generator against a minimal Litestar endpoint under the same server, as
  the baseline.
Last line on stdout: {"card_tx_per_s", "card_tx_p50_ms", "card_tx_p99_ms",
"batch_certificates_per_s", "baseline_req_per_s", "ratio_to_baseline",
"server_cpu_ms_per_tx", "db_cpu_ms_per_tx"}. The last two are the CPU time (user and
system, from /proc) that the server's processes and the scratch database's backends spent
over the measured card transactions, per transaction: unlike the wall-clock numbers they
hardly move when other work shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.queues
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvloop
from sqlalchemy.engine import make_url

from bench import log
from bench.databases import scratch_database
from merchant_api.schemas.cards import MAX_CARD_BATCH
from tests.api.cards import SimulatedCard
from tests.api.live import ROOT, free_port, start_server

CARD_FLOAT = 1_000_000
# The load generator's processes. They share the machine's cores with the server and the
# database (loopback, one machine): the numbers are for all three together.
CLIENT_PROCESSES = 2
# Card transactions sent before the clock starts, as the baseline gets its own warm-up:
# the first requests of each worker fill its caches (API keys, card keys, compiled SQL).
WARM_UP = 500


def onboard(
    base: str, key: str, cards: int, gates: int
) -> tuple[str, str, list[tuple[str, SimulatedCard]]]:
    """A merchant with a POS, an operator with `gates` gates, their keys, and `cards` cards
    issued pre-loaded in personalization batches, each first load confirmed by the card."""
    with httpx.Client(
        base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}
    ) as client:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = client.post(path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
            answer.raise_for_status()
            result: dict[str, Any] = answer.json()
            return result

        merchant = post(
            "/v1/merchants",
            {
                "kind": "merchant",
                "name": "Bench Mart",
                "mcc": "5499",
                "kota": "Jakarta Pusat",
                "kecamatan": "Gambir",
                "mdr_bps": 70,
            },
        )["id"]
        operator = post(
            "/v1/merchants",
            {
                "kind": "operator",
                "name": "Bench Transit",
                "mcc": "4111",
                "kota": "Jakarta Pusat",
                "kecamatan": "Menteng",
                "mdr_bps": 50,
            },
        )["id"]
        post(
            "/v1/terminals", {"terminal_code": "BENCH-POS", "merchant_id": merchant, "kind": "pos"}
        )
        for gate in range(gates):
            post(
                "/v1/terminals",
                {
                    "terminal_code": f"BENCH-GATE-{gate}",
                    "merchant_id": operator,
                    "kind": "gate",
                    "line": "Bench",
                    "station": f"Station {gate}",
                },
            )
        merchant_key = post("/v1/api-keys", {"scope": "merchant", "merchant_id": merchant})["key"]
        gate_key = post("/v1/api-keys", {"scope": "gate-operator", "merchant_id": operator})["key"]
        simulated = [SimulatedCard() for _ in range(cards)]
        issued: list[dict[str, Any]] = []
        for at in range(0, cards, MAX_CARD_BATCH):
            body = {
                "cards": [
                    {"serial": card.serial_hex, "first_load": CARD_FLOAT}
                    for card in simulated[at : at + MAX_CARD_BATCH]
                ]
            }
            issued += post("/v1/card-batches", body)["cards"]

    def confirm(
        client: httpx.Client, pair: tuple[SimulatedCard, dict[str, Any]]
    ) -> tuple[str, SimulatedCard]:
        card, answer = pair
        credit = card.credit(CARD_FLOAT, bytes.fromhex(answer["cryptogram"]), "BENCH-POS")
        client.post(
            f"/v1/loads/{answer['load_id']}/confirm",
            json={"certificate": credit.to_json()},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        ).raise_for_status()
        return answer["id"], card

    with (
        httpx.Client(
            base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}
        ) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        pairs = zip(simulated, issued, strict=True)
        return merchant_key, gate_key, list(pool.map(lambda p: confirm(client, p), pairs))


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection; (status, body)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def post_all(
    base: str,
    path: str,
    bodies: list[bytes],
    key: str | None,
    concurrency: int,
    idempotency: list[str] | None = None,
    processes: int = CLIENT_PROCESSES,
) -> tuple[float, list[float], int]:
    """POST every body over `concurrency` kept-alive connections spread over `processes`
    client processes (one Python process's event loop would be the bottleneck before a
    server is); returns (seconds from the first request sent to the last answer,
    latencies, non-2xx count). The processes start together, after connecting."""
    processes = max(1, min(processes, concurrency))
    if processes == 1:
        started, finished, latencies, failures = uvloop.run(
            drive(base, path, bodies, key, concurrency, idempotency)
        )
        return finished - started, latencies, failures
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(processes)
    results: multiprocessing.queues.Queue[Any] = spawn.Queue()
    workers = [
        spawn.Process(
            target=_drive_share,
            args=(
                ready,
                results,
                (base, path, bodies[i::processes], key),
                concurrency // processes + (i < concurrency % processes),
                idempotency[i::processes] if idempotency else None,
            ),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    shares = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    # perf_counter is the system-wide monotonic clock on Linux: comparable across processes.
    seconds = max(s[1] for s in shares) - min(s[0] for s in shares)
    return seconds, [x for s in shares for x in s[2]], sum(s[3] for s in shares)


def _drive_share(
    ready: Any,
    results: Any,
    target: tuple[str, str, list[bytes], str | None],
    concurrency: int,
    idempotency: list[str] | None,
) -> None:
    results.put(uvloop.run(drive(*target, concurrency, idempotency, ready)))


async def drive(
    base: str,
    path: str,
    bodies: list[bytes],
    key: str | None,
    concurrency: int,
    idempotency: list[str] | None = None,
    ready: Any = None,
) -> tuple[float, float, list[float], int]:
    """POST every body with `concurrency` kept-alive connections (a plain asyncio HTTP/1.1
    client on uvloop: a general-purpose client library, not the server, would be the
    bottleneck);
    returns (started, finished, latencies, non-2xx count). With `ready` (a barrier), the
    connections are opened first and the requests start when every process is ready."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    failures = 0
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    # The requests are made before the clock starts: a terminal has its request ready.
    requests: list[bytes] = []
    for index, body in enumerate(bodies):
        extra = f"Idempotency-Key: {idempotency[index]}\r\n" if idempotency else ""
        requests.append(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    connections = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    if ready is not None:
        await asyncio.to_thread(ready.wait)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failures
        try:
            while not queue.empty():
                request = queue.get_nowait()
                started = time.perf_counter()
                status, answer = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    failures += 1
                    if failures < 5:
                        log(f"  {status}: {answer[:200]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(reader, writer) for reader, writer in connections))
    return started, time.perf_counter(), latencies, failures


class CpuMeter:
    """The CPU time (user and system, from /proc) that some processes spend between
    `start` and `stop`. The set is scanned every 50 ms, since processes come and go (the
    pools close their overflow connections): one that appears counts from zero, one that
    goes counts up to its last sample."""

    def __init__(self, matches: Callable[[Path], bool]) -> None:
        self._matches = matches
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._first = self._sample()
        self._last = dict(self._first)
        self._thread.start()

    def stop(self) -> float:
        self._stopping.set()
        self._thread.join()
        self._last.update(self._sample())
        ticks = sum(self._last[pid] - self._first.get(pid, 0) for pid in self._last)
        return ticks / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stopping.wait(0.05):
            self._last.update(self._sample())

    def _sample(self) -> dict[int, int]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not self._matches(entry):
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            found[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
        return found


def in_process_group(pgid: int) -> Callable[[Path], bool]:
    """The server: its parent and the workers, which share its process group."""

    def matches(entry: Path) -> bool:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid

    return matches


def backend_of(database: str) -> Callable[[Path], bool]:
    """A PostgreSQL backend connected to `database` (its title names the database)."""
    title = f" {database} ".encode()

    def matches(entry: Path) -> bool:
        command = (entry / "cmdline").read_bytes()
        return command.startswith(b"postgres: ") and title in command

    return matches


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def baseline(workers: int, requests: int, concurrency: int, body: bytes) -> float:
    port = free_port()
    serve = (
        "from merchant_api.server import run; "
        f"run('127.0.0.1', {port}, {workers}, app='bench.api_baseline:app', factory=False)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", serve],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"{base}/echo", json={}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        post_all(base, "/echo", [body] * 200, None, concurrency)  # warm up
        seconds, _, failures = post_all(base, "/echo", [body] * requests, None, concurrency)
        if failures:
            log(f"baseline: {failures} failures")
        return requests / seconds
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench api")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--cards", type=int, default=6_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES)
    args = parser.parse_args(argv)

    with scratch_database("postgresql") as url, tempfile.TemporaryDirectory() as folder:
        server = start_server(
            url,
            Path(folder) / "server.log",
            workers=args.workers,
            JAKARTAONE_API_RATE_PER_SECOND="1000000",
            JAKARTAONE_API_RATE_BURST="1000000",
        )
        try:
            key = server.issuer_key()
            log(f"onboarding {args.cards} cards (not timed)")
            merchant_key, gate_key, cards = onboard(server.url, key, args.cards, args.batches)
            amount = 1_000
            singles = []
            for index in range(WARM_UP + args.transactions):
                _, card = cards[index % len(cards)]
                singles.append(
                    json.dumps(card.debit(amount, "BENCH-POS", index).to_json()).encode()
                )
            # Each batch is one gate's journal: its own terminal and sequence numbers, and
            # the cards that tapped there, distinct from other gates' cards in the same
            # upload window (a card is at one station at a time).
            batches, batch_ids = [], []
            for gate in range(args.batches):
                certificates = [
                    cards[(gate * args.batch_size + i) % len(cards)][1]
                    .debit(100, f"BENCH-GATE-{gate}", i + 1)
                    .to_json()
                    for i in range(args.batch_size)
                ]
                batch_id = str(uuid.uuid4())
                batch_ids.append(batch_id)
                batches.append(
                    json.dumps(
                        {
                            "batch_id": batch_id,
                            "terminal_id": f"BENCH-GATE-{gate}",
                            "first_terminal_seq": 1,
                            "last_terminal_seq": args.batch_size,
                            "certificates": certificates,
                        }
                    ).encode()
                )
            needed = len(singles) * amount + args.batches * args.batch_size * 100
            assert needed <= len(cards) * CARD_FLOAT, "load the cards with more value"

            log(f"warm-up: {WARM_UP} card transactions (not timed)")
            _, _, warm_up_failures = post_all(
                server.url,
                "/v1/card-transactions",
                singles[:WARM_UP],
                merchant_key,
                args.concurrency,
                [str(uuid.uuid4()) for _ in range(WARM_UP)],
                args.client_processes,
            )
            log(f"{args.transactions} card transactions at concurrency {args.concurrency}")
            server_cpu = CpuMeter(in_process_group(server.process.pid))
            db_cpu = CpuMeter(backend_of(make_url(url).database or ""))
            server_cpu.start()
            db_cpu.start()
            seconds, latencies, failures = post_all(
                server.url,
                "/v1/card-transactions",
                singles[WARM_UP:],
                merchant_key,
                args.concurrency,
                [str(uuid.uuid4()) for _ in range(args.transactions)],
                args.client_processes,
            )
            server_seconds, db_seconds = server_cpu.stop(), db_cpu.stop()
            failures += warm_up_failures
            card_tx_per_s = args.transactions / seconds
            log(f"  {card_tx_per_s:.0f}/s, {failures} failures")

            log(f"{args.batches} gate batches of {args.batch_size}")
            batch_seconds, _, batch_failures = post_all(
                server.url, "/v1/gate-batches", batches, gate_key, 2, batch_ids, processes=1
            )
            batch_rate = args.batches * args.batch_size / batch_seconds
            log(f"  {batch_rate:.0f} certificates/s, {batch_failures} failures")
        finally:
            server.stop()

    log("baseline: a minimal Litestar endpoint under the same server")
    baseline_rate = baseline(args.workers, args.transactions, args.concurrency, singles[0])
    log(f"  {baseline_rate:.0f}/s")
    result = {
        "card_tx_per_s": round(card_tx_per_s, 1),
        "card_tx_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "card_tx_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "batch_certificates_per_s": round(batch_rate, 1),
        "baseline_req_per_s": round(baseline_rate, 1),
        "ratio_to_baseline": round(card_tx_per_s / baseline_rate, 3),
        "server_cpu_ms_per_tx": round(server_seconds * 1000 / args.transactions, 3),
        "db_cpu_ms_per_tx": round(db_seconds * 1000 / args.transactions, 3),
        "failures": failures + batch_failures,
    }
    print(json.dumps(result))
    return 0 if failures + batch_failures == 0 else 1
