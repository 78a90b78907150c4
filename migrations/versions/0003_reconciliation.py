"""The nightly reconciliation: its runs, its breaks (kept across nights) and their history.

The tables are described in reconciliation/nightly/schema.py (a test proves the two agree).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TYPES = (
    "'LEDGER_INVARIANT_BROKEN', 'DAY_NOT_SEALED', 'MISSING_IN_LEDGER', 'MISSING_IN_EXTERNAL',"
    " 'AMOUNT_MISMATCH', 'DUPLICATE_EXTERNAL', 'DUPLICATE_LEDGER', 'DUPLICATE_COUNTER',"
    " 'COUNTER_GAP', 'COUNTER_REGRESSION', 'BALANCE_CHAIN_BROKEN', 'SIGNATURE_INVALID',"
    " 'SHADOW_BALANCE_MISMATCH', 'UNRESOLVED_LOAD', 'QUARANTINED_INPUT', 'MISSING_BATCH',"
    " 'UNFINISHED_JOURNEY_NOT_CHARGED'"
)
_STATUSES = "'NEW', 'AUTO_RESOLVED', 'OPEN', 'INVESTIGATING', 'RESOLVED', 'CLOSED'"
_SOURCES = (
    "'ledger', 'records', 'cards', 'gates', 'merchant_report', 'bank_statement', 'settlement'"
)


def upgrade() -> None:
    op.create_table(
        "recon_runs",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("sealed_block_no", sa.BigInteger(), nullable=True),
        sa.Column("sealed_head_hash", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.Text(), server_default="{}", nullable=False),
        sa.Column("started_us", sa.BigInteger(), nullable=False),
        sa.Column("finished_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'agreed', 'breaks', 'failed')",
            name=op.f("ck_recon_runs_status_known"),
        ),
        sa.CheckConstraint(
            "(status = 'running') = (finished_us IS NULL)", name=op.f("ck_recon_runs_finished")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_recon_runs")),
        sa.UniqueConstraint("id", name=op.f("uq_recon_runs_id")),
    )
    op.create_index("ix_recon_runs_business_date", "recon_runs", ["business_date"], unique=False)
    op.create_table(
        "recon_breaks",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("break_type", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("break_key", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_seen_date", sa.String(length=10), nullable=False),
        sa.Column("last_seen_date", sa.String(length=10), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=True),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("terminal_code", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("ledger_amount", sa.BigInteger(), nullable=True),
        sa.Column("external_amount", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(length=512), server_default="", nullable=False),
        sa.Column("resolution_transfer_id", sa.Uuid(), nullable=True),
        sa.Column("closed_by_run", sa.Uuid(), nullable=True),
        sa.Column("note", sa.String(length=512), server_default="", nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(f"source IN ({_SOURCES})", name=op.f("ck_recon_breaks_source_known")),
        sa.CheckConstraint(f"break_type IN ({_TYPES})", name=op.f("ck_recon_breaks_type_known")),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_recon_breaks_status_known")),
        sa.CheckConstraint(
            "status NOT IN ('RESOLVED', 'CLOSED') OR resolution_transfer_id IS NOT NULL"
            " OR (status = 'CLOSED' AND closed_by_run IS NOT NULL)",
            name=op.f("ck_recon_breaks_fixed_by_transfer"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_recon_breaks")),
        sa.UniqueConstraint("id", name=op.f("uq_recon_breaks_id")),
        sa.UniqueConstraint("break_type", "break_key", name="uq_recon_breaks_type_key"),
    )
    op.create_index(
        "ix_recon_breaks_status", "recon_breaks", ["status", "break_type"], unique=False
    )
    op.create_index(
        "ix_recon_breaks_first_seen_date", "recon_breaks", ["first_seen_date"], unique=False
    )
    op.create_table(
        "recon_break_events",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("break_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=512), server_default="", nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_recon_break_events")),
    )
    op.create_index(
        "ix_recon_break_events_break_id", "recon_break_events", ["break_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_recon_break_events_break_id", table_name="recon_break_events")
    op.drop_table("recon_break_events")
    op.drop_index("ix_recon_breaks_first_seen_date", table_name="recon_breaks")
    op.drop_index("ix_recon_breaks_status", table_name="recon_breaks")
    op.drop_table("recon_breaks")
    op.drop_index("ix_recon_runs_business_date", table_name="recon_runs")
    op.drop_table("recon_runs")
