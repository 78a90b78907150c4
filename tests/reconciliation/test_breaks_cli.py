"""`jakartaone breaks`: a finance officer takes, fixes and closes a break from the command
line; every refused step exits 2 and changes nothing; a fix cannot move money twice."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from jakartaone.cli import main
from ledger import Transfer, run_read
from ledger import schema as ledger_schema
from merchant_api import chart
from reconciliation.nightly.breaks_cli import REFUSED, fix_transfer_id
from reconciliation.nightly.taxonomy import ExitCode
from tests.conftest import both_backends
from tests.reconciliation.test_scenarios import breaks, night, shop_day
from tests.reconciliation.world import World


def _cli(world: World, *args: str) -> tuple[int, str]:
    url = world.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["--database-url", url, "breaks", *args])
    return result.exit_code, result.output


def _break_fixes(world: World) -> list[tuple[uuid.UUID, int]]:
    """Every compensating transfer in the ledger: (id, the amount it moved)."""
    t, p = ledger_schema.transfers, ledger_schema.postings
    query = (
        sa.select(t.c.id, p.c.amount)
        .join(p, p.c.transfer_id == t.c.id)
        .where(t.c.kind == "break_fix", p.c.amount > 0)
    )
    return run_read(world.engine, lambda c: [(r.id, r.amount) for r in c.execute(query)])


@both_backends
def test_take_fix_and_close_a_break_from_the_command_line(world: World, tmp_path: Path) -> None:
    _, card = shop_day(world)
    world.submit(card.debit(1_000, "POS-1", 1, world.seconds))
    world.post(Transfer.simple(uuid.uuid4(), chart.SUSPENSE, card.purse, 700, "adjustment"))
    assert night(world, tmp_path).exit_code is ExitCode.BREAKS

    code, output = _cli(world, "list", "--json")
    assert code == 0, output
    (listed,) = json.loads(output)
    assert (listed["type"], listed["status"], listed["card_id"]) == (
        "SHADOW_BALANCE_MISMATCH",
        "NEW",
        str(card.id),
    )
    assert (listed["ledger_amount"], listed["external_amount"]) == (99_700, 99_000)
    break_id = listed["id"]

    code, output = _cli(world, "close", break_id, "--note", "too soon")
    assert code == REFUSED and "transition_not_allowed" in output
    code, output = _cli(
        world, "resolve", break_id, "--debit", "nowhere", "--credit", "suspense",
        "--amount", "700", "--note", "typo",
    )  # fmt: skip
    assert code == REFUSED and "account_unknown" in output
    code, output = _cli(
        world, "resolve", break_id, "--debit", "card", "--credit", "suspense",
        "--amount", "10000000000", "--note", "overdraws the purse",
    )  # fmt: skip
    assert code == REFUSED and "compensating_transfer_refused" in output
    assert breaks(world) == Counter({("SHADOW_BALANCE_MISMATCH", "NEW"): 1})
    assert _break_fixes(world) == []

    assert _cli(world, "investigate", break_id, "--note", "Dewi: stray suspense posting")[0] == 0
    resolve = (
        "resolve", break_id, "--debit", "card", "--credit", "suspense",
        "--amount", "700", "--note", "reversed the stray posting",
    )  # fmt: skip
    code, output = _cli(world, *resolve)
    assert code == 0, output
    code, output = _cli(world, *resolve)
    assert code == REFUSED and "transition_not_allowed" in output
    assert _break_fixes(world) == [(fix_transfer_id(uuid.UUID(break_id)), 700)]

    assert _cli(world, "close", break_id, "--note", "reviewed by Budi")[0] == 0
    code, output = _cli(world, "show", break_id)
    shown = json.loads(output)
    assert shown["status"] == "CLOSED"
    assert [h["to"] for h in shown["history"]] == ["NEW", "INVESTIGATING", "RESOLVED", "CLOSED"]
    assert shown["history"][-1]["note"] == "reviewed by Budi"
    code, output = _cli(world, "list", "--json")
    assert json.loads(output) == []

    world.next_day()
    assert night(world, tmp_path).exit_code is ExitCode.AGREED


def test_an_unknown_break_is_refused(world: World) -> None:
    code, output = _cli(world, "show", str(uuid.uuid4()))
    assert code == REFUSED and "break_not_found" in output
    code, output = _cli(world, "investigate", str(uuid.uuid4()), "--note", "x")
    assert code == REFUSED and "break_not_found" in output
