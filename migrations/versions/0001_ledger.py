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
    for column, unique in (("pending_id", True), ("linked_id", False)):
        name = f"{'uq' if unique else 'ix'}_transfers_{column}"
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name, "transfers", [column], unique=unique, postgresql_where=where, sqlite_where=where
        )
    op.create_index("ix_transfers_timestamp_us", "transfers", ["timestamp_us"])
    op.create_index("ix_transfers_kind_seq", "transfers", ["kind", "seq"])
    op.create_table(
        "postings",
        sa.Column("transfer_id", sa.Uuid, nullable=False),
        sa.Column("leg", sa.SmallInteger, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", "leg", name="pk_postings"),
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


# What the triggers guarantee (see ledger/schema.py), on both dialects:
# - postings: legs written for a transfer balance, 2 to 16 of them in one currency, each
#   naming an existing account of that currency, and never added to a recorded transfer;
# - transfers: void and expire carry no legs, every other phase has its legs in its own
#   currency (invariant 1); a resolution names an existing pending transfer, a post's legs
#   match that transfer's accounts and sides without exceeding them, an expiry comes after
#   the timeout (invariant 4);
# - transfers, postings and journal blocks are never updated or deleted, accounts never
#   deleted (invariant 5).


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
        "CREATE TRIGGER trg_accounts_no_delete BEFORE DELETE ON accounts"
        " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER trg_accounts_no_truncate BEFORE TRUNCATE ON accounts"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )
    # The checks below probe the big tables through scalar subqueries on purpose: those
    # stay per-row index probes, where a join against a transition table may be planned
    # as a scan of the whole journal.
    op.execute(
        """
        CREATE FUNCTION ledger_check_new_postings() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad uuid;
        BEGIN
            SELECT n.transfer_id INTO bad
            FROM (SELECT DISTINCT transfer_id FROM new_postings) n
            WHERE (SELECT count(*) FROM transfers t WHERE t.id = n.transfer_id) > 0
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'postings_after_transfer: legs cannot be added to recorded'
                    ' transfer %', bad USING ERRCODE = 'check_violation';
            END IF;
            SELECT transfer_id INTO bad FROM new_postings GROUP BY transfer_id
            HAVING count(*) NOT BETWEEN 2 AND 16 OR sum(amount) <> 0
                OR count(DISTINCT currency) > 1
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'transfer_unbalanced: legs of transfer %', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            SELECT n.account_id INTO bad
            FROM (SELECT DISTINCT account_id, currency FROM new_postings) n
            WHERE (SELECT count(*) FROM accounts a
                   WHERE a.id = n.account_id AND a.currency = n.currency) = 0
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'posting_account_invalid: account % missing or in another'
                    ' currency', bad USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER trg_postings_checked AFTER INSERT ON postings"
        " REFERENCING NEW TABLE AS new_postings"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_new_postings()"
    )
    op.execute(
        """
        CREATE FUNCTION ledger_check_new_transfers() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad uuid;
        BEGIN
            -- Legs are numbered from 0, so leg 0 stands for the whole (checked above).
            SELECT n.id INTO bad
            FROM new_transfers n
            WHERE (SELECT count(*) FROM postings p
                   WHERE p.transfer_id = n.id AND p.leg = 0 AND p.currency = n.currency)
                  <> CASE WHEN n.phase IN ('void_pending', 'expire_pending') THEN 0 ELSE 1 END
               OR (n.phase IN ('void_pending', 'expire_pending')
                   AND (SELECT count(*) FROM postings p WHERE p.transfer_id = n.id) > 0)
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'transfer_unbalanced: transfer % has wrong legs', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            SELECT n.id INTO bad
            FROM new_transfers n
            WHERE n.pending_id IS NOT NULL
              AND (SELECT count(*) FROM transfers pt
                   WHERE pt.id = n.pending_id AND pt.phase = 'pending'
                     AND (n.phase <> 'expire_pending' OR (pt.timeout_s > 0
                          AND n.timestamp_us >= pt.timestamp_us + pt.timeout_s * 1000000))) = 0
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'pending_resolution_invalid: transfer %', bad
                    USING ERRCODE = 'check_violation';
            END IF;
            SELECT n.id INTO bad
            FROM new_transfers n
            WHERE n.phase = 'post_pending'
              AND (SELECT count(*) FROM postings p
                   LEFT JOIN postings pp
                          ON pp.transfer_id = n.pending_id AND pp.account_id = p.account_id
                   WHERE p.transfer_id = n.id
                     AND (pp.amount IS NULL OR sign(pp.amount) <> sign(p.amount)
                          OR abs(p.amount) > abs(pp.amount))) > 0
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
    _postgresql_batch_functions()


def _postgresql_batch_functions() -> None:
    """ledger_read and ledger_write: a batch's reads, then its writes, in one statement each.

    They decide nothing (ledger/batch.py does); they carry a whole batch across the network
    in one round trip as one JSON document, and take row locks in the fixed order that
    ledger/store.py describes.
    """
    op.execute(
        """
        CREATE FUNCTION ledger_read(request jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
        DECLARE
            transfer_ids uuid[] := ARRAY(
                SELECT jsonb_array_elements_text(request->'transfers')::uuid);
            pending_ids uuid[] := ARRAY(
                SELECT jsonb_array_elements_text(request->'resolutions')::uuid);
            account_ids uuid[] := ARRAY(
                SELECT jsonb_array_elements_text(request->'accounts')::uuid);
            locked_ids uuid[] := ARRAY(
                SELECT jsonb_array_elements_text(request->'locked_accounts')::uuid);
            found jsonb;
        BEGIN
            WITH locked AS (
                SELECT * FROM accounts WHERE id = ANY(locked_ids)
                ORDER BY id FOR NO KEY UPDATE
            ), named AS (
                SELECT * FROM locked UNION ALL
                SELECT * FROM accounts WHERE id = ANY(account_ids)
            )
            SELECT jsonb_build_object(
                'transfers', (
                    SELECT coalesce(jsonb_agg(jsonb_build_array(
                        t.seq, t.id, t.kind, t.phase, t.currency, t.pending_id, t.linked_id,
                        t.timeout_s, t.metadata, t.timestamp_us, p.leg, p.account_id, p.amount)
                        ORDER BY t.seq, p.leg), '[]')
                    FROM transfers t LEFT JOIN postings p ON p.transfer_id = t.id
                    WHERE t.id = ANY(transfer_ids)),
                'resolutions', (
                    SELECT coalesce(jsonb_agg(jsonb_build_array(pending_id, phase)), '[]')
                    FROM transfers WHERE pending_id = ANY(pending_ids)),
                'accounts', (
                    SELECT coalesce(jsonb_agg(jsonb_build_array(
                        id, currency, status, debits_must_not_exceed_credits,
                        credits_must_not_exceed_debits, max_balance, shards, debits_posted,
                        credits_posted, debits_pending, credits_pending)), '[]')
                    FROM named))
            INTO found;
            RETURN found;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION ledger_write(batch jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
        DECLARE
            seqs jsonb;
            statuses jsonb;
        BEGIN
            -- Postings first: the transfers' insert trigger checks them.
            INSERT INTO postings (transfer_id, leg, account_id, currency, amount)
            SELECT (e->>0)::uuid, (e->>1)::int2, (e->>2)::uuid, e->>3, (e->>4)::int8
            FROM jsonb_array_elements(batch->'postings') e;
            -- Bounded accounts: already locked by ledger_read; new absolute balances.
            UPDATE accounts a SET debits_posted = (e->>1)::int8,
                credits_posted = (e->>2)::int8, debits_pending = (e->>3)::int8,
                credits_pending = (e->>4)::int8, version = a.version + 1
            FROM jsonb_array_elements(batch->'bounded') e WHERE a.id = (e->>0)::uuid;
            -- Unbounded accounts: lock in (account, shard) order, then add the deltas.
            PERFORM 1 FROM accounts
            WHERE id = ANY(ARRAY(SELECT (e->>0)::uuid FROM jsonb_array_elements(batch->'shards') e
                                 WHERE (e->>1)::int = 0))
            ORDER BY id FOR NO KEY UPDATE;
            UPDATE accounts a SET debits_posted = a.debits_posted + (e->>2)::int8,
                credits_posted = a.credits_posted + (e->>3)::int8,
                debits_pending = a.debits_pending + (e->>4)::int8,
                credits_pending = a.credits_pending + (e->>5)::int8, version = a.version + 1
            FROM jsonb_array_elements(batch->'shards') e
            WHERE (e->>1)::int = 0 AND a.id = (e->>0)::uuid;
            PERFORM 1 FROM account_balance_shards s
            JOIN jsonb_array_elements(batch->'shards') e
              ON s.account_id = (e->>0)::uuid AND s.shard = (e->>1)::int2
            WHERE (e->>1)::int <> 0
            ORDER BY s.account_id, s.shard FOR NO KEY UPDATE OF s;
            UPDATE account_balance_shards s SET debits_posted = s.debits_posted + (e->>2)::int8,
                credits_posted = s.credits_posted + (e->>3)::int8,
                debits_pending = s.debits_pending + (e->>4)::int8,
                credits_pending = s.credits_pending + (e->>5)::int8
            FROM jsonb_array_elements(batch->'shards') e
            WHERE (e->>1)::int <> 0 AND s.account_id = (e->>0)::uuid
              AND s.shard = (e->>1)::int2;
            -- Read after the updates, which hold the rows (see ledger.batch._recheck_status).
            SELECT coalesce(jsonb_agg(jsonb_build_array(id, status)), '[]') INTO statuses
            FROM accounts
            WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(batch->'recheck')::uuid));
            WITH inserted AS (
                INSERT INTO transfers (id, kind, phase, currency, pending_id, linked_id,
                                       timeout_s, metadata, timestamp_us, content_hash)
                SELECT (e->>0)::uuid, e->>1, e->>2, e->>3, (e->>4)::uuid, (e->>5)::uuid,
                       (e->>6)::int8, e->>7, (e->>8)::int8, decode(e->>9, 'hex')
                FROM jsonb_array_elements(batch->'transfers') e
                RETURNING id, seq
            )
            SELECT jsonb_agg(jsonb_build_array(id, seq)) INTO seqs FROM inserted;
            RETURN jsonb_build_object('seqs', seqs, 'statuses', statuses);
        END $$
        """
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
        "CREATE TRIGGER trg_accounts_no_delete BEFORE DELETE ON accounts"
        " BEGIN SELECT RAISE(ABORT, 'append_only: DELETE on accounts is refused'); END"
    )
    op.execute(
        """
        CREATE TRIGGER trg_postings_checked BEFORE INSERT ON postings
        BEGIN
            SELECT RAISE(ABORT, 'postings_after_transfer: legs cannot join a recorded transfer')
            WHERE EXISTS (SELECT 1 FROM transfers WHERE id = NEW.transfer_id);
            SELECT RAISE(ABORT, 'posting_account_invalid: account missing or in another currency')
            WHERE NOT EXISTS (SELECT 1 FROM accounts
                              WHERE id = NEW.account_id AND currency = NEW.currency);
        END
        """
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
        op.execute("DROP TRIGGER IF EXISTS trg_postings_checked ON postings")
        op.execute("DROP TRIGGER IF EXISTS trg_accounts_no_delete ON accounts")
        op.execute("DROP TRIGGER IF EXISTS trg_accounts_no_truncate ON accounts")
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ledger_read(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS ledger_write(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_new_transfers()")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_new_postings()")
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    op.drop_table("journal_blocks")
    op.drop_table("postings")
    op.drop_table("transfers")
    op.drop_table("account_balance_shards")
    op.drop_table("accounts")
