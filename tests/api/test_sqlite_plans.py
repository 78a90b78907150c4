"""On SQLite, the card-transaction path finds rows through indexes only: SQLite uses no
index for a row-value IN such as `(serial_hash, card_counter) IN (...)`, and a query
that relied on one scanned every card transaction (or every stored Idempotency-Key)
ever recorded, once per request: the embedded demo's day went quadratic."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from ledger import run_write
from merchant_api.context import ApiContext
from merchant_api.idempotency import ClaimRequest, Proceed, claim_in
from tests.api.conftest import World
from tests.api.test_gate_batches import upload

# The tables that grow all day, one row per request or more.
GROWING = ("cards", "card_transactions", "idempotency_keys", "transfers", "postings", "events")


@contextmanager
def reads_of(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the engine runs in the body, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def full_scans(engine: Engine, reads: list[tuple[str, Any]]) -> set[str]:
    """The growing tables that some read scans whole (EXPLAIN QUERY PLAN's `SCAN t`)."""
    scanned: set[str] = set()
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        for statement, parameters in reads:
            plan = driver.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            print(statement[:60], [d for *_, d in plan])
            for *_, detail in plan:
                match = re.match(r"SCAN (\w+)", detail)
                if match is None:
                    continue
                # The plan names a table by its alias; map the alias back to its table.
                alias = match.group(1)
                table = re.search(rf"(\w+) AS {alias}\b", statement)
                name = table.group(1) if table else alias
                if name in GROWING:
                    scanned.add(f"{name}: {statement[:120]}")
    return scanned


def test_a_gate_batch_finds_its_recorded_transactions_by_index(
    world: World, ctx: ApiContext
) -> None:
    """A batch reads every (card, counter) it names at once: a row-value IN of many rows."""
    cards = [world.issue_card() for _ in range(3)]
    for card_id, card in cards:
        world.load(card_id, card, 50_000)
    certs = [card.debit(100, world.gate, seq).to_json() for seq, (_, card) in enumerate(cards, 1)]
    world.operator.ok(upload(world.operator, world.gate, certs[:2]))

    with reads_of(ctx.engine) as reads:
        answer = world.operator.ok(upload(world.operator, world.gate, certs))

    assert [item["outcome"] for item in answer["items"]] == ["duplicate", "duplicate", "posted"]
    assert any("card_transactions" in statement for statement, _ in reads)
    assert full_scans(ctx.engine, reads) == set()


def test_lost_claims_are_read_back_by_index(world: World, ctx: ApiContext) -> None:
    """Keys already held are read back together: a row-value IN of many rows."""
    principal = uuid.uuid4()
    requests = [ClaimRequest(principal, f"key-{n}", b"digest") for n in range(3)]
    run_write(ctx.engine, lambda conn: claim_in(conn, requests, 60))

    with reads_of(ctx.engine) as reads:
        again = run_write(ctx.engine, lambda conn: claim_in(conn, requests, 60))

    assert len(again) == 3 and not any(isinstance(outcome, Proceed) for outcome in again)
    assert any("idempotency_keys" in statement for statement, _ in reads)
    assert full_scans(ctx.engine, reads) == set()
