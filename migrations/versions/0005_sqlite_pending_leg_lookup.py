"""SQLite's balance trigger finds a pending transfer's legs by the transfer, not the account.

Why: 0001's trg_transfers_balanced (SQLite) joins the legs of a posted pending transfer to
the pending transfer's legs on (transfer_id, account_id). With no statistics, SQLite chose
the account_id index for that lookup, so posting a load read every leg the issuer's funding
account ever had: 45 ms per load confirmation by the end of a 20,000-card day, quadratic
over the day. The unary plus in `+pp.account_id` (SQLite's documented way) takes account_id
out of the index choice, leaving the primary key (transfer_id, leg). The trigger checks
exactly what it checked before.

PostgreSQL is unchanged: its statement-level trigger plans from statistics.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BALANCED = """
CREATE TRIGGER trg_transfers_balanced BEFORE INSERT ON transfers
BEGIN
    SELECT RAISE(ABORT, 'transfer_unbalanced: wrong legs, sum or currency')
    WHERE CASE WHEN NEW.phase IN ('void_pending', 'expire_pending')
               THEN (SELECT count(*) FROM postings WHERE transfer_id = NEW.id) <> 0
               ELSE (SELECT count(*) NOT BETWEEN 2 AND 16
                            OR coalesce(sum(amount), 0) <> 0
                            OR sum(currency <> NEW.currency) > 0
                     FROM postings WHERE transfer_id = NEW.id) END;
    SELECT RAISE(ABORT, 'pending_resolution_invalid: no such pending transfer')
    WHERE NEW.pending_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM transfers pt WHERE pt.id = NEW.pending_id AND pt.phase = 'pending'
        AND (NEW.phase <> 'expire_pending' OR (pt.timeout_s > 0
             AND NEW.timestamp_us >= pt.timestamp_us + pt.timeout_s * 1000000)));
    SELECT RAISE(ABORT, 'post_exceeds_pending: legs do not match the pending transfer')
    WHERE NEW.phase = 'post_pending' AND EXISTS (
        SELECT 1 FROM postings p
        LEFT JOIN postings pp ON pp.transfer_id = NEW.pending_id
                             AND {pending_leg_account} = p.account_id
        WHERE p.transfer_id = NEW.id AND (pp.amount IS NULL
            OR (pp.amount > 0) <> (p.amount > 0) OR abs(p.amount) > abs(pp.amount)));
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER trg_transfers_balanced")
    op.execute(BALANCED.format(pending_leg_account="+pp.account_id"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER trg_transfers_balanced")
    op.execute(BALANCED.format(pending_leg_account="pp.account_id"))
