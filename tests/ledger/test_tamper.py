"""Tampering: the database refuses edits to the journal; edits made with its guards
dropped are found by the verifier."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger import AccountKind, Ledger, Transfer, run_read
from ledger.db import is_sqlite
from ledger.verify import Check, verify
from tests.conftest import both_backends


@pytest.fixture
def journal(ledger: Ledger, open_account: Callable[..., uuid.UUID]) -> list[uuid.UUID]:
    """A small journal, sealed, then one more unsealed transfer. Returns the transfer ids."""
    bank = open_account(AccountKind.ISSUER_FLOAT)
    card = open_account(AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True)
    shop = open_account(AccountKind.MERCHANT_PAYABLE, shards=4)
    ids = [uuid.uuid4() for _ in range(4)]
    ledger.transfer(Transfer.simple(ids[0], bank, card, 100_000, "load"))
    ledger.transfer(Transfer.simple(ids[1], card, shop, 20_000, "sale"))
    ledger.transfer(Transfer.simple(ids[2], card, shop, 5_000, "sale"))
    ledger.seal()
    ledger.transfer(Transfer.simple(ids[3], card, shop, 1_000, "sale"))
    assert run_read(ledger.engine, verify).ok
    return ids


def _checks(engine: Engine) -> set[Check]:
    return {v.check for v in run_read(engine, verify).violations}


def _drop_guards(conn: Connection) -> None:
    if is_sqlite(conn):
        for (name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        ).all():
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
    else:
        for table in ("transfers", "postings", "journal_blocks"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


@both_backends
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount = amount * 2",
        "DELETE FROM postings",
        "UPDATE transfers SET kind = 'refund'",
        "DELETE FROM transfers",
        "UPDATE journal_blocks SET transfer_count = 99",
        "DELETE FROM journal_blocks",
    ],
)
def test_raw_sql_edits_are_refused(
    engine: Engine, journal: list[uuid.UUID], statement: str
) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="append_only"), engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert run_read(engine, verify).ok


@both_backends
def test_legs_cannot_be_added_to_a_recorded_transfer(
    engine: Engine, journal: list[uuid.UUID]
) -> None:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT account_id FROM postings LIMIT 1")).one()
    legs = sa.text(
        "INSERT INTO postings (transfer_id, leg, account_id, currency, amount)"
        " VALUES (:t, 7, :a, 'IDR', 5)"
    )
    with pytest.raises(sa.exc.DBAPIError, match="postings_after_transfer"), engine.begin() as conn:
        conn.execute(legs, {"t": _param(engine, journal[0]), "a": row.account_id})


@both_backends
def test_unbalanced_transfer_is_refused_by_the_database(
    engine: Engine, journal: list[uuid.UUID]
) -> None:
    with engine.connect() as conn:
        account = conn.execute(sa.text("SELECT account_id FROM postings LIMIT 1")).scalar_one()
    tid = uuid.uuid4()
    with pytest.raises(sa.exc.DBAPIError, match="transfer_unbalanced"), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO postings (transfer_id, leg, account_id, currency, amount)"
                " VALUES (:t, 0, :a, 'IDR', 500)"
            ),
            {"t": _param(engine, tid), "a": account},
        )
        conn.execute(
            sa.text(
                "INSERT INTO transfers (id, kind, phase, currency, timeout_s, metadata,"
                " timestamp_us, content_hash) VALUES (:t, 'forged', 'posted', 'IDR', 0, '{}', 1,"
                " :h)"
            ),
            {"t": _param(engine, tid), "h": bytes(32)},
        )


@both_backends
def test_edit_behind_the_guards_is_detected(engine: Engine, journal: list[uuid.UUID]) -> None:
    with engine.begin() as conn:
        _drop_guards(conn)
        conn.execute(
            sa.text("UPDATE postings SET amount = amount * 2 WHERE transfer_id = :t"),
            {"t": _param(engine, journal[1])},
        )
    checks = _checks(engine)
    assert Check.CONTENT_HASH_MISMATCH in checks
    assert Check.BALANCE_MISMATCH in checks


@both_backends
def test_rewriting_a_sealed_transfer_and_its_hash_breaks_the_block(
    engine: Engine, ledger: Ledger, journal: list[uuid.UUID]
) -> None:
    from ledger import journal as journal_module

    target = ledger.get_transfer(journal[2])
    assert target is not None
    legs = [(p.leg, p.account_id, p.amount) for p in target.postings]
    forged = journal_module.content_hash(
        id=target.id, kind="refund", phase=target.phase.value, currency=target.currency,
        pending_id=None, linked_id=None, timeout_s=0, metadata_json="{}",
        timestamp_us=target.timestamp_us, postings=legs,
    )  # fmt: skip
    with engine.begin() as conn:
        _drop_guards(conn)
        conn.execute(
            sa.text("UPDATE transfers SET kind = 'refund', content_hash = :h WHERE id = :t"),
            {"h": forged, "t": _param(engine, target.id)},
        )
    assert _checks(engine) == {Check.BLOCK_ROOT_MISMATCH, Check.GUARD_MISSING}


@both_backends
def test_deleting_a_sealed_transfer_is_detected(engine: Engine, journal: list[uuid.UUID]) -> None:
    with engine.begin() as conn:
        _drop_guards(conn)
        for table, column in (("postings", "transfer_id"), ("transfers", "id")):
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE {column} = :t"),
                {"t": _param(engine, journal[1])},
            )
    checks = _checks(engine)
    assert {Check.BLOCK_ROOT_MISMATCH, Check.BALANCE_MISMATCH, Check.GUARD_MISSING} <= checks


@both_backends
def test_rewriting_a_block_breaks_the_chain(
    engine: Engine, ledger: Ledger, journal: list[uuid.UUID]
) -> None:
    ledger.seal()
    with engine.begin() as conn:
        _drop_guards(conn)
        conn.execute(sa.text("UPDATE journal_blocks SET sealed_at_us = sealed_at_us + 1"))
    assert Check.BLOCK_CHAIN_BROKEN in _checks(engine)


@both_backends
def test_balance_edit_is_detected(engine: Engine, journal: list[uuid.UUID]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE accounts SET credits_posted = credits_posted + 1"
                " WHERE kind = 'issuer_float'"
            )
        )
    assert _checks(engine) == {Check.BALANCE_MISMATCH, Check.CURRENCY_IMBALANCE}


@both_backends
def test_bound_is_enforced_by_the_database(engine: Engine, journal: list[uuid.UUID]) -> None:
    overdraw = sa.text(
        "UPDATE accounts SET debits_posted = credits_posted + 1 WHERE kind = 'card_purse'"
    )
    with (
        pytest.raises(sa.exc.IntegrityError, match="debits_within_credits"),
        engine.begin() as conn,
    ):
        conn.execute(overdraw)


def _param(engine: Engine, value: uuid.UUID) -> object:
    """A UUID as the raw column holds it (SQLite stores 32 hex characters)."""
    return value.hex if engine.dialect.name == "sqlite" else value


@both_backends
def test_incremental_verification_rehashes_only_after_its_mark(
    engine: Engine, journal: list[uuid.UUID]
) -> None:
    """The nightly form (rehash_after_seq) proves the same of an untouched journal, still
    sees a changed hash anywhere through the block roots, and re-hashes the content of only
    the newer transfers: an older content edit is left to the full form, as documented."""
    full = run_read(engine, verify)
    mark = full.sealed_through
    assert mark > 0
    assert run_read(engine, lambda conn: verify(conn, rehash_after_seq=mark)) == full

    def incremental() -> set[Check]:
        report = run_read(engine, lambda conn: verify(conn, rehash_after_seq=mark))
        return {v.check for v in report.violations}

    with engine.begin() as conn:
        _drop_guards(conn)
        conn.execute(
            sa.text("UPDATE transfers SET kind = 'refund' WHERE id = :t"),
            {"t": _param(engine, journal[1])},
        )
    assert Check.CONTENT_HASH_MISMATCH in _checks(engine)
    assert incremental() == {Check.GUARD_MISSING}
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE postings SET amount = amount * 2 WHERE transfer_id = :t"),
            {"t": _param(engine, journal[3])},
        )
    assert Check.CONTENT_HASH_MISMATCH in incremental()
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE transfers SET content_hash = :h WHERE id = :t"),
            {"h": bytes(32), "t": _param(engine, journal[2])},
        )
    assert Check.BLOCK_ROOT_MISMATCH in incremental()
