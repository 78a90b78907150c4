"""`jakartaone serve` and `jakartaone api-keys ...`, and the server's application factory.

`serve` runs the API under uvicorn (uvloop, httptools) with N worker processes; each
worker builds its own context from the environment (`asgi_app`), so secrets reach the
workers through the environment only and never through a command line.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta

import click
import sqlalchemy as sa
from litestar import Litestar

from card_reader.keys import BackOfficeKeys, KeyMaterialError
from jakartaone.settings import Settings, load_settings
from ledger import Ledger, MonotonicClock, make_engine, run_read, run_write
from merchant_api import server
from merchant_api.app import create_app
from merchant_api.auth import Scope
from merchant_api.chart import ensure_issuer_accounts
from merchant_api.context import ApiContext, Limits
from merchant_api.crypto import ApiSecrets, KeyConfigError
from merchant_api.observability import configure_logging
from merchant_api.services.onboarding import insert_api_key
from merchant_api.wib import now_us, set_clock_offset

SCHEMA_REVISION = "0002"


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    return settings if settings is not None else load_settings()


def api_engine(url: str) -> sa.engine.Engine:
    """An engine that gives up quickly when the database is down (the API answers 503)."""
    if url.startswith("sqlite"):
        return make_engine(url)
    return make_engine(url, pool_timeout=5, connect_args={"connect_timeout": 3})


def context_from_settings(settings: Settings) -> ApiContext:
    if settings.api_secret_key is None:
        raise KeyConfigError("set JAKARTAONE_API_SECRET_KEY (hex, at least 32 bytes)")
    if settings.certificate_master_key is None or settings.load_master_key is None:
        raise KeyConfigError(
            "set JAKARTAONE_CERTIFICATE_MASTER_KEY and JAKARTAONE_LOAD_MASTER_KEY (hex)"
        )
    try:
        card_keys = BackOfficeKeys.from_hex(
            settings.certificate_master_key.get_secret_value(),
            settings.load_master_key.get_secret_value(),
        )
    except KeyMaterialError as exc:
        raise KeyConfigError(f"card master keys: {exc.code}") from exc
    set_clock_offset(settings.clock_offset_seconds)
    engine = api_engine(settings.database_url)
    ledger = Ledger(engine, MonotonicClock(now_us))
    ensure_issuer_accounts(ledger)
    return ApiContext(
        engine=engine,
        ledger=ledger,
        secrets=ApiSecrets.from_hex(settings.api_secret_key.get_secret_value()),
        card_keys=card_keys,
        limits=Limits(
            rate_per_second=settings.api_rate_per_second,
            rate_burst=settings.api_rate_burst,
            api_key_cache_s=settings.api_key_cache_seconds,
            idempotency_lease_s=settings.api_idempotency_lease_seconds,
        ),
        webhook_allow_private_networks=settings.webhook_allow_private_networks,
    )


def asgi_app() -> Litestar:
    """The application factory each server worker calls."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(context_from_settings(settings))


def _schema_revision(engine: sa.engine.Engine) -> str | None:
    try:
        return run_read(
            engine,
            lambda conn: conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar(),
        )
    except sa.exc.DBAPIError:
        return None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=None,
    type=int,
    help="Worker processes (default: one per core on PostgreSQL, 1 on SQLite).",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int | None) -> None:
    """Run the merchant API under a production ASGI server (uvicorn, N processes)."""
    settings = _settings(ctx)
    engine = api_engine(settings.database_url)
    revision = _schema_revision(engine)
    engine.dispose()
    if revision is None or revision < SCHEMA_REVISION:
        raise click.ClickException("the database is not migrated: run `jakartaone db upgrade`")
    try:
        context_from_settings(settings).engine.dispose()
    except KeyConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if workers is None:
        workers = 1 if settings.database_url.startswith("sqlite") else max(2, os.cpu_count() or 2)
    os.environ["JAKARTAONE_DATABASE_URL"] = settings.database_url
    with tempfile.TemporaryDirectory(prefix="jakartaone-metrics-") as metrics_dir:
        if workers > 1:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        click.echo(f"JakartaOne API on http://{host}:{port} ({workers} worker(s))", err=True)
        server.run(host, port, workers)


@click.group(name="api-keys")
def api_keys() -> None:
    """API keys for the merchant API (the first issuer-admin key is made here)."""


@api_keys.command(name="create")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True)
@click.option(
    "--owner",
    "owner",
    type=click.UUID,
    default=None,
    help="The merchant (merchant scope) or operator (gate-operator scope).",
)
@click.option("--name", default="", help="A label for people.")
@click.option("--expires-in-days", type=int, default=None)
@click.pass_context
def create_key(
    ctx: click.Context,
    scope: str,
    owner: uuid.UUID | None,
    name: str,
    expires_in_days: int | None,
) -> None:
    """Create an API key and print it once (it is stored only as a hash)."""
    settings = _settings(ctx)
    engine = make_engine(settings.database_url)
    expires_us = None
    if expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=expires_in_days)
        expires_us = int(expires.timestamp() * 1_000_000)
    key_id = uuid.uuid4()
    try:
        _, token = run_write(
            engine, lambda conn: insert_api_key(conn, key_id, Scope(scope), owner, name, expires_us)
        )
    except Exception as exc:
        raise click.ClickException(f"no key made: {exc}") from exc
    finally:
        engine.dispose()
    click.echo(f"api key {key_id} ({scope}); shown once, keep it safe:", err=True)
    click.echo(token)
    sys.stdout.flush()
