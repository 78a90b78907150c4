"""Concurrent writers on PostgreSQL: several processes hammer bounded card purses and one
hot account, resubmitting each other's transfer ids. Afterwards every invariant holds,
every id was applied exactly once, and no update was lost."""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy.engine import Engine

from ledger import (
    AccountKind,
    BatchMode,
    Ledger,
    NewAccount,
    ResultCode,
    Transfer,
    db,
    make_engine,
    run_read,
)
from ledger.verify import verify

WORKERS = 6
ROUNDS = 60


def _worker(
    url: str, seed: int, cards: list[uuid.UUID], hot: uuid.UUID, shared: list[uuid.UUID]
) -> list[tuple[str, str, int]]:
    """Debit random cards to the hot account; a third of the ids are shared by all workers."""
    rng = random.Random(seed)
    engine = make_engine(url, pool_size=2)
    ledger = Ledger(engine)
    outcomes: list[tuple[str, str, int]] = []
    for round_no in range(ROUNDS):
        batch = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.33:
                index = rng.randrange(len(shared))
                tid, card, amount = shared[index], cards[index % len(cards)], 700 + index
            else:
                tid, card, amount = uuid.uuid4(), rng.choice(cards), rng.randint(100, 1_500)
            if tid not in {t.id for t in batch}:
                batch.append(Transfer.simple(tid, card, hot, amount, "fare"))
        mode = BatchMode.LINKED if round_no % 5 == 0 else BatchMode.INDEPENDENT
        for request, result in zip(batch, ledger.submit(batch, mode), strict=True):
            amount = request.postings[0].amount
            outcomes.append((str(request.id), result.code.value, amount))
    engine.dispose()
    return outcomes


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_writers_keep_every_invariant(engine: Engine, database_url: str) -> None:
    ledger = Ledger(engine)
    bank = uuid.uuid4()
    hot = uuid.uuid4()
    cards = [uuid.uuid4() for _ in range(5)]
    ledger.create_accounts(
        [
            NewAccount(bank, AccountKind.ISSUER_FLOAT),
            NewAccount(hot, AccountKind.OPERATOR_PAYABLE, shards=16),
            *(
                NewAccount(
                    c,
                    AccountKind.CARD_PURSE,
                    debits_must_not_exceed_credits=True,
                    max_balance=2_000_000,
                )
                for c in cards
            ),
        ]
    )
    for card in cards:
        ledger.transfer(Transfer.simple(uuid.uuid4(), bank, card, 40_000, "load"))
    shared = [uuid.uuid4() for _ in range(40)]

    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        jobs = [
            pool.apply_async(_worker, (database_url, seed, cards, hot, shared))
            for seed in range(WORKERS)
        ]
        outcomes = [o for job in jobs for o in job.get(timeout=300)]

    applied = Counter(tid for tid, code, _ in outcomes if code == ResultCode.OK)
    assert max(applied.values()) == 1, "an id was applied twice"
    succeeded = {tid: amount for tid, code, amount in outcomes if code in ("ok", "exists")}
    assert set(succeeded) == set(applied), "an id answered exists but was never applied"
    assert {code for _, code, _ in outcomes} <= {
        "ok",
        "exists",
        "exceeds_credits",
        "linked_event_failed",
    }
    refused = sum(1 for _, code, _ in outcomes if code == "exceeds_credits")
    assert refused > 0, "the purses never ran dry: the bound was not exercised"

    accounts = ledger.get_accounts([hot, *cards])
    assert accounts[hot].credits_posted == sum(succeeded.values())
    assert sum(accounts[c].debits_posted for c in cards) == sum(succeeded.values())
    assert all(accounts[c].balance >= 0 for c in cards)
    report = run_read(engine, verify)
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_connection_is_retried_not_reported(engine: Engine, database_url: str) -> None:
    """The database drops the session (a restart, a failover): the write is run again on
    a fresh connection and the caller sees one success."""
    fragile = make_engine(database_url, pool_pre_ping=False, pool_size=1, max_overflow=0)
    ledger = Ledger(fragile)
    a, b = uuid.uuid4(), uuid.uuid4()
    ledger.create_accounts(
        [NewAccount(a, AccountKind.SUSPENSE), NewAccount(b, AccountKind.SUSPENSE)]
    )
    with fragile.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with engine.connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    transfer = Transfer.simple(uuid.uuid4(), a, b, 1_000, "test")
    assert ledger.submit([transfer])[0].code is ResultCode.OK
    assert ledger.get_account(b).credits_posted == 1_000  # type: ignore[union-attr]
    fragile.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_lost_while_idle_is_replaced_before_a_read_uses_it(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads are not retried; a pooled connection that sat idle is pinged at checkout, so
    one the database dropped meanwhile never reaches them."""
    monkeypatch.setattr(db, "IDLE_PING_S", 0.05)
    pooled = make_engine(database_url, pool_size=1, max_overflow=0)
    ledger = Ledger(pooled)
    a = uuid.uuid4()
    ledger.create_accounts([NewAccount(a, AccountKind.SUSPENSE)])
    with pooled.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with engine.connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    time.sleep(0.1)
    assert ledger.get_account(a) is not None
    pooled.dispose()
