"""Each break type from crafted data: found, and nothing else is."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from ledger import run_read
from reconciliation.nightly.job import NightlyConfig, NightlyResult, run_nightly
from reconciliation.nightly.schema import recon_breaks
from reconciliation.nightly.taxonomy import ExitCode
from tests.conftest import both_backends
from tests.reconciliation.world import World


def night(world: World, out: Path, **options: object) -> NightlyResult:
    config = NightlyConfig(day=world.day, out_dir=out, progress=False, **options)  # type: ignore[arg-type]
    return run_nightly(world.engine, world.ledger, world.ctx.card_keys, world.secrets, config)


def breaks(world: World) -> Counter[tuple[str, str]]:
    rows = run_read(
        world.engine,
        lambda conn: conn.execute(
            sa.select(recon_breaks.c.break_type, recon_breaks.c.status)
        ).all(),
    )
    return Counter((r.break_type, r.status) for r in rows)


def shop_day(world: World) -> tuple[object, object]:
    shop = world.merchant("Warung Sari")
    world.terminal(shop, "POS-1")
    card = world.card(100_000)
    return shop, card


@both_backends
def test_a_clean_day_agrees_and_settles_once(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    for seq in (1, 2, 3):
        assert world.submit(card.debit(10_000, "POS-1", seq, world.seconds)) == ["posted"]  # type: ignore[attr-defined]
    first = night(world, tmp_path)
    assert first.exit_code is ExitCode.AGREED, first.summary
    assert breaks(world) == Counter()
    settled = [s for s in first.summary["settlement"] if s["payout"]]
    assert [(s["gross"], s["fees"], s["payout"]) for s in settled] == [(30_000, 300, 29_700)]
    again = night(world, tmp_path)
    assert again.exit_code is ExitCode.AGREED
    assert again.summary["settlement"] == first.summary["settlement"]
    assert (tmp_path / f"report-{world.day}.html").exists()
