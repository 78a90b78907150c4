"""ledger_read and ledger_write keep one plan per statement instead of planning every call.

Why: PL/pgSQL caches each statement's plan, but a statement with parameters (here, the
batch's arrays) gets a custom plan, planned anew on every call, for as long as the generic
plan looks costlier than the custom ones: the generic plan cannot see an array's length and
assumes a hundred elements, the custom plans see one, so for single-transfer commits it
always looked costlier and every statement of both functions was planned on every call.
Measured on one hot single commit (2026-11-29, alternating, same database): the server's
CPU went from about 1,220 to 780 us per commit.

The generic plans are the ones the custom plans already were: both functions run with hash
and merge joins off (0004), so every join is a loop of index probes whatever the planner
believes about the arrays, and the plan is right for one transfer and for a thousand.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each name is unique, so no argument list is needed to name the function.
FUNCTIONS = ("ledger_read", "ledger_write")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RESET plan_cache_mode")
