"""Settings from the environment (prefix JAKARTAONE_).

Guarantees: `load_settings()` returns settings that hold every constraint below, or raises
`SettingsError` (code `setting_invalid`) naming each bad variable and the rule it breaks,
never its value (a value may be a secret). A bad setting stops a command before it
starts, instead of failing later on a request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///jakartaone.sqlite3"
ENV_PREFIX = "JAKARTAONE_"
_BACKENDS = ("sqlite", "postgresql")


class SettingsError(ValueError):
    """One or more settings are malformed. `problems` maps each environment variable to
    the rule it breaks; the values themselves are never repeated."""

    code = "setting_invalid"

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        listed = "; ".join(f"{name}: {rule}" for name, rule in sorted(problems.items()))
        super().__init__(f"{self.code}: {listed}")


class Settings(BaseSettings):
    """Constraints:
    - database_url: JAKARTAONE_DATABASE_URL. Unset: an SQLite file `jakartaone.sqlite3` in
      the working directory (the embedded default). PostgreSQL:
      `postgresql+psycopg://user@host:5432/dbname`. Only sqlite and postgresql URLs.
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
    - api_rate_per_second / api_rate_burst: each API key's token bucket, per server
      process: a finite rate above 0, a burst of 1 to 1,000,000.
    - api_key_cache_seconds: how long a server process trusts an API key it looked up,
      0 to 60 seconds (revocation reaches every process within it).
    - log_level: the API's structured logs (DEBUG, INFO, WARNING, ERROR; any case).
    - api_idempotency_lease_seconds: how long a request holds its Idempotency-Key; a retry
      of a request whose server died waits at most this long (1 to 3600).
    - webhook_allow_private_networks: JAKARTAONE_WEBHOOK_ALLOW_PRIVATE_NETWORKS, default
      false. False refuses webhook URLs that are not https or whose host is, or resolves
      to, an address off the public internet (loopback, private, link-local, cloud
      metadata), at registration and again at each delivery (docs/api.md, "Webhooks").
      True admits them, and plain http with them, for receivers on this machine: the
      tests' receivers set it. Never true in production: a merchant could then aim the
      back office at its own internal services.
    - clock_offset_seconds: JAKARTAONE_CLOCK_OFFSET_SECONDS, default 0. The API's business
      clock runs this far off the machine's; only `jakartaone demo` sets it, to replay a
      past business day. Production leaves it at 0.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    api_secret_key: SecretStr | None = None
    certificate_master_key: SecretStr | None = None
    load_master_key: SecretStr | None = None
    release_key: SecretStr | None = None
    api_rate_per_second: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] = 200.0
    api_rate_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 400
    api_key_cache_seconds: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 1.0
    api_idempotency_lease_seconds: int = Field(default=15, ge=1, le=3600)
    clock_offset_seconds: int = 0
    webhook_allow_private_networks: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except (ArgumentError, ValueError):
            raise ValueError("not a database URL") from None
        if backend not in _BACKENDS:
            raise ValueError(f"the database must be one of {', '.join(_BACKENDS)}")
        return value


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment (and `overrides`), or `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = {}
        for item in error.errors(include_input=False, include_url=False):
            field = str(item["loc"][0]) if item["loc"] else "settings"
            problems[ENV_PREFIX + field.upper()] = str(item["msg"])
        raise SettingsError(problems) from None
