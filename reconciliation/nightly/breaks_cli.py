"""`jakartaone breaks`: the finance officer's side of the break lifecycle.

The nightly job finds breaks and settles them by evidence; these commands are the manual
steps (reconciliation.nightly.taxonomy.MANUAL_TRANSITIONS): list and inspect breaks, take
one (INVESTIGATING), fix it with a compensating ledger transfer (RESOLVED) and close it
after review (CLOSED). Every step is appended to the break's history with the officer's note.

Guarantees:
- A break is fixed only by a new ledger transfer, never by editing history: `resolve`
  posts it and marks the break in one database transaction (reconciliation.nightly.breaks).
- One break, one compensating transfer: its id is derived from the break's id, so running
  `resolve` twice cannot move money twice.
- A refused step changes nothing and exits 2 with the refusal's code
  (break_not_found, transition_not_allowed, compensating_transfer_refused, account_unknown).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jakartaone.settings import Settings
from ledger import Ledger, Transfer, make_engine, run_read
from merchant_api import chart
from merchant_api.wib import business_date, now_us
from reconciliation.nightly import breaks as lifecycle
from reconciliation.nightly.schema import recon_break_events, recon_breaks
from reconciliation.nightly.taxonomy import UNSETTLED, BreakStatus, BreakType, age_bucket

REFUSED = 2
FIX_NAMESPACE = uuid.UUID("6f1d8c2a-93b4-4e57-a0c1-52d7e8b4f310")
ISSUER_ROLES = {
    "fee_revenue": chart.FEE_REVENUE,
    "issuer_float": chart.ISSUER_FLOAT,
    "agent_receivable": chart.AGENT_RECEIVABLE,
    "card_credit_clearing": chart.CARD_CREDIT_CLEARING,
    "settlement_bank": chart.SETTLEMENT_BANK,
    "suspense": chart.SUSPENSE,
}
ACCOUNT_HELP = (
    "An account id, an issuer role (" + ", ".join(ISSUER_ROLES) + "), `card` (the break's"
    " card purse) or `merchant` (the break's merchant or operator payable)."
)


def fix_transfer_id(break_id: uuid.UUID) -> uuid.UUID:
    """The id of the one compensating transfer a break may have (the idempotency key)."""
    return uuid.uuid5(FIX_NAMESPACE, str(break_id))


def _engine(ctx: click.Context) -> Engine:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return make_engine(settings.database_url)


def _refuse(code: str, detail: str) -> NoReturn:
    click.echo(f"breaks: refused: {code}: {detail}", err=True)
    sys.exit(REFUSED)


def _step(action: Callable[[], None]) -> None:
    try:
        action()
    except lifecycle.BreakTransitionError as exc:
        _refuse(exc.code, str(exc).split(": ", 1)[1])


def _row_dict(row: Any, today: dt.date) -> dict[str, Any]:
    age = (today - dt.date.fromisoformat(row.first_seen_date)).days
    return {
        "id": str(row.id),
        "type": row.break_type,
        "status": row.status,
        "source": row.source,
        "subject": row.subject,
        "first_seen": row.first_seen_date,
        "last_seen": row.last_seen_date,
        "age_days": age,
        "age_bucket": age_bucket(age).value,
        "ledger_amount": row.ledger_amount,
        "external_amount": row.external_amount,
        "card_id": str(row.card_id) if row.card_id else None,
        "merchant_id": str(row.merchant_id) if row.merchant_id else None,
        "terminal": row.terminal_code,
        "reference": row.reference,
        "detail": row.detail,
        "note": row.note,
        "resolution_transfer_id": (
            str(row.resolution_transfer_id) if row.resolution_transfer_id else None
        ),
    }


def _break_row(conn: Connection, break_id: uuid.UUID) -> Any:
    return conn.execute(sa.select(recon_breaks).where(recon_breaks.c.id == break_id)).first()


def _today() -> dt.date:
    return dt.date.fromisoformat(business_date(now_us()))


@click.group()
def breaks() -> None:
    """Work the reconciliation breaks the nightly job found (finance staff)."""


@breaks.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in BreakStatus]),
    help="Repeatable; default the unsettled ones (NEW, OPEN, INVESTIGATING).",
)
@click.option("--type", "break_type", type=click.Choice([t.value for t in BreakType]))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def list_breaks(
    ctx: click.Context,
    statuses: tuple[str, ...],
    break_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Breaks, oldest first."""
    wanted = list(statuses) or [s.value for s in UNSETTLED]
    query = sa.select(recon_breaks).where(recon_breaks.c.status.in_(wanted))
    if break_type:
        query = query.where(recon_breaks.c.break_type == break_type)
    query = query.order_by(recon_breaks.c.first_seen_date, recon_breaks.c.seq).limit(limit)
    today = _today()
    rows = [_row_dict(r, today) for r in run_read(_engine(ctx), lambda c: c.execute(query).all())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        amounts = f"ledger {r['ledger_amount']} external {r['external_amount']}"
        click.echo(
            f"{r['id']}  {r['status']:<13} {r['type']:<26} {r['age_bucket']:<5}"
            f" {r['subject']}  {amounts}"
        )
    click.echo(f"{len(rows)} break(s)")


@breaks.command("show")
@click.argument("break_id", type=click.UUID)
@click.pass_context
def show(ctx: click.Context, break_id: uuid.UUID) -> None:
    """One break and its whole history, as JSON."""

    def read(conn: Connection) -> tuple[Any, list[Any]]:
        row = _break_row(conn, break_id)
        events = conn.execute(
            sa.select(recon_break_events)
            .where(recon_break_events.c.break_id == break_id)
            .order_by(recon_break_events.c.seq)
        ).all()
        return row, list(events)

    row, events = run_read(_engine(ctx), read)
    if row is None:
        _refuse("break_not_found", str(break_id))
    shown = _row_dict(row, _today())
    shown["history"] = [
        {
            "from": e.from_status,
            "to": e.to_status,
            "note": e.note,
            "at_us": e.at_us,
            "run_id": str(e.run_id) if e.run_id else None,
        }
        for e in events
    ]
    click.echo(json.dumps(shown, indent=2))


@breaks.command("investigate")
@click.argument("break_id", type=click.UUID)
@click.option("--note", required=True, help="Who takes it and why (kept in the history).")
@click.pass_context
def investigate(ctx: click.Context, break_id: uuid.UUID, note: str) -> None:
    """Take a NEW or OPEN break: it becomes INVESTIGATING."""
    _step(lambda: lifecycle.investigate(_engine(ctx), break_id, note))
    click.echo(f"{break_id}: INVESTIGATING")


def _account(spec: str, row: Any) -> uuid.UUID:
    if spec in ISSUER_ROLES:
        return ISSUER_ROLES[spec]
    if spec == "card" and row.card_id:
        return chart.purse_account(row.card_id, registered=False).id
    if spec == "merchant" and row.merchant_id:
        return chart.payable_account(row.merchant_id, operator=False).id
    try:
        return uuid.UUID(spec)
    except ValueError:
        _refuse("account_unknown", f"{spec!r} names no account for this break")


@breaks.command("resolve")
@click.argument("break_id", type=click.UUID)
@click.option("--debit", "debit_spec", required=True, help="Account debited. " + ACCOUNT_HELP)
@click.option("--credit", "credit_spec", required=True, help="Account credited. " + ACCOUNT_HELP)
@click.option("--amount", required=True, type=click.IntRange(min=1), help="Whole rupiah.")
@click.option("--note", required=True, help="What was wrong and what the transfer corrects.")
@click.pass_context
def resolve(
    ctx: click.Context,
    break_id: uuid.UUID,
    debit_spec: str,
    credit_spec: str,
    amount: int,
    note: str,
) -> None:
    """Post the compensating transfer DEBIT -> CREDIT of AMOUNT and mark the break RESOLVED.

    The next night closes it once its subject agrees; a finance officer may close it sooner."""
    engine = _engine(ctx)
    row = run_read(engine, lambda conn: _break_row(conn, break_id))
    if row is None:
        _refuse("break_not_found", str(break_id))
    fix = Transfer.simple(
        fix_transfer_id(break_id),
        _account(debit_spec, row),
        _account(credit_spec, row),
        amount,
        "break_fix",
        metadata={"break_id": str(break_id), "break_type": row.break_type},
    )
    _step(lambda: lifecycle.resolve(engine, Ledger(engine), break_id, fix, note))
    click.echo(f"{break_id}: RESOLVED by transfer {fix.id}")


@breaks.command("close")
@click.argument("break_id", type=click.UUID)
@click.option("--note", required=True, help="The review that closes it.")
@click.pass_context
def close(ctx: click.Context, break_id: uuid.UUID, note: str) -> None:
    """Close a RESOLVED break after review."""
    _step(lambda: lifecycle.close(_engine(ctx), break_id, note))
    click.echo(f"{break_id}: CLOSED")
