"""Settings from the environment (prefix JAKARTAONE_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///jakartaone.sqlite3"


class Settings(BaseSettings):
    """Constraints:
    - database_url: JAKARTAONE_DATABASE_URL. Unset: an SQLite file `jakartaone.sqlite3` in
      the working directory (the embedded default). PostgreSQL:
      `postgresql+psycopg://user@host:5432/dbname`.
    - api_secret_key: JAKARTAONE_API_SECRET_KEY, hex, at least 32 bytes. The merchant API's
      root secret (card-serial lookup hashes, sealed raw inputs, webhook signing secrets);
      `jakartaone serve` refuses to start without it. Never logged.
    - certificate_master_key / load_master_key: JAKARTAONE_CERTIFICATE_MASTER_KEY and
      JAKARTAONE_LOAD_MASTER_KEY, hex (16 bytes each, different): the back office's card
      master keys (docs/card-protocol.md, "Keys"). Never logged, never stored.
    - release_key: JAKARTAONE_RELEASE_KEY, hex, at least 32 bytes. The analytics release
      key (docs/privacy.md): it keys the card pseudonyms and the differential-privacy noise
      of `jakartaone export`, which refuses to run without it. Keep one per release period
      and rotate it between periods. Never logged, never written into a release.
    - api_rate_per_second / api_rate_burst: each API key's token bucket, per server process.
    - api_key_cache_seconds: how long a server process trusts an API key it looked up.
    - api_idempotency_lease_seconds: how long a request holds its Idempotency-Key; a retry
      of a request whose server died waits at most this long (1 to 3600).
    - log_level: the API's structured logs (DEBUG, INFO, WARNING, ERROR).
    - clock_offset_seconds: JAKARTAONE_CLOCK_OFFSET_SECONDS, default 0. The API's business
      clock runs this far off the machine's; only `jakartaone demo` sets it, to replay a
      past business day. Production leaves it at 0.
    """

    model_config = SettingsConfigDict(env_prefix="JAKARTAONE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    api_secret_key: SecretStr | None = None
    certificate_master_key: SecretStr | None = None
    load_master_key: SecretStr | None = None
    release_key: SecretStr | None = None
    api_rate_per_second: float = 200.0
    api_rate_burst: int = 400
    api_key_cache_seconds: float = 1.0
    api_idempotency_lease_seconds: int = Field(default=15, ge=1, le=3600)
    log_level: str = "INFO"
    clock_offset_seconds: int = 0
