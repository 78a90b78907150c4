"""`python -m bench nightly --transactions N --json` (N default 1,000,000)

1. Generate a synthetic business day on PostgreSQL (not timed): merchants, operators and
   their terminals and gates, N/10 cards funded the day before, N card-signed debits (real
   certificate MACs under the test master keys) recorded by the API's tables and posted as
   ledger transfers with their content hashes, and the gates' batches. Rows are written
   with COPY, the ledger's triggers off for the bulk load only (they are back for the run).
   Between the day before and the day, the real nightly job runs for the day before (not
   timed): it seals the history and proves it, as a real back office's last night did, so
   the timed night re-hashes only what was sealed since (ledger proof, incremental form).
2. Run the whole nightly job on it (timed, per phase), in this process. Peak memory is the
   largest sum of the resident sets of this process and its children (the MAC workers)
   sampled every 0.1 s while the job runs, not only this process's own.
3. The ceiling: the bare DuckDB queries for the core matching (records against ledger
   transfers), the card-chain windows and the settlement aggregates, over the same
   extracted data.

Last line: {"transactions", "seconds", "phases", "peak_rss_mb", "ceiling_seconds",
"ratio_to_ceiling"}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import resource
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import log
from bench.databases import scratch_database
from card_reader.certificate import Certificate, TransactionKind, certificate_mac, serial_hash
from card_reader.keys import BackOfficeKeys
from jakartaone.migrate import upgrade
from ledger import Ledger, journal, make_engine
from merchant_api import chart
from merchant_api.crypto import ApiSecrets
from merchant_api.wib import business_date, day_bounds_us, now_us
from reconciliation.nightly import records
from reconciliation.nightly.cards import _CHAIN, SERIAL_PURPOSE
from reconciliation.nightly.extract import Scope, create_duck, extract
from reconciliation.nightly.job import DEFAULT_MEMORY_LIMIT, NightlyConfig, run_nightly

KEYS = BackOfficeKeys.from_hex("11" * 16, "22" * 16)
SECRETS = ApiSecrets.from_root(b"\x05" * 32)
MERCHANTS = 300
GATES = 200
TX_PER_CARD = 10
START_BALANCE = 500_000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench nightly")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with scratch_database("postgresql") as url:
        result = run(url, args.transactions)
    print(json.dumps(result) if args.json else result)
    return 0


def run(url: str, count: int) -> dict[str, Any]:
    day = dt.date.fromisoformat(business_date(now_us())) - dt.timedelta(days=1)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    log(f"generating {count:,} transactions (not timed)")
    # A child process generates, so the peak memory measured below is the job's own.
    child = multiprocessing.get_context("fork").Process(target=generate, args=(url, day, count))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError("generation failed")
    engine = make_engine(url)
    ledger = Ledger(engine)
    with tempfile.TemporaryDirectory() as out:
        log("running the nightly job")
        with TreeMemory() as memory:
            started = time.perf_counter()
            result = run_nightly(
                engine, ledger, KEYS, SECRETS, NightlyConfig(day=day, out_dir=Path(out))
            )
            seconds = time.perf_counter() - started
    peak_mb = max(memory.peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    log(f"job: {seconds:.1f} s, exit {int(result.exit_code)}, phases {result.phases}")
    ceiling = measure_ceiling(engine, day)
    return {
        "transactions": count,
        "seconds": round(seconds, 2),
        "phases": result.phases,
        "peak_rss_mb": round(peak_mb, 1),
        "ceiling_seconds": round(ceiling, 2),
        "ratio_to_ceiling": round(seconds / ceiling, 2) if ceiling else None,
        "exit_code": int(result.exit_code),
    }


class TreeMemory:
    """The peak of the summed resident memory of this process and all its descendants."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mb = max(self.peak_mb, sum(map(_rss_kb, _tree(os.getpid()))) / 1024)


def _tree(pid: int) -> list[int]:
    pids, at = [pid], 0
    while at < len(pids):
        for children in Path(f"/proc/{pids[at]}").glob("task/*/children"):
            try:
                pids.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
        at += 1
    return pids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure_ceiling(engine: Any, day: dt.date) -> float:
    """The same data extracted again (not timed), then only the core queries, bare."""
    with tempfile.TemporaryDirectory() as spill:
        (Path(spill) / "spill").mkdir()
        duck = create_duck(Path(spill), DEFAULT_MEMORY_LIMIT, 2)
        extract(
            engine,
            duck,
            day,
            day_bounds_us(day),
            Scope(frozenset(), frozenset(), frozenset()),
            Path(spill),
            1,
            lambda *_: None,
        )
        started = time.perf_counter()
        duck.execute(records.MATCH_SQL, {"day": day.isoformat()}).fetchall()
        duck.execute(
            f"SELECT count(*) FILTER (WHERE card_counter > coalesce(prev_counter, 0) + 1),"
            f" count(*) FILTER (WHERE balance_after <> prev_balance - amount)"
            f" FROM ({_CHAIN})",
            {"shard": 0},
        ).fetchall()
        duck.execute(
            "SELECT merchant_id, count(*), sum(amount), sum(fee) FROM tx"
            " WHERE business_date = $day GROUP BY merchant_id",
            {"day": day.isoformat()},
        ).fetchall()
        elapsed = time.perf_counter() - started
        duck.close()
    return elapsed


def generate(url: str, day: dt.date, count: int) -> None:
    engine = make_engine(url)
    ledger = Ledger(engine)
    chart.ensure_issuer_accounts(ledger)
    rng = random.Random(7)
    start_us, _ = day_bounds_us(day)
    owners = []
    for i in range(MERCHANTS + 4):
        mid = uuid.UUID(int=rng.getrandbits(128))
        operator = i >= MERCHANTS
        owners.append((mid, operator, chart.payable_account(mid, operator).id))
    ledger.create_accounts([chart.payable_account(m, op) for m, op, _ in owners])
    terminals = []  # (id, code, owner index)
    for i in range(MERCHANTS):
        terminals.append((uuid.UUID(int=rng.getrandbits(128)), f"POS-{i}", i))
    for g in range(GATES):
        terminals.append((uuid.UUID(int=rng.getrandbits(128)), f"GATE-{g}", MERCHANTS + g % 4))
    cards = max(1, count // TX_PER_CARD)
    raw = engine.raw_connection()
    cur = raw.cursor()
    cur.execute("SET session_replication_role = replica")  # bulk load: triggers off
    with cur.copy(
        "COPY merchants (id, kind, name, mcc, kota, kecamatan, mdr_bps, payout_bank_account,"
        " payable_account_id, created_us, updated_us) FROM STDIN"
    ) as copy:
        for i, (mid, operator, payable) in enumerate(owners):
            copy.write_row(
                (
                    mid,
                    "operator" if operator else "merchant",
                    f"Owner {i}",
                    "4111" if operator else "5411",
                    "Jakarta Pusat",
                    "Menteng",
                    50 if operator else 150,
                    f"ACC-{i}",
                    payable,
                    start_us,
                    start_us,
                )
            )
    with cur.copy(
        "COPY terminals (id, terminal_code, merchant_id, kind, created_us) FROM STDIN"
    ) as copy:
        for tid, code, owner in terminals:
            copy.write_row(
                (tid, code, owners[owner][0], "gate" if code[0] == "G" else "pos", start_us)
            )
    seq = 0
    term_seq = [0] * len(terminals)
    balances: dict[uuid.UUID, list[int]] = {}  # account -> [debits, credits]

    def add(account: uuid.UUID, amount: int) -> None:
        entry = balances.setdefault(account, [0, 0])
        entry[0 if amount > 0 else 1] += abs(amount)

    with (
        cur.copy(
            "COPY accounts (id, kind, currency, debits_must_not_exceed_credits,"
            " credits_must_not_exceed_debits, max_balance, shards, name, created_at_us)"
            " FROM STDIN"
        ) as acc_copy,
    ):
        purses = []
        for _ in range(cards):
            card_id = uuid.UUID(int=rng.getrandbits(128))
            account = chart.purse_account(card_id, False)
            purses.append((card_id, account.id, rng.getrandbits(64).to_bytes(8, "big")))
            acc_copy.write_row(
                (
                    account.id,
                    "card_purse",
                    "IDR",
                    True,
                    False,
                    account.max_balance,
                    1,
                    "Card purse",
                    start_us - 86_400_000_000,
                )
            )
    with cur.copy(
        "COPY cards (id, serial_hash, serial_sealed, hotlist_id, purse_account_id, created_us,"
        " updated_us) FROM STDIN"
    ) as copy:
        for card_id, purse, serial in purses:
            copy.write_row(
                (
                    card_id,
                    SECRETS.serial_hash(serial),
                    SECRETS.seal(SERIAL_PURPOSE, serial),
                    serial_hash(serial),
                    purse,
                    start_us,
                    start_us,
                )
            )
    log(f"  {cards:,} cards, {len(terminals)} terminals")
    t_rows: list[Any] = []
    p_rows: list[Any] = []
    ct_rows: list[Any] = []

    def transfer(
        tid: uuid.UUID, kind: str, at: int, legs: list[tuple[uuid.UUID, int]], meta: str
    ) -> None:
        nonlocal seq
        seq += 1
        postings = [(i, acc, amt) for i, (acc, amt) in enumerate(legs)]
        digest = journal.content_hash(
            id=tid,
            kind=kind,
            phase="posted",
            currency="IDR",
            pending_id=None,
            linked_id=None,
            timeout_s=0,
            metadata_json=meta,
            timestamp_us=at,
            postings=postings,
        )
        t_rows.append((seq, tid, kind, "posted", "IDR", meta, at, digest))
        for leg, acc, amt in postings:
            p_rows.append((tid, leg, acc, "IDR", amt))
            add(acc, amt)

    from merchant_api.services.certificates import transaction_id

    for _, purse, _ in purses:
        transfer(
            uuid.UUID(int=rng.getrandbits(128)),
            "load",
            start_us - 3_600_000_000,
            [(chart.ISSUER_FLOAT, START_BALANCE), (purse, -START_BALANCE)],
            "{}",
        )
    _flush(cur, t_rows, p_rows, ct_rows)
    _set_balances(cur, balances)
    balances.clear()
    cur.execute(f"SELECT setval('transfers_seq_seq', {seq})")
    raw.commit()
    cur.execute("ANALYZE")
    raw.commit()
    seq = _prior_night(engine, ledger, day - dt.timedelta(days=1))
    made = 0
    day_us = 86_400_000_000
    for n, (card_id, purse, serial) in enumerate(purses):
        key = KEYS.certificate_key(serial)
        balance = START_BALANCE
        per_card = TX_PER_CARD if n < cards - 1 else count - made
        for counter in range(1, per_card + 1):
            t_index = rng.randrange(len(terminals))
            tid_term, code, owner = terminals[t_index]
            term_seq[t_index] += 1
            amount = rng.randrange(1_000, 20_000)
            balance -= amount
            at = start_us + (counter * day_us) // (per_card + 2) + rng.randrange(1_000_000)
            mdr = 50 if owners[owner][1] else 150
            fee = chart.mdr_fee(amount, mdr)
            cert = Certificate(
                card_serial=serial,
                counter=counter,
                kind=TransactionKind.DEBIT,
                amount=amount,
                balance_after=balance,
                terminal_id=code,
                terminal_seq=term_seq[t_index],
                timestamp=at // 1_000_000,
                journey=None,
                mac=bytes(16),
            )
            mac = certificate_mac(key, cert.signed_bytes())
            tx_id = transaction_id(card_id, counter)
            legs = [(purse, amount), (owners[owner][2], -(amount - fee))]
            if fee:
                legs.append((chart.FEE_REVENUE, -fee))
            transfer(tx_id, "fare" if owners[owner][1] else "card_debit", at, legs, "{}")
            ct_rows.append(
                (
                    tx_id,
                    card_id,
                    counter,
                    "debit",
                    amount,
                    balance,
                    fee,
                    owners[owner][0],
                    tid_term,
                    code,
                    term_seq[t_index],
                    (at // 1_000_000) * 1_000_000,
                    mac,
                    b"\x00" * 32,
                    tx_id,
                    "gate_batch" if code[0] == "G" else "api",
                    0,
                    day.isoformat(),
                    at,
                )
            )
            made += 1
        if len(t_rows) > 200_000:
            _flush(cur, t_rows, p_rows, ct_rows)
        if n % 20_000 == 0:
            log(f"  {made:,} transactions")
    _flush(cur, t_rows, p_rows, ct_rows)
    with cur.copy(
        "COPY gate_batches (id, terminal_id, merchant_id, api_key_id, first_terminal_seq,"
        " last_terminal_seq, item_count, posted_count, duplicate_count, quarantined_count,"
        " request_digest, answer, business_date, received_us) FROM STDIN"
    ) as copy:
        for t_index, (tid, code, owner) in enumerate(terminals):
            if not code.startswith("GATE"):
                continue
            last = term_seq[t_index]
            for first in range(1, last + 1, 500):
                end = min(first + 499, last)
                copy.write_row(
                    (
                        uuid.uuid4(),
                        tid,
                        owners[owner][0],
                        uuid.UUID(int=1),
                        first,
                        end,
                        0,
                        0,
                        0,
                        0,
                        b"\x00" * 32,
                        "{}",
                        day.isoformat(),
                        start_us,
                    )
                )
    _set_balances(cur, balances)
    cur.execute(f"SELECT setval('transfers_seq_seq', {seq})")
    cur.execute("SET session_replication_role = origin")
    raw.commit()
    cur.execute("ANALYZE")
    raw.commit()
    raw.close()
    log(f"  generated {made:,} transactions, up to transfer seq {seq:,}")


def _prior_night(engine: Any, ledger: Ledger, day: dt.date) -> int:
    """The real nightly job for the day before (it seals and proves the history so far), as
    the back office ran it then; returns the last seq, after which the day's transfers go."""
    with tempfile.TemporaryDirectory() as out:
        result = run_nightly(
            engine, ledger, KEYS, SECRETS, NightlyConfig(day=day, out_dir=Path(out), progress=False)
        )
    seal = result.summary["seal"]
    log(f"  the night of {day}: exit {int(result.exit_code)}, sealed through {seal['last_seq']}")
    if not seal["verified"]:
        raise RuntimeError("the prior night's ledger proof failed")
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM transfers").scalar_one())


def _set_balances(cur: Any, balances: dict[uuid.UUID, list[int]]) -> None:
    """Add to every account's posted columns what the postings just written moved."""
    cur.execute("CREATE TEMP TABLE bal (id uuid, d bigint, c bigint) ON COMMIT DROP")
    with cur.copy("COPY bal FROM STDIN") as copy:
        for account, (debits, credits) in balances.items():
            copy.write_row((account, debits, credits))
    cur.execute(
        "UPDATE accounts a SET debits_posted = a.debits_posted + b.d,"
        " credits_posted = a.credits_posted + b.c"
        " FROM bal b WHERE a.id = b.id"
    )


def _flush(cur: Any, t_rows: list[Any], p_rows: list[Any], ct_rows: list[Any]) -> None:
    with cur.copy(
        "COPY transfers (seq, id, kind, phase, currency, metadata, timestamp_us, content_hash)"
        " FROM STDIN"
    ) as copy:
        for row in t_rows:
            copy.write_row(row)
    with cur.copy(
        "COPY postings (transfer_id, leg, account_id, currency, amount) FROM STDIN"
    ) as copy:
        for row in p_rows:
            copy.write_row(row)
    with cur.copy(
        "COPY card_transactions (id, card_id, card_counter, kind, amount, balance_after, fee,"
        " merchant_id, terminal_id, terminal_code, terminal_seq, card_time_us, mac,"
        " certificate_digest, transfer_id, source, refunded_amount, business_date, created_us)"
        " FROM STDIN"
    ) as copy:
        for row in ct_rows:
            copy.write_row(row)
    t_rows.clear()
    p_rows.clear()
    ct_rows.clear()
