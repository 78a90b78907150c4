"""The nightly job's tables, as SQLAlchemy Core metadata (migration 0003 makes them).

- recon_runs: one row per run of the job (a date may be run many times; every run is kept).
- recon_breaks: one row per break, kept across nights. Its id is derived from its type and
  its key, so the same disagreement found on two nights is one break.
- recon_break_events: the append-only history of every break's status changes.

What the database enforces: known types, statuses and sources; a RESOLVED or CLOSED break
names the compensating ledger transfer that fixed it, unless it closed because a later run
found its subject in agreement (`closed_by_run`).
"""

from __future__ import annotations

import sqlalchemy as sa

from ledger.schema import NAMING_CONVENTION
from reconciliation.nightly.taxonomy import BreakStatus, BreakType, Source

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _in(column: str, values: type[BreakType] | type[BreakStatus] | type[Source]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


RUN_STATUSES = ("running", "agreed", "breaks", "failed")

recon_runs = sa.Table(
    "recon_runs",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Uuid, nullable=False, unique=True),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="running"),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("sealed_block_no", sa.BigInteger, nullable=True),
    sa.Column("sealed_head_hash", sa.String(64), nullable=True),
    sa.Column("summary", sa.Text, nullable=False, server_default="{}"),
    sa.Column("started_us", sa.BigInteger, nullable=False),
    sa.Column("finished_us", sa.BigInteger, nullable=True),
    sa.CheckConstraint("status IN ('running', 'agreed', 'breaks', 'failed')", name="status_known"),
    sa.CheckConstraint("(status = 'running') = (finished_us IS NULL)", name="finished"),
)
sa.Index("ix_recon_runs_business_date", recon_runs.c.business_date)

recon_breaks = sa.Table(
    "recon_breaks",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Uuid, nullable=False, unique=True),
    sa.Column("break_type", sa.String(40), nullable=False),
    sa.Column("source", sa.String(24), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("break_key", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_seen_date", sa.String(10), nullable=False),
    sa.Column("last_seen_date", sa.String(10), nullable=False),
    sa.Column("card_id", sa.Uuid, nullable=True),
    sa.Column("merchant_id", sa.Uuid, nullable=True),
    sa.Column("terminal_code", sa.String(64), nullable=True),
    sa.Column("reference", sa.String(128), nullable=True),
    sa.Column("ledger_amount", sa.BigInteger, nullable=True),
    sa.Column("external_amount", sa.BigInteger, nullable=True),
    sa.Column("detail", sa.String(512), nullable=False, server_default=""),
    sa.Column("resolution_transfer_id", sa.Uuid, nullable=True),
    sa.Column("closed_by_run", sa.Uuid, nullable=True),
    sa.Column("note", sa.String(512), nullable=False, server_default=""),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("break_type", "break_key", name="uq_recon_breaks_type_key"),
    sa.CheckConstraint(_in("break_type", BreakType), name="type_known"),
    sa.CheckConstraint(_in("status", BreakStatus), name="status_known"),
    sa.CheckConstraint(_in("source", Source), name="source_known"),
    sa.CheckConstraint(
        "status NOT IN ('RESOLVED', 'CLOSED') OR resolution_transfer_id IS NOT NULL"
        " OR (status = 'CLOSED' AND closed_by_run IS NOT NULL)",
        name="fixed_by_transfer",
    ),
)
sa.Index("ix_recon_breaks_status", recon_breaks.c.status, recon_breaks.c.break_type)
sa.Index("ix_recon_breaks_first_seen_date", recon_breaks.c.first_seen_date)

recon_break_events = sa.Table(
    "recon_break_events",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("break_id", sa.Uuid, nullable=False),
    sa.Column("run_id", sa.Uuid, nullable=True),
    sa.Column("from_status", sa.String(16), nullable=True),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("note", sa.String(512), nullable=False, server_default=""),
    sa.Column("at_us", sa.BigInteger, nullable=False),
)
sa.Index("ix_recon_break_events_break_id", recon_break_events.c.break_id)
