"""Settings from the environment (prefix JAKARTAONE_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///jakartaone.sqlite3"


class Settings(BaseSettings):
    """Constraints:
    - database_url: JAKARTAONE_DATABASE_URL. Unset: an SQLite file `jakartaone.sqlite3` in
      the working directory (the embedded default). PostgreSQL:
      `postgresql+psycopg://user@host:5432/dbname`.
    """

    model_config = SettingsConfigDict(env_prefix="JAKARTAONE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
