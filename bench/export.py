"""`python -m bench export [--backend sqlite|postgresql] [--cards N ...]`: `jakartaone export`
on a large day, for time and peak memory.

For each size, fills a scratch database (migrated by Alembic) straight through SQL, not
timed: merchants and gates on every station, N cards with their shadow purses, and per
card a rail trip (tap-in, tap-out), a TransJakarta boarding and two purchases, with real
journey records planned by the gates' fare rules (about 5 card transactions per card).
The ledger holds no transfers, so the seal is the genesis one. Then runs the real command
in a child process and reads its peak resident memory. Streaming keeps that flat as the
day grows; DuckDB is capped at 1GB and spills beyond.
Last line on stdout: {"runs": [{"cards", "events", "seconds", "events_per_s",
"peak_rss_mb"}, ...]}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import log
from bench.databases import scratch_database
from card_reader.fares import LINES, GateMode, TapOutcome, plan_tap
from jakartaone.migrate import upgrade
from ledger import make_engine
from ledger import schema as ledger_schema
from merchant_api import schema

DAY = dt.date(2026, 11, 20)
MIDNIGHT_WIB = int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone(dt.timedelta(hours=7))).timestamp())
KEY = bytes(range(32)).hex()
CHUNK = 5_000
SHOP_MCCS = ("5812", "5411", "5912", "5499", "5311", "5814")
KECAMATAN = (("Jakarta Selatan", "Kebayoran Baru"), ("Jakarta Pusat", "Menteng"))


def _merchants(conn: sa.Connection) -> dict[str, Any]:
    """Shops, one operator per line, a POS per shop and a gate per station."""
    now = MIDNIGHT_WIB * 1_000_000
    shops, gates = [], {}
    merchant_rows, terminal_rows = [], []
    for i in range(60):
        kota, kecamatan = KECAMATAN[i % len(KECAMATAN)]
        merchant_rows.append(
            _merchant(f"Shop {i}", "merchant", SHOP_MCCS[i % len(SHOP_MCCS)], kota, kecamatan)
        )
        terminal_rows.append(_terminal(f"POS-{i}", merchant_rows[-1]["id"], "pos"))
        shops.append(terminal_rows[-1])
    for line in LINES.values():
        merchant_rows.append(_merchant(line.name, "operator", "4111", *KECAMATAN[1]))
        for station in line.stations:
            row = _terminal(f"G{station.code}", merchant_rows[-1]["id"], "gate")
            terminal_rows.append(row)
            gates[station.code] = row
    for row in merchant_rows:
        row |= {"created_us": now, "updated_us": now}
    for row in terminal_rows:
        row["created_us"] = now
    conn.execute(sa.insert(schema.merchants), merchant_rows)
    conn.execute(sa.insert(schema.terminals), terminal_rows)
    return {"shops": shops, "gates": gates}


def _merchant(name: str, kind: str, mcc: str, kota: str, kecamatan: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "kind": kind,
        "name": name,
        "mcc": mcc,
        "kota": kota,
        "kecamatan": kecamatan,
        "mdr_bps": 50,
        "payable_account_id": uuid.uuid4(),
    }


def _terminal(code: str, merchant_id: uuid.UUID, kind: str) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "terminal_code": code, "merchant_id": merchant_id, "kind": kind}


def _card_day(rng: random.Random, places: dict[str, Any], i: int) -> Iterator[dict[str, Any]]:
    """One card's transactions (card_transactions rows without card ids)."""
    balance, counter, journey = 200_000, 0, None
    line = LINES[rng.choice(["MRT-NS", "KRL-BOGOR"])]
    a, b = rng.sample(list(line.stations), 2)
    tj = LINES["TJ-1"]
    start = MIDNIGHT_WIB + rng.randint(6 * 3600, 9 * 3600)
    taps = [
        (line, a, GateMode.ENTRY, start),
        (line, b, GateMode.EXIT, start + 1800),
        (tj, rng.choice(tj.stations), GateMode.FLAT, start + 2400),
    ]
    for ln, station, mode, at in taps:
        plan = plan_tap(ln, station, mode, balance=balance, journey=journey, last=None, now=at)
        assert plan.outcome is TapOutcome.CHARGE
        journey, balance, counter = plan.journey, balance - plan.amount, counter + 1
        assert journey is not None
        gate = places["gates"][station.code]
        yield _row(counter, plan.amount, balance, gate, at, json.dumps(journey.to_json()))
    for _ in range(2):
        shop = rng.choice(places["shops"])
        amount = rng.randint(5, 120) * 500
        balance, counter = balance - amount, counter + 1
        at = MIDNIGHT_WIB + rng.randint(10 * 3600, 21 * 3600)
        yield _row(counter, amount, balance, shop, at, None)


def _row(
    counter: int, amount: int, balance: int, terminal: dict[str, Any], at: int, journey: Any
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "card_counter": counter,
        "kind": "debit",
        "amount": amount,
        "balance_after": balance,
        "fee": 0,
        "merchant_id": terminal["merchant_id"],
        "terminal_id": terminal["id"],
        "terminal_code": terminal["terminal_code"],
        "terminal_seq": counter,
        "card_time_us": at * 1_000_000,
        "journey": journey,
        "mac": bytes(16),
        "certificate_digest": os.urandom(32),
        "transfer_id": uuid.uuid4() if amount else None,
        "source": "api",
        "refunded_amount": 0,
        "business_date": DAY.isoformat(),
        "created_us": at * 1_000_000,
    }


def fill(url: str, cards: int) -> int:
    """Write the day; returns the number of card transactions."""
    engine = make_engine(url)
    upgrade(engine)
    rng = random.Random(f"bench-export|{cards}")
    written = 0
    with engine.begin() as conn:
        places = _merchants(conn)
    for first in range(0, cards, CHUNK):
        accounts, card_rows, tx_rows = [], [], []
        for i in range(first, min(cards, first + CHUNK)):
            card_id, purse = uuid.uuid4(), uuid.uuid4()
            registered = i % 3 == 0
            txs = list(_card_day(rng, places, i))
            for tx in txs:
                tx["card_id"] = card_id
            tx_rows += txs
            accounts.append(
                {
                    "id": purse,
                    "kind": "card_purse",
                    "currency": "IDR",
                    "debits_must_not_exceed_credits": True,
                    "credits_must_not_exceed_debits": False,
                    "max_balance": 20_000_000 if registered else 2_000_000,
                    "created_at_us": MIDNIGHT_WIB * 1_000_000,
                    "credits_posted": txs[-1]["balance_after"],
                }
            )
            card_rows.append(
                {
                    "id": card_id,
                    "serial_hash": os.urandom(32),
                    "serial_sealed": os.urandom(40),
                    "hotlist_id": uuid.uuid4().hex,
                    "registered": registered,
                    "holder_reference": f"kyc-{i}" if registered else None,
                    "purse_account_id": purse,
                    "created_us": MIDNIGHT_WIB * 1_000_000,
                    "updated_us": MIDNIGHT_WIB * 1_000_000,
                }
            )
        with engine.begin() as conn:
            conn.execute(sa.insert(ledger_schema.accounts), accounts)
            conn.execute(sa.insert(schema.cards), card_rows)
            conn.execute(sa.insert(schema.card_transactions), tx_rows)
        written += len(tx_rows)
    engine.dispose()
    return written


def run_export(url: str, out: Path) -> tuple[float, float]:
    """Seconds and the child's peak RSS (MB) of `jakartaone export` on the day."""
    env = {**os.environ, "JAKARTAONE_DATABASE_URL": url, "JAKARTAONE_RELEASE_KEY": KEY}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    command = ["export", "--date", DAY.isoformat(), "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "jakartaone.cli", *command],
        env=env,
        check=True,
        stdout=sys.stderr,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: sizes run in increasing order.
    return seconds, max(peak, before) / 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--cards", type=int, nargs="+", default=[5_000, 20_000])
    args = parser.parse_args(argv)
    runs = []
    for cards in sorted(args.cards):
        with scratch_database(args.backend) as url, tempfile.TemporaryDirectory() as out:
            log(f"filling {cards} cards ({args.backend}) ...")
            events = fill(url, cards)
            log(f"{events} card transactions; exporting ...")
            seconds, peak = run_export(url, Path(out) / "release")
        runs.append(
            {
                "cards": cards,
                "events": events,
                "seconds": round(seconds, 2),
                "events_per_s": round(events / seconds),
                "peak_rss_mb": round(peak),
            }
        )
        log(json.dumps(runs[-1]))
    print(json.dumps({"backend": args.backend, "runs": runs}))
    return 0
