"""Each break type from crafted data: found, and nothing else is."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from card_reader.certificate import Certificate, Journey, JourneyAction, TransitMode
from ledger import Transfer, run_read
from merchant_api import chart, schema
from reconciliation.nightly.job import NightlyConfig, NightlyResult, run_nightly
from reconciliation.nightly.schema import recon_breaks
from reconciliation.nightly.taxonomy import ExitCode
from tests.conftest import both_backends
from tests.reconciliation.world import Card, World


def night(world: World, out: Path, **options: object) -> NightlyResult:
    config = NightlyConfig(day=world.day, out_dir=out, progress=False, **options)
    return run_nightly(world.engine, world.ledger, world.ctx.card_keys, world.secrets, config)


def breaks(world: World) -> Counter[tuple[str, str]]:
    rows = run_read(
        world.engine,
        lambda conn: conn.execute(
            sa.select(recon_breaks.c.break_type, recon_breaks.c.status)
        ).all(),
    )
    return Counter((r.break_type, r.status) for r in rows)


def shop_day(world: World) -> tuple[uuid.UUID, Card]:
    shop = world.merchant("Warung Sari")
    world.terminal(shop, "POS-1")
    card = world.card(100_000)
    return shop, card


def gap_day(world: World) -> tuple[Card, Certificate]:
    """A card whose certificate at counter 2 was never uploaded (returned, for later)."""
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    late = card.debit(1_000, "POS-1", 2, world.seconds)
    world.submit(card.debit(1_000, "POS-1", 3, world.seconds))
    return card, late


@both_backends
def test_a_clean_day_agrees_and_settles_once(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    for seq in (1, 2, 3):
        assert world.submit(card.debit(10_000, "POS-1", seq, world.seconds)) == ["posted"]
    first = night(world, tmp_path)
    assert first.exit_code is ExitCode.AGREED, first.summary
    assert breaks(world) == Counter()
    settled = [s for s in first.summary["settlement"] if s["payout"]]
    assert [(s["gross"], s["fees"], s["payout"]) for s in settled] == [(30_000, 300, 29_700)]
    again = night(world, tmp_path)
    assert again.exit_code is ExitCode.AGREED
    assert again.summary["settlement"] == first.summary["settlement"]
    settled = world.ledger.transfers(kind="settlement")
    assert [sum(p.amount for p in t.postings if p.amount > 0) for t in settled] == [29_700]
    assert (tmp_path / f"report-{world.day}.html").exists()


def _gap(world: World) -> None:
    gap_day(world)


def _chain(world: World) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    card.balance += 5_000  # a tampered purse
    world.submit(card.debit(1_000, "POS-1", 2, world.seconds))
    world.post(_adjust(world, card, 5_000))


def _regression(world: World) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    world.submit(card.debit(1_000, "POS-1", 2, world.seconds - 3600))


def _duplicate(world: World) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    card.counter -= 1  # a clone spends the same counter
    card.balance += 1_000
    assert world.submit(card.debit(2_000, "POS-1", 2, world.seconds)) == ["conflicting_duplicate"]
    card.balance += 2_000 - 1_000


def _bad_mac(world: World) -> None:
    _, card = shop_day(world)
    cert = card.debit(1_000, "POS-1", 1, world.seconds)
    forged = type(cert)(**{**{f: getattr(cert, f) for f in cert.__slots__}, "mac": bytes(16)})
    assert world.submit(forged) == ["mac_invalid"]


def _edited(world: World) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    with world.engine.begin() as conn:
        conn.execute(sa.update(schema.card_transactions).values(terminal_seq=99))


def _shadow(world: World) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    world.post(_adjust(world, card, 700))


def _adjust(world: World, card: Card, amount: int) -> Transfer:
    return Transfer.simple(uuid.uuid4(), chart.SUSPENSE, card.purse, amount, "adjustment")


def _missing_batch(world: World) -> None:
    operator = world.merchant("MRT Jakarta", kind="operator")
    world.terminal(operator, "GATE-1", kind="gate")
    world.batch("GATE-1", 1, 10)
    world.batch("GATE-1", 16, 20)


def _unfinished(world: World) -> None:
    operator = world.merchant("MRT Jakarta", kind="operator")
    world.terminal(operator, "GATE-1", kind="gate")
    card = world.card(50_000)
    entry = Journey(
        TransitMode.MRT, JourneyAction.ENTRY, 2, entry_station=1, entry_time=world.seconds
    )
    world.submit(card.debit(0, "GATE-1", 1, world.seconds, entry))
    board = Journey(
        TransitMode.TRANSJAKARTA, JourneyAction.BOARD, 1, entry_station=1, entry_time=world.seconds
    )
    world.submit(card.debit(3_500, "GATE-1", 2, world.seconds, board))


SCENARIOS = {
    "COUNTER_GAP": _gap,
    "BALANCE_CHAIN_BROKEN": _chain,
    "COUNTER_REGRESSION": _regression,
    "DUPLICATE_COUNTER": _duplicate,
    "SIGNATURE_INVALID": _bad_mac,
    "SHADOW_BALANCE_MISMATCH": _shadow,
    "MISSING_BATCH": _missing_batch,
    "UNFINISHED_JOURNEY_NOT_CHARGED": _unfinished,
}


@pytest.mark.parametrize("expected", sorted(SCENARIOS))
def test_each_card_and_gate_break_is_found_and_nothing_else(
    world: World, tmp_path: Path, expected: str
) -> None:
    SCENARIOS[expected](world)
    result = night(world, tmp_path)
    assert breaks(world) == Counter({(expected, "NEW"): 1}), result.summary
    assert result.exit_code is ExitCode.BREAKS


def test_an_edited_record_fails_its_mac(world: World, tmp_path: Path) -> None:
    _edited(world)
    night(world, tmp_path)
    assert breaks(world) == Counter({("SIGNATURE_INVALID", "NEW"): 1})


def _records_missing_external(world: World) -> None:
    shop, card = shop_day(world)
    payable = chart.payable_account(shop, operator=False).id
    world.post(Transfer.simple(uuid.uuid4(), card.purse, payable, 1_000, "card_debit"))
    card.balance -= 1_000  # the card did spend it; no record came


def _quarantined(world: World) -> None:
    _, card = shop_day(world)
    assert world.submit(card.debit(1_000, "POS-404", 1, world.seconds)) == ["terminal_unknown"]


def _duplicate_ledger(world: World, reports: Path) -> None:
    shop, card = shop_day(world)
    other = world.card(10_000)
    world.submit(card.debit(1_000, "POS-1", 7, world.seconds))
    world.submit(other.debit(2_000, "POS-1", 7, world.seconds))
    (reports / "r.csv").write_text(
        "merchant_id,business_date,terminal_code,terminal_seq,amount\n"
        f"{shop},{world.day},POS-1,,3000\n"
    )


def test_records_without_a_record_are_missing_in_external(world: World, tmp_path: Path) -> None:
    _records_missing_external(world)
    night(world, tmp_path)
    assert breaks(world) == Counter({("MISSING_IN_EXTERNAL", "NEW"): 1})


def test_a_record_edited_in_amount_disagrees_with_the_ledger(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    with world.engine.begin() as conn:
        conn.execute(sa.update(schema.card_transactions).values(amount=900))
    night(world, tmp_path)
    # The edit breaks the certificate's MAC as well: both are true.
    assert breaks(world) == Counter(
        {("AMOUNT_MISMATCH", "NEW"): 1, ("SIGNATURE_INVALID", "NEW"): 1}
    )


def test_a_record_whose_transfer_is_missing(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    with world.engine.begin() as conn:
        conn.execute(sa.update(schema.card_transactions).values(transfer_id=uuid.uuid4()))
    night(world, tmp_path)
    # The real transfer has lost its record too: both sides are reported.
    assert breaks(world) == Counter(
        {("MISSING_IN_LEDGER", "NEW"): 1, ("MISSING_IN_EXTERNAL", "NEW"): 1}
    )


def test_quarantined_input(world: World, tmp_path: Path) -> None:
    _quarantined(world)
    night(world, tmp_path)
    assert breaks(world) == Counter({("QUARANTINED_INPUT", "NEW"): 1})


def test_duplicate_ledger(world: World, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    _duplicate_ledger(world, reports)
    night(world, tmp_path, merchant_reports=reports)
    assert breaks(world) == Counter({("DUPLICATE_LEDGER", "NEW"): 1})


def test_ledger_invariant_broken(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    with world.engine.begin() as conn:  # an edit behind the ledger's back (SQLite)
        conn.exec_driver_sql("DROP TRIGGER trg_transfers_no_update")
        conn.exec_driver_sql("UPDATE transfers SET metadata = '{\"edited\": 1}'")
    result = night(world, tmp_path)
    found = breaks(world)
    assert set(found) == {("LEDGER_INVARIANT_BROKEN", "NEW")}
    assert found[("LEDGER_INVARIANT_BROKEN", "NEW")] >= 2  # guard_missing, content_hash_mismatch
    assert result.exit_code is ExitCode.BREAKS


@both_backends
def test_a_gate_seen_only_in_forwarded_certificates_is_missing_a_batch(
    world: World, tmp_path: Path
) -> None:
    """A gate cut off from the network: another terminal forwards one of its certificates
    (read from the card), with a sequence number past the gate's last batch."""
    operator = world.merchant("KRL Commuter Line", kind="operator")
    world.terminal(operator, "GATE-1", kind="gate")
    world.batch("GATE-1", 1, 10)
    card = world.card(50_000)
    world.submit(card.debit(3_000, "GATE-1", 14, world.seconds), source="gate_batch")  # type: ignore[attr-defined]
    night(world, tmp_path)
    assert breaks(world) == Counter({("MISSING_BATCH", "NEW"): 1})
    world.batch("GATE-1", 11, 14)  # the gate is back and uploads
    night(world, tmp_path)
    assert breaks(world) == Counter({("MISSING_BATCH", "AUTO_RESOLVED"): 1})
