"""The ledger's tables, as SQLAlchemy Core metadata.

Alembic migrations (migrations/versions) are the only way these tables are made; this
module describes them for queries, and a test proves that the two agree. Every constraint
is named (batch mode on SQLite drops unnamed CHECKs silently).

The rules the database enforces itself, whatever the application does (the triggers are
in the migration):
- accounts: the balance bounds of invariant 2 (CHECK constraints on the balance row); an
  account is never deleted, only closed (trigger).
- postings: append-only; legs written together balance, in one currency, and name existing
  accounts of that currency; no leg is added to a transfer already recorded (triggers).
  These set-based checks stand in for foreign keys, which PostgreSQL checks one row at a
  time; a posting left without its transfer is found by the verifier instead.
- transfers: append-only; one that moves money has its legs, in its currency; a resolution
  names a pending transfer, a post stays within its legs, an expiry comes after the
  timeout (triggers); a pending transfer is resolved at most once (unique index).
- journal_blocks: append-only (triggers).
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-assigns an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets BIGINT.
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _amount(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
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
    # Shard 0 of the balance: the whole balance of every bounded account.
    _amount("debits_posted"),
    _amount("credits_posted"),
    _amount("debits_pending"),
    _amount("credits_pending"),
    sa.CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
        " AND credits_pending >= 0",
        name="amounts_not_negative",
    ),
    sa.CheckConstraint(
        "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
        name="flags_exclusive",
    ),
    sa.CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
        name="debits_within_credits",
    ),
    sa.CheckConstraint(
        "NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted",
        name="credits_within_debits",
    ),
    sa.CheckConstraint(
        "max_balance IS NULL OR (max_balance > 0 AND ("
        "(debits_must_not_exceed_credits"
        " AND credits_posted + credits_pending - debits_posted <= max_balance)"
        " OR (credits_must_not_exceed_debits"
        " AND debits_posted + debits_pending - credits_posted <= max_balance)))",
        name="within_max_balance",
    ),
    sa.CheckConstraint(
        "shards = 1 OR (shards BETWEEN 2 AND 64 AND max_balance IS NULL"
        " AND NOT debits_must_not_exceed_credits AND NOT credits_must_not_exceed_debits)",
        name="shards_only_unbounded",
    ),
    sa.CheckConstraint("status IN ('open', 'frozen', 'closed')", name="status_known"),
    sa.CheckConstraint("length(currency) = 3", name="currency_code"),
)

# Shards 1..N-1 of an unbounded account's balance, so that concurrent writers to a hot
# account (every fare credits one operator payable) do not queue on one row.
account_balance_shards = sa.Table(
    "account_balance_shards",
    metadata,
    sa.Column("account_id", sa.Uuid, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("shard", sa.SmallInteger, primary_key=True),
    _amount("debits_posted"),
    _amount("credits_posted"),
    _amount("debits_pending"),
    _amount("credits_pending"),
    sa.CheckConstraint("shard BETWEEN 1 AND 63", name="shard_range"),
    sa.CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
        " AND credits_pending >= 0",
        name="amounts_not_negative",
    ),
)

transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
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
    sa.UniqueConstraint("id"),
    sa.CheckConstraint(
        "phase IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')",
        name="phase_known",
    ),
    sa.CheckConstraint(
        "(pending_id IS NULL) = (phase IN ('posted', 'pending'))", name="pending_id_by_phase"
    ),
    sa.CheckConstraint("timeout_s >= 0 AND (timeout_s = 0 OR phase = 'pending')", name="timeout"),
    sa.CheckConstraint("length(content_hash) = 32", name="content_hash_length"),
)

# Invariant 4 in the database: at most one resolution per pending transfer. Both this and
# the linked_id index are partial: most transfers have neither, and need no index entry.
sa.Index(
    "uq_transfers_pending_id",
    transfers.c.pending_id,
    unique=True,
    postgresql_where=sa.text("pending_id IS NOT NULL"),
    sqlite_where=sa.text("pending_id IS NOT NULL"),
)
sa.Index(
    "ix_transfers_linked_id",
    transfers.c.linked_id,
    postgresql_where=sa.text("linked_id IS NOT NULL"),
    sqlite_where=sa.text("linked_id IS NOT NULL"),
)
sa.Index("ix_transfers_timestamp_us", transfers.c.timestamp_us)
sa.Index("ix_transfers_kind_seq", transfers.c.kind, transfers.c.seq)

postings = sa.Table(
    "postings",
    metadata,
    sa.Column("transfer_id", sa.Uuid, nullable=False),
    sa.Column("leg", sa.SmallInteger, nullable=False),
    sa.Column("account_id", sa.Uuid, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("transfer_id", "leg"),
    sa.CheckConstraint("amount <> 0", name="amount_not_zero"),
    sa.CheckConstraint("leg BETWEEN 0 AND 15", name="leg_range"),
)
sa.Index("ix_postings_account_id", postings.c.account_id)

journal_blocks = sa.Table(
    "journal_blocks",
    metadata,
    sa.Column("block_no", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("transfer_count", sa.BigInteger, nullable=False),
    sa.Column("transfers_root", sa.LargeBinary(32), nullable=False),
    sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("block_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("sealed_at_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("first_seq <= last_seq + 1", name="seq_range"),
    sa.CheckConstraint("transfer_count >= 0", name="count_not_negative"),
)
