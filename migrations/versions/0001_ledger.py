"""The ledger: accounts, balance shards, transfers, postings, journal blocks, and the
triggers that make the journal append-only and every transfer balanced.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY = ("transfers", "postings", "journal_blocks")


def _amounts() -> list[sa.Column[int]]:
    return [
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
    ]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
        sa.Column("max_balance", sa.BigInteger, nullable=True),
        sa.Column("shards", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("status", sa.String(8), nullable=False, server_default="open"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        *_amounts(),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
            " AND credits_pending >= 0",
            name="ck_accounts_amounts_not_negative",
        ),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name="ck_accounts_flags_exclusive",
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits"
            " OR debits_posted + debits_pending <= credits_posted",
            name="ck_accounts_debits_within_credits",
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits"
            " OR credits_posted + credits_pending <= debits_posted",
            name="ck_accounts_credits_within_debits",
        ),
        sa.CheckConstraint(
            "max_balance IS NULL OR (max_balance > 0 AND ("
            "(debits_must_not_exceed_credits"
            " AND credits_posted + credits_pending - debits_posted <= max_balance)"
            " OR (credits_must_not_exceed_debits"
            " AND debits_posted + debits_pending - credits_posted <= max_balance)))",
            name="ck_accounts_within_max_balance",
        ),
        sa.CheckConstraint(
            "shards = 1 OR (shards BETWEEN 2 AND 64 AND max_balance IS NULL"
            " AND NOT debits_must_not_exceed_credits AND NOT credits_must_not_exceed_debits)",
            name="ck_accounts_shards_only_unbounded",
        ),
        sa.CheckConstraint(
            "status IN ('open', 'frozen', 'closed')", name="ck_accounts_status_known"
        ),
        sa.CheckConstraint("length(currency) = 3", name="ck_accounts_currency_code"),
    )
    op.create_table(
        "account_balance_shards",
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("shard", sa.SmallInteger, nullable=False),
        *_amounts(),
        sa.PrimaryKeyConstraint("account_id", "shard", name="pk_account_balance_shards"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_account_balance_shards_account_id_accounts"
        ),
        sa.CheckConstraint("shard BETWEEN 1 AND 63", name="ck_account_balance_shards_shard_range"),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
            " AND credits_pending >= 0",
            name="ck_account_balance_shards_amounts_not_negative",
        ),
    )
    op.create_table(
        "transfers",
        sa.Column("seq", SeqType, autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("pending_id", sa.Uuid, nullable=True),
        sa.Column("linked_id", sa.Uuid, nullable=True),
        sa.Column("timeout_s", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Column("timestamp_us", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_transfers"),
        sa.UniqueConstraint("id", name="uq_transfers_id"),
        sa.CheckConstraint(
            "phase IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')",
            name="ck_transfers_phase_known",
        ),
        sa.CheckConstraint(
            "(pending_id IS NULL) = (phase IN ('posted', 'pending'))",
            name="ck_transfers_pending_id_by_phase",
        ),
        sa.CheckConstraint(
            "timeout_s >= 0 AND (timeout_s = 0 OR phase = 'pending')", name="ck_transfers_timeout"
        ),
        sa.CheckConstraint("length(content_hash) = 32", name="ck_transfers_content_hash_length"),
    )
    op.create_index("uq_transfers_pending_id", "transfers", ["pending_id"], unique=True)
    op.create_index("ix_transfers_timestamp_us", "transfers", ["timestamp_us"])
    op.create_index("ix_transfers_kind_seq", "transfers", ["kind", "seq"])
    op.create_index("ix_transfers_linked_id", "transfers", ["linked_id"])
    op.create_table(
        "postings",
        sa.Column("transfer_id", sa.Uuid, nullable=False),
        sa.Column("leg", sa.SmallInteger, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", "leg", name="pk_postings"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_postings_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.id"],
            name="fk_postings_transfer_id_transfers",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.CheckConstraint("amount <> 0", name="ck_postings_amount_not_zero"),
        sa.CheckConstraint("leg BETWEEN 0 AND 15", name="ck_postings_leg_range"),
    )
    op.create_index("ix_postings_account_id", "postings", ["account_id"])
    op.create_table(
        "journal_blocks",
        sa.Column("block_no", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("transfer_count", sa.BigInteger, nullable=False),
        sa.Column("transfers_root", sa.LargeBinary(32), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("sealed_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("block_no", name="pk_journal_blocks"),
        sa.CheckConstraint("first_seq <= last_seq", name="ck_journal_blocks_seq_range"),
        sa.CheckConstraint("transfer_count >= 1", name="ck_journal_blocks_count_positive"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


# The checks both dialects run when a transfer row is inserted (its postings already are):
# - void and expire carry no postings; every other phase 2 to 16 that sum to zero, all in
#   the transfer's currency (invariant 1);
# - a resolution names an existing pending transfer; a post's legs match that transfer's
#   accounts and sides without exceeding them; an expiry comes after the timeout (inv. 4).


def _postgresql_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'append_only: % on % is refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
    op.execute(
        """
        CREATE FUNCTION ledger_check_new_postings() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM new_postings n JOIN transfers t ON t.id = n.transfer_id)
            THEN
                RAISE EXCEPTION 'postings_after_transfer: legs cannot be added to a recorded'
                    ' transfer' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER trg_postings_before_transfer AFTER INSERT ON postings"
        " REFERENCING NEW TABLE AS new_postings"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_new_postings()"
    )
    op.execute(
        """
        CREATE FUNCTION ledger_check_new_transfers() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad uuid;
        BEGIN
            SELECT n.id INTO bad
            FROM new_transfers n LEFT JOIN postings p ON p.transfer_id = n.id
            GROUP BY n.id, n.phase, n.currency
            HAVING CASE WHEN n.phase IN ('void_pending', 'expire_pending')
                        THEN count(p.leg) <> 0
                        ELSE count(p.leg) NOT BETWEEN 2 AND 16
                             OR coalesce(sum(p.amount), 0) <> 0
                             OR NOT bool_and(p.currency = n.currency) END
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'transfer_unbalanced: transfer %', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            SELECT n.id INTO bad
            FROM new_transfers n LEFT JOIN transfers pt ON pt.id = n.pending_id
            WHERE n.pending_id IS NOT NULL AND (
                pt.id IS NULL OR pt.phase <> 'pending'
                OR (n.phase = 'expire_pending' AND (pt.timeout_s = 0
                    OR n.timestamp_us < pt.timestamp_us + pt.timeout_s * 1000000)))
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'pending_resolution_invalid: transfer %', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            SELECT n.id INTO bad
            FROM new_transfers n
            JOIN postings p ON p.transfer_id = n.id
            LEFT JOIN postings pp ON pp.transfer_id = n.pending_id AND pp.account_id = p.account_id
            WHERE n.phase = 'post_pending' AND (
                pp.amount IS NULL OR sign(pp.amount) <> sign(p.amount)
                OR abs(p.amount) > abs(pp.amount))
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'post_exceeds_pending: transfer %', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER trg_transfers_balanced AFTER INSERT ON transfers"
        " REFERENCING NEW TABLE AS new_transfers"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_new_transfers()"
    )


def _sqlite_triggers() -> None:
    for table in APPEND_ONLY:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER trg_{table}_no_{operation.lower()} BEFORE {operation} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'append_only: {operation} on {table} is refused');"
                " END"
            )
    op.execute(
        "CREATE TRIGGER trg_postings_before_transfer BEFORE INSERT ON postings"
        " WHEN EXISTS (SELECT 1 FROM transfers WHERE id = NEW.transfer_id)"
        " BEGIN SELECT RAISE(ABORT, 'postings_after_transfer: legs cannot be added to a"
        " recorded transfer'); END"
    )
    op.execute(
        """
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
                                     AND pp.account_id = p.account_id
                WHERE p.transfer_id = NEW.id AND (pp.amount IS NULL
                    OR (pp.amount > 0) <> (p.amount > 0) OR abs(p.amount) > abs(pp.amount)));
        END
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS trg_transfers_balanced ON transfers")
        op.execute("DROP TRIGGER IF EXISTS trg_postings_before_transfer ON postings")
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_new_transfers()")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_new_postings()")
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    op.drop_table("journal_blocks")
    op.drop_table("postings")
    op.drop_table("transfers")
    op.drop_table("account_balance_shards")
    op.drop_table("accounts")
