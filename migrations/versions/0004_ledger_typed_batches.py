"""The ledger's batch functions take typed arrays instead of JSON (PostgreSQL only).

Why: 0001's ledger_write joined `jsonb_array_elements(...)` to the accounts table. The
planner cannot see how many elements a JSON array holds (it assumes 100) and chose a hash
join over a sequential scan of every account, even for a one-transfer batch: about 2 ms
of server CPU per commit at 10,000 accounts, and growing with the table. `unnest` over
array parameters is estimated from the arrays themselves, so small batches probe the
primary key; the values also arrive already typed (no text-to-uuid casts per element),
and statements a batch does not need (no bounded account, no shard row, nothing to
recheck) are skipped. Lookups by id join `unnest` rather than filter on `= ANY(array)`,
which the planner turned into scans of the whole transfers table.

Both functions only ever find rows by key, so they run with hash and merge joins off:
every join is then a loop of index probes, whose cost follows the batch, not the table.
Left to the statistics, the planner hashed the whole journal on every batch whenever
they were stale (on a server without autovacuum they never catch up: at 38,000
transfers it believed 17,000 and built a 38,000-row hash to find 1,000 ids, and the
cost grew with every batch). JIT is off for these functions and for the 0001 check
triggers (see CHECKS).

The functions still decide nothing and take the same locks in the same order (see
ledger/store.py). The recheck of unbounded accounts' status moves into ledger_write: it
raises serialization_failure (40001, which db.run_write retries) when a status is not
what the batch saw, so that the client may send COMMIT right behind the write.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READ = """
CREATE FUNCTION ledger_read(transfer_ids uuid[], pending_ids uuid[], account_ids uuid[])
RETURNS jsonb LANGUAGE plpgsql
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    transfers jsonb := '[]';
    resolutions jsonb := '[]';
    accounts_found jsonb := '[]';
BEGIN
    -- Joins to unnest, not `= ANY(array)`: the planner then probes the indexes once per
    -- id instead of filtering a scan of the whole journal.
    IF cardinality(transfer_ids) > 0 THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(
            t.seq, t.id, t.kind, t.phase, t.currency, t.pending_id, t.linked_id,
            t.timeout_s, t.metadata, t.timestamp_us, p.leg, p.account_id, p.amount)
            ORDER BY t.seq, p.leg), '[]')
        INTO transfers
        FROM unnest(transfer_ids) AS q(id)
        JOIN transfers t ON t.id = q.id
        LEFT JOIN postings p ON p.transfer_id = t.id;
    END IF;
    IF cardinality(pending_ids) > 0 THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(t.pending_id, t.phase)), '[]')
        INTO resolutions
        FROM unnest(pending_ids) AS q(id) JOIN transfers t ON t.pending_id = q.id;
    END IF;
    -- Bounded accounts are locked, in id order, by the read that finds them: a batch
    -- need not know beforehand which of its accounts are bounded (flags never change).
    -- Unbounded ones are read without a lock, so that they never serialize writers.
    -- Each account is probed once, and a bounded one once more to lock it (the locked
    -- row's values are the ones returned).
    IF cardinality(account_ids) > 0 THEN
        WITH named AS MATERIALIZED (
            SELECT a.*, (a.debits_must_not_exceed_credits OR a.credits_must_not_exceed_debits
                         OR a.max_balance IS NOT NULL) AS bounded
            FROM unnest(account_ids) AS q(id) JOIN accounts a ON a.id = q.id
        ), locked AS (
            SELECT a.* FROM named JOIN accounts a ON a.id = named.id
            WHERE named.bounded
            ORDER BY a.id FOR NO KEY UPDATE OF a
        ), found AS (
            SELECT id, currency, status, debits_must_not_exceed_credits,
                   credits_must_not_exceed_debits, max_balance, shards, debits_posted,
                   credits_posted, debits_pending, credits_pending
            FROM locked
            UNION ALL
            SELECT id, currency, status, debits_must_not_exceed_credits,
                   credits_must_not_exceed_debits, max_balance, shards, debits_posted,
                   credits_posted, debits_pending, credits_pending
            FROM named WHERE NOT bounded
        )
        SELECT coalesce(jsonb_agg(jsonb_build_array(
            id, currency, status, debits_must_not_exceed_credits,
            credits_must_not_exceed_debits, max_balance, shards, debits_posted,
            credits_posted, debits_pending, credits_pending)), '[]')
        INTO accounts_found
        FROM found;
    END IF;
    RETURN jsonb_build_object(
        'transfers', transfers, 'resolutions', resolutions, 'accounts', accounts_found);
END $$
"""

# Postings first (the transfers' insert trigger checks them), then balances, then the
# transfers, so that every writer holds a transaction id before it draws a seq
# (journal.sealing_horizon relies on that). Locks: bounded accounts were locked by
# ledger_read; unbounded accounts' primary rows are locked here in id order, then their
# shard rows in (account, shard) order (the arrays arrive sorted that way). A lone row
# needs no separate locking statement: its UPDATE takes the only lock there is.
WRITE = """
CREATE FUNCTION ledger_write(
    posting_transfer uuid[], posting_leg int2[], posting_account uuid[],
    posting_currency text[], posting_amount int8[],
    bounded_id uuid[], bounded_dp int8[], bounded_cp int8[], bounded_dn int8[],
    bounded_cn int8[],
    primary_id uuid[], primary_dp int8[], primary_cp int8[], primary_dn int8[],
    primary_cn int8[],
    shard_account uuid[], shard_no int2[], shard_dp int8[], shard_cp int8[], shard_dn int8[],
    shard_cn int8[],
    recheck_id uuid[], recheck_status text[],
    transfer_id uuid[], transfer_kind text[], transfer_phase text[], transfer_currency text[],
    transfer_pending uuid[], transfer_linked uuid[], transfer_timeout int8[],
    transfer_metadata text[], transfer_timestamp int8[], transfer_hash bytea[],
    OUT ids uuid[], OUT seqs int8[]
) LANGUAGE plpgsql
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    changed uuid;
BEGIN
    INSERT INTO postings (transfer_id, leg, account_id, currency, amount)
    SELECT * FROM unnest(posting_transfer, posting_leg, posting_account, posting_currency,
                         posting_amount);
    IF cardinality(bounded_id) > 0 THEN
        UPDATE accounts a SET debits_posted = v.dp, credits_posted = v.cp,
            debits_pending = v.dn, credits_pending = v.cn, version = a.version + 1
        FROM unnest(bounded_id, bounded_dp, bounded_cp, bounded_dn, bounded_cn)
             AS v(id, dp, cp, dn, cn)
        WHERE a.id = v.id;
    END IF;
    IF cardinality(primary_id) > 1 THEN
        PERFORM 1 FROM accounts WHERE id = ANY(primary_id) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    IF cardinality(primary_id) > 0 THEN
        UPDATE accounts a SET debits_posted = a.debits_posted + v.dp,
            credits_posted = a.credits_posted + v.cp,
            debits_pending = a.debits_pending + v.dn,
            credits_pending = a.credits_pending + v.cn, version = a.version + 1
        FROM unnest(primary_id, primary_dp, primary_cp, primary_dn, primary_cn)
             AS v(id, dp, cp, dn, cn)
        WHERE a.id = v.id;
    END IF;
    IF cardinality(shard_account) > 1 THEN
        PERFORM 1 FROM account_balance_shards s
        JOIN unnest(shard_account, shard_no) AS v(id, shard)
          ON s.account_id = v.id AND s.shard = v.shard
        ORDER BY s.account_id, s.shard FOR NO KEY UPDATE OF s;
    END IF;
    IF cardinality(shard_account) > 0 THEN
        UPDATE account_balance_shards s SET debits_posted = s.debits_posted + v.dp,
            credits_posted = s.credits_posted + v.cp,
            debits_pending = s.debits_pending + v.dn,
            credits_pending = s.credits_pending + v.cn
        FROM unnest(shard_account, shard_no, shard_dp, shard_cp, shard_dn, shard_cn)
             AS v(id, shard, dp, cp, dn, cn)
        WHERE s.account_id = v.id AND s.shard = v.shard;
    END IF;
    -- Read after the updates, which hold the rows (see ledger.batch._write): a status
    -- change committed before them is seen here; one not yet committed waits for us.
    IF cardinality(recheck_id) > 0 THEN
        SELECT a.id INTO changed
        FROM unnest(recheck_id, recheck_status) AS v(id, status)
        JOIN accounts a ON a.id = v.id
        WHERE a.status <> v.status
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'account % changed status during the batch', changed
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    WITH inserted AS (
        INSERT INTO transfers (id, kind, phase, currency, pending_id, linked_id,
                               timeout_s, metadata, timestamp_us, content_hash)
        SELECT * FROM unnest(transfer_id, transfer_kind, transfer_phase, transfer_currency,
                             transfer_pending, transfer_linked, transfer_timeout,
                             transfer_metadata, transfer_timestamp, transfer_hash)
        RETURNING id, seq
    )
    SELECT array_agg(inserted.id), array_agg(inserted.seq) INTO ids, seqs FROM inserted;
END $$
"""

WRITE_ARGUMENTS = (
    "uuid[], int2[], uuid[], text[], int8[],"
    " uuid[], int8[], int8[], int8[], int8[],"
    " uuid[], int8[], int8[], int8[], int8[],"
    " uuid[], int2[], int8[], int8[], int8[], int8[],"
    " uuid[], text[],"
    " uuid[], text[], text[], text[], uuid[], uuid[], int8[], text[], int8[], bytea[]"
)


# The trigger functions of 0001 whose queries the planner may cost above jit_above_cost
# when the tables' statistics are stale (a bulk load before autovacuum's ANALYZE): JIT
# then compiled those plans on every batch, about 40 ms each time, for queries that
# run in a millisecond.
CHECKS = ("ledger_check_new_postings()", "ledger_check_new_transfers()")

# Balance rows are updated in place all day. With full pages every update writes the new
# row version to another page and a new index entry, and the table and its index bloat
# until VACUUM runs (at 200,000 benchmark transfers without autovacuum: 216,000 dead rows
# in 3,700 pages for 10,000 accounts, and 66 us per primary-key probe under load). Room on each page
# lets PostgreSQL keep every version on its page (a HOT update: no index entry) and
# reclaim the dead ones whenever the page is next read, without waiting for VACUUM.
BALANCE_TABLES = ("accounts", "account_balance_shards")
BALANCE_FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION ledger_read(jsonb)")
    op.execute("DROP FUNCTION ledger_write(jsonb)")
    op.execute(READ)
    op.execute(WRITE)
    for function in CHECKS:
        op.execute(f"ALTER FUNCTION {function} SET jit = off")
    for table in BALANCE_TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {BALANCE_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION ledger_read(uuid[], uuid[], uuid[])")
    op.execute(f"DROP FUNCTION ledger_write({WRITE_ARGUMENTS})")
    for function in CHECKS:
        op.execute(f"ALTER FUNCTION {function} RESET jit")
    for table in BALANCE_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    _revision_0001()._postgresql_batch_functions()


def _revision_0001():  # type: ignore[no-untyped-def]
    """0001's module, whose JSON functions the downgrade restores exactly as they were."""
    path = Path(__file__).with_name("0001_ledger.py")
    spec = importlib.util.spec_from_file_location("ledger_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
