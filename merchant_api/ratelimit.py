"""Rate limits per API key: a token bucket in each server process.

Guarantees: a key may make at most `burst` requests at once and `rate` a second on
average, per server process (with N workers the ceiling is N times that; docs/api.md).
Past it the request is refused with 429 `rate_limited`, `Retry-After` and the
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers, before it does
any work.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_s))
        return headers


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Decision:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) > 100_000:
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate
            )
            bucket.updated = now
            allowed = bucket.tokens >= 1.0
            if allowed:
                bucket.tokens -= 1.0
            missing = self.burst - bucket.tokens
            reset = math.ceil(missing / self.rate) if self.rate > 0 else 0
            if not allowed:
                reset = max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
            return Decision(allowed, self.burst, int(bucket.tokens), reset)
