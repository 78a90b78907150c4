"""What every request handler shares in one process: the engine, the ledger, the secrets
and the limits. Built once per process by `merchant_api.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from card_reader.keys import BackOfficeKeys
from ledger import Ledger
from merchant_api.crypto import ApiSecrets, CertificateVerifier


@dataclass(frozen=True, slots=True)
class Limits:
    """Constraints on requests (docs/api.md, "Limits").

    - max_body_bytes: any request body; larger is 413 `request_too_large`.
    - max_batch_certificates: certificates in one gate batch; more is 413 `batch_too_large`.
    - rate_per_second / rate_burst: a token bucket per API key in each server process.
    - auth_failures_per_minute: bad keys per client address before 429 (against guessing).
    - idempotency_lease_s: how long a request holds its Idempotency-Key before a retry may
      take it over (a server killed mid-request never blocks a key for longer).
    - idempotency_retention_s: records are kept at least this long (48 hours).
    - api_key_cache_s: how long a process trusts a key it has looked up (revocation takes
      effect everywhere within this time, at once in the process that revoked it).
    """

    max_body_bytes: int = 1_048_576
    max_batch_certificates: int = 1_000
    rate_per_second: float = 200.0
    rate_burst: int = 400
    auth_failures_per_minute: int = 30
    idempotency_lease_s: int = 15
    idempotency_retention_s: int = 48 * 3600
    api_key_cache_s: float = 1.0


@dataclass(slots=True)
class ApiContext:
    """`webhook_allow_private_networks` lifts the webhook guard's address and https rules
    (merchant_api.webhook_guard) for receivers on this machine or a private network: tests
    and local set-ups only. False, the production default, refuses them."""

    engine: Engine
    ledger: Ledger
    secrets: ApiSecrets
    card_keys: BackOfficeKeys
    limits: Limits = field(default_factory=Limits)
    webhook_timeout_s: float = 5.0
    webhook_backoff_s: float = 30.0
    webhook_allow_private_networks: bool = False
    run_background: bool = True
    certificates: CertificateVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.certificates = CertificateVerifier(self.card_keys)
