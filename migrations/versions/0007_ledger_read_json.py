"""ledger_read builds its answer as `json`, not `jsonb` (PostgreSQL only).

Why: the answer is only ever sent to the client as text and decoded there; it is never
queried, indexed or stored, so jsonb's binary form (each element parsed into a tree, keys
sorted and deduplicated, then printed back to text) is work with no use. `json` values are
text from the start. Measured on 2026-11-29 (a scratch database after the ledger
benchmark's set-up and 30,000 transfers, 1,000 transfers' ids and their 1,990 accounts per
call, medians of 35 calls each): building the accounts' rows alone took 7.7 ms as jsonb
and 4.4 ms as json, against 1.9 ms for the index probes without any answer; the whole
ledger_read, locks included, 12.1 to 14.3 ms as jsonb and 8.0 to 8.8 ms as json.

The answer's shape and content are unchanged (the same arrays, in the same order; the
client's decoder reads both forms alike). The return type changes, so the function is
dropped and created again with every setting 0004 and 0006 gave it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "ledger_read(uuid[], uuid[], uuid[])"
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(_as_json(_revision_0004().READ))
    op.execute(f"ALTER FUNCTION {SIGNATURE} {GENERIC_PLANS}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(_revision_0004().READ)
    op.execute(f"ALTER FUNCTION {SIGNATURE} {GENERIC_PLANS}")


def _as_json(read: str) -> str:
    """0004's ledger_read with every jsonb type and builder replaced by its json twin."""
    converted = read.replace("jsonb", "json")
    assert "json_agg(json_build_array(" in converted and "RETURNS json " in converted
    return converted


def _revision_0004() -> ModuleType:
    """0004's module: its ledger_read is the one function this revision changes."""
    path = Path(__file__).with_name("0004_ledger_typed_batches.py")
    spec = importlib.util.spec_from_file_location("ledger_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
