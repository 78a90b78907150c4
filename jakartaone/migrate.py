"""Running the Alembic migrations, the only way the schema is made."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from ledger import schema as ledger_schema
from merchant_api import schema as merchant_api_schema
from reconciliation.nightly import schema as reconciliation_schema

ROOT = Path(__file__).resolve().parent.parent


def target_metadata() -> list[sa.MetaData]:
    """Every package's table metadata, for autogenerate and the models-match test."""
    return [ledger_schema.metadata, merchant_api_schema.metadata, reconciliation_schema.metadata]


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with engine.begin() as conn:
        config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
