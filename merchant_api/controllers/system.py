"""Health, readiness and metrics: public, unauthenticated, not rate limited."""

from __future__ import annotations

from typing import Literal

import msgspec
import sqlalchemy as sa
from litestar import Response, get

from ledger import run_read
from merchant_api.deps import PUBLIC, Ctx
from merchant_api.errors import ApiError, ErrorCode
from merchant_api.observability import METRICS_CONTENT_TYPE, render_metrics

SCHEMA_REVISION = "0002"


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready"] = "ready"
    database: str
    schema_revision: str


@get(
    "/health",
    operation_id="getHealth",
    opt=PUBLIC,
    tags=["System"],
    summary="Liveness: the process answers",
)
async def health() -> Health:
    return Health()


@get(
    "/ready",
    operation_id="getReadiness",
    opt=PUBLIC,
    tags=["System"],
    sync_to_thread=True,
    summary="Readiness: the database answers and is migrated",
)
def ready(ctx: Ctx) -> Readiness:
    revision = run_read(
        ctx.engine,
        lambda conn: conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar(),
    )
    if revision is None or str(revision) < SCHEMA_REVISION:
        raise ApiError(
            503,
            ErrorCode.DATABASE_UNAVAILABLE,
            "the database is not migrated",
            headers={"Retry-After": "5"},
        )
    return Readiness(database=ctx.engine.dialect.name, schema_revision=str(revision))


@get(
    "/metrics",
    operation_id="getMetrics",
    opt=PUBLIC,
    tags=["System"],
    sync_to_thread=True,
    include_in_schema=False,
)
def metrics() -> Response[bytes]:
    return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE)
