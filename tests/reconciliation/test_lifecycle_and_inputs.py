"""Late data auto-resolving a break, re-runs, merchants' reports, bank statements and
hostile XML."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger import Transfer, run_read
from merchant_api import chart, schema
from reconciliation.nightly import breaks as lifecycle
from reconciliation.nightly.schema import recon_breaks
from reconciliation.nightly.statements import InputError, InputErrorCode, read_camt053
from reconciliation.nightly.taxonomy import ExitCode
from tests.conftest import both_backends
from tests.reconciliation.test_scenarios import _adjust, breaks, gap_day, night, shop_day
from tests.reconciliation.world import Card, World


@both_backends
def test_late_certificate_auto_resolves_the_gap(world: World, tmp_path: Path) -> None:
    _, late = gap_day(world)
    assert night(world, tmp_path).exit_code is ExitCode.BREAKS
    assert breaks(world) == Counter({("COUNTER_GAP", "NEW"): 1})
    world.next_day()
    world.submit(late)  # the gate's upload arrives a day late
    result = night(world, tmp_path)
    assert breaks(world) == Counter({("COUNTER_GAP", "AUTO_RESOLVED"): 1})
    assert result.exit_code is ExitCode.AGREED


def test_a_break_that_survives_a_night_is_open(world: World, tmp_path: Path) -> None:
    card, _ = gap_day(world)
    night(world, tmp_path)
    night(world, tmp_path)  # the same night again changes nothing
    assert breaks(world) == Counter({("COUNTER_GAP", "NEW"): 1})
    world.next_day()
    world.submit(card.debit(1_000, "POS-1", 4, world.seconds))
    night(world, tmp_path)
    assert breaks(world) == Counter({("COUNTER_GAP", "OPEN"): 1})


@both_backends
def test_a_chain_continues_from_the_day_before(world: World, tmp_path: Path) -> None:
    """Tonight's certificates chain on from the card's last one of an earlier day (the
    extraction's anchor): nothing is missing when they follow on, the purse is still
    compared with the card, and a balance that does not follow on across the night is found."""
    _, card = shop_day(world)
    other = world.card(100_000)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    world.submit(card.debit(1_000, "POS-1", 2, world.seconds))
    world.submit(other.debit(1_000, "POS-1", 3, world.seconds))
    assert night(world, tmp_path).exit_code is ExitCode.AGREED
    world.next_day()
    world.submit(card.debit(1_000, "POS-1", 4, world.seconds))
    assert night(world, tmp_path).exit_code is ExitCode.AGREED
    assert breaks(world) == Counter()
    world.next_day()
    card.balance += 5_000  # a tampered purse, its first spend the next day
    world.submit(card.debit(1_000, "POS-1", 5, world.seconds))
    world.post(_adjust(world, card, 5_000))
    world.submit(other.debit(1_000, "POS-1", 6, world.seconds))
    world.post(_adjust(world, other, 700))  # the ledger's purse moved without the card
    assert night(world, tmp_path).exit_code is ExitCode.BREAKS
    assert breaks(world) == Counter(
        {("BALANCE_CHAIN_BROKEN", "NEW"): 1, ("SHADOW_BALANCE_MISMATCH", "NEW"): 1}
    )


def _payouts(world: World) -> list[sa.Row[tuple[object, ...]]]:
    return run_read(world.engine, lambda conn: conn.execute(sa.select(schema.payouts)).all())


@both_backends
def test_settlement_equals_the_ledger_and_the_bank_pays_it(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(20_000, "POS-1", 1, world.seconds))
    first = night(world, tmp_path)
    assert first.exit_code is ExitCode.AGREED
    (payout,) = _payouts(world)
    assert payout.amount == 19_800 == first.summary["payout_total"]
    lines = (tmp_path / f"payouts-{world.day}.csv").read_text().splitlines()
    assert lines[1].startswith(str(payout.id)) and ",19800,IDR," in lines[1]
    world.next_day()
    statement = tmp_path / "statement.xml"
    statement.write_text(_camt([(str(payout.id), "19800.00")]))
    result = night(world, tmp_path, bank_statements=(statement,))
    assert result.exit_code is ExitCode.AGREED
    assert _payouts(world)[0].status == "paid"


def test_bank_breaks(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(20_000, "POS-1", 1, world.seconds))
    night(world, tmp_path)
    (payout,) = _payouts(world)
    world.next_day()
    statement = tmp_path / "statement.csv"
    statement.write_text(
        "booking_date,end_to_end_id,amount,direction\n"
        f"{world.day},{payout.id},19000,DBIT\n"
        f"{world.day},unknown-ref,5000,DBIT\n"
    )
    night(world, tmp_path, bank_statements=(statement,))
    assert breaks(world) == Counter(
        {("AMOUNT_MISMATCH", "NEW"): 1, ("MISSING_IN_LEDGER", "NEW"): 1}
    )
    assert _payouts(world)[0].status == "instructed"


def test_merchant_report_one_to_one_and_one_to_many(world: World, tmp_path: Path) -> None:
    shop, card = shop_day(world)
    world.terminal(shop, "POS-2")
    for seq in (1, 2):
        world.submit(card.debit(5_000, "POS-1", seq, world.seconds))
    for seq in (1, 2):
        world.submit(card.debit(3_000, "POS-2", seq, world.seconds))
    reports = tmp_path / "reports"
    reports.mkdir()
    header = "merchant_id,business_date,terminal_code,terminal_seq,amount\n"
    (reports / "ok.csv").write_text(
        header
        + f"{shop},{world.day},POS-1,1,5000\n{shop},{world.day},POS-1,2,5000\n"
        + f"{shop},{world.day},POS-2,,6000\n"
    )
    assert night(world, tmp_path, merchant_reports=reports).exit_code is ExitCode.AGREED
    (reports / "ok.csv").write_text(
        header
        + f"{shop},{world.day},POS-1,1,5000\n{shop},{world.day},POS-1,1,5000\n"
        + f"{shop},{world.day},POS-1,7,100\n{shop},{world.day},POS-2,,6500\n"
    )
    night(world, tmp_path, merchant_reports=reports)
    assert breaks(world) == Counter(
        {
            ("DUPLICATE_EXTERNAL", "NEW"): 1,
            ("MISSING_IN_LEDGER", "NEW"): 1,
            ("MISSING_IN_EXTERNAL", "NEW"): 1,
            ("AMOUNT_MISMATCH", "NEW"): 1,
        }
    )


def _load_status(world: World, load_id: uuid.UUID) -> str:
    return run_read(
        world.engine,
        lambda c: c.execute(
            sa.select(schema.loads.c.status).where(schema.loads.c.id == load_id)
        ).scalar_one(),
    )


def test_unresolved_load_settled_by_the_cards_later_credit(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    load_id = world.pending_load(card, 10_000)
    night(world, tmp_path)
    assert breaks(world) == Counter({("UNRESOLVED_LOAD", "NEW"): 1})
    world.next_day()
    assert world.submit(card.credit(10_000, "POS-1", 1, world.seconds)) == ["posted"]
    assert night(world, tmp_path).exit_code is ExitCode.AGREED
    assert breaks(world) == Counter({("UNRESOLVED_LOAD", "AUTO_RESOLVED"): 1})
    assert _load_status(world, load_id) == "posted"


def test_a_load_the_card_never_took_is_voided_from_its_evidence(
    world: World, tmp_path: Path
) -> None:
    _, card = shop_day(world)
    load_id = world.pending_load(card, 10_000)
    stale = card.debit(1_000, "POS-1", 1, world.seconds)  # signed before the load was known
    with world.engine.begin() as conn:  # recorded without the API's load settlement
        conn.execute(
            sa.update(schema.loads).where(schema.loads.c.id == load_id).values(card_counter=-1)
        )
    world.submit(stale)
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(schema.loads).where(schema.loads.c.id == load_id).values(card_counter=0)
        )
    result = night(world, tmp_path)
    assert result.summary["loads_settled_by_evidence"] == 1
    assert _load_status(world, load_id) == "voided"
    assert breaks(world) == Counter()


def _load_settled_by_its_later_debit(world: World) -> tuple[Card, uuid.UUID, Any]:
    """A load the card took (its credit at counter 1 returned, not uploaded) and posted by
    the card's debit at counter 2, whose balance shows the value."""
    _, card = shop_day(world)
    load_id = world.pending_load(card, 10_000)
    late = card.credit(10_000, "POS-1", 1, world.seconds)
    assert world.submit(card.debit(1_000, "POS-1", 2, world.seconds)) == ["posted"]
    assert _load_status(world, load_id) == "posted"
    return card, load_id, late


def _posts_of(world: World, card: Card, load_id: uuid.UUID) -> list[uuid.UUID]:
    moved = world.ledger.transfers(account_id=card.purse, limit=1_000)
    return [t.id for t in moved if t.pending_id == load_id]


def _purse_balance(world: World, card: Card) -> int:
    account = world.ledger.get_account(card.purse)
    assert account is not None
    return account.balance


@both_backends
def test_a_loads_late_credit_closes_the_cards_counter_gap(world: World, tmp_path: Path) -> None:
    card, load_id, late = _load_settled_by_its_later_debit(world)
    assert night(world, tmp_path).exit_code is ExitCode.BREAKS
    assert breaks(world) == Counter({("COUNTER_GAP", "NEW"): 1})
    world.next_day()
    assert world.submit(late) == ["posted"]  # the terminal's journal upload, a day late
    assert world.submit(late) == ["duplicate"]
    result = night(world, tmp_path)
    assert result.exit_code is ExitCode.AGREED, result.summary
    assert breaks(world) == Counter({("COUNTER_GAP", "AUTO_RESOLVED"): 1})
    assert len(_posts_of(world, card, load_id)) == 1
    assert _purse_balance(world, card) == card.balance == 109_000


def test_a_loads_credit_arriving_before_the_night_leaves_nothing_to_report(
    world: World, tmp_path: Path
) -> None:
    card, load_id, late = _load_settled_by_its_later_debit(world)
    assert world.submit(late, source="gate_batch") == ["posted"]
    result = night(world, tmp_path)
    assert result.exit_code is ExitCode.AGREED, result.summary
    assert breaks(world) == Counter()
    assert len(_posts_of(world, card, load_id)) == 1
    assert _purse_balance(world, card) == card.balance


CAMT_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><Stmt>'
)


def _camt(entries: list[tuple[str, str]]) -> str:
    body = "".join(
        f'<Ntry><Amt Ccy="IDR">{amount}</Amt><CdtDbtInd>DBIT</CdtDbtInd>'
        "<BookgDt><Dt>2026-11-28</Dt></BookgDt><NtryDtls><TxDtls><Refs>"
        f"<EndToEndId>{ref}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>"
        for ref, amount in entries
    )
    return CAMT_HEAD + body + "</Stmt></BkToCstmrStmt></Document>"


XXE = (
    '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">&x;</Document>'
)
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + ']><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">&lol9;</Document>'
)


@pytest.mark.parametrize("hostile", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_hostile_xml_is_refused_with_a_named_error(tmp_path: Path, hostile: str) -> None:
    path = tmp_path / "statement.xml"
    path.write_text(hostile)
    with pytest.raises(InputError) as info:
        read_camt053(path)
    assert info.value.code is InputErrorCode.XML_FORBIDDEN


def test_fractional_rupiah_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "statement.xml"
    path.write_text(_camt([("x", "10.50")]))
    with pytest.raises(InputError) as info:
        read_camt053(path)
    assert info.value.code is InputErrorCode.AMOUNT_INVALID


def _shadow_break(world: World, tmp_path: Path) -> tuple[Card, Any]:
    """A stray posting into a purse, found as SHADOW_BALANCE_MISMATCH; (card, its break)."""
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    world.post(Transfer.simple(uuid.uuid4(), chart.SUSPENSE, card.purse, 700, "adjustment"))
    night(world, tmp_path)
    (row,) = run_read(world.engine, lambda c: c.execute(sa.select(recon_breaks)).all())
    return card, row


def test_resolved_by_a_compensating_transfer_then_closed(world: World, tmp_path: Path) -> None:
    card, row = _shadow_break(world, tmp_path)
    assert (row.break_type, row.ledger_amount, row.external_amount) == (
        "SHADOW_BALANCE_MISMATCH",
        99_700,
        99_000,
    )
    with pytest.raises(lifecycle.BreakTransitionError) as refused:
        lifecycle.close(world.engine, row.id, "not yet")
    assert refused.value.code == "transition_not_allowed"
    lifecycle.investigate(world.engine, row.id, "suspense posting by mistake")
    fix = Transfer.simple(
        uuid.uuid4(),
        card.purse,
        chart.SUSPENSE,
        700,
        "break_fix",
        metadata={"break_id": str(row.id)},
    )
    lifecycle.resolve(world.engine, world.ledger, row.id, fix, "reversed the stray posting")
    assert breaks(world) == Counter({("SHADOW_BALANCE_MISMATCH", "RESOLVED"): 1})
    world.next_day()
    assert night(world, tmp_path).exit_code is ExitCode.AGREED
    assert breaks(world) == Counter({("SHADOW_BALANCE_MISMATCH", "CLOSED"): 1})
    history = run_read(
        world.engine,
        lambda c: (
            c.execute(sa.text("SELECT to_status FROM recon_break_events ORDER BY seq"))
            .scalars()
            .all()
        ),
    )
    assert history == ["NEW", "INVESTIGATING", "RESOLVED", "CLOSED"]


def test_a_refused_compensating_transfer_resolves_nothing(world: World, tmp_path: Path) -> None:
    card, row = _shadow_break(world, tmp_path)
    overdraw = Transfer.simple(uuid.uuid4(), card.purse, chart.SUSPENSE, 10**9, "break_fix")
    with pytest.raises(lifecycle.BreakTransitionError) as refused:
        lifecycle.resolve(world.engine, world.ledger, row.id, overdraw, "wrong amount")
    assert refused.value.code == "compensating_transfer_refused"
    assert breaks(world) == Counter({("SHADOW_BALANCE_MISMATCH", "NEW"): 1})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_writer_left_open_postpones_the_seal(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    with world.engine.connect() as blocker:
        blocker.exec_driver_sql("SELECT pg_current_xact_id()")  # holds a transaction id
        result = night(world, tmp_path)
        blocker.rollback()
    assert breaks(world) == Counter({("DAY_NOT_SEALED", "NEW"): 1})
    assert result.exit_code is ExitCode.BREAKS
    world.next_day()
    assert night(world, tmp_path).exit_code is ExitCode.AGREED
    assert breaks(world) == Counter({("DAY_NOT_SEALED", "AUTO_RESOLVED"): 1})
