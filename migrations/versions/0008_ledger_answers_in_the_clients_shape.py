"""The batch functions answer in the shapes the client keeps (PostgreSQL only).

Why: on PostgreSQL a 1,000-transfer batch is bound by the server, so the client's work
between the read's answer and the first write, and after the last write's answer, adds
to every batch's time.
- ledger_read sends each account as the client's own account row (its four balances as
  one array, then whether it is bounded), which msgspec decodes straight into
  `ledger.store.AccountRow`, with no Python code per account.
- ledger_write answers with the new transfers' seqs alone, in the order of its transfer
  arrays: the client knows the ids it sent, so it no longer builds a UUID per new
  transfer to read them back. The rows are inserted in that order (ORDER BY the arrays'
  ordinality), so the seqs they draw rise in that order, and the answer is sorted by seq.

What is read, locked, checked and written, and in which order, is unchanged. Both
functions are 0007's and 0004's with those two changes (`_read`, `_write`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READ_SIGNATURE = "ledger_read(uuid[], uuid[], uuid[])"
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"

# ledger_read's accounts: the columns it selected, and each row as it built it.
READ_COLUMNS = """debits_posted,
                   credits_posted, debits_pending, credits_pending
            FROM locked
            UNION ALL
            SELECT id, currency, status, debits_must_not_exceed_credits,
                   credits_must_not_exceed_debits, max_balance, shards, debits_posted,
                   credits_posted, debits_pending, credits_pending
            FROM named WHERE NOT bounded"""
READ_ROW = """credits_must_not_exceed_debits, max_balance, shards, debits_posted,
            credits_posted, debits_pending, credits_pending)), '[]')"""

# ledger_write's answer, and how it inserted the transfers.
WRITE_ANSWER = "OUT ids uuid[], OUT seqs int8[]"
WRITE_TRANSFERS = (
    "SELECT * FROM unnest(transfer_id, transfer_kind, transfer_phase, transfer_currency,\n"
    """                             transfer_pending, transfer_linked, transfer_timeout,
                             transfer_metadata, transfer_timestamp, transfer_hash)
        RETURNING id, seq
    )
    SELECT array_agg(inserted.id), array_agg(inserted.seq) INTO ids, seqs FROM inserted;"""
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    revision_0004 = _revision("0004_ledger_typed_batches.py")
    read = _revision("0007_ledger_read_json.py")._as_json(revision_0004.READ)
    op.execute(f"DROP FUNCTION {READ_SIGNATURE}")
    op.execute(_read(read))
    op.execute(f"DROP FUNCTION ledger_write({revision_0004.WRITE_ARGUMENTS})")
    op.execute(_write(revision_0004.WRITE))
    for function in (READ_SIGNATURE, f"ledger_write({revision_0004.WRITE_ARGUMENTS})"):
        op.execute(f"ALTER FUNCTION {function} {GENERIC_PLANS}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    revision_0004 = _revision("0004_ledger_typed_batches.py")
    op.execute(f"DROP FUNCTION {READ_SIGNATURE}")
    op.execute(_revision("0007_ledger_read_json.py")._as_json(revision_0004.READ))
    op.execute(f"DROP FUNCTION ledger_write({revision_0004.WRITE_ARGUMENTS})")
    op.execute(revision_0004.WRITE)
    for function in (READ_SIGNATURE, f"ledger_write({revision_0004.WRITE_ARGUMENTS})"):
        op.execute(f"ALTER FUNCTION {function} {GENERIC_PLANS}")


def _read(read: str) -> str:
    """0007's ledger_read, each account row in the shape of `ledger.store.AccountRow`."""
    assert READ_COLUMNS in read and READ_ROW in read
    return read.replace(
        READ_COLUMNS,
        """debits_posted,
                   credits_posted, debits_pending, credits_pending, true AS bounded
            FROM locked
            UNION ALL
            SELECT id, currency, status, debits_must_not_exceed_credits,
                   credits_must_not_exceed_debits, max_balance, shards, debits_posted,
                   credits_posted, debits_pending, credits_pending, false
            FROM named WHERE NOT bounded""",
    ).replace(
        READ_ROW,
        """credits_must_not_exceed_debits, max_balance, shards,
            json_build_array(debits_posted, credits_posted, debits_pending, credits_pending),
            bounded)), '[]')""",
    )


def _write(write: str) -> str:
    """0004's ledger_write, inserting the transfers in their arrays' order and answering
    with their seqs alone, in that order."""
    assert WRITE_ANSWER in write and WRITE_TRANSFERS in write
    return write.replace(WRITE_ANSWER, "OUT seqs int8[]").replace(
        WRITE_TRANSFERS,
        """SELECT id, kind, phase, currency, pending_id, linked_id, timeout_s, metadata,
               timestamp_us, content_hash
        FROM unnest(transfer_id, transfer_kind, transfer_phase, transfer_currency,
                    transfer_pending, transfer_linked, transfer_timeout, transfer_metadata,
                    transfer_timestamp, transfer_hash)
             WITH ORDINALITY AS v(id, kind, phase, currency, pending_id, linked_id,
                                  timeout_s, metadata, timestamp_us, content_hash, position)
        ORDER BY v.position
        RETURNING seq
    )
    -- Sorted by seq, which rises in the order of insertion: the arrays' order.
    SELECT array_agg(inserted.seq ORDER BY inserted.seq) INTO seqs FROM inserted;""",
    )


def _revision(filename: str) -> ModuleType:
    """An earlier revision's module, whose functions this one rewrites or restores."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"ledger_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
