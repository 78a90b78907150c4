"""Breaks kept across nights: tonight's findings merged into the lifecycle
(reconciliation.nightly.taxonomy), and the finance officers' own steps.

Guarantees:
- One row per (type, key): the same disagreement found on many nights is one break whose
  `last_seen_date` moves on; running a night again changes nothing further.
- A break is only ever settled by evidence: AUTO_RESOLVED when a check re-examined its
  subject (same source, same subject) and found it in agreement; CLOSED likewise for a
  RESOLVED one. A subject not examined tonight keeps its breaks as they are.
- RESOLVED only through `resolve`, which posts the compensating ledger transfer and
  records its id in the same database transaction; history is never edited.
- Every status change is appended to recon_break_events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger import Ledger, Transfer, run_write
from merchant_api.wib import now_us
from reconciliation.nightly.findings import CheckResult, Finding
from reconciliation.nightly.schema import recon_break_events, recon_breaks
from reconciliation.nightly.taxonomy import MANUAL_TRANSITIONS, UNSETTLED, BreakStatus

b, ev = recon_breaks, recon_break_events
_SETTLED_BY_EVIDENCE = {
    BreakStatus.NEW: BreakStatus.AUTO_RESOLVED,
    BreakStatus.OPEN: BreakStatus.AUTO_RESOLVED,
    BreakStatus.INVESTIGATING: BreakStatus.AUTO_RESOLVED,
    BreakStatus.RESOLVED: BreakStatus.CLOSED,
}
_CHUNK = 500


class BreakTransitionError(ValueError):
    """`code` names the refused step: break_not_found, transition_not_allowed,
    compensating_transfer_refused."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class Changes:
    new: int
    reopened: int
    auto_resolved: int
    closed: int


def _uid(hex_id: str | None) -> uuid.UUID | None:
    return uuid.UUID(hex_id) if hex_id else None


def persist(
    conn: Connection, run_id: uuid.UUID, day: str, results: Sequence[CheckResult]
) -> Changes:
    """Merge tonight's results into the breaks table (see the module doc)."""
    now = now_us()
    found: dict[uuid.UUID, Finding] = {}
    for result in results:
        for finding in result.findings:
            found.setdefault(finding.break_id, finding)
    existing = {row.id: row for row in _rows_by_id(conn, list(found))}
    new = reopened = auto_resolved = closed = 0
    events: list[tuple[uuid.UUID, BreakStatus | None, BreakStatus, str]] = []
    for break_id, f in found.items():
        values = {
            "last_seen_date": max(day, existing[break_id].last_seen_date)
            if break_id in existing
            else day,
            "detail": f.detail[:512],
            "ledger_amount": f.ledger_amount,
            "external_amount": f.external_amount,
            "updated_us": now,
        }
        row = existing.get(break_id)
        if row is None:
            conn.execute(
                sa.insert(b).values(
                    id=break_id,
                    break_type=f.type.value,
                    source=f.source.value,
                    subject=f.subject[:128],
                    break_key=f.key[:256],
                    status=BreakStatus.NEW.value,
                    first_seen_date=day,
                    card_id=_uid(f.card_id),
                    merchant_id=_uid(f.merchant_id),
                    terminal_code=f.terminal_code,
                    reference=f.reference,
                    created_us=now,
                    **values,
                )
            )
            events.append((break_id, None, BreakStatus.NEW, "found"))
            new += 1
            continue
        status = BreakStatus(row.status)
        target = status
        if status in (BreakStatus.AUTO_RESOLVED, BreakStatus.CLOSED):
            target = BreakStatus.OPEN
            reopened += 1
        elif status is BreakStatus.NEW and row.first_seen_date < day:
            target = BreakStatus.OPEN
        if target is not status:
            values.update(status=target.value, closed_by_run=None)
            events.append((break_id, status, target, "found again"))
        conn.execute(sa.update(b).where(b.c.id == break_id).values(**values))

    for result in results:
        settled = conn.execute(
            sa.select(b.c.id, b.c.status, b.c.subject).where(
                b.c.source == result.source.value,
                b.c.status.in_([s.value for s in _SETTLED_BY_EVIDENCE]),
            )
        ).all()
        for hit in settled:
            if hit.id in found or hit.subject not in result.examined:
                continue
            status = BreakStatus(hit.status)
            target = _SETTLED_BY_EVIDENCE[status]
            conn.execute(
                sa.update(b)
                .where(b.c.id == hit.id)
                .values(status=target.value, closed_by_run=run_id, updated_us=now)
            )
            events.append((hit.id, status, target, "subject re-examined and in agreement"))
            if target is BreakStatus.CLOSED:
                closed += 1
            else:
                auto_resolved += 1
    _events(conn, run_id, events, now)
    return Changes(new, reopened, auto_resolved, closed)


def _rows_by_id(conn: Connection, ids: list[uuid.UUID]) -> Iterable[sa.Row[tuple[object, ...]]]:
    for at in range(0, len(ids), _CHUNK):
        yield from conn.execute(sa.select(b).where(b.c.id.in_(ids[at : at + _CHUNK])))


def _events(
    conn: Connection,
    run_id: uuid.UUID | None,
    events: list[tuple[uuid.UUID, BreakStatus | None, BreakStatus, str]],
    now: int,
) -> None:
    if events:
        conn.execute(
            sa.insert(ev),
            [
                {
                    "break_id": break_id,
                    "run_id": run_id,
                    "from_status": old.value if old else None,
                    "to_status": new.value,
                    "note": note[:512],
                    "at_us": now,
                }
                for break_id, old, new, note in events
            ],
        )


def unsettled_count(conn: Connection, through_day: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                b.c.status.in_([s.value for s in UNSETTLED]), b.c.first_seen_date <= through_day
            )
        ).scalar_one()
    )


def _transition(
    conn: Connection, break_id: uuid.UUID, target: BreakStatus, note: str, **values: object
) -> None:
    row = conn.execute(sa.select(b).where(b.c.id == break_id).with_for_update()).first()
    if row is None:
        raise BreakTransitionError("break_not_found", str(break_id))
    status = BreakStatus(row.status)
    if (status, target) not in MANUAL_TRANSITIONS:
        raise BreakTransitionError("transition_not_allowed", f"{status.value} -> {target.value}")
    now = now_us()
    conn.execute(
        sa.update(b)
        .where(b.c.id == break_id)
        .values(status=target.value, note=note[:512], updated_us=now, **values)
    )
    _events(conn, None, [(break_id, status, target, note)], now)


def investigate(engine: Engine, break_id: uuid.UUID, note: str) -> None:
    """A finance officer takes the break (NEW or OPEN -> INVESTIGATING)."""
    run_write(engine, lambda conn: _transition(conn, break_id, BreakStatus.INVESTIGATING, note))


def resolve(engine: Engine, ledger: Ledger, break_id: uuid.UUID, fix: Transfer, note: str) -> None:
    """Post the compensating transfer `fix` and mark the break RESOLVED, in one database
    transaction: both happen or neither. The transfer's metadata should name the break."""

    def work(conn: Connection) -> None:
        result = ledger.submit_in(conn, [fix])[0]
        if not result.code.succeeded:
            raise BreakTransitionError("compensating_transfer_refused", result.code.value)
        _transition(conn, break_id, BreakStatus.RESOLVED, note, resolution_transfer_id=fix.id)

    run_write(engine, work)


def close(engine: Engine, break_id: uuid.UUID, note: str) -> None:
    """A finance officer closes a RESOLVED break after review."""
    run_write(engine, lambda conn: _transition(conn, break_id, BreakStatus.CLOSED, note))
