"""The stores: what a batch reads is the same on both databases, and the PostgreSQL
store's write re-reads unbounded accounts' status after its balance updates, and
refuses, with a retryable serialization failure, a status that changed since the batch
read it (a concurrent freeze or close). On PostgreSQL a single commit is two round trips
(BEGIN with the read, COMMIT with the write), a failed write commits nothing, and a
failure between sending and reading leaves the connection usable."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy.engine import Engine

from ledger import (
    AccountKind,
    AccountStatus,
    BatchMode,
    Ledger,
    Transfer,
    VoidPending,
    db,
    make_engine,
)
from ledger.batch import apply_batch
from ledger.store import AccountRow, PostgresStore, Reads, Writes, store_for

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _writes(debit: uuid.UUID, credit: uuid.UUID, seen: AccountStatus) -> tuple[uuid.UUID, Writes]:
    transfer_id = uuid.uuid4()
    shard_deltas = [(debit, 0, 500, 0, 0, 0), (credit, 0, 0, 500, 0, 0)]
    return transfer_id, Writes(
        postings=[(transfer_id, 0, debit, "IDR", 500), (transfer_id, 1, credit, "IDR", -500)],
        bounded=[],
        shard_deltas=sorted(shard_deltas, key=lambda r: r[0].int),
        recheck=sorted([(debit, seen.value), (credit, seen.value)], key=lambda r: r[0].int),
        transfers=[
            (transfer_id, "fare", "posted", "IDR", None, None, 0, "{}", 1_790_000_000_000_000,
             bytes(32))
        ],
    )  # fmt: skip


@on_postgresql
@pytest.mark.parametrize("commit", [False, True])
def test_write_refuses_a_status_changed_since_the_read(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID], commit: bool
) -> None:
    debit, credit = open_account(), open_account()
    ledger.set_status(credit, AccountStatus.FROZEN)
    transfer_id, writes = _writes(debit, credit, seen=AccountStatus.OPEN)
    with engine.connect() as conn, conn.begin(), pytest.raises(sa.exc.DBAPIError) as refused:
        PostgresStore(conn).write(iter([writes]), overlapped=False, commit=commit)
    assert getattr(refused.value.orig, "sqlstate", None) == "40001"
    assert db._retryable(refused.value)
    assert ledger.get_transfer(transfer_id) is None
    assert ledger.get_account(debit).debits_posted == 0  # type: ignore[union-attr]


@on_postgresql
def test_write_accepts_the_status_the_batch_saw(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    debit, credit = open_account(), open_account()
    ledger.set_status(debit, AccountStatus.FROZEN)
    ledger.set_status(credit, AccountStatus.FROZEN)
    transfer_id, writes = _writes(debit, credit, seen=AccountStatus.FROZEN)
    with engine.connect() as conn, conn.begin():
        seqs = PostgresStore(conn).write(iter([writes]), overlapped=False, commit=False)
    assert list(seqs) == [transfer_id.int]
    assert ledger.get_account(credit).credits_posted == 500  # type: ignore[union-attr]


@on_postgresql
def test_batch_functions_keep_generic_index_probe_plans(engine: Engine) -> None:
    """ledger_read and ledger_write plan each statement once (migration 0006), and that
    one plan is right for any batch size only because hash and merge joins are off
    (0004): together the settings keep a single-transfer commit from being planned anew
    on every call without letting a thousand-transfer batch scan whole tables."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT proname, proconfig FROM pg_proc"
                " WHERE proname IN ('ledger_read', 'ledger_write')"
            )
        )
        settings = {name: config for name, config in rows}
    assert set(settings) == {"ledger_read", "ledger_write"}
    for config in settings.values():
        assert {"plan_cache_mode=force_generic_plan", "enable_hashjoin=off",
                "enable_mergejoin=off", "jit=off"} <= set(config)  # fmt: skip


@on_postgresql
def test_read_answers_in_json_text_not_jsonb(engine: Engine) -> None:
    """ledger_read's answer is only decoded by the client, so it is built as `json`
    (migration 0007): as jsonb, building it cost a 1,000-transfer batch about 4 ms more."""
    with engine.connect() as conn:
        result_type = conn.execute(
            sa.text("SELECT pg_get_function_result('ledger_read'::regproc)")
        ).scalar_one()
    assert result_type == "json"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_both_stores_read_the_same_rows(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    """What a batch reads, row for row, whatever form it travels in (PostgreSQL's
    ledger_read answers in JSON, SQLite with rows): the transfers asked for with their
    legs, the resolutions of the pending ids asked for, and each account asked for with
    its flags, bound, shards and four balances."""
    card = open_account(
        AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True, max_balance=2_000_000
    )
    hot = open_account(AccountKind.MERCHANT_PAYABLE, shards=4)
    bank = open_account(AccountKind.ISSUER_FLOAT)
    load, held, release = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ledger.transfer(Transfer.simple(load, bank, card, 50_000, "load"))
    ledger.transfer(Transfer.simple(held, card, hot, 3_500, "fare", pending=True))
    ledger.transfer(VoidPending(release, held))
    reads = Reads(transfers=[load, uuid.uuid4()], resolutions=[held], accounts=[card, hot])
    with engine.connect() as conn, conn.begin():
        found, meanwhile = store_for(conn).read(reads, lambda: "done")
    assert meanwhile == "done"
    load_seq = ledger.get_transfer(load).seq  # type: ignore[union-attr]
    legs = [(row[0], row[1], row[2], row[3], row[10], row[11], row[12]) for row in found.transfers]
    assert legs == [
        (load_seq, load, "load", "posted", 0, bank, 50_000),
        (load_seq, load, "load", "posted", 1, card, -50_000),
    ]
    assert found.resolutions == [(held, "void_pending")]
    open_ = AccountStatus.OPEN
    assert sorted(found.accounts, key=lambda row: row.id != card) == [
        AccountRow(card, "IDR", open_, True, False, 2_000_000, 1, [0, 50_000, 0, 0], True),
        AccountRow(hot, "IDR", open_, False, False, None, 4, [0, 0, 0, 0], False),
    ]


@on_postgresql
def test_a_single_commit_is_two_round_trips(
    engine: Engine, ledger: Ledger, open_account: Callable[..., uuid.UUID], tmp_path: Path
) -> None:
    """BEGIN travels with the read and COMMIT with the write, so the transaction has
    committed (another connection sees it) before the caller's own commit, which then
    has nothing left to send; the statements are prepared on the connection's first
    commit only."""
    bank, shop = open_account(AccountKind.ISSUER_FLOAT), open_account(shards=4)
    traces = []
    with engine.connect() as conn:
        pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
        for commit in ("first", "second"):
            fare = Transfer.simple(uuid.uuid4(), bank, shop, 3_500, "fare")
            trace = tmp_path / f"{commit}.trace"
            with trace.open("w") as out:
                pgconn.trace(out.fileno())
                pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                with conn.begin():
                    (result,) = apply_batch(
                        conn, [fare], BatchMode.INDEPENDENT, ledger.clock, commit=True
                    )
                    assert result.code.succeeded
                    assert pgconn.transaction_status == pq.TransactionStatus.IDLE
                    assert ledger.get_transfer(fare.id) is not None
                pgconn.untrace()
            traces.append(trace.read_text().splitlines())
    for lines in traces:
        assert sum("ReadyForQuery" in line for line in lines) == 2
    sent = [[line.split("\t")[2] for line in lines if line.startswith("F")] for lines in traces]
    assert sent[0].count("Parse") == 2 + 2  # BEGIN and COMMIT, and the two statements
    assert sent[1].count("Parse") == 2  # BEGIN and COMMIT only


@on_postgresql
def test_a_failure_between_sending_and_reading_leaves_the_connection_usable(
    engine: Engine, open_account: Callable[..., uuid.UUID]
) -> None:
    account = open_account()
    with engine.connect() as conn:
        with pytest.raises(ZeroDivisionError), conn.begin():
            store_for(conn).read(Reads(accounts=[account]), lambda: 1 / 0)
        with conn.begin():
            found, _ = store_for(conn).read(Reads(accounts=[account]), lambda: None)
    assert [row.id for row in found.accounts] == [account]


@on_postgresql
def test_statements_deallocated_behind_the_store_are_prepared_again(
    engine: Engine,
    database_url: str,
    open_account: Callable[..., uuid.UUID],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """psycopg deallocates every prepared statement of a connection after a rollback,
    and anyone may run DEALLOCATE ALL: the next write on that connection still commits,
    prepared again at once after a rollback, and after the other retried once."""
    bank, shop = open_account(AccountKind.ISSUER_FLOAT), open_account(shards=4)
    one_connection = make_engine(database_url, pool_size=1, max_overflow=0)
    ledger = Ledger(one_connection)

    def fare() -> uuid.UUID:
        transfer = Transfer.simple(uuid.uuid4(), bank, shop, 3_500, "fare")
        assert ledger.transfer(transfer).code.succeeded
        return transfer.id

    def prepared() -> set[str]:
        with one_connection.connect() as conn:
            names = conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars()
            return {name for name in names if name.startswith("ledger_")}

    ids = [fare()]
    assert prepared() == {"ledger_read", "ledger_write"}
    with one_connection.connect() as conn:
        for _ in range(6):  # psycopg prepares a statement of its own on its fifth run
            conn.exec_driver_sql("SELECT 1").scalar_one()
        conn.rollback()
    with caplog.at_level(logging.DEBUG, logger="ledger.db"):
        ids.append(fare())
        assert not caplog.records
        with one_connection.connect() as conn:
            conn.exec_driver_sql("DEALLOCATE ALL")
            conn.commit()
        ids.append(fare())
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1 and "ProgrammingError" in retries[0]
    assert prepared() == {"ledger_read", "ledger_write"}
    assert all(ledger.get_transfer(i) is not None for i in ids)
    one_connection.dispose()
