"""Cursor pagination over a table's `seq`, newest first.

Constraints: `limit` 1 to 100; at most one of `starting_after` and `ending_before`, each
the id of an object the caller can see (anything else is 400 `request_invalid`, the same
answer whether the object exists or belongs to someone else).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from merchant_api.errors import ApiError, ErrorCode

MAX_LIMIT = 100


def page(
    conn: Connection,
    table: sa.Table,
    where: Sequence[sa.ColumnElement[bool]],
    limit: int,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
) -> tuple[list[sa.Row[Any]], bool]:
    """Rows of `table` matching `where`, one page, newest first; and whether more follow."""
    if starting_after is not None and ending_before is not None:
        raise ApiError(
            400, ErrorCode.REQUEST_INVALID, "give starting_after or ending_before, not both"
        )
    seq = table.c.seq
    query = sa.select(table).where(*where)
    cursor = starting_after or ending_before
    if cursor is not None:
        found = conn.execute(
            sa.select(seq).where(table.c.id == cursor, *where)
        ).scalar_one_or_none()
        if found is None:
            raise ApiError(
                400, ErrorCode.REQUEST_INVALID, "the cursor names no object in this list"
            )
        if starting_after is not None:
            query = query.where(seq < found)
        else:
            rows = conn.execute(query.where(seq > found).order_by(seq.asc()).limit(limit + 1)).all()
            has_more = len(rows) > limit
            return list(reversed(rows[:limit])), has_more
    rows = conn.execute(query.order_by(seq.desc()).limit(limit + 1)).all()
    return list(rows[:limit]), len(rows) > limit
